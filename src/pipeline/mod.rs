//! The extraction pipeline: stages joined by bounded crossbeam channels, so memory stays
//! bounded whatever the dataset size and the slowest stage sets the pace.
//!
//! ```text
//! feeder ─▶ decode workers (N threads: FFmpeg + preprocessing)
//!        ─▶ batcher (restores manifest order, groups whole items into frame batches)
//!        ─▶ detector threads (one ONNX Runtime session per device)
//!        ─▶ selector (restores batch order; NMS / top-K per frame, rayon)
//!        ─▶ writer (HDF5 shards, atomic commit, done-records)
//! ```
//! Batches are formed in manifest order with a fixed size, so two runs feed the detector the
//! very same batches and give identical shards.

mod stages;
mod stats;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::detect::{Detector, Device};
use crate::job::{self, ShardPlan};
use crate::manifest::Item;
use crate::select::SelectConfig;
use crate::shard::{Compression, FeatureDtype};

pub use stats::{StageStats, Summary};

/// Everything `extract` needs besides the items.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractConfig {
    /// ONNX detector honouring the contract.
    pub detector: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Frames per video.
    pub frames: usize,
    /// Region selection.
    pub select: SelectConfig,
    /// Frames per detector run.
    pub batch_size: usize,
    /// Decode worker threads.
    pub decode_threads: usize,
    /// FFmpeg threads inside one decoder.
    pub decoder_threads: usize,
    /// Detector devices (one session each).
    #[serde(serialize_with = "devices_as_strings")]
    pub devices: Vec<Device>,
    /// ONNX Runtime intra-op threads per session (0 = ONNX Runtime's default).
    pub intra_threads: usize,
    /// Items per shard.
    pub shard_size: usize,
    /// Feature storage type.
    pub feature_dtype: FeatureDtype,
    /// HDF5 filters.
    pub compression: Compression,
    /// This worker's index.
    pub worker_index: usize,
    /// Number of workers sharing the manifest.
    pub num_workers: usize,
    /// Show a progress bar.
    #[serde(skip)]
    pub progress: bool,
}

fn devices_as_strings<S: serde::Serializer>(d: &[Device], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(d.iter().map(|d| d.to_string()))
}

impl ExtractConfig {
    /// Defaults for a detector and an output directory.
    pub fn new(detector: PathBuf, out: PathBuf) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            detector,
            out,
            frames: 8,
            select: SelectConfig::default(),
            batch_size: 8,
            decode_threads: cores,
            decoder_threads: 1,
            devices: vec![Device::Cpu],
            intra_threads: 0,
            shard_size: 1024,
            feature_dtype: FeatureDtype::F16,
            compression: Compression::Gzip(4),
            worker_index: 0,
            num_workers: 1,
            progress: false,
        }
    }

    /// The settings that change the shard contents, recorded in every shard.
    pub fn recorded_json(&self) -> String {
        serde_json::json!({
            "frames": self.frames,
            "select": self.select,
            "batch_size": self.batch_size,
            "shard_size": self.shard_size,
            "feature_dtype": self.feature_dtype,
            "compression": self.compression,
            "sampling": "segment midpoints; frame on screen at each time",
        })
        .to_string()
    }
}

/// A fatal pipeline error (bad model, unwritable output...). Per-item problems are not
/// errors: they go to `errors.jsonl`.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The detector could not be opened.
    #[error(transparent)]
    Detector(#[from] crate::detect::DetectError),
    /// Writing failed (disk full, permissions...).
    #[error("writing shards: {0}")]
    Write(#[from] crate::shard::ShardError),
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
}

/// Runs extraction of this worker's share of `items` into `cfg.out`; committed shards are
/// skipped, so a rerun resumes.
pub fn extract(items: &[Item], cfg: &ExtractConfig) -> Result<Summary, PipelineError> {
    if cfg.frames == 0 || cfg.batch_size == 0 || cfg.shard_size == 0 {
        return Err(PipelineError::Config(
            "--frames, --batch-size and --shard-size must be positive".into(),
        ));
    }
    if cfg.num_workers == 0 || cfg.worker_index >= cfg.num_workers {
        return Err(PipelineError::Config(format!(
            "worker index {} is not below the worker count {}",
            cfg.worker_index, cfg.num_workers
        )));
    }
    if cfg.devices.is_empty() {
        return Err(PipelineError::Config("no detector device given".into()));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| {
        PipelineError::Config(format!(
            "cannot create output directory {}: {e}",
            cfg.out.display()
        ))
    })?;
    // Open every session first: a bad model or device fails before any work.
    let detectors = cfg
        .devices
        .iter()
        .map(|&d| Detector::open(&cfg.detector, d, cfg.intra_threads))
        .collect::<Result<Vec<_>, _>>()?;
    job::clean_stale_tmp(&cfg.out);
    let plan = job::plan_shards(items.len(), cfg.shard_size);
    let record = job::plan::PlanRecord {
        items: items.len() as u64,
        ids_sha256: job::plan::ids_digest(items),
        shard_size: cfg.shard_size as u64,
        shards: plan.len() as u64,
        num_workers: cfg.num_workers as u64,
        frames: cfg.frames as u64,
        detector_sha256: detectors[0].info().sha256.clone(),
    };
    job::plan::check_or_write(&cfg.out, &record).map_err(PipelineError::Config)?;
    let share = job::worker_share(&plan, cfg.worker_index, cfg.num_workers);
    let todo: Vec<ShardPlan> = share
        .iter()
        .filter(|s| job::read_done(&cfg.out, s.id).is_none())
        .cloned()
        .collect();
    let start = Instant::now();
    let mut summary = stages::run(items, &todo, detectors, cfg)?;
    summary.shards_skipped = (share.len() - todo.len()) as u64;
    summary.elapsed = start.elapsed();
    summary.errors_logged = job::write_errors_jsonl(&cfg.out, &plan)? as u64;
    // The worker that sees every shard committed builds the index (idempotent if several do).
    // A shard that cannot be read is verify's business; extraction itself succeeded.
    if plan
        .iter()
        .all(|s| job::read_done(&cfg.out, s.id).is_some())
    {
        match job::index::build(&cfg.out, items.len(), cfg.shard_size) {
            Ok(n) => summary.index_items = Some(n as u64),
            Err(e) => summary.index_error = Some(e.to_string()),
        }
    }
    Ok(summary)
}

/// The output directory's path for a given file name (for callers printing where things are).
pub fn errors_path(out: &Path) -> PathBuf {
    out.join("errors.jsonl")
}
