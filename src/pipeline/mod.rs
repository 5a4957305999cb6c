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

use crate::detect::{Detector, DetectorInfo, Device, ModelKind};
use crate::job::{self, ShardPlan};
use crate::manifest::Item;
use crate::select::SelectConfig;
use crate::shard::{Compression, FeatureDtype};

pub use stats::{StageStats, Summary};

/// Everything `extract` needs besides the items.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractConfig {
    /// ONNX model honouring the detector contract or the grid contract.
    pub detector: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Frames per video.
    pub frames: usize,
    /// Region selection (region detectors).
    pub select: SelectConfig,
    /// Grid models: average-pool the grid to `N × N` before writing (`None` keeps it).
    pub grid_pool: Option<usize>,
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
    /// Replace a differing `plan.json` and redo every shard instead of refusing the run.
    #[serde(skip)]
    pub force_replan: bool,
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
            grid_pool: None,
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
            force_replan: false,
        }
    }

    /// The settings that change the shard contents, recorded in every shard.
    pub fn recorded_json(&self) -> String {
        let mut v = serde_json::json!({
            "frames": self.frames,
            "select": self.select,
            "batch_size": self.batch_size,
            "shard_size": self.shard_size,
            "feature_dtype": self.feature_dtype,
            "compression": self.compression,
            "sampling": "segment midpoints; frame on screen at each time",
        });
        // Only when set, so that region shards record what they always did.
        if let Some(n) = self.grid_pool {
            v["grid_pool"] = serde_json::json!(n);
        }
        v.to_string()
    }
}

impl ExtractConfig {
    /// Checks every setting before any work: the message names the flag and its valid range.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let positive = [
            ("--frames", self.frames),
            ("--batch-size", self.batch_size),
            ("--shard-size", self.shard_size),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(PipelineError::Config(format!("{flag} must be at least 1")));
            }
        }
        self.select.validate().map_err(PipelineError::Config)?;
        if self.num_workers == 0 || self.worker_index >= self.num_workers {
            return Err(PipelineError::Config(format!(
                "worker index {} is not below the worker count {}",
                self.worker_index, self.num_workers
            )));
        }
        if self.devices.is_empty() {
            return Err(PipelineError::Config("no detector device given".into()));
        }
        Ok(())
    }

    /// The settings besides frames and shard size that change a shard's content, by flag:
    /// recorded in `plan.json` so that a rerun cannot mix shards of two configurations.
    pub fn plan_settings(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let compression = match self.compression {
            Compression::Gzip(l) => format!("gzip:{l}"),
            Compression::Lzf => "lzf".into(),
            Compression::None => "none".into(),
        };
        // f32 through its shortest decimal form: 0.2, not 0.20000000298023224.
        let real = |v: f32| serde_json::json!(v.to_string().parse::<f64>().unwrap_or(f64::NAN));
        [
            ("--max-boxes", serde_json::json!(self.select.max_boxes)),
            ("--min-boxes", serde_json::json!(self.select.min_boxes)),
            ("--conf-threshold", real(self.select.conf_threshold)),
            ("--nms-iou", real(self.select.nms_iou)),
            ("--batch-size", serde_json::json!(self.batch_size)),
            ("--feature-dtype", serde_json::json!(self.feature_dtype)),
            ("--compression", serde_json::json!(compression)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
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
    cfg.validate()?;
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
    check_grid_pool(cfg, detectors[0].info())?;
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
        captions_sha256: Some(job::plan::captions_digest(items)),
        paths_sha256: Some(job::plan::paths_digest(items)),
        settings: cfg.plan_settings(),
    };
    if let Some(notice) = job::plan::check_or_write(&cfg.out, &record, cfg.force_replan)
        .map_err(PipelineError::Config)?
    {
        eprintln!("{notice}");
    }
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

/// [`extract`] over a read manifest: also lists the files a directory scan skipped in
/// `skipped.jsonl` and counts them in the summary.
pub fn extract_manifest(
    manifest: &crate::manifest::Manifest,
    cfg: &ExtractConfig,
) -> Result<Summary, PipelineError> {
    // After the run's checks (a refused run writes nothing).
    let mut summary = extract(&manifest.items, cfg)?;
    let mut lines = String::new();
    for s in &manifest.skipped {
        lines.push_str(&serde_json::to_string(s).expect("json"));
        lines.push('\n');
    }
    crate::shard::write_atomic(&skipped_path(&cfg.out), lines.as_bytes())?;
    summary.skipped_files = manifest.skipped.len() as u64;
    Ok(summary)
}

/// Where the files a directory scan did not take are listed.
pub fn skipped_path(out: &Path) -> PathBuf {
    out.join("skipped.jsonl")
}

/// `--grid-pool` needs a grid model and a size the grid can be pooled to.
fn check_grid_pool(cfg: &ExtractConfig, info: &DetectorInfo) -> Result<(), PipelineError> {
    let Some(n) = cfg.grid_pool else {
        return Ok(());
    };
    let (h, w) = info.grid_hw;
    match info.kind {
        ModelKind::Regions => Err(PipelineError::Config(format!(
            "--grid-pool applies to grid models; {} is a region detector",
            cfg.detector.display()
        ))),
        ModelKind::Grid if n == 0 || n > h || n > w => Err(PipelineError::Config(format!(
            "--grid-pool {n}: the model's grid is {h}x{w}; use 1..={}",
            h.min(w)
        ))),
        ModelKind::Grid => Ok(()),
    }
}

/// The output directory's path for a given file name (for callers printing where things are).
pub fn errors_path(out: &Path) -> PathBuf {
    out.join("errors.jsonl")
}
