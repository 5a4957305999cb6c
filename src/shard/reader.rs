//! Reading shards back: metadata, item tables, and frame rows on demand.

use std::path::{Path, PathBuf};

use half::f16;
use hdf5::types::VarLenUnicode;
use hdf5::{File, H5Type};
use ndarray::s;

use super::schema::{self, attr, frame, item};
use super::ShardError;

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
        let r = Self { file, path: path.to_path_buf() };
        let name = r.attr_str(attr::SCHEMA)?;
        let version: u32 = r.attr_num(attr::SCHEMA_VERSION)?;
        if name != schema::SCHEMA_NAME || version != schema::SCHEMA_VERSION {
            return Err(ShardError::at(
                path,
                format!("schema {name:?} v{version}, this regionfeat reads {:?} v{}", schema::SCHEMA_NAME, schema::SCHEMA_VERSION),
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
        Ok(self.read_all::<VarLenUnicode>(name)?.iter().map(|s| s.as_str().to_string()).collect())
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

    fn rows<T: H5Type + Clone>(&self, name: &str, start: usize, count: usize) -> Result<Vec<T>, ShardError> {
        let ds = self.file.dataset(name).map_err(|e| self.err(format!("dataset {name}: {e}")))?;
        let res = match ds.ndim() {
            1 => ds.read_slice::<T, _, ndarray::Ix1>(s![start..start + count]).map(|a| a.into_raw_vec_and_offset().0),
            2 => ds.read_slice::<T, _, ndarray::Ix2>(s![start..start + count, ..]).map(|a| a.into_raw_vec_and_offset().0),
            _ => ds.read_slice::<T, _, ndarray::Ix3>(s![start..start + count, .., ..]).map(|a| a.into_raw_vec_and_offset().0),
        };
        res.map_err(|e| self.err(format!("dataset {name} rows {start}..{}: {e}", start + count)))
    }

    /// Reads frame rows `start .. start + count`.
    pub fn read_frames(&self, start: u64, count: usize) -> Result<FrameBlock, ShardError> {
        let start = start as usize;
        let ds = self.file.dataset(frame::FEATURES).map_err(|e| self.err(e))?;
        let is_f16 = ds
            .dtype()
            .map(|t| t.size() == 2)
            .map_err(|e| self.err(e))?;
        let features = if is_f16 {
            self.rows::<f16>(frame::FEATURES, start, count)?.into_iter().map(f32::from).collect()
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
