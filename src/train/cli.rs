//! `regionfeat train` and `regionfeat eval`: argument types and entry points (the binary
//! wires them into its subcommands).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::train::checkpoint::{self, files};
use crate::train::config::{FrameSampling, TrainConfig};
use crate::train::data::{Mixture, RegionSource};
use crate::train::eval;
use crate::train::loss::RwaOptions;
use crate::train::model;
use crate::train::retrieval;
use crate::train::shards::ShardSource;
use crate::train::text::{TextModelConfig, TextTokenizer};
use crate::train::trainer::{device_from_str, RunOptions, Trainer};

/// `regionfeat train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Trainer config (TOML), e.g. examples/pretrain-webvid-cc3m.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Initialize weights from a checkpoint directory (e.g. ckpt/pretrain/last).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Continue from <output_dir>/last if it exists (weights, optimizer, step, data position).
    #[arg(long)]
    pub resume: bool,
    /// Override `output_dir`.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Override `device` (auto, cpu, cuda, cuda:N).
    #[arg(long)]
    pub device: Option<String>,
    /// Override `optim.max_steps`.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Stop after this many steps (saving `last`), as if interrupted.
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `regionfeat eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Checkpoint directory (e.g. ckpt/finetune/best).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Directory of evaluation shards (or one shard file).
    #[arg(long)]
    pub shards: PathBuf,
    /// Trainer config to take model/loss settings from (default: the checkpoint's config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write embeddings (safetensors) here.
    #[arg(long)]
    pub export_embeddings: Option<PathBuf>,
    /// Frames per item (default: the config's eval.frames, else 8).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Encoding batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Score with the global similarity only (no RWA term).
    #[arg(long)]
    pub global_only: bool,
    /// Device (auto, cpu, cuda, cuda:N).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Also write the metrics JSON here.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Runs training.
pub fn run_train(args: &TrainArgs) -> Result<()> {
    let mut cfg = TrainConfig::from_file(&args.config)?;
    if let Some(o) = &args.output_dir {
        cfg.output_dir = o.clone();
    }
    if let Some(d) = &args.device {
        cfg.device = d.clone();
        device_from_str(d)?;
    }
    if let Some(m) = args.max_steps {
        cfg.optim.max_steps = Some(m);
    }
    if args.no_progress {
        cfg.log.progress = false;
    }
    if let Some(init) = &args.init {
        if !init.join(files::MODEL).exists() {
            bail!("--init {}: no {} there", init.display(), files::MODEL);
        }
        for w in crate::train::import::init_mismatches(init, &cfg.model) {
            eprintln!("warning: --init: {w}");
        }
    }
    let opts = RunOptions {
        init: args.init.clone(),
        resume: args.resume,
        stop_after: args.stop_after,
    };
    let mut trainer = Trainer::new(cfg, None, None, &opts)?;
    let summary = trainer.run(&opts)?;
    if let Some(last) = summary.steps.last() {
        eprintln!("done: step {} loss {:.4}", last.step, last.loss);
    }
    if let Some(m) = summary.eval {
        println!("{}", serde_json::to_string_pretty(&m)?);
    }
    Ok(())
}

/// Runs evaluation of a checkpoint on a shard directory; prints the metrics as JSON.
pub fn run_eval(args: &EvalArgs) -> Result<()> {
    let ck = &args.checkpoint;
    for f in [files::MODEL, files::TEXT_CONFIG] {
        if !ck.join(f).exists() {
            bail!("{} is not a checkpoint: {} is missing", ck.display(), f);
        }
    }
    if !args.shards.exists() {
        bail!("shards {} do not exist", args.shards.display());
    }
    let cfg_path = args
        .config
        .clone()
        .unwrap_or_else(|| ck.join(files::CONFIG));
    let cfg_text = std::fs::read_to_string(&cfg_path)
        .with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let cfg: TrainConfig = toml::from_str(&cfg_text)
        .with_context(|| format!("invalid config {}", cfg_path.display()))?;
    if args.config.is_some() {
        for w in crate::train::import::init_mismatches(ck, &cfg.model) {
            eprintln!("warning: --config: {w}");
        }
    }
    let device = device_from_str(&args.device)?;
    let text_cfg = TextModelConfig::from_file(&ck.join(files::TEXT_CONFIG))?;
    let tok = Arc::new(TextTokenizer::from_file(
        &checkpoint::tokenizer_file(ck)?,
        cfg.data.max_text_len,
        cfg.model.text.lowercase,
    )?);
    let (vs, model) = model::build(&cfg.model, &text_cfg, device, false)?;
    checkpoint::load_weights(&vs, &ck.join(files::MODEL), true)?;
    let src: Arc<dyn RegionSource> = Arc::new(ShardSource::open(&args.shards)?);
    crate::train::trainer::check_kind(
        src.as_ref(),
        cfg.model.video.input == crate::train::video::VideoInput::Grid,
        &format!("shards {}", args.shards.display()),
    )?;
    let mix = Arc::new(Mixture::new(vec![src], true)?);
    let frames = args
        .frames
        .or(cfg.eval.as_ref().map(|e| e.frames))
        .unwrap_or(8);
    if frames > cfg.model.video.max_frames {
        bail!(
            "{frames} frames asked, but {} has temporal embeddings for {} \
             (model.video.max_frames): pass --frames {}, or for converted DemoVLP weights \
             convert again with --max-frames {frames} (zero rows, as the public loader adds)",
            ck.display(),
            cfg.model.video.max_frames,
            cfg.model.video.max_frames
        );
    }
    let set = eval::encode(
        &model,
        &mix,
        &tok,
        frames,
        FrameSampling::Uniform,
        args.batch_size.max(1),
        device,
    )?;
    let opts = RwaOptions {
        scale: cfg.loss.rwa_scale,
        renormalize: cfg.loss.rwa_renormalize,
    };
    let sim = eval::similarity(&set, !args.global_only, opts);
    let (nv, nt) = (set.ids.len(), set.text_video.len());
    let m = retrieval::protocol_metrics(&eval::flat(&sim), nv, nt, &set.text_video);
    let score = if args.global_only {
        "global"
    } else {
        "global+local"
    };
    let protocol = retrieval::Protocol::new(
        args.shards.display().to_string(),
        nv,
        &set.text_video,
        frames,
        score,
    );
    eprintln!("{}", protocol.summary());
    let out = serde_json::json!({
        "checkpoint": ck, "shards": args.shards, "items": mix.len(), "frames": frames,
        "score": score, "protocol": protocol, "metrics": m,
    });
    let text = serde_json::to_string_pretty(&out)?;
    println!("{text}");
    if let Some(p) = &args.output {
        std::fs::write(p, &text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.export_embeddings {
        eval::export(&set, p)?;
        eprintln!("embeddings written to {}", p.display());
    }
    Ok(())
}
