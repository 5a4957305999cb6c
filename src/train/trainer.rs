//! The training loop: micro-batches from the [`Loader`], forward both towers, global + RWA
//! losses, backward, gradient accumulation, clipping, AdamW with the schedule, metrics JSONL,
//! progress bar, checkpoints (`last`, `best`, `step-N`) and optional evaluation.
//!
//! Everything the run writes goes through [`Trainer::save`] (checkpoints) and [`RunLog`]
//! (metrics), so a multi-process run can let one process write.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{nn, Device, Kind, Tensor};

use crate::train::checkpoint::{self, CheckpointParts, TrainState};
use crate::train::config::{FrameSampling, TrainConfig};
use crate::train::data::{BatchSpec, Loader, Mixture, RegionSource};
use crate::train::dist::{self, Dist};
use crate::train::epoch::{EpochPlan, PlanOptions};
use crate::train::eval;
use crate::train::layers::Ctx;
use crate::train::loss::{self, Recall, RetrievalMetrics, RwaOptions};
use crate::train::model::{self, DemoVlp};
use crate::train::optim::{learning_rate, AdamW};
use crate::train::runlog::RunLog;
use crate::train::text::{TextModelConfig, TextTokenizer};

/// How a run starts and stops (beyond the config).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Initialize weights from this checkpoint directory (weights only).
    pub init: Option<PathBuf>,
    /// Resume from `<output_dir>/last` when it exists.
    pub resume: bool,
    /// Stop (after saving `last`) once this many optimizer steps are done — simulates an
    /// interruption; the schedule still spans the whole run.
    pub stop_after: Option<u64>,
}

/// One logged optimizer step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepLog {
    /// Step number (1-based, after the update).
    pub step: u64,
    /// Epoch.
    pub epoch: u64,
    /// Samples consumed so far (all micro-batches).
    pub samples: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Total loss (mean over micro-batches).
    pub loss: f64,
    /// Global video→text.
    pub global_v2t: f64,
    /// Global text→video.
    pub global_t2v: f64,
    /// RWA video→text.
    pub local_v2t: Option<f64>,
    /// RWA text→video.
    pub local_t2v: Option<f64>,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Training throughput since the last log line.
    pub samples_per_s: f64,
    /// RegionLearner commitment term ‖z − sg(e)‖² (unweighted), when it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vq_commitment: Option<f64>,
    /// Codebook entries chosen at least once since the last log line (logged steps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codes_used: Option<u64>,
    /// Codebook size K.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codebook_size: Option<u64>,
    /// Something a user should look at (e.g. a collapsing codebook).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One evaluation on the validation set (a `kind = "eval"` record of `metrics.jsonl`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalLog {
    /// Optimizer steps done when evaluated.
    pub step: u64,
    /// Epoch.
    pub epoch: u64,
    /// Samples consumed so far.
    pub samples: u64,
    /// Text→video retrieval.
    pub t2v: Recall,
    /// Video→text retrieval.
    pub v2t: Recall,
    /// `eval.metric`, the score that selects `best`.
    pub metric: &'static str,
    /// Its value.
    pub score: f64,
    /// This evaluation is the best so far (and was saved as `best`).
    pub best: bool,
}

/// Below this fraction of codes in use, the log warns of codebook collapse.
pub const CODEBOOK_COLLAPSE_FRACTION: f64 = 0.1;

/// Result of a run.
#[derive(Debug, Clone, Default)]
pub struct TrainSummary {
    /// Every step's log (also written to metrics.jsonl at the logging cadence).
    pub steps: Vec<StepLog>,
    /// Last evaluation.
    pub eval: Option<RetrievalMetrics>,
    /// Every evaluation of this run, in order.
    pub evals: Vec<EvalLog>,
    /// Final state.
    pub state: TrainState,
}

/// Picks the torch device.
pub fn device_from_str(s: &str) -> Result<Device> {
    Ok(match s {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => {
            if !tch::Cuda::is_available() {
                bail!("device = \"cuda\" but libtorch sees no CUDA device (build with --features cuda?)");
            }
            Device::Cuda(0)
        }
        s => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => {
                let count = tch::Cuda::device_count().max(0) as usize;
                if n >= count {
                    bail!(
                        "device = \"{s}\" but libtorch sees {count} CUDA device(s){}",
                        if count == 0 {
                            " (build with --features cuda?)"
                        } else {
                            ""
                        }
                    );
                }
                Device::Cuda(n)
            }
            None => bail!("unknown device {s:?} (auto, cpu, cuda, cuda:N)"),
        },
    })
}

/// Fails when a source's kind (region or grid shards) is not what `model.video.input` reads.
pub fn check_kind(src: &dyn RegionSource, want_grid: bool, what: &str) -> Result<()> {
    match (src.grid_hw(), want_grid) {
        (Some((h, w)), false) => bail!(
            "{what} holds grid features (model_kind = \"grid\", {h}x{w} patches) but \
             model.video.input = \"regions\": set model.video.input = \"grid\" (with \
             [model.video.region_learner] for RegionLearner) or give region shards"
        ),
        (None, true) => bail!(
            "{what} holds detector regions (model_kind = \"regions\") but \
             model.video.input = \"grid\": set model.video.input = \"regions\" or give grid \
             shards (regionfeat extract with a grid model)"
        ),
        _ => Ok(()),
    }
}

/// A ready-to-run trainer.
pub struct Trainer {
    cfg: TrainConfig,
    device: Device,
    vs: nn::VarStore,
    model: DemoVlp,
    opt: AdamW,
    tok: Arc<TextTokenizer>,
    tokenizer_path: PathBuf,
    text_config_json: String,
    mix: Arc<Mixture>,
    plan: EpochPlan,
    eval_mix: Option<Arc<Mixture>>,
    state: TrainState,
    steps_per_epoch: u64,
    total_steps: u64,
    /// Data-parallel group when launched by torchrun / SLURM with several processes.
    dist: Option<Dist>,
    /// The RegionLearner codebook's collectives (data parallel with RegionLearner).
    codebook_sync: Option<Rc<dist::codebook::GroupSync>>,
    /// Step of the last evaluation of this process (no second one at the same step).
    last_eval: Option<u64>,
    /// CPU: resident memory before the model was built, and the estimate, for the measured
    /// peak reported after training.
    resident: Option<(
        crate::train::memory::Resident,
        crate::train::memory::Estimate,
    )>,
}

impl Trainer {
    /// Builds model, optimizer and data from the config; `sources` / `eval_source` replace the
    /// shard directories named in the config (tests, synthetic data).
    pub fn new(
        cfg: TrainConfig,
        sources: Option<Vec<Arc<dyn RegionSource>>>,
        eval_source: Option<Arc<dyn RegionSource>>,
        opts: &RunOptions,
    ) -> Result<Self> {
        let launch = dist::Launch::from_env()?;
        let device = match &launch {
            Some(l) => dist::rank_device(&cfg.device, l)?,
            None => device_from_str(&cfg.device)?,
        };
        for w in crate::train::device_notes::warnings(&cfg, device) {
            eprintln!("warning: {w}");
        }
        // Join first, so a bad launch fails before data and model are loaded.
        let dist = launch
            .map(|l| Dist::join(l, device, cfg.data.batch_size))
            .transpose()?;
        // Before the model takes its share of the device.
        let free = crate::train::memory::available(device);
        let shard_opts = crate::train::shards::ShardOptions {
            max_open_shards: cfg.data.max_open_shards,
        };
        let sources = match sources {
            Some(s) => s,
            None => cfg
                .data
                .datasets
                .iter()
                .map(|d| {
                    crate::train::shards::ShardSource::open_with(&d.shards, &shard_opts)
                        .map(|s| Arc::new(s) as Arc<dyn RegionSource>)
                        .with_context(|| format!("dataset {:?}", d.name))
                })
                .collect::<Result<_>>()?,
        };
        let want_grid = cfg.model.video.input == crate::train::video::VideoInput::Grid;
        for (i, src) in sources.iter().enumerate() {
            let name = cfg
                .data
                .datasets
                .get(i)
                .map(|d| format!("{:?} ({})", d.name, d.shards.display()))
                .unwrap_or_else(|| format!("#{i}"));
            check_kind(src.as_ref(), want_grid, &format!("dataset {name}"))?;
        }
        if let Some(s) = &eval_source {
            check_kind(s.as_ref(), want_grid, "the evaluation set")?;
        }
        let mix = Arc::new(Mixture::new(sources, true)?.with_caption_sampling(cfg.data.captions));
        let eval_mix = match (eval_source, &cfg.eval) {
            (Some(s), _) => Some(Arc::new(Mixture::new(vec![s], true)?)),
            (None, Some(e)) => {
                let src = crate::train::shards::ShardSource::open_with(&e.shards, &shard_opts)?;
                check_kind(
                    &src,
                    want_grid,
                    &format!("eval.shards ({})", e.shards.display()),
                )?;
                Some(Arc::new(Mixture::new(vec![Arc::new(src)], true)?))
            }
            (None, None) => None,
        };
        if mix.feature_dim() as i64 != cfg.model.video.feature_dim {
            bail!(
                "data feature_dim is {}, model.video.feature_dim is {}",
                mix.feature_dim(),
                cfg.model.video.feature_dim
            );
        }
        let text_config_path = cfg.model.text.config_path()?;
        let text_config_json = std::fs::read_to_string(&text_config_path)?;
        let text_cfg = TextModelConfig::from_json(&text_config_json)?;
        if (cfg.data.max_text_len as i64) > text_cfg.max_positions() {
            bail!("data.max_text_len exceeds the text model's max_position_embeddings");
        }
        let tokenizer_path = cfg.model.text.tokenizer_path()?;
        let tok = Arc::new(TextTokenizer::from_file(
            &tokenizer_path,
            cfg.data.max_text_len,
            cfg.model.text.lowercase,
        )?);

        // Everything before this (libraries, shard index, tokenizer) is not in the estimate.
        let resident = (device == Device::Cpu)
            .then(crate::train::memory::Resident::start)
            .flatten();
        tch::manual_seed(cfg.seed as i64);
        let (vs, mut model) = model::build(&cfg.model, &text_cfg, device, opts.init.is_none())?;
        let codebook_sync = match (&dist, model.video.region_learner_mut()) {
            (Some(d), Some(rl)) => {
                let sync = Rc::new(dist::codebook::GroupSync::new(d.pg.clone()));
                rl.codebook.set_sync(sync.clone());
                Some(sync)
            }
            _ => None,
        };
        if let Some(init) = &opts.init {
            let missing =
                checkpoint::load_weights(&vs, &init.join(checkpoint::files::MODEL), false)?;
            eprintln!(
                "init: weights from {} ({} variables not in it)",
                init.display(),
                missing.len()
            );
        }
        let processes = dist.as_ref().map_or(1, |d| d.launch.world_size);
        let workload = crate::train::memory::Workload::of(&cfg, mix.max_boxes(), device, processes);
        let est = crate::train::memory::estimate(&cfg, &text_cfg, &vs, &workload);
        crate::train::memory::check(&cfg, &text_cfg, &est, &workload, device, free)?;
        let opt = AdamW::new(&vs, &cfg.optim);
        // Config weights apply when the sources are the configured datasets.
        let weights: Vec<f64> = cfg.data.datasets.iter().map(|d| d.weight).collect();
        let plan = EpochPlan::new(
            &mix,
            &PlanOptions {
                mixing: cfg.data.mixing,
                weights: if weights.len() == mix.num_sources() {
                    weights
                } else {
                    vec![]
                },
                samples_per_epoch: cfg.data.samples_per_epoch,
                batch_size: cfg.data.batch_size,
                shuffle: cfg.data.shuffle,
                block_shards: cfg.data.shuffle_block_shards,
                seed: cfg.seed,
            },
        )
        .context("data.mixing / data.samples_per_epoch")?;
        let micro_per_epoch = (plan.len() / cfg.data.batch_size) as u64;
        if micro_per_epoch == 0 {
            bail!(
                "{} items are fewer than one batch of {}",
                mix.len(),
                cfg.data.batch_size
            );
        }
        let steps_per_epoch = (micro_per_epoch / cfg.optim.grad_accum as u64).max(1);
        let mut total_steps = steps_per_epoch * cfg.optim.epochs as u64;
        if let Some(m) = cfg.optim.max_steps {
            total_steps = total_steps.min(m);
        }
        let state = TrainState {
            seed: cfg.seed,
            ..Default::default()
        };
        let mut t = Self {
            cfg,
            device,
            vs,
            model,
            opt,
            tok,
            tokenizer_path,
            text_config_json,
            mix,
            plan,
            eval_mix,
            state,
            steps_per_epoch,
            total_steps,
            dist,
            codebook_sync,
            last_eval: None,
            resident: resident.map(|r| (r, est)),
        };
        let last = t.cfg.output_dir.join("last");
        if let Some(dir) = checkpoint::resolve(&last).filter(|_| opts.resume) {
            t.resume_from(&dir)?;
        }
        if let Some(d) = &t.dist {
            dist::shard::broadcast_params(&d.pg, &t.vs)?;
            if d.is_main() {
                eprintln!(
                    "data-parallel: {} processes ({}, {:?}), global batch {}, {} per process",
                    d.launch.world_size,
                    d.launch.source,
                    d.pg.backend(),
                    t.cfg.data.batch_size,
                    t.cfg.data.batch_size / d.launch.world_size
                );
            }
        }
        Ok(t)
    }

    fn resume_from(&mut self, dir: &Path) -> Result<()> {
        checkpoint::load_weights(&self.vs, &dir.join(checkpoint::files::MODEL), true)?;
        let state = checkpoint::load_state(dir)?;
        self.opt
            .load(&dir.join(checkpoint::files::OPTIM), state.step)?;
        eprintln!("resumed from {} at step {}", dir.display(), state.step);
        self.state = state;
        if let Some(e) = &self.cfg.eval {
            let was = self.state.best_metric.as_deref().unwrap_or("t2v_rsum");
            if self.state.best_score.is_some() && was != e.metric.name() {
                eprintln!(
                    "warning: `best` was chosen by {was}, eval.metric is now {}: the next \
                     evaluation starts a new best",
                    e.metric.name()
                );
                self.state.best_score = None;
            }
        }
        Ok(())
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// The model (evaluation, tests).
    pub fn model(&self) -> &DemoVlp {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Arc<TextTokenizer> {
        &self.tok
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Rank 0 of a data-parallel run, or a single process: the one that writes files.
    pub fn is_main(&self) -> bool {
        self.dist.as_ref().is_none_or(Dist::is_main)
    }

    /// Processes in the run (1 without data parallelism).
    pub fn world_size(&self) -> usize {
        self.dist.as_ref().map_or(1, |d| d.launch.world_size)
    }

    /// Writes checkpoint `<output_dir>/<name>` (the one function that writes checkpoints).
    fn save(&self, name: &str) -> Result<()> {
        if !self.is_main() {
            return Ok(());
        }
        let cfg_toml = toml::to_string(&self.cfg)?;
        checkpoint::save(
            &self.cfg.output_dir.join(name),
            &self.vs,
            Some(&self.opt),
            &CheckpointParts {
                state: &self.state,
                config_toml: &cfg_toml,
                text_config_json: &self.text_config_json,
                tokenizer: &self.tokenizer_path,
            },
        )
    }

    /// The periodic checkpoint: `step-N` (pruned to the newest `log.keep_last`) with `last` as
    /// a hard-linked copy of it, or just `last` when `keep_last` is 0.
    fn save_periodic(&self) -> Result<()> {
        let keep = self.cfg.log.keep_last;
        if keep == 0 {
            return self.save("last");
        }
        let name = checkpoint::step_name(self.state.step);
        self.save(&name)?;
        let out = &self.cfg.output_dir;
        checkpoint::link_copy(&out.join(&name), &out.join("last"))?;
        checkpoint::prune_steps(out, keep)?;
        Ok(())
    }

    /// Opens the metrics outputs (`metrics.jsonl`, TensorBoard events).
    fn open_log(&self) -> Result<RunLog> {
        std::fs::create_dir_all(&self.cfg.output_dir)
            .with_context(|| format!("cannot create {}", self.cfg.output_dir.display()))?;
        RunLog::open(&self.cfg.output_dir, self.cfg.log.tensorboard)
    }

    fn loader(&self, epoch: u64, start: usize) -> Loader {
        let d = &self.cfg.data;
        let mut order: Vec<usize> = self
            .plan
            .order(epoch)
            .into_iter()
            .map(|i| i as usize)
            .collect();
        let mut batch_size = d.batch_size;
        if let Some(dd) = &self.dist {
            // Batch i of this rank = its slice of global batch i: positions stay global.
            let w = dd.launch.world_size;
            order = dist::shard::rank_slice(&order, d.batch_size, dd.launch.rank, w);
            batch_size /= w;
        }
        Loader::new(
            self.mix.clone(),
            self.tok.clone(),
            Arc::new(order),
            batch_size,
            false,
            start,
            BatchSpec {
                frames: d.frames,
                sampling: d.frame_sampling,
                seed: self.cfg.seed,
                epoch,
            },
            d.workers,
            d.prefetch,
        )
    }

    /// Evaluates on the eval set, if any.
    pub fn evaluate(&self) -> Result<Option<RetrievalMetrics>> {
        Ok(self
            .eval_similarity()?
            .map(|(set, sim)| eval::metrics(&set, &sim)))
    }

    /// The encoded eval set and its `[videos, texts]` similarity, if any.
    pub fn eval_similarity(&self) -> Result<Option<(eval::EncodedSet, Tensor)>> {
        let (Some(mix), Some(e)) = (&self.eval_mix, &self.cfg.eval) else {
            return Ok(None);
        };
        let set = eval::encode(
            &self.model,
            mix,
            &self.tok,
            e.frames,
            FrameSampling::Uniform,
            e.batch_size,
            self.device,
        )?;
        let sim = eval::similarity(&set, e.use_local, self.rwa_options());
        Ok(Some((set, sim)))
    }

    fn rwa_options(&self) -> RwaOptions {
        RwaOptions {
            scale: self.cfg.loss.rwa_scale,
            renormalize: self.cfg.loss.rwa_renormalize,
        }
    }

    /// Runs until the end (or `opts.stop_after`).
    pub fn run(&mut self, opts: &RunOptions) -> Result<TrainSummary> {
        let mut metrics = if self.is_main() {
            self.open_log()?
        } else {
            // Only rank 0 logs; the other ranks compute the same global values.
            RunLog::disabled()
        };
        let accum = self.cfg.optim.grad_accum;
        let mixed = if self.cfg.optim.bf16 && self.device.is_cuda() {
            Some(Kind::BFloat16)
        } else {
            None
        };
        let ctx = Ctx { train: true, mixed };
        let rwa = self
            .cfg
            .loss
            .rwa
            .then_some((self.rwa_options(), self.cfg.loss.local_temperature));
        let pb = if self.cfg.log.progress && self.is_main() {
            let pb = indicatif::ProgressBar::new(self.total_steps);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_position(self.state.step);
            pb
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut summary = TrainSummary::default();
        let mut loader = self.loader(self.state.epoch, self.state.next_batch as usize);
        let mut t_log = Instant::now();
        let mut samples_since = 0u64;
        let eval_epochs = self.cfg.eval.as_ref().map_or(0, |e| e.every_epochs as u64);
        let eval_steps = self.cfg.eval.as_ref().map_or(0, |e| e.every_steps);
        let model_ctx_seed = self.cfg.seed;
        let commitment_weight = self
            .cfg
            .model
            .video
            .region_learner
            .as_ref()
            .map_or(0.0, |r| r.commitment);
        let world = self.world_size() as u64;
        let rank = self.dist.as_ref().map_or(0, |d| d.launch.rank as u64);
        let spec = dist::shard::LossSpec {
            temperature: self.cfg.loss.temperature,
            rwa,
            rwa_weight: self.cfg.loss.rwa_weight,
        };

        while self.state.step < self.total_steps {
            let mut acc = [0f64; 6];
            let mut has_vq = false;
            let mut has_local = false;
            let mut epoch_ended = false;
            for micro in 0..accum {
                let (bi, hb) = match loader.next() {
                    Some(x) => x,
                    None => {
                        // Epoch end.
                        self.state.epoch += 1;
                        self.state.next_batch = 0;
                        loader = self.loader(self.state.epoch, 0);
                        epoch_ended = true;
                        if eval_epochs > 0 && self.state.epoch.is_multiple_of(eval_epochs) {
                            self.eval_and_log(&mut metrics, &mut summary)?;
                        }
                        loader.next().context("an epoch yielded no batch")?
                    }
                };
                let hb = hb
                    .with_context(|| format!("reading batch {bi} of epoch {}", self.state.epoch))?;
                self.state.next_batch = bi as u64 + 1;
                self.state.samples += hb.b as u64 * world;
                samples_since += hb.b as u64 * world;
                // Dropout stream: a function of (seed, step, micro, rank) so a resumed run
                // replays it.
                tch::manual_seed(
                    (model_ctx_seed.wrapping_mul(1_000_003)
                        ^ (self.state.step * accum as u64 + micro as u64)
                        ^ rank.wrapping_mul(0x9E37_79B9_7F4A_7C15)) as i64,
                );
                let batch = hb.to_device(self.device);
                let (emb, learned) = self.model.forward_full(&batch, ctx);
                if let Some(s) = &self.codebook_sync {
                    s.check()?;
                }
                if let Some(d) = &self.dist {
                    let commitment = learned
                        .as_ref()
                        .map(|l| (&l.commitment, commitment_weight, l.real_tokens));
                    let g = dist::shard::backward_global(
                        &d.pg,
                        &emb,
                        commitment,
                        &spec,
                        1.0 / accum as f64,
                    )?;
                    acc[0] += g.total;
                    acc[1] += g.global_v2t;
                    acc[2] += g.global_t2v;
                    if let (Some(a), Some(b)) = (g.local_v2t, g.local_t2v) {
                        has_local = true;
                        acc[3] += a;
                        acc[4] += b;
                    }
                    if let Some(c) = g.commitment {
                        has_vq = true;
                        acc[5] += c;
                    }
                    continue;
                }
                let terms = loss::losses(&emb, self.cfg.loss.temperature, rwa);
                let mut total = terms.total(self.cfg.loss.rwa_weight);
                if let Some(l) = &learned {
                    has_vq = true;
                    acc[5] += l.commitment.double_value(&[]);
                    if commitment_weight > 0.0 {
                        total += &l.commitment * commitment_weight;
                    }
                }
                (&total / accum as f64).backward();
                acc[0] += total.double_value(&[]);
                acc[1] += terms.global_v2t.double_value(&[]);
                acc[2] += terms.global_t2v.double_value(&[]);
                if let (Some(a), Some(b)) = (&terms.local_v2t, &terms.local_t2v) {
                    has_local = true;
                    acc[3] += a.double_value(&[]);
                    acc[4] += b.double_value(&[]);
                }
            }
            if let Some(d) = &self.dist {
                dist::shard::all_reduce_grads(&d.pg, &self.vs)?;
            }
            let grad_norm = self.opt.clip_grad_norm(self.cfg.optim.grad_clip);
            let lr = learning_rate(
                &self.cfg.optim,
                self.state.step,
                self.total_steps,
                self.steps_per_epoch,
            );
            self.opt.step(lr);
            self.opt.zero_grad();
            self.state.step += 1;
            let k = accum as f64;
            let secs = t_log.elapsed().as_secs_f64().max(1e-9);
            let mut log = StepLog {
                step: self.state.step,
                epoch: self.state.epoch,
                samples: self.state.samples,
                lr,
                loss: acc[0] / k,
                global_v2t: acc[1] / k,
                global_t2v: acc[2] / k,
                local_v2t: has_local.then_some(acc[3] / k),
                local_t2v: has_local.then_some(acc[4] / k),
                grad_norm,
                samples_per_s: samples_since as f64 / secs,
                vq_commitment: has_vq.then_some(acc[5] / k),
                codes_used: None,
                codebook_size: None,
                warning: None,
            };
            if !log.loss.is_finite() {
                bail!("loss is {} at step {}", log.loss, log.step);
            }
            pb.set_position(self.state.step);
            if self
                .state
                .step
                .is_multiple_of(self.cfg.log.every_steps.max(1))
                || self.state.step == self.total_steps
            {
                if let Some(rl) = self.model.video.region_learner() {
                    let (used, total) = rl.codebook.take_usage();
                    log.codes_used = Some(used);
                    log.codebook_size = Some(total);
                    if (used as f64) < CODEBOOK_COLLAPSE_FRACTION * total as f64 {
                        let w = format!(
                            "codebook collapse: {used} of {total} codes used since the last log \
                             line (< {:.0}%)",
                            CODEBOOK_COLLAPSE_FRACTION * 100.0
                        );
                        pb.suspend(|| eprintln!("warning: step {}: {w}", log.step));
                        log.warning = Some(w);
                    }
                }
                let codes = log
                    .codes_used
                    .zip(log.codebook_size)
                    .map(|(u, t)| format!(" codes {u}/{t}"))
                    .unwrap_or_default();
                pb.set_message(format!(
                    "loss {:.4} lr {:.2e} {:.1} samples/s{codes}",
                    log.loss, lr, log.samples_per_s
                ));
                metrics.write("train", &log)?;
                t_log = Instant::now();
                samples_since = 0;
            }
            summary.steps.push(log);
            if eval_steps > 0 && self.state.step.is_multiple_of(eval_steps) {
                self.eval_and_log(&mut metrics, &mut summary)?;
            }
            let s = self.cfg.log.save_every_steps;
            if epoch_ended || (s > 0 && self.state.step.is_multiple_of(s)) {
                self.save_periodic()?;
            }
            if opts.stop_after.is_some_and(|n| self.state.step >= n) {
                self.report_memory();
                self.save("last")?;
                pb.finish_and_clear();
                summary.state = self.state.clone();
                return Ok(summary);
            }
        }
        pb.finish_and_clear();
        self.report_memory();
        self.eval_and_log(&mut metrics, &mut summary)?;
        self.save_periodic()?;
        summary.state = self.state.clone();
        Ok(summary)
    }

    /// CPU: prints the peak resident memory of training (before evaluation and checkpoints,
    /// which the estimate does not cover) next to the estimate.
    fn report_memory(&self) {
        if !self.is_main() {
            return;
        }
        if let Some(line) = self.resident.and_then(|(r, est)| r.report(&est)) {
            eprintln!("{line}");
        }
    }

    /// Evaluates on the validation set (if any, and not already at this step), logs an `eval`
    /// record, and saves `best` when `eval.metric` improved. Rank 0 alone evaluates and picks
    /// `best`; the other ranks wait for it at the next collective.
    fn eval_and_log(&mut self, out: &mut RunLog, summary: &mut TrainSummary) -> Result<()> {
        if !self.is_main() || self.last_eval == Some(self.state.step) {
            return Ok(());
        }
        let Some(metric) = self.cfg.eval.as_ref().map(|e| e.metric) else {
            return Ok(());
        };
        let Some(m) = self.evaluate()? else {
            return Ok(());
        };
        self.last_eval = Some(self.state.step);
        let score = metric.score(&m);
        let best = self.state.best_score.is_none_or(|b| score > b);
        if best {
            self.state.best_score = Some(score);
            self.state.best_metric = Some(metric.name().into());
            self.state.best_step = Some(self.state.step);
        }
        let rec = EvalLog {
            step: self.state.step,
            epoch: self.state.epoch,
            samples: self.state.samples,
            t2v: m.t2v,
            v2t: m.v2t,
            metric: metric.name(),
            score,
            best,
        };
        out.write("eval", &rec)?;
        eprintln!(
            "eval at step {}: t2v R@1 {:.3} R@5 {:.3} R@10 {:.3}, {} {:.3}{}",
            rec.step,
            m.t2v.r1,
            m.t2v.r5,
            m.t2v.r10,
            rec.metric,
            score,
            if best { " (best)" } else { "" }
        );
        if best {
            self.save("best")?;
        }
        summary.eval = Some(m);
        summary.evals.push(rec);
        Ok(())
    }
}
