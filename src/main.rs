//! The `regionfeat` command line: parses flags, builds a config, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use regionfeat::detect::Device;
use regionfeat::manifest::{self, ManifestFormat};
use regionfeat::pipeline::{self, ExtractConfig};
use regionfeat::shard::{Compression, FeatureDtype};

/// Directory of the bundled examples, for the no-flag demo run.
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

#[derive(Parser)]
#[command(name = "regionfeat", version, about = "Region features for video-language pre-training (DemoVLP)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extract region features from videos and images into HDF5 shards.
    Extract(ExtractArgs),
}

#[derive(Args)]
struct ExtractArgs {
    /// WebVid .csv, CC3M .tsv, .jsonl, or a directory of media [default: the bundled samples]
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Folder that relative media paths are resolved against [default: the manifest's folder]
    #[arg(long)]
    root: Option<PathBuf>,
    /// Manifest format (webvid, cc3m, jsonl, dir) [default: from the extension]
    #[arg(long)]
    format: Option<ManifestFormat>,
    /// ONNX detector honouring schemas/detector-contract.md [default: the bundled test detector]
    #[arg(long)]
    detector: Option<PathBuf>,
    /// Output directory [default: out/samples]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Frames sampled per video.
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Regions kept per frame (K).
    #[arg(long, default_value_t = 30)]
    max_boxes: usize,
    /// Keep at least this many regions per frame even below the threshold.
    #[arg(long, default_value_t = 10)]
    min_boxes: usize,
    /// Confidence threshold.
    #[arg(long, default_value_t = 0.2)]
    conf_threshold: f32,
    /// Per-class NMS IoU threshold.
    #[arg(long, default_value_t = 0.3)]
    nms_iou: f32,
    /// Frames per detector run.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Detector device(s): cpu, cuda:N, or a comma-separated list (one session each).
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    device: Vec<Device>,
    /// Decode worker threads [default: all cores].
    #[arg(long)]
    decode_threads: Option<usize>,
    /// ONNX Runtime intra-op threads per session (0: ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    intra_threads: usize,
    /// Items per shard.
    #[arg(long, default_value_t = 1024)]
    shard_size: usize,
    /// Feature storage type: f16 or f32.
    #[arg(long, default_value = "f16")]
    feature_dtype: FeatureDtype,
    /// HDF5 compression: gzip, gzip:0-9, lzf, none.
    #[arg(long, default_value = "gzip")]
    compression: Compression,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

fn extract(a: ExtractArgs) -> anyhow::Result<ExitCode> {
    let examples = PathBuf::from(EXAMPLES);
    let manifest_path = a.manifest.unwrap_or_else(|| examples.join("samples.jsonl"));
    let detector = a
        .detector
        .unwrap_or_else(|| examples.join("models/test-grid.onnx"));
    let out = a.out.unwrap_or_else(|| PathBuf::from("out/samples"));
    let items = manifest::read_manifest(&manifest_path, a.root.as_deref(), a.format)
        .with_context(|| format!("reading manifest {}", manifest_path.display()))?;
    let mut cfg = ExtractConfig::new(detector, out.clone());
    cfg.frames = a.frames;
    cfg.select.max_boxes = a.max_boxes;
    cfg.select.min_boxes = a.min_boxes;
    cfg.select.conf_threshold = a.conf_threshold;
    cfg.select.nms_iou = a.nms_iou;
    cfg.batch_size = a.batch_size;
    cfg.devices = a.device;
    if let Some(t) = a.decode_threads {
        cfg.decode_threads = t;
    }
    cfg.intra_threads = a.intra_threads;
    cfg.shard_size = a.shard_size;
    cfg.feature_dtype = a.feature_dtype;
    cfg.compression = a.compression;
    cfg.progress = !a.quiet;
    eprintln!(
        "regionfeat extract: {} items from {} → {}",
        items.len(),
        manifest_path.display(),
        out.display()
    );
    let summary = pipeline::extract(&items, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    eprintln!("{summary}");
    if summary.errors_logged > 0 {
        eprintln!(
            "{} failed item(s) listed in {}",
            summary.errors_logged,
            pipeline::errors_path(&out).display()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Extract(a) => extract(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
