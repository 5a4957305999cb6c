//! Reading shards back: metadata, item tables, and frame rows on demand.

use std::ops::Range;
use std::path::{Path, PathBuf};

use half::f16;
use hdf5::types::VarLenUnicode;
use hdf5::{File, H5Type};
use ndarray::s;

use super::check::{self, Issue, Layout};
use super::schema::{self, attr, frame, item};
use super::{FeatureDtype, ModelKind, ShardError};

/// Frame rows read from a shard (features always returned as f32).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameBlock {
    /// `n × K × D`.
    pub features: Vec<f32>,
    /// `n × K × 7`.
    pub locations: Vec<f32>,
    /// `n × K × 4`.
    pub boxes: Vec<f32>,
    /// `n × K`.
    pub scores: Vec<f32>,
    /// `n × K`.
    pub classes: Vec<u32>,
    /// `n × K`.
    pub attributes: Vec<u32>,
    /// `n × K`.
    pub attr_scores: Vec<f32>,
    /// `n`.
    pub num_boxes: Vec<u32>,
    /// `n`.
    pub timestamps: Vec<f32>,
    /// `n`.
    pub frame_times: Vec<f32>,
}

/// An open shard whose layout has been checked (see [`check`]).
pub struct ShardReader {
    file: File,
    path: PathBuf,
    layout: Layout,
}

impl ShardReader {
    /// Opens a shard read-only and checks its schema name and version and its layout (every
    /// attribute and dataset, with dtypes and shapes agreeing on N, T, K, D), so that later reads
    /// cannot index past a dataset.
    pub fn open(path: &Path) -> Result<Self, ShardError> {
        Self::check_open(path).map_err(|problems| ShardError::at(path, problems.join("; ")))
    }

    /// [`ShardReader::open`], listing every layout problem instead of joining them.
    pub fn check_open(path: &Path) -> Result<Self, Vec<String>> {
        let file = File::open(path).map_err(|e| vec![format!("cannot open as HDF5: {e}")])?;
        let text = |name: &str| {
            file.attr(name)
                .and_then(|a| a.read_scalar::<VarLenUnicode>())
                .map(|v| v.as_str().to_string())
        };
        let name = text(attr::SCHEMA).map_err(|e| {
            vec![format!(
                "attribute {}: {e} (not a regionfeat shard?)",
                attr::SCHEMA
            )]
        })?;
        let version = file
            .attr(attr::SCHEMA_VERSION)
            .and_then(|a| a.read_scalar::<u32>())
            .map_err(|e| vec![format!("attribute {}: {e}", attr::SCHEMA_VERSION)])?;
        if name != schema::SCHEMA_NAME || !schema::READABLE_VERSIONS.contains(&version) {
            return Err(vec![format!(
                "schema {name:?} v{version}, this regionfeat reads {:?} v{:?}",
                schema::SCHEMA_NAME,
                schema::READABLE_VERSIONS
            )]);
        }
        let layout = check::layout(&file)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            layout,
        })
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `schema_version` attribute (1 or 2).
    pub fn schema_version(&self) -> Result<u32, ShardError> {
        self.attr_num(attr::SCHEMA_VERSION)
    }

    /// Regions or grid: the `model_kind` attribute; v1 shards (no attribute) hold regions.
    pub fn model_kind(&self) -> Result<ModelKind, ShardError> {
        if self.file.attr(attr::MODEL_KIND).is_err() && self.schema_version()? == 1 {
            return Ok(ModelKind::Regions);
        }
        self.attr_str(attr::MODEL_KIND)?
            .parse()
            .map_err(|e: String| self.err(format!("attribute {}: {e}", attr::MODEL_KIND)))
    }

    /// Fails with a message a user can act on unless the shard holds `want`.
    pub fn expect_kind(&self, want: ModelKind) -> Result<(), ShardError> {
        let got = self.model_kind()?;
        if got == want {
            return Ok(());
        }
        Err(self.err(match want {
            ModelKind::Regions => format!(
                "this is a grid shard (model_kind = \"grid\": {} feature rows per frame from a \
                 grid model), not a region shard; it has no boxes or region features — use a \
                 consumer that reads grid shards (e.g. a RegionLearner training config)",
                self.grid_hw()
                    .map(|(h, w)| format!("{h}x{w}"))
                    .unwrap_or_else(|_| "Hg x Wg".into())
            ),
            ModelKind::Grid => "this is a region shard (model_kind = \"regions\"), not a grid \
                 shard; it has no grid_features — extract with a grid model (e.g. vit-b16) for a \
                 grid consumer"
                .to_string(),
        }))
    }

    /// `(Hg, Wg)` of a grid shard (the `grid_hw` attribute).
    pub fn grid_hw(&self) -> Result<(usize, usize), ShardError> {
        self.expect_kind(ModelKind::Grid)?;
        let hw: Vec<u32> = self
            .file
            .attr(attr::GRID_HW)
            .and_then(|a| a.read_raw())
            .map_err(|e| self.err(format!("attribute {}: {e}", attr::GRID_HW)))?;
        match hw[..] {
            [h, w] if h > 0 && w > 0 => Ok((h as usize, w as usize)),
            _ => Err(self.err(format!(
                "attribute {} is {hw:?}, expected two positive sizes",
                attr::GRID_HW
            ))),
        }
    }

    /// Grid frame rows `rows` as f32, `[n, Hg*Wg, D]` flattened.
    pub fn read_grid_rows(&self, rows: Range<usize>) -> Result<Vec<f32>, ShardError> {
        self.expect_kind(ModelKind::Grid)?;
        let count = rows.end.saturating_sub(rows.start);
        Ok(if self.grid_is_f16()? {
            self.rows::<f16>(frame::GRID_FEATURES, rows.start, count)?
                .into_iter()
                .map(f32::from)
                .collect()
        } else {
            self.rows::<f32>(frame::GRID_FEATURES, rows.start, count)?
        })
    }

    /// Grid frame rows `rows` as stored in f16 (f32 shards are converted), `[n, Hg*Wg, D]`.
    pub fn read_grid_rows_f16(&self, rows: Range<usize>) -> Result<Vec<f16>, ShardError> {
        self.expect_kind(ModelKind::Grid)?;
        let count = rows.end.saturating_sub(rows.start);
        Ok(if self.grid_is_f16()? {
            self.rows::<f16>(frame::GRID_FEATURES, rows.start, count)?
        } else {
            self.rows::<f32>(frame::GRID_FEATURES, rows.start, count)?
                .into_iter()
                .map(f16::from_f32)
                .collect()
        })
    }

    /// `(timestamps, frame_times)` of frame rows `rows` (either kind of shard).
    pub fn read_times(&self, rows: Range<usize>) -> Result<(Vec<f32>, Vec<f32>), ShardError> {
        let count = rows.end.saturating_sub(rows.start);
        Ok((
            self.rows(frame::TIMESTAMPS, rows.start, count)?,
            self.rows(frame::FRAME_TIMES, rows.start, count)?,
        ))
    }

    fn grid_is_f16(&self) -> Result<bool, ShardError> {
        self.file
            .dataset(frame::GRID_FEATURES)
            .and_then(|d| d.dtype())
            .map(|t| t.size() == 2)
            .map_err(|e| self.err(format!("dataset {}: {e}", frame::GRID_FEATURES)))
    }

    fn err(&self, e: impl std::fmt::Display) -> ShardError {
        ShardError::at(&self.path, e)
    }

    /// The first of `issues` as an error.
    fn refuse(&self, issues: Vec<Issue>) -> Result<(), ShardError> {
        match issues.into_iter().next() {
            Some(issue) => Err(self.err(issue)),
            None => Ok(()),
        }
    }

    /// A string root attribute.
    pub fn attr_str(&self, name: &str) -> Result<String, ShardError> {
        let v: VarLenUnicode = self
            .file
            .attr(name)
            .and_then(|a| a.read_scalar())
            .map_err(|e| self.err(format!("attribute {name}: {e}")))?;
        Ok(v.as_str().to_string())
    }

    /// A numeric root attribute.
    pub fn attr_num<T: H5Type>(&self, name: &str) -> Result<T, ShardError> {
        self.file
            .attr(name)
            .and_then(|a| a.read_scalar())
            .map_err(|e| self.err(format!("attribute {name}: {e}")))
    }

    /// K.
    pub fn max_boxes(&self) -> Result<usize, ShardError> {
        Ok(self.layout.k)
    }

    /// D.
    pub fn feature_dim(&self) -> Result<usize, ShardError> {
        Ok(self.layout.d)
    }

    /// Shard number.
    pub fn shard_id(&self) -> Result<u64, ShardError> {
        self.attr_num(attr::SHARD_ID)
    }

    /// Class names from the root attribute.
    pub fn class_names(&self) -> Result<Vec<String>, ShardError> {
        serde_json::from_str(&self.attr_str(attr::CLASS_NAMES)?).map_err(|e| self.err(e))
    }

    /// Attribute names from the root attribute.
    pub fn attribute_names(&self) -> Result<Vec<String>, ShardError> {
        serde_json::from_str(&self.attr_str(attr::ATTRIBUTE_NAMES)?).map_err(|e| self.err(e))
    }

    /// Reads a whole 1-d numeric dataset.
    pub fn read_all<T: H5Type>(&self, name: &str) -> Result<Vec<T>, ShardError> {
        self.file
            .dataset(name)
            .and_then(|d| d.read_raw())
            .map_err(|e| self.err(format!("dataset {name}: {e}")))
    }

    fn read_strings(&self, name: &str) -> Result<Vec<String>, ShardError> {
        Ok(self
            .read_all::<VarLenUnicode>(name)?
            .iter()
            .map(|s| s.as_str().to_string())
            .collect())
    }

    /// Number of items.
    pub fn len(&self) -> Result<usize, ShardError> {
        Ok(self.layout.n)
    }

    /// Whether the shard has no item.
    pub fn is_empty(&self) -> Result<bool, ShardError> {
        Ok(self.len()? == 0)
    }

    /// Number of frame rows.
    pub fn num_frame_rows(&self) -> Result<usize, ShardError> {
        Ok(self.layout.t)
    }

    /// Item ids.
    pub fn item_ids(&self) -> Result<Vec<String>, ShardError> {
        self.read_strings(item::ID)
    }

    /// Captions.
    pub fn captions(&self) -> Result<Vec<String>, ShardError> {
        self.read_strings(item::CAPTION)
    }

    /// All captions per item (the `captions` dataset; shards written before it have one
    /// caption per item, `caption`, or none when it is empty).
    pub fn all_captions(&self) -> Result<Vec<Vec<String>>, ShardError> {
        if self.file.link_exists(item::CAPTIONS) {
            return self
                .read_strings(item::CAPTIONS)?
                .iter()
                .enumerate()
                .map(|(row, s)| {
                    serde_json::from_str(s)
                        .map_err(|e| self.err(format!("dataset {} row {row}: {e}", item::CAPTIONS)))
                })
                .collect();
        }
        Ok(self
            .captions()?
            .into_iter()
            .map(|c| if c.is_empty() { vec![] } else { vec![c] })
            .collect())
    }

    /// Source paths.
    pub fn sources(&self) -> Result<Vec<String>, ShardError> {
        self.read_strings(item::SOURCE)
    }

    /// Every problem of the item tables: kinds other than 0 and 1, frame ranges that are not
    /// contiguous or leave the T rows, `frame_item` disagreeing with them.
    pub fn item_issues(&self) -> Result<Vec<Issue>, ShardError> {
        let (starts, counts) = self.frame_ranges_unchecked()?;
        let mut issues = check::kinds(&self.read_all(item::KIND)?);
        issues.extend(check::frame_ranges(
            &starts,
            &counts,
            Some(&self.frame_items()?),
            self.layout.t,
        ));
        Ok(issues)
    }

    /// `frame_start` and `num_frames` as stored.
    pub fn frame_ranges_unchecked(&self) -> Result<(Vec<u64>, Vec<u32>), ShardError> {
        Ok((
            self.read_all(item::FRAME_START)?,
            self.read_all(item::NUM_FRAMES)?,
        ))
    }

    /// Kinds (0 video, 1 image; anything else is refused).
    pub fn kinds(&self) -> Result<Vec<u8>, ShardError> {
        let kinds = self.read_all(item::KIND)?;
        self.refuse(check::kinds(&kinds))?;
        Ok(kinds)
    }

    /// Manifest rows.
    pub fn manifest_indices(&self) -> Result<Vec<u64>, ShardError> {
        self.read_all(item::MANIFEST_INDEX)
    }

    /// Sampling durations.
    pub fn durations(&self) -> Result<Vec<f32>, ShardError> {
        self.read_all(item::DURATION)
    }

    /// `(height, width)` per item.
    pub fn image_hw(&self) -> Result<Vec<[u32; 2]>, ShardError> {
        let flat: Vec<u32> = self.read_all(item::IMAGE_HW)?;
        Ok(flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
    }

    /// `(frame_start, num_frames)` per item, refused unless the items own contiguous rows
    /// covering the shard's T rows and `frame_item` agrees.
    pub fn frame_ranges(&self) -> Result<Vec<(u64, u32)>, ShardError> {
        let (starts, counts) = self.frame_ranges_unchecked()?;
        let owners = self.frame_items()?;
        self.refuse(check::frame_ranges(
            &starts,
            &counts,
            Some(&owners),
            self.layout.t,
        ))?;
        Ok(starts.into_iter().zip(counts).collect())
    }

    fn rows<T: H5Type + Clone>(
        &self,
        name: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<T>, ShardError> {
        let ds = self
            .file
            .dataset(name)
            .map_err(|e| self.err(format!("dataset {name}: {e}")))?;
        let res = match ds.ndim() {
            1 => ds
                .read_slice::<T, _, ndarray::Ix1>(s![start..start + count])
                .map(|a| a.into_raw_vec_and_offset().0),
            2 => ds
                .read_slice::<T, _, ndarray::Ix2>(s![start..start + count, ..])
                .map(|a| a.into_raw_vec_and_offset().0),
            _ => ds
                .read_slice::<T, _, ndarray::Ix3>(s![start..start + count, .., ..])
                .map(|a| a.into_raw_vec_and_offset().0),
        };
        res.map_err(|e| {
            self.err(format!(
                "dataset {name} rows {start}..{}: {e}",
                start + count
            ))
        })
    }

    /// Owning item row of every frame row.
    pub fn frame_items(&self) -> Result<Vec<u32>, ShardError> {
        self.read_all(frame::ITEM)
    }

    /// Storage type of `features` (or `grid_features` in a grid shard).
    pub fn feature_dtype(&self) -> Result<FeatureDtype, ShardError> {
        Ok(if self.layout.f16 {
            FeatureDtype::F16
        } else {
            FeatureDtype::F32
        })
    }

    /// Reads frame rows `start .. start + count`, refused when a row holds an index out of
    /// range (`num_boxes` > K, a class or attribute of a valid box past its name list).
    /// A grid shard is refused with a message saying so.
    pub fn read_frames(&self, start: u64, count: usize) -> Result<FrameBlock, ShardError> {
        let b = self.read_frames_unchecked(start, count)?;
        let Layout {
            k,
            n_classes,
            n_attributes,
            ..
        } = self.layout;
        for f in 0..count {
            self.refuse(check::frame_row(
                start as usize + f,
                b.num_boxes[f],
                &b.classes[f * k..(f + 1) * k],
                &b.attributes[f * k..(f + 1) * k],
                k,
                n_classes,
                n_attributes,
            ))?;
        }
        Ok(b)
    }

    /// Reads frame rows `start .. start + count` as stored, for validators that report each
    /// bad value themselves; the rows must lie within the shard.
    pub fn read_frames_unchecked(
        &self,
        start: u64,
        count: usize,
    ) -> Result<FrameBlock, ShardError> {
        self.expect_kind(ModelKind::Regions)?;
        let t = self.layout.t;
        if start.saturating_add(count as u64) > t as u64 {
            return Err(self.err(format!(
                "frame rows {start}..{} requested, the shard has {t}",
                start.saturating_add(count as u64)
            )));
        }
        let start = start as usize;
        let features = if self.layout.f16 {
            self.rows::<f16>(frame::FEATURES, start, count)?
                .into_iter()
                .map(f32::from)
                .collect()
        } else {
            self.rows::<f32>(frame::FEATURES, start, count)?
        };
        Ok(FrameBlock {
            features,
            locations: self.rows(frame::LOCATIONS, start, count)?,
            boxes: self.rows(frame::BOXES, start, count)?,
            scores: self.rows(frame::SCORES, start, count)?,
            classes: self.rows(frame::CLASSES, start, count)?,
            attributes: self.rows(frame::ATTRIBUTES, start, count)?,
            attr_scores: self.rows(frame::ATTR_SCORES, start, count)?,
            num_boxes: self.rows(frame::NUM_BOXES, start, count)?,
            timestamps: self.rows(frame::TIMESTAMPS, start, count)?,
            frame_times: self.rows(frame::FRAME_TIMES, start, count)?,
        })
    }
}
