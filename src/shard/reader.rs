//! Reading shards back: metadata, item tables, and frame rows on demand.

use std::path::{Path, PathBuf};

use half::f16;
use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenUnicode};
use hdf5::{File, H5Type};
use ndarray::s;

use super::schema::{self, attr, frame, item};
use super::{FeatureDtype, ShardError};

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

/// An open shard.
pub struct ShardReader {
    file: File,
    path: PathBuf,
}

impl ShardReader {
    /// Opens a shard read-only and checks its schema name and version.
    pub fn open(path: &Path) -> Result<Self, ShardError> {
        let file = File::open(path).map_err(|e| ShardError::at(path, e))?;
        let r = Self {
            file,
            path: path.to_path_buf(),
        };
        let name = r.attr_str(attr::SCHEMA)?;
        let version: u32 = r.attr_num(attr::SCHEMA_VERSION)?;
        if name != schema::SCHEMA_NAME || version != schema::SCHEMA_VERSION {
            return Err(ShardError::at(
                path,
                format!(
                    "schema {name:?} v{version}, this regionfeat reads {:?} v{}",
                    schema::SCHEMA_NAME,
                    schema::SCHEMA_VERSION
                ),
            ));
        }
        Ok(r)
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> ShardError {
        ShardError::at(&self.path, e)
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
        Ok(self.attr_num::<u32>(attr::MAX_BOXES)? as usize)
    }

    /// D.
    pub fn feature_dim(&self) -> Result<usize, ShardError> {
        Ok(self.attr_num::<u32>(attr::FEATURE_DIM)? as usize)
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
        self.file
            .dataset(item::ID)
            .map(|d| d.shape()[0])
            .map_err(|e| self.err(e))
    }

    /// Whether the shard has no item.
    pub fn is_empty(&self) -> Result<bool, ShardError> {
        Ok(self.len()? == 0)
    }

    /// Number of frame rows.
    pub fn num_frame_rows(&self) -> Result<usize, ShardError> {
        self.file
            .dataset(frame::NUM_BOXES)
            .map(|d| d.shape()[0])
            .map_err(|e| self.err(e))
    }

    /// Item ids.
    pub fn item_ids(&self) -> Result<Vec<String>, ShardError> {
        self.read_strings(item::ID)
    }

    /// Captions.
    pub fn captions(&self) -> Result<Vec<String>, ShardError> {
        self.read_strings(item::CAPTION)
    }

    /// Source paths.
    pub fn sources(&self) -> Result<Vec<String>, ShardError> {
        self.read_strings(item::SOURCE)
    }

    /// Kinds (0 video, 1 image).
    pub fn kinds(&self) -> Result<Vec<u8>, ShardError> {
        self.read_all(item::KIND)
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

    /// `(frame_start, num_frames)` per item.
    pub fn frame_ranges(&self) -> Result<Vec<(u64, u32)>, ShardError> {
        let starts: Vec<u64> = self.read_all(item::FRAME_START)?;
        let counts: Vec<u32> = self.read_all(item::NUM_FRAMES)?;
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

    /// Storage type of `features`.
    pub fn feature_dtype(&self) -> Result<FeatureDtype, ShardError> {
        let ds = self
            .file
            .dataset(frame::FEATURES)
            .map_err(|e| self.err(e))?;
        let size = ds.dtype().map(|t| t.size()).map_err(|e| self.err(e))?;
        Ok(if size == 2 {
            FeatureDtype::F16
        } else {
            FeatureDtype::F32
        })
    }

    /// Checks the layout against `schemas/shard-v1.md`: every root attribute present, every
    /// dataset present with its dtype and shape (N, T, K, D as the file declares them).
    /// Returns one message per violation (empty when the layout conforms).
    pub fn check_schema(&self) -> Vec<String> {
        use TypeDescriptor as T;
        let mut problems = Vec::new();
        for name in [
            attr::SCHEMA,
            attr::SCHEMA_VERSION,
            attr::TOOL_VERSION,
            attr::SHARD_ID,
            attr::DETECTOR_NAME,
            attr::DETECTOR_SHA256,
            attr::CLASS_NAMES,
            attr::ATTRIBUTE_NAMES,
            attr::FEATURE_DIM,
            attr::MAX_BOXES,
            attr::CONFIG,
        ] {
            if self.file.attr(name).is_err() {
                problems.push(format!("missing root attribute {name}"));
            }
        }
        for (name, parse) in [
            (attr::CLASS_NAMES, true),
            (attr::ATTRIBUTE_NAMES, true),
            (attr::CONFIG, false),
        ] {
            if let Ok(text) = self.attr_str(name) {
                let ok = if parse {
                    serde_json::from_str::<Vec<String>>(&text).is_ok()
                } else {
                    serde_json::from_str::<serde_json::Value>(&text).is_ok()
                };
                if !ok {
                    problems.push(format!(
                        "root attribute {name} is not valid JSON of the documented type"
                    ));
                }
            }
        }
        let (k, d) = match (self.max_boxes(), self.feature_dim()) {
            (Ok(k), Ok(d)) => (k, d),
            _ => return problems,
        };
        let shape0 = |name: &str| {
            self.file
                .dataset(name)
                .ok()
                .and_then(|ds| ds.shape().first().copied())
        };
        let (n, t) = (
            shape0(item::ID).unwrap_or(0),
            shape0(frame::NUM_BOXES).unwrap_or(0),
        );
        let (u8_, u32_, u64_, f32_) = (
            T::Unsigned(IntSize::U1),
            T::Unsigned(IntSize::U4),
            T::Unsigned(IntSize::U8),
            T::Float(FloatSize::U4),
        );
        let want: Vec<(&str, Vec<TypeDescriptor>, Vec<usize>)> = vec![
            (item::ID, vec![T::VarLenUnicode], vec![n]),
            (item::CAPTION, vec![T::VarLenUnicode], vec![n]),
            (item::SOURCE, vec![T::VarLenUnicode], vec![n]),
            (item::KIND, vec![u8_], vec![n]),
            (item::MANIFEST_INDEX, vec![u64_.clone()], vec![n]),
            (item::FRAME_START, vec![u64_], vec![n]),
            (item::NUM_FRAMES, vec![u32_.clone()], vec![n]),
            (item::IMAGE_HW, vec![u32_.clone()], vec![n, 2]),
            (item::DURATION, vec![f32_.clone()], vec![n]),
            (frame::ITEM, vec![u32_.clone()], vec![t]),
            (frame::TIMESTAMPS, vec![f32_.clone()], vec![t]),
            (frame::FRAME_TIMES, vec![f32_.clone()], vec![t]),
            (frame::NUM_BOXES, vec![u32_.clone()], vec![t]),
            (frame::BOXES, vec![f32_.clone()], vec![t, k, 4]),
            (frame::LOCATIONS, vec![f32_.clone()], vec![t, k, 7]),
            (frame::SCORES, vec![f32_.clone()], vec![t, k]),
            (frame::CLASSES, vec![u32_.clone()], vec![t, k]),
            (frame::ATTRIBUTES, vec![u32_], vec![t, k]),
            (frame::ATTR_SCORES, vec![f32_.clone()], vec![t, k]),
            (
                frame::FEATURES,
                vec![T::Float(FloatSize::U2), f32_],
                vec![t, k, d],
            ),
        ];
        for (name, types, shape) in want {
            let ds = match self.file.dataset(name) {
                Ok(ds) => ds,
                Err(_) => {
                    problems.push(format!("missing dataset {name}"));
                    continue;
                }
            };
            if ds.shape() != shape {
                problems.push(format!(
                    "dataset {name}: shape {:?}, expected {shape:?}",
                    ds.shape()
                ));
            }
            match ds.dtype().and_then(|t| t.to_descriptor()) {
                Ok(desc) if types.contains(&desc) => {}
                Ok(desc) => problems.push(format!(
                    "dataset {name}: dtype {desc}, expected {}",
                    types[0]
                )),
                Err(e) => problems.push(format!("dataset {name}: unreadable dtype: {e}")),
            }
        }
        problems
    }

    /// Reads frame rows `start .. start + count`.
    pub fn read_frames(&self, start: u64, count: usize) -> Result<FrameBlock, ShardError> {
        let start = start as usize;
        let ds = self
            .file
            .dataset(frame::FEATURES)
            .map_err(|e| self.err(e))?;
        let is_f16 = ds.dtype().map(|t| t.size() == 2).map_err(|e| self.err(e))?;
        let features = if is_f16 {
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
