//! Trainer configuration: one TOML file (`examples/*.toml`), parsed into serde structs with
//! defaults, then validated before any heavy work so a bad config fails at start.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Top-level trainer config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed for data order, frame sampling, initialization and dropout.
    #[serde(default)]
    pub seed: u64,
    /// Where checkpoints (`last`, `best`, `step-N`) and `metrics.jsonl` go.
    pub output_dir: PathBuf,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Training data.
    pub data: DataConfig,
    /// Model sizes and pretrained weights.
    #[serde(default)]
    pub model: ModelConfig,
    /// Loss terms.
    #[serde(default)]
    pub loss: LossConfig,
    /// Optimizer and schedule.
    #[serde(default)]
    pub optim: OptimConfig,
    /// Optional evaluation during training (saves `best`).
    #[serde(default)]
    pub eval: Option<EvalConfig>,
    /// Logging and checkpoint cadence.
    #[serde(default)]
    pub log: LogConfig,
    /// The memory check at start (estimate vs. free device memory).
    #[serde(default)]
    pub memory: MemoryConfig,
}

fn default_device() -> String {
    "auto".into()
}

/// One dataset of a mixture: a directory of `shard-*.h5` files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Name used in logs.
    #[serde(default)]
    pub name: String,
    /// Directory with `shard-*.h5` (or a single shard file).
    pub shards: PathBuf,
    /// Share of the epoch with `data.mixing = "sample"` or `"alternate"` (relative to the
    /// other datasets' weights; 0 leaves the dataset out).
    #[serde(default = "one_f")]
    pub weight: f64,
}

/// How the datasets share an epoch (see `train::epoch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mixing {
    /// All items shuffled together: each dataset counts by its size.
    #[default]
    Concat,
    /// Each item drawn from a dataset chosen by weight (batches mix datasets).
    Sample,
    /// Each batch from one dataset, datasets taking turns by weight (DemoVLP, Frozen-in-Time).
    Alternate,
}

/// How frames of an item are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameSampling {
    /// One random frame per segment (pre-training: 1 random frame).
    Random,
    /// Uniformly spaced frames (fine-tuning and evaluation).
    Uniform,
}

/// Which caption of a several-caption item (MSR-VTT, MSVD) a training step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptionSampling {
    /// One caption drawn per item and epoch, seeded (Frozen-in-Time / DemoVLP).
    #[default]
    Random,
    /// Always the first caption.
    First,
    /// Every (video, caption) pair is an item of the epoch.
    All,
}

/// Training data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Datasets concatenated into one index space (WebVid + CC3M as DemoVLP does).
    pub datasets: Vec<DatasetConfig>,
    /// Frames per item (1 for pre-training, 8 for fine-tuning); images always give 1.
    #[serde(default = "one")]
    pub frames: usize,
    /// `random` or `uniform`.
    #[serde(default = "default_sampling")]
    pub frame_sampling: FrameSampling,
    /// Micro-batch size (one forward/backward).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Reader threads.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Batches buffered per reader thread.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Maximum caption length in tokens (with [CLS] and [SEP]).
    #[serde(default = "default_text_len")]
    pub max_text_len: usize,
    /// Shuffle every epoch.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Items with several captions: `random` (one per step), `first`, or `all` (every pair).
    #[serde(default)]
    pub captions: CaptionSampling,
    /// `concat` (default), `sample` or `alternate`: how datasets share an epoch.
    #[serde(default)]
    pub mixing: Mixing,
    /// Items per epoch (DemoVLP's `max_samples_per_epoch`); unset: one pass over all items.
    /// Later epochs continue where the previous ones stopped in each dataset.
    #[serde(default)]
    pub samples_per_epoch: Option<usize>,
    /// Shard files held open per dataset (least recently used closed first); keep the sum over
    /// datasets and the eval set well under `ulimit -n`.
    #[serde(default = "default_max_open_shards")]
    pub max_open_shards: usize,
    /// Shards whose items are shuffled together (a batch then reads ≤ 2× this many shard files,
    /// so the open-shard cache serves it); 0: one shuffle over all items.
    #[serde(default = "default_block_shards")]
    pub shuffle_block_shards: usize,
}

fn default_block_shards() -> usize {
    32
}

fn default_max_open_shards() -> usize {
    crate::train::shard_cache::DEFAULT_MAX_OPEN
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_sampling() -> FrameSampling {
    FrameSampling::Random
}
fn default_batch() -> usize {
    32
}
fn default_workers() -> usize {
    2
}
fn default_prefetch() -> usize {
    2
}
fn default_text_len() -> usize {
    32
}

/// Model: two towers and the joint space.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Joint embedding size.
    #[serde(default = "default_embed")]
    pub embed_dim: usize,
    /// Text tower.
    #[serde(default)]
    pub text: TextConfig,
    /// Video tower.
    #[serde(default)]
    pub video: crate::train::video::VideoConfig,
    /// ReLU on the text tower's last hidden state before `text_proj`. Off by default (a ReLU
    /// discards the negative half of every DistilBERT feature before a linear map that could
    /// learn any sign); the public DemoVLP code has one (`txt_proj = Sequential(ReLU, Linear)`),
    /// so its released weights expect `true`.
    #[serde(default)]
    pub text_proj_relu: bool,
}

fn default_embed() -> usize {
    256
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            embed_dim: 256,
            text: TextConfig::default(),
            video: Default::default(),
            text_proj_relu: false,
        }
    }
}

/// Text tower: a Hugging Face model directory, or its files given one by one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// HF model directory (config.json, model.safetensors, tokenizer.json or vocab.txt).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Overrides `dir/config.json`.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Overrides `dir/model.safetensors`.
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Overrides the tokenizer (`tokenizer.json` or `vocab.txt`).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Load the pretrained weights (false: random init, for tests).
    #[serde(default = "yes")]
    pub load_weights: bool,
    /// Lower-case text when the tokenizer comes from a bare vocab.txt.
    #[serde(default = "yes")]
    pub lowercase: bool,
}

impl TextConfig {
    fn pick(&self, explicit: &Option<PathBuf>, names: &[&str]) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return Some(p.clone());
        }
        let dir = self.dir.as_ref()?;
        names.iter().map(|n| dir.join(n)).find(|p| p.exists())
    }
    /// Path of the HF config.json.
    pub fn config_path(&self) -> Result<PathBuf> {
        self.pick(&self.config, &["config.json"])
            .context("model.text: no config.json (set `dir` or `config`)")
    }
    /// Path of the weights.
    pub fn weights_path(&self) -> Result<PathBuf> {
        self.pick(&self.weights, &["model.safetensors"]).context(
            "model.text: no model.safetensors (set `dir` or `weights`, or load_weights = false)",
        )
    }
    /// Path of tokenizer.json or vocab.txt.
    pub fn tokenizer_path(&self) -> Result<PathBuf> {
        self.pick(&self.tokenizer, &["tokenizer.json", "vocab.txt"])
            .context("model.text: no tokenizer.json or vocab.txt (set `dir` or `tokenizer`)")
    }
}

/// Loss terms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Temperature of the global InfoNCE (DemoVLP: 0.05).
    #[serde(default = "default_temp")]
    pub temperature: f64,
    /// Region-word alignment terms on/off.
    #[serde(default = "yes")]
    pub rwa: bool,
    /// Weight of the two RWA terms.
    #[serde(default = "one_f")]
    pub rwa_weight: f64,
    /// Temperature of the RWA contrastive losses.
    #[serde(default = "default_temp")]
    pub local_temperature: f64,
    /// Scale λ applied to cosines inside the alignment softmax (paper formula: 1).
    #[serde(default = "one_f")]
    pub rwa_scale: f64,
    /// Renormalize the weights kept by the mean-threshold refinement (public code: yes).
    #[serde(default)]
    pub rwa_renormalize: bool,
}

fn default_temp() -> f64 {
    0.05
}
fn one_f() -> f64 {
    1.0
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            temperature: 0.05,
            rwa: true,
            rwa_weight: 1.0,
            local_temperature: 0.05,
            rwa_scale: 1.0,
            rwa_renormalize: false,
        }
    }
}

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Constant.
    Constant,
    /// Multiply by `gamma` at each milestone (epochs).
    Step,
    /// Cosine to `min_lr` at the last step.
    Cosine,
}

/// Optimizer and schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Decoupled weight decay (not applied to biases, norms, embeddings, [CLS]).
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Adam β1, β2.
    #[serde(default = "default_betas")]
    pub betas: (f64, f64),
    /// Adam ε.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Max global gradient norm (0: off).
    #[serde(default = "one_f")]
    pub grad_clip: f64,
    /// Micro-batches per optimizer step.
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// Linear warm-up steps.
    #[serde(default)]
    pub warmup_steps: u64,
    /// `constant`, `step` or `cosine`.
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Step schedule milestones, in epochs.
    #[serde(default)]
    pub milestones: Vec<f64>,
    /// Step schedule factor.
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Cosine floor.
    #[serde(default)]
    pub min_lr: f64,
    /// Epochs to train.
    #[serde(default = "one")]
    pub epochs: usize,
    /// Optional cap on optimizer steps (overrides epochs when smaller).
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// bf16 mixed precision (autocast-style) on CUDA.
    #[serde(default = "yes")]
    pub bf16: bool,
}

fn default_lr() -> f64 {
    1e-4
}
fn default_wd() -> f64 {
    0.01
}
fn default_betas() -> (f64, f64) {
    (0.9, 0.999)
}
fn default_eps() -> f64 {
    1e-8
}
fn default_schedule() -> Schedule {
    Schedule::Cosine
}
fn default_gamma() -> f64 {
    0.1
}

impl Default for OptimConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// Evaluation during training.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Directory with the evaluation shards.
    pub shards: PathBuf,
    /// Frames per item at evaluation.
    #[serde(default = "eight")]
    pub frames: usize,
    /// Batch size for encoding.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Evaluate every N epochs (0: not at epoch ends). Evaluation also runs at the end.
    #[serde(default = "one")]
    pub every_epochs: usize,
    /// Evaluate every N optimizer steps (0: off), alongside `every_epochs`.
    #[serde(default)]
    pub every_steps: u64,
    /// The score that picks the `best` checkpoint.
    #[serde(default)]
    pub metric: BestMetric,
    /// Add the RWA similarity to the global one.
    #[serde(default = "yes")]
    pub use_local: bool,
}

fn eight() -> usize {
    8
}

/// The evaluation score that selects the `best` checkpoint (higher is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BestMetric {
    /// Text→video R@1 + R@5 + R@10 (the benchmark sum DemoVLP reports).
    #[default]
    T2vRsum,
    /// R@1 + R@5 + R@10 of both directions.
    Rsum,
    /// Text→video R@1.
    T2vR1,
    /// Video→text R@1.
    V2tR1,
}

impl BestMetric {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            BestMetric::T2vRsum => "t2v_rsum",
            BestMetric::Rsum => "rsum",
            BestMetric::T2vR1 => "t2v_r1",
            BestMetric::V2tR1 => "v2t_r1",
        }
    }

    /// The score of an evaluation.
    pub fn score(self, m: &crate::train::loss::RetrievalMetrics) -> f64 {
        let sum = |r: &crate::train::loss::Recall| r.r1 + r.r5 + r.r10;
        match self {
            BestMetric::T2vRsum => sum(&m.t2v),
            BestMetric::Rsum => sum(&m.t2v) + sum(&m.v2t),
            BestMetric::T2vR1 => m.t2v.r1,
            BestMetric::V2tR1 => m.v2t.r1,
        }
    }
}

/// Logging and checkpoint cadence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Write a metrics line every N optimizer steps.
    #[serde(default = "ten")]
    pub every_steps: u64,
    /// Save a checkpoint every N optimizer steps (0: only at epoch ends and at the end): `last`,
    /// and with `keep_last` > 0 also `step-N`.
    #[serde(default)]
    pub save_every_steps: u64,
    /// Keep the newest k step checkpoints `step-N` (older ones are deleted; `best` and `last`
    /// always stay). 0: no step checkpoints, `last` is overwritten.
    #[serde(default)]
    pub keep_last: usize,
    /// Also write the metrics as TensorBoard event files (`events.out.tfevents.*`).
    #[serde(default = "yes")]
    pub tensorboard: bool,
    /// Show a progress bar.
    #[serde(default = "yes")]
    pub progress: bool,
}

fn ten() -> u64 {
    10
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            every_steps: 10,
            save_every_steps: 0,
            keep_last: 0,
            tensorboard: true,
            progress: true,
        }
    }
}

/// What to do when the memory estimate exceeds the device's free memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryCheck {
    /// Stop before training, with the estimate and what to change.
    #[default]
    Refuse,
    /// Print the same message as a warning and train anyway.
    Warn,
    /// Print the estimate only.
    Off,
}

/// The memory check at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// `refuse` (default), `warn` or `off`.
    #[serde(default)]
    pub check: MemoryCheck,
    /// Compare with this many GiB instead of the free memory the device reports (a share of a
    /// GPU, or a node whose free memory is misleading).
    #[serde(default)]
    pub limit_gib: Option<f64>,
}

impl TrainConfig {
    /// Reads and validates a TOML config; relative paths resolve against the config's folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: TrainConfig =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("invalid config {}", path.display()))?;
        Ok(cfg)
    }

    /// Parses a TOML string (tests) and validates it.
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: TrainConfig = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values and that every input file exists.
    pub fn validate(&self) -> Result<()> {
        let d = &self.data;
        if d.datasets.is_empty() {
            bail!("data.datasets is empty");
        }
        for ds in &d.datasets {
            if !ds.weight.is_finite() || ds.weight < 0.0 {
                bail!(
                    "dataset {:?}: weight {} must be finite and ≥ 0",
                    ds.name,
                    ds.weight
                );
            }
            if !ds.shards.exists() {
                bail!(
                    "dataset {:?}: shards path {} does not exist",
                    ds.name,
                    ds.shards.display()
                );
            }
        }
        if d.frames == 0 || d.batch_size < 2 || d.workers == 0 || d.max_text_len < 3 {
            bail!(
                "data: frames ≥ 1, batch_size ≥ 2, workers ≥ 1 and max_text_len ≥ 3 are required"
            );
        }
        if d.datasets.iter().all(|ds| ds.weight == 0.0) {
            bail!("data.datasets: every weight is 0");
        }
        if d.mixing == Mixing::Concat && d.datasets.iter().any(|ds| ds.weight != 1.0) {
            bail!(
                "data.datasets[].weight needs data.mixing = \"sample\" or \"alternate\" \
                 (with \"concat\" each dataset counts by its size)"
            );
        }
        if d.samples_per_epoch.is_some_and(|s| s < d.batch_size) {
            bail!("data.samples_per_epoch must hold at least one batch (≥ data.batch_size)");
        }
        if d.max_open_shards == 0 {
            bail!("data.max_open_shards must be ≥ 1");
        }
        let o = &self.optim;
        if o.lr.is_nan() || o.lr <= 0.0 || o.grad_accum == 0 || o.epochs == 0 {
            bail!("optim: lr > 0, grad_accum ≥ 1 and epochs ≥ 1 are required");
        }
        if !(0.0..1.0).contains(&o.betas.0) || !(0.0..1.0).contains(&o.betas.1) {
            bail!("optim.betas must be in [0, 1)");
        }
        if o.schedule == Schedule::Step && o.milestones.windows(2).any(|w| w[0] > w[1]) {
            bail!("optim.milestones must be sorted");
        }
        let l = &self.loss;
        if l.temperature.is_nan()
            || l.temperature <= 0.0
            || l.local_temperature.is_nan()
            || l.local_temperature <= 0.0
        {
            bail!("loss temperatures must be > 0");
        }
        self.model.video.validate()?;
        if self.model.video.max_frames < d.frames {
            bail!(
                "model.video.max_frames ({}) < data.frames ({})",
                self.model.video.max_frames,
                d.frames
            );
        }
        let t = &self.model.text;
        let cfgp = t.config_path()?;
        if !cfgp.exists() {
            bail!("model.text config {} does not exist", cfgp.display());
        }
        let tp = t.tokenizer_path()?;
        if !tp.exists() {
            bail!("model.text tokenizer {} does not exist", tp.display());
        }
        if t.load_weights {
            let w = t.weights_path()?;
            if !w.exists() {
                bail!("model.text weights {} do not exist", w.display());
            }
        }
        if let Some(p) = &self.model.video.init_vit {
            if !p.exists() {
                bail!("model.video.init_vit {} does not exist", p.display());
            }
        }
        if let Some(e) = &self.eval {
            if !e.shards.exists() {
                bail!("eval.shards {} does not exist", e.shards.display());
            }
            if e.frames > self.model.video.max_frames {
                bail!("eval.frames > model.video.max_frames");
            }
        }
        if self.log.keep_last > 0 && self.log.save_every_steps == 0 {
            bail!(
                "log.keep_last = {} keeps step checkpoints, but log.save_every_steps = 0 writes \
                 none: set log.save_every_steps (e.g. 2000)",
                self.log.keep_last
            );
        }
        if let Some(g) = self.memory.limit_gib {
            if g.is_nan() || g <= 0.0 {
                bail!("memory.limit_gib must be > 0");
            }
        }
        crate::train::device_from_str(&self.device)?;
        Ok(())
    }
}
