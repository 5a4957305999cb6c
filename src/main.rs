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
#[command(
    name = "regionfeat",
    version,
    about = "Region features for video-language pre-training (DemoVLP)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extract region features (region detector) or feature grids (grid model) from videos and images into HDF5 shards.
    Extract(ExtractArgs),
    /// Check an output directory against its manifest (exit 0 clean, 1 items failed, 2 incomplete/corrupt).
    Verify(VerifyArgs),
    /// (Re)build index.jsonl over all committed shards of an output directory.
    Index(IndexArgs),
    /// Pre-train or fine-tune a DemoVLP model on shards (needs the `train` feature).
    #[cfg(feature = "train")]
    Train(regionfeat::train::cli::TrainArgs),
    /// Evaluate text↔video retrieval of a checkpoint on shards (needs the `train` feature).
    #[cfg(feature = "train")]
    Eval(regionfeat::train::cli::EvalArgs),
    /// Embed a shard set with a checkpoint into a search index (f16, memory-mapped, resumable).
    #[cfg(feature = "train")]
    Embed(regionfeat::train::search::EmbedArgs),
    /// Query an index: free text, or a video by item id (--like); top-k with scores and captions.
    #[cfg(feature = "train")]
    Search(regionfeat::train::search::SearchArgs),
    /// Show what shards hold: summary, one item (--item), checks (--validate), boxes drawn (--draw).
    Inspect(InspectArgs),
    /// Export shards for other tools: DemoVLP per-frame .npz or bottom-up-attention TSV.
    Export(ExportArgs),
}

#[derive(Args)]
struct InspectArgs {
    /// A shard file or an output directory.
    path: PathBuf,
    /// Show this item frame by frame (timestamps, boxes, classes, scores, locations).
    #[arg(long)]
    item: Option<String>,
    /// Check schema and values; exit 1 when there is any problem.
    #[arg(long, conflicts_with_all = ["item", "draw"])]
    validate: bool,
    /// Draw the item's frames (decoded again) with their boxes (grid shards: the model's cells) into this PNG contact sheet.
    #[arg(long, requires = "item")]
    draw: Option<PathBuf>,
    /// Folder that a relative source path is resolved against (for --draw).
    #[arg(long)]
    root: Option<PathBuf>,
    /// With --draw on a grid item: draw the learned-region masks of this RegionLearner
    /// checkpoint (one row per frame: the frame, then each region's mask).
    #[cfg(feature = "train")]
    #[arg(long, requires = "draw")]
    checkpoint: Option<PathBuf>,
    /// Frames per row of the contact sheet.
    #[arg(long, default_value_t = 4)]
    columns: usize,
    /// Width each frame is scaled to on the contact sheet, pixels.
    #[arg(long, default_value_t = 320)]
    frame_width: u32,
    /// Draw only the best N boxes per frame [default: all].
    #[arg(long)]
    top: Option<usize>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Accepted for symmetry with extract (inspect has no progress bar).
    #[arg(long, hide = true)]
    quiet: bool,
}

#[derive(Args)]
struct ExportArgs {
    /// A shard file or an output directory.
    path: PathBuf,
    /// demovlp-npz (one .npz per frame, OUT/ITEM_ID/FRAME.npz) or bottomup-tsv (OUT/SHARD.tsv).
    #[arg(long)]
    format: regionfeat::inspect::ExportFormat,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Accepted for symmetry with extract.
    #[arg(long, hide = true)]
    quiet: bool,
}

#[derive(Args)]
struct ExtractArgs {
    /// WebVid .csv, CC3M .tsv, .jsonl, or a directory of media [default: the bundled samples]
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Folder that relative media paths are resolved against [default: the manifest's folder]
    #[arg(long)]
    root: Option<PathBuf>,
    /// Manifest format (webvid, cc3m, jsonl, dir, msrvtt, msvd, didemo, lsmdc) [default: from the extension]
    #[arg(long)]
    format: Option<ManifestFormat>,
    /// Benchmark split for --format msrvtt|msvd (train, val, test, full-train, full-val, full-test)
    #[arg(long)]
    split: Option<manifest::Split>,
    /// ONNX model: a region detector (schemas/detector-contract.md) or a grid model (schemas/grid-contract.md), told apart by its outputs [default: examples/models/vg-tiny.onnx, made by scripts/setup.sh]
    #[arg(long = "model", visible_alias = "detector")]
    model: Option<PathBuf>,
    /// Grid models: average-pool the Hg x Wg grid to N x N before writing (e.g. 7 for 14x14 → 7x7).
    #[arg(long, value_name = "N")]
    grid_pool: Option<usize>,
    /// Output directory [default: out/samples]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Frames sampled per video.
    #[arg(long, default_value_t = 8, value_parser = count, allow_negative_numbers = true)]
    frames: usize,
    /// Regions kept per frame (K).
    #[arg(long, default_value_t = 30, value_parser = count, allow_negative_numbers = true)]
    max_boxes: usize,
    /// Keep at least this many regions per frame even below the threshold.
    #[arg(long, default_value_t = 10, value_parser = count, allow_negative_numbers = true)]
    min_boxes: usize,
    /// Confidence threshold.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    conf_threshold: f32,
    /// Per-class NMS IoU threshold.
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    nms_iou: f32,
    /// Frames per detector run.
    #[arg(long, default_value_t = 8, value_parser = count, allow_negative_numbers = true)]
    batch_size: usize,
    /// Detector device(s): cpu, cuda:N, or a comma-separated list (one session each).
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    device: Vec<Device>,
    /// Decode worker threads [default: all cores with a GPU device, half of them on CPU].
    #[arg(long, value_parser = count, allow_negative_numbers = true)]
    decode_threads: Option<usize>,
    /// ONNX Runtime intra-op threads per session (0: the cores left by the decoders on CPU, ONNX Runtime's default on GPU).
    #[arg(long, default_value_t = 0, value_parser = count, allow_negative_numbers = true)]
    intra_threads: usize,
    /// Items per shard.
    #[arg(long, default_value_t = 1024, value_parser = count, allow_negative_numbers = true)]
    shard_size: usize,
    /// Feature storage type: f16 or f32.
    #[arg(long, default_value = "f16")]
    feature_dtype: FeatureDtype,
    /// HDF5 compression: gzip, gzip:0-9, lzf, none.
    #[arg(long, default_value = "gzip")]
    compression: Compression,
    /// This worker's index [default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, or JOB_COMPLETION_INDEX, or 0].
    #[arg(long, value_parser = count, allow_negative_numbers = true)]
    worker_index: Option<usize>,
    /// Number of workers [default: SLURM_ARRAY_TASK_COUNT, or REGIONFEAT_NUM_WORKERS, or 1].
    #[arg(long, value_parser = count, allow_negative_numbers = true)]
    num_workers: Option<usize>,
    /// When OUT was planned with other settings (see plan.json): remove its shards and redo them all with these, instead of refusing.
    #[arg(long)]
    force_replan: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// The manifest the directory was extracted from.
    #[arg(long)]
    manifest: PathBuf,
    /// Folder that relative media paths are resolved against.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Manifest format [default: from the extension].
    #[arg(long)]
    format: Option<ManifestFormat>,
    /// Benchmark split (as given to extract).
    #[arg(long)]
    split: Option<manifest::Split>,
    /// Output directory to check.
    #[arg(long)]
    out: PathBuf,
    /// Items per shard [default: from plan.json].
    #[arg(long)]
    shard_size: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct IndexArgs {
    /// Output directory.
    out: PathBuf,
}

/// A count flag: a negative number is named as such (clap would call `-1` an unknown flag).
fn count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n < 0 => Err(format!("must be ≥ 0, got {n}")),
        Ok(n) => usize::try_from(n).map_err(|_| format!("{n} is too large")),
        Err(_) => Err(format!("{s:?} is not a whole number ≥ 0")),
    }
}

/// `--format` with `--split` attached (benchmark formats only).
fn with_split(
    format: Option<ManifestFormat>,
    split: Option<manifest::Split>,
) -> anyhow::Result<Option<ManifestFormat>> {
    match (format, split) {
        (None, None) => Ok(None),
        (None, Some(_)) => anyhow::bail!("--split needs --format msrvtt|msvd"),
        (Some(f), sp) => Ok(Some(f.with_split(sp).map_err(anyhow::Error::msg)?)),
    }
}

fn extract(a: ExtractArgs) -> anyhow::Result<ExitCode> {
    let examples = PathBuf::from(EXAMPLES);
    let manifest_path = a.manifest.unwrap_or_else(|| examples.join("samples.jsonl"));
    let detector = a
        .model
        .unwrap_or_else(|| examples.join("models/vg-tiny.onnx"));
    let out = a.out.unwrap_or_else(|| PathBuf::from("out/samples"));
    let mut cfg = ExtractConfig::new(detector, out.clone());
    cfg.frames = a.frames;
    cfg.select.max_boxes = a.max_boxes;
    cfg.select.min_boxes = a.min_boxes;
    cfg.select.conf_threshold = a.conf_threshold;
    cfg.select.nms_iou = a.nms_iou;
    cfg.grid_pool = a.grid_pool;
    cfg.batch_size = a.batch_size;
    cfg.devices = a.device;
    // On CPU the detector and the decoders share the cores: split them rather than
    // oversubscribe (ONNX Runtime alone would take every core).
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let cpu_only = cfg.devices.iter().all(|d| *d == Device::Cpu);
    cfg.decode_threads = match a.decode_threads {
        Some(t) => t,
        None if cpu_only => (cores / 2).max(1),
        None => cores,
    };
    cfg.intra_threads = match a.intra_threads {
        0 if cpu_only => (cores.saturating_sub(cfg.decode_threads) / cfg.devices.len()).max(1),
        n => n,
    };
    cfg.shard_size = a.shard_size;
    cfg.feature_dtype = a.feature_dtype;
    cfg.compression = a.compression;
    cfg.progress = !a.quiet;
    cfg.force_replan = a.force_replan;
    let share = regionfeat::job::worker::resolve_from_env(a.worker_index, a.num_workers)
        .map_err(anyhow::Error::msg)?;
    cfg.worker_index = share.index;
    cfg.num_workers = share.count;
    // Bad settings fail before a long directory scan or any decoding.
    cfg.validate()?;
    let format = with_split(a.format, a.split)?;
    let manifest = manifest::load(&manifest_path, a.root.as_deref(), format)
        .with_context(|| format!("reading manifest {}", manifest_path.display()))?;
    let items = &manifest.items;
    if share.count > 1 {
        eprintln!(
            "worker {} of {} (from {})",
            share.index, share.count, share.source
        );
    }
    eprintln!(
        "regionfeat extract: {} items from {} → {}",
        items.len(),
        manifest_path.display(),
        out.display()
    );
    if !manifest.skipped.is_empty() {
        eprintln!(
            "{} file(s) or folder(s) not taken from the directory: listed in {}",
            manifest.skipped.len(),
            pipeline::skipped_path(&out).display()
        );
    }
    let summary = pipeline::extract_manifest(&manifest, &cfg)?;
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

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let format = with_split(a.format, a.split)?;
    let items = manifest::read_manifest(&a.manifest, a.root.as_deref(), format)
        .with_context(|| format!("reading manifest {}", a.manifest.display()))?;
    let shard_size = match a.shard_size {
        Some(n) => n,
        None => regionfeat::job::plan::read(&a.out)
            .map(|p| p.shard_size as usize)
            .with_context(|| format!("{} has no plan.json: pass --shard-size", a.out.display()))?,
    };
    let rep = regionfeat::job::verify::verify(&a.out, &items, shard_size);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        println!(
            "shards: {}/{} ok; items: {} ok, {} failed, {} missing, {} duplicated, {} misplaced",
            rep.shards_ok,
            rep.shards_planned,
            rep.items_ok,
            rep.failed_items.len(),
            rep.missing_items.len(),
            rep.duplicate_items.len(),
            rep.misplaced_items.len()
        );
        for s in &rep.missing_shards {
            println!("missing shard {s}");
        }
        for s in &rep.corrupt_shards {
            println!("corrupt: {s}");
        }
        for i in rep
            .missing_items
            .iter()
            .chain(&rep.duplicate_items)
            .chain(&rep.misplaced_items)
        {
            println!("item problem: {i}");
        }
        for f in &rep.failed_items {
            println!("failed: {} ({}): {}", f.id, f.stage, f.reason);
        }
        for l in &rep.leftovers {
            println!("leftover file: {l}");
        }
    }
    Ok(ExitCode::from(rep.exit_code()))
}

fn index(a: IndexArgs) -> anyhow::Result<ExitCode> {
    let plan = regionfeat::job::plan::read(&a.out).with_context(|| {
        format!(
            "{} has no plan.json (not an extract output directory?)",
            a.out.display()
        )
    })?;
    let n = regionfeat::job::index::build(&a.out, plan.items as usize, plan.shard_size as usize)?;
    eprintln!("index.jsonl: {n} items");
    Ok(ExitCode::SUCCESS)
}

/// Prints a report as text or JSON; a closed pipe (`| head`) is not an error.
fn print<T: serde::Serialize + std::fmt::Display>(v: &T, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let text = if json {
        serde_json::to_string_pretty(v)?
    } else {
        v.to_string()
    };
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    use regionfeat::inspect;
    if a.validate {
        let v = inspect::validate(&a.path)?;
        print(&v, a.json)?;
        return Ok(if v.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    #[cfg(feature = "train")]
    if let (Some(id), Some(png), Some(ck)) = (&a.item, &a.draw, &a.checkpoint) {
        let model = regionfeat::train::masks::MaskModel::load(ck, tch::Device::Cpu)?;
        let masks_of = |rows: &[f32], n: usize, grid: (usize, usize)| model.masks(rows, n, grid);
        let r = inspect::draw_item_masks(
            &a.path,
            id,
            png,
            (a.frame_width / 2).max(16),
            a.root.as_deref(),
            &masks_of,
        )?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!(
                "{}: {} learned regions over {} frame(s) of {}, {}x{}",
                r.path, r.regions, r.frames, r.item, r.width, r.height
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    match (&a.item, &a.draw) {
        (Some(id), Some(png)) => {
            let opts = inspect::DrawOptions {
                columns: a.columns,
                frame_width: a.frame_width,
                top: a.top,
                root: a.root,
            };
            let r = inspect::draw_item(&a.path, id, png, &opts)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{}: {} frame(s) of {} drawn, {}x{}",
                    r.path,
                    r.frames.len(),
                    r.item,
                    r.width,
                    r.height
                );
            }
        }
        (Some(id), None) => print(&inspect::item_detail(&a.path, id)?, a.json)?,
        _ => print(&inspect::summarize(&a.path)?, a.json)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let s = regionfeat::inspect::export(&a.path, a.format, &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    }
    eprintln!("{s}");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Extract(a) => extract(a),
        Command::Verify(a) => verify(a),
        Command::Index(a) => index(a),
        #[cfg(feature = "train")]
        Command::Train(a) => regionfeat::train::cli::run_train(&a).map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "train")]
        Command::Eval(a) => regionfeat::train::cli::run_eval(&a).map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "train")]
        Command::Embed(a) => regionfeat::train::search::run_embed(&a).map(|m| {
            eprintln!(
                "index {}: {} videos, {} captions",
                a.out.display(),
                m.items_total,
                m.texts_done
            );
            ExitCode::SUCCESS
        }),
        #[cfg(feature = "train")]
        Command::Search(a) => regionfeat::train::search::run_search(&a).map(|_| ExitCode::SUCCESS),
        Command::Inspect(a) => inspect(a),
        Command::Export(a) => export(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
