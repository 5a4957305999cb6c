//! HDF5 shards: the one module that knows the layout (`schemas/shard-v1.md`,
//! `schemas/shard-v2.md`, names in [`schema`]). [`ShardWriter`] appends items and commits atomically; [`ShardReader`] reads
//! them back for `inspect` and `verify`; [`ChunkReader`] reads the frame rows training needs,
//! inflating outside the HDF5 lock.

pub mod check;
mod chunk_index;
pub mod chunks;
mod kept;
mod reader;
pub mod schema;
pub mod synthetic;
mod writer;

use std::path::{Path, PathBuf};

pub use chunks::{Access, ChunkReader, FeatureRows, FrameRows};
pub use reader::{FrameBlock, ShardReader};
pub use writer::{ExtractedFrame, ExtractedItem, ShardWriter};

use crate::detect::DetectorInfo;

/// Filters for the numeric datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// shuffle + deflate at this level (h5py reads it natively).
    Gzip(u8),
    /// LZF (h5py ships the filter).
    Lzf,
    /// No filter.
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gzip" => Ok(Self::Gzip(4)),
            "lzf" => Ok(Self::Lzf),
            "none" => Ok(Self::None),
            _ => s
                .strip_prefix("gzip:")
                .and_then(|l| l.parse().ok())
                .filter(|l| *l <= 9)
                .map(Self::Gzip)
                .ok_or_else(|| format!("compression {s:?}: use gzip, gzip:0-9, lzf or none")),
        }
    }
}

/// What a shard's frame rows hold: selected regions (v1 layout) or a feature grid (v2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Region detector: boxes, scores, classes and one feature row per region.
    #[default]
    Regions,
    /// Grid model: `Hg × Wg` feature rows per frame (`grid_features`).
    Grid,
}

impl ModelKind {
    /// The `model_kind` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regions => "regions",
            Self::Grid => "grid",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "regions" => Ok(Self::Regions),
            "grid" => Ok(Self::Grid),
            _ => Err(format!(
                "model kind {s:?}: expected \"regions\" or \"grid\""
            )),
        }
    }
}

/// Storage type of `features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureDtype {
    /// Half precision (default: halves the disk, loses nothing the trainer notices).
    F16,
    /// Single precision.
    F32,
}

impl std::str::FromStr for FeatureDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f16" | "float16" => Ok(Self::F16),
            "f32" | "float32" => Ok(Self::F32),
            _ => Err(format!("feature dtype {s:?}: use f16 or f32")),
        }
    }
}

/// What a shard records about how it was made.
#[derive(Debug, Clone)]
pub struct ShardMeta {
    /// Planned shard number.
    pub shard_id: u64,
    /// The detector's declared metadata (names, sha256).
    pub detector: DetectorInfo,
    /// Regions or grid: decides the frame datasets.
    pub model_kind: ModelKind,
    /// K (0 for grid shards).
    pub max_boxes: usize,
    /// `(Hg, Wg)` of the stored grid (after pooling); ignored for region shards.
    pub grid_hw: (usize, usize),
    /// D.
    pub feature_dim: usize,
    /// Storage type of features.
    pub feature_dtype: FeatureDtype,
    /// Filters.
    pub compression: Compression,
    /// Extraction config as JSON.
    pub config_json: String,
}

/// An HDF5 or file-system error, with the file it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ShardError {
    /// File concerned.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl ShardError {
    pub(crate) fn at(path: &Path, e: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// Makes a finished temporary file visible under its final name, durably: fsync the file,
/// rename, fsync the directory. A reader sees either no file or the complete one.
pub fn commit_file(tmp: &Path, dest: &Path) -> Result<(), ShardError> {
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| ShardError::at(tmp, e))?;
    std::fs::rename(tmp, dest).map_err(|e| ShardError::at(dest, e))?;
    if let Some(dir) = dest.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Writes `bytes` to `dest` atomically (temporary file + [`commit_file`]).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), ShardError> {
    // Unique per process: several workers may write the same file (plan.json, index.jsonl).
    let tmp = dest.with_extension(format!(
        "{}.{}.tmp",
        dest.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| ShardError::at(&tmp, e))?;
    commit_file(&tmp, dest)
}
