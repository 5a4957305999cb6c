//! RegionLearner (Yan et al., "Video-Text Pre-training with Learned Regions", AAAI 2023):
//! learns S implicit regions per frame from a grid of patch features, in three steps.
//!
//! 1. **Quantization** — every patch token z (after the video tower's `feature_embed`, so the
//!    codebook lives in the transformer width) snaps to its nearest code (L2) of a K-entry
//!    codebook; the codebook is a buffer updated by exponential moving averages, and gradients
//!    pass straight through (`z + sg(e − z)`).
//! 2. **Aggregation** — a 3×3 convolution over the quantized `[C, Hg, Wg]` map gives S masks;
//!    region s = mean over the grid of `x · mask_s` (masked average pooling).
//! 3. **Interaction** — `interaction_depth` attention layers over the T·S region tokens of a
//!    video.
//!
//! The S·T tokens then go through the existing video encoder (temporal embedding + a learned
//! embedding per region slot, no box location since learned regions have none) and the losses
//! (RWA aligns words with the encoder outputs of the learned regions when `loss.rwa` is on).
//!
//! EMA update of one training forward (γ = the decay of this update, one-hot assignments a):
//! `N ← γN + (1−γ)Σa`, `m ← γm + (1−γ)aᵀz`, `Ñ = (N + ε)/(ΣN + Kε)·ΣN`, `e = m/Ñ`; the
//! quantized output uses the updated codes. `tests/train/region_learner_reference.py` is the
//! numpy reference of this file's quantize / EMA update / aggregation.
//!
//! Read against the public code (showlab/Region_Learner, `model/RegionLearner/*.py`,
//! `model/helper.py`, `model/video_transformer.py`); what we mirror and where we deviate:
//! - Same: L2 distance and argmin; Laplace smoothing with ε = 1e-5; no dead-code restart; quantization also at evaluation
//!   (without updates); raw (unnormalized) conv masks with bias; pooled by a plain mean over
//!   the grid; interaction = multi-head attention with bias-free qkv, 8 heads, no residual or
//!   norm, layers applied one after the other.
//! - Codebook start (`init`): the public codebook is N(0, 1) with `cluster_size` and
//!   `embed_avg` at zero, so every code the first update does not choose becomes the zero
//!   vector, and with inputs at a scale unrelated to N(0, 1) (our `feature_embed` starts near
//!   zero) the first update chooses one code: the codebook collapses at step 1. `init =
//!   "random"` keeps that behaviour; the default `init = "data"` seeds the codes with K tokens of
//!   the first training batch and starts `embed_avg` = codes, `cluster_size` = 1, so a code is
//!   the running mean of its seed and what it was assigned, and an unused code stays where it
//!   is (m and N decay together) instead of jumping to the origin. Either way the training log
//!   reports the codes in use and warns below 10%.
//! - Decay schedule: the public quantizer starts at γ = 0.1 and has
//!   `set_decay_updates(u)`: γ = min(0.1·u, 0.99), but nothing calls it, so it trains at a
//!   constant 0.1 — our default (`decay_schedule = "constant"`). `"ramp"` applies the
//!   defined-but-unused ramp over EMA updates u. Measured on the planted grid task (a PyTorch
//!   prototype of this module, 12 epochs): with the ramp to 0.99 the codes lag the projection
//!   being trained in front of them and retrieval stays at chance, while constant 0.1 trains
//!   as fast as no quantization at all. The update count is a buffer in the checkpoint either
//!   way, so resume is exact.
//! - Commitment loss β·‖z − sg(e)‖²: absent from the public code; here `commitment` (default 0,
//!   as public) adds it to the training loss.
//! - Position: the public model inserts RegionLearner after the last block of its trainable
//!   ViT and outputs `[CLS] + mean(regions)`. Our grid features come from a frozen extractor,
//!   so RegionLearner runs on the projected patch features *before* our video transformer,
//!   whose [CLS] output is the video embedding as for detector regions. The region tokens pass
//!   a LayerNorm (`video.region_norm`) before the slot and temporal embeddings are added — the
//!   public code's region tokens meet the ViT's final LayerNorm instead; without it the pooled
//!   regions (a product of small projected patches and conv masks) are orders of magnitude
//!   below those embeddings at initialization and training does not start.
//! - Data parallel: the counts and sums of an EMA update are summed over the processes and the
//!   `data` init seeds from the gathered batch ([`CodebookSync`]), so every process keeps the
//!   codes one process with the whole global batch would (`tests/train_dist.rs`); with
//!   per-process statistics the codebooks of the ranks would drift apart.

use std::rc::Rc;

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::train::layers::{self, Ctx};

/// How the EMA decay γ evolves with the number of codebook updates u (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecaySchedule {
    /// γ = min(ema_decay · u, ema_decay_max) (the public `set_decay_updates`).
    Ramp,
    /// γ = ema_decay (what the public training effectively runs).
    Constant,
}

/// How the codebook starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodebookInit {
    /// At the first training update: codes = K tokens of that batch (sampled without
    /// replacement while it lasts, jittered when K exceeds the batch), `embed_avg` = codes,
    /// `cluster_size` = 1.
    Data,
    /// Codes ~ N(0, 1), statistics at zero (the public code).
    Random,
}

/// RegionLearner knobs (defaults: the paper's codebook of 2048, 8 regions, 1 interaction
/// layer).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionLearnerConfig {
    /// Codebook entries K.
    #[serde(default = "k2048")]
    pub codebook_size: i64,
    /// Learned regions S per frame.
    #[serde(default = "s8")]
    pub regions: i64,
    /// Attention layers over the T·S region tokens (0: none).
    #[serde(default = "one")]
    pub interaction_depth: i64,
    /// Heads of the interaction attention.
    #[serde(default = "s8")]
    pub interaction_heads: i64,
    /// Starting (or constant) EMA decay γ.
    #[serde(default = "decay0")]
    pub ema_decay: f64,
    /// Upper bound of the ramp.
    #[serde(default = "decay_max")]
    pub ema_decay_max: f64,
    /// `constant` (default, as the public code trains) or `ramp`.
    #[serde(default = "constant")]
    pub decay_schedule: DecaySchedule,
    /// Laplace smoothing ε of the cluster sizes.
    #[serde(default = "eps5")]
    pub eps: f64,
    /// Weight β of the commitment loss ‖z − sg(e)‖² (0: off, as the public code).
    #[serde(default)]
    pub commitment: f64,
    /// `data` (from the first training batch) or `random` (the public code).
    #[serde(default = "data_init")]
    pub init: CodebookInit,
}

fn data_init() -> CodebookInit {
    CodebookInit::Data
}

fn k2048() -> i64 {
    2048
}
fn s8() -> i64 {
    8
}
fn one() -> i64 {
    1
}
fn decay0() -> f64 {
    0.1
}
fn decay_max() -> f64 {
    0.99
}
fn constant() -> DecaySchedule {
    DecaySchedule::Constant
}
fn eps5() -> f64 {
    1e-5
}

impl Default for RegionLearnerConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl RegionLearnerConfig {
    /// Checks values against the token width `dim`.
    pub fn validate(&self, dim: i64) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.codebook_size >= 1 && self.regions >= 1 && self.interaction_depth >= 0,
            "model.video.region_learner: codebook_size ≥ 1, regions ≥ 1, interaction_depth ≥ 0"
        );
        anyhow::ensure!(
            self.interaction_depth == 0
                || (self.interaction_heads > 0 && dim % self.interaction_heads == 0),
            "model.video.region_learner.interaction_heads ({}) must divide hidden_size ({dim})",
            self.interaction_heads
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.ema_decay)
                && (0.0..1.0).contains(&self.ema_decay_max)
                && self.eps > 0.0
                && self.commitment >= 0.0,
            "model.video.region_learner: ema_decay, ema_decay_max in [0, 1), eps > 0, commitment ≥ 0"
        );
        Ok(())
    }

    /// γ of the u-th update (1-based).
    pub fn decay_at(&self, update: u64) -> f64 {
        match self.decay_schedule {
            DecaySchedule::Constant => self.ema_decay,
            DecaySchedule::Ramp => (self.ema_decay * update as f64).min(self.ema_decay_max),
        }
    }
}

/// The collectives a data-parallel run lends the codebook, so that its EMA update (which runs
/// inside the forward pass) uses the global batch. Called in the same order on every process.
pub trait CodebookSync {
    /// Sums `t` over the processes, in place.
    fn sum(&self, t: &Tensor);
    /// Every process's `t` (same trailing dims, any number of rows), concatenated along dim 0
    /// in rank order: the global batch's rows in single-process order.
    fn gather(&self, t: &Tensor) -> Tensor;
    /// Process 0's `t`, in place on every process.
    fn broadcast(&self, t: &Tensor);
}

/// The EMA codebook. Its state lives in the var store as non-trainable variables
/// (`embed`, `cluster_size`, `embed_avg`, `updates`), so checkpoints hold it.
pub struct Codebook {
    embed: Tensor,
    cluster_size: Tensor,
    embed_avg: Tensor,
    updates: Tensor,
    /// Assignments per code since the last [`Codebook::take_usage`] (not checkpointed).
    usage: Tensor,
    cfg: RegionLearnerConfig,
    /// The data-parallel group's collectives (none in a single process).
    sync: Option<Rc<dyn CodebookSync>>,
}

/// Output of [`Codebook::quantize`].
pub struct Quantized {
    /// Straight-through quantized tokens `[N, C]` (f32): forward = codes, backward = identity.
    pub tokens: Tensor,
    /// Chosen code per token `[N]` (i64).
    pub indices: Tensor,
    /// ‖z − sg(e)‖² averaged over the real tokens and channels.
    pub commitment: Tensor,
    /// Real tokens (not of padding frames): what `commitment` averages over.
    pub real_tokens: i64,
}

impl Codebook {
    /// Creates the buffers under `p` (codes ~ N(0, 1)).
    pub fn new(p: nn::Path, dim: i64, cfg: &RegionLearnerConfig) -> Self {
        let k = cfg.codebook_size;
        let embed = p.zeros_no_train("embed", &[k, dim]);
        tch::no_grad(|| {
            embed
                .shallow_clone()
                .copy_(&Tensor::randn([k, dim], (Kind::Float, p.device())))
        });
        Self {
            embed,
            cluster_size: p.zeros_no_train("cluster_size", &[k]),
            embed_avg: p.zeros_no_train("embed_avg", &[k, dim]),
            updates: p.zeros_no_train("updates", &[1]),
            usage: Tensor::zeros([k], (Kind::Float, p.device())),
            cfg: cfg.clone(),
            sync: None,
        }
    }

    /// Makes every EMA update use the statistics of all processes of a data-parallel run.
    pub fn set_sync(&mut self, sync: Rc<dyn CodebookSync>) {
        self.sync = Some(sync);
    }

    /// Codes `[K, C]`.
    pub fn codes(&self) -> Tensor {
        self.embed.detach()
    }

    /// Seeds the codes with tokens of `z [N, C]` (the `data` init).
    fn seed_from(&self, z: &Tensor) {
        let k = self.cfg.codebook_size;
        let n = z.size()[0];
        tch::no_grad(|| {
            let reps = (k + n - 1) / n;
            let perms: Vec<Tensor> = (0..reps)
                .map(|_| Tensor::randperm(n, (Kind::Int64, z.device())))
                .collect();
            let idx = Tensor::cat(&perms, 0).narrow(0, 0, k);
            let mut seeds = z.detach().index_select(0, &idx);
            if k > n {
                // Repeated tokens would tie forever: separate them slightly.
                let scale = z.std(true).double_value(&[]).max(1e-6) * 1e-3;
                seeds = &seeds + seeds.randn_like() * scale;
            }
            self.embed.shallow_clone().copy_(&seeds);
            self.embed_avg.shallow_clone().copy_(&seeds);
            let _ = self.cluster_size.shallow_clone().fill_(1.0);
        });
    }

    /// Nearest code (L2) of each row of `z [N, C]`: `(indices [N], one-hot [N, K])`.
    fn assign(&self, z: &Tensor) -> (Tensor, Tensor) {
        tch::no_grad(|| {
            let e = self.embed.detach();
            let dist = z.pow_tensor_scalar(2).sum_dim_intlist(1, true, Kind::Float)
                + e.pow_tensor_scalar(2)
                    .sum_dim_intlist(1, false, Kind::Float)
                - z.matmul(&e.tr()) * 2.0;
            let idx = dist.argmin(1, false);
            let onehot = idx.one_hot(self.cfg.codebook_size).to_kind(Kind::Float);
            (idx, onehot)
        })
    }

    /// One EMA update from assignments `onehot [N, K]` of `z [N, C]`.
    fn ema_update(&self, z: &Tensor, onehot: &Tensor) {
        let k = self.cfg.codebook_size as f64;
        tch::no_grad(|| {
            let u = self.updates() + 1;
            let g = self.cfg.decay_at(u);
            let mut counts = onehot.sum_dim_intlist(0, false, Kind::Float);
            let mut sums = onehot.tr().matmul(&z.detach());
            if let Some(sync) = &self.sync {
                // One collective for both: [K, 1 + C].
                let both = Tensor::cat(&[counts.unsqueeze(1), sums], 1);
                sync.sum(&both);
                counts = both.select(1, 0);
                sums = both.narrow(1, 1, both.size()[1] - 1);
            }
            let n = &self.cluster_size * g + &counts * (1.0 - g);
            let m = &self.embed_avg * g + sums * (1.0 - g);
            let total = n.sum(Kind::Float);
            let smoothed = (&n + self.cfg.eps) / (&total + k * self.cfg.eps) * &total;
            let e = &m / smoothed.unsqueeze(1);
            self.cluster_size.shallow_clone().copy_(&n);
            self.embed_avg.shallow_clone().copy_(&m);
            self.embed.shallow_clone().copy_(&e);
            let _ = self.updates.shallow_clone().fill_(u as f64);
            let _ = self.usage.shallow_clone().g_add_(&counts);
        });
    }

    /// Quantizes `z [N, C]`; with `update` (training), first applies one EMA update from this
    /// batch's assignments (seeding the codes first under the `data` init), then quantizes
    /// with the updated codes, as the public quantizer does. `real [N]` (1 = real, 0 = a token
    /// of a padding frame; absent: all real) keeps padding out of the codebook's statistics and
    /// the commitment term, so a video's codes do not depend on the frames of its batchmates.
    pub fn quantize(&self, z: &Tensor, update: bool, real: Option<&Tensor>) -> Quantized {
        let z = z.to_kind(Kind::Float);
        let real_z = real.map(|r| z.index_select(0, &r.gt(0.5).nonzero().squeeze_dim(1)));
        let real_z = real_z.as_ref().unwrap_or(&z);
        if update && self.cfg.init == CodebookInit::Data && self.updates() == 0 {
            match &self.sync {
                None => self.seed_from(real_z),
                Some(sync) => {
                    // Seeds drawn from the global batch by process 0 (whose random stream is
                    // the single process's), then copied to the others.
                    self.seed_from(&sync.gather(real_z));
                    sync.broadcast(&self.embed);
                    tch::no_grad(|| self.embed_avg.shallow_clone().copy_(&self.embed));
                }
            }
        }
        let (indices, onehot) = self.assign(&z);
        if update {
            match real {
                Some(r) => self.ema_update(&z, &(&onehot * r.unsqueeze(1))),
                None => self.ema_update(&z, &onehot),
            }
        }
        let q = onehot.matmul(&self.embed.detach());
        let sq = (&z - &q).pow_tensor_scalar(2);
        let (commitment, real_tokens) = match real {
            Some(r) => {
                let n = real_z.size()[0];
                let per_token = sq.mean_dim(1, false, Kind::Float);
                ((per_token * r).sum(Kind::Float) / n.max(1) as f64, n)
            }
            None => (sq.mean(Kind::Float), z.size()[0]),
        };
        let tokens = &z + (&q - &z).detach();
        Quantized {
            tokens,
            indices,
            commitment,
            real_tokens,
        }
    }

    /// Sets the codebook state (tests, the numpy reference): codes, cluster sizes, running
    /// sums and the number of updates done.
    pub fn set_state(
        &self,
        embed: &Tensor,
        cluster_size: &Tensor,
        embed_avg: &Tensor,
        updates: u64,
    ) {
        tch::no_grad(|| {
            self.embed.shallow_clone().copy_(embed);
            self.cluster_size.shallow_clone().copy_(cluster_size);
            self.embed_avg.shallow_clone().copy_(embed_avg);
            let _ = self.updates.shallow_clone().fill_(updates as f64);
        });
    }

    /// `(embed, cluster_size, embed_avg)` (copies).
    pub fn state(&self) -> (Tensor, Tensor, Tensor) {
        (
            self.embed.detach().copy(),
            self.cluster_size.detach().copy(),
            self.embed_avg.detach().copy(),
        )
    }

    /// `(codes assigned at least once, K)` since the last call (training forwards only), and
    /// resets the counts.
    pub fn take_usage(&self) -> (u64, u64) {
        let used = tch::no_grad(|| self.usage.gt(0.0).sum(Kind::Int64).int64_value(&[])) as u64;
        let _ = self.usage.shallow_clone().zero_();
        (used, self.cfg.codebook_size as u64)
    }

    /// EMA updates applied so far.
    pub fn updates(&self) -> u64 {
        self.updates.double_value(&[0]) as u64
    }
}

/// Aggregation: 3×3 conv → S masks; masked average pooling. `x [N, C, H, W]` →
/// `(regions [N, S, C], masks [N, S, H, W])`.
pub fn aggregate(x: &Tensor, weight: &Tensor, bias: &Tensor) -> (Tensor, Tensor) {
    let (n, c, h, w) = x.size4().expect("x [N,C,H,W]");
    let s = weight.size()[0];
    let masks = x.conv2d(weight, Some(bias), [1, 1], [1, 1], [1, 1], 1);
    let regions = masks
        .view([n, s, h * w])
        .matmul(&x.view([n, c, h * w]).transpose(1, 2))
        / (h * w) as f64;
    (regions, masks)
}

struct Interaction {
    qkv: nn::Linear,
    proj: nn::Linear,
    heads: i64,
}

/// The RegionLearner module.
pub struct RegionLearner {
    /// The EMA codebook.
    pub codebook: Codebook,
    agg_weight: Tensor,
    agg_bias: Tensor,
    interaction: Vec<Interaction>,
    /// Its config.
    pub config: RegionLearnerConfig,
}

/// Output of [`RegionLearner::forward`].
pub struct RegionLearnerOutput {
    /// Region tokens `[B, T*S, C]` (after interaction).
    pub regions: Tensor,
    /// Masks `[B*T, S, Hg, Wg]`.
    pub masks: Tensor,
    /// Codes `[B*T, Hg*Wg]`.
    pub indices: Tensor,
    /// Commitment term (unweighted).
    pub commitment: Tensor,
    /// Real patch tokens the commitment averages over.
    pub real_tokens: i64,
}

impl RegionLearner {
    /// Builds the module under `p` for tokens of width `dim`.
    pub fn new(p: nn::Path, dim: i64, cfg: &RegionLearnerConfig) -> Self {
        let s = cfg.regions;
        // PyTorch's Conv2d default init: U(±1/√fan_in) for weight and bias.
        let bound = 1.0 / ((dim * 9) as f64).sqrt();
        let init = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let lin = |p: nn::Path, i: i64, o: i64, bias: bool| {
            nn::linear(
                p,
                i,
                o,
                nn::LinearConfig {
                    ws_init: nn::Init::Randn {
                        mean: 0.0,
                        stdev: 0.02,
                    },
                    bs_init: Some(nn::Init::Const(0.0)),
                    bias,
                },
            )
        };
        Self {
            codebook: Codebook::new(&p / "codebook", dim, cfg),
            agg_weight: (&p / "aggregation").var("weight", &[s, dim, 3, 3], init),
            agg_bias: (&p / "aggregation").var("bias", &[s], init),
            interaction: (0..cfg.interaction_depth)
                .map(|i| {
                    let q = &p / "interaction" / i;
                    Interaction {
                        qkv: lin(&q / "qkv", dim, 3 * dim, false),
                        proj: lin(&q / "proj", dim, dim, true),
                        heads: cfg.interaction_heads,
                    }
                })
                .collect(),
            config: cfg.clone(),
        }
    }

    /// `z [B*T, Hg*Wg, C]` patch tokens of `b` videos of `t` frames → regions.
    /// `real_frames [B*T]` (1 = real, 0 = padding of a video with fewer frames; absent: all
    /// real) keeps padding frames out of the codebook and of the interaction's keys.
    /// EMA updates happen only when `ctx.train`.
    pub fn forward(
        &self,
        z: &Tensor,
        grid_hw: (i64, i64),
        t: i64,
        real_frames: Option<&Tensor>,
        ctx: Ctx,
    ) -> RegionLearnerOutput {
        let (bt, p, c) = z.size3().expect("z [BT,P,C]");
        let (h, w) = grid_hw;
        assert_eq!(p, h * w, "grid {h}x{w} does not match {p} patches");
        let real_tokens = real_frames.map(|r| r.unsqueeze(1).expand([bt, p], false).reshape([-1]));
        let q = self
            .codebook
            .quantize(&z.view([bt * p, c]), ctx.train, real_tokens.as_ref());
        let x = q
            .tokens
            .view([bt, p, c])
            .transpose(1, 2)
            .contiguous()
            .view([bt, c, h, w]);
        let (regions, masks) = aggregate(&x, &self.agg_weight, &self.agg_bias);
        let s = self.config.regions;
        let mut r = regions.view([bt / t, t * s, c]);
        let keys = match real_frames {
            Some(rf) => rf
                .gt(0.5)
                .view([bt / t, t, 1])
                .expand([bt / t, t, s], false)
                .reshape([bt / t, 1, 1, t * s]),
            None => Tensor::ones([1, 1, 1, 1], (Kind::Bool, r.device())),
        };
        for l in &self.interaction {
            let qkv = layers::apply_linear(&l.qkv, &r, ctx).chunk(3, -1);
            let a = layers::attention(&qkv[0], &qkv[1], &qkv[2], l.heads, &keys, 0.0, ctx);
            r = layers::apply_linear(&l.proj, &a, ctx).to_kind(Kind::Float);
        }
        RegionLearnerOutput {
            regions: r,
            masks,
            indices: q.indices.view([bt, p]),
            commitment: q.commitment,
            real_tokens: q.real_tokens,
        }
    }
}
