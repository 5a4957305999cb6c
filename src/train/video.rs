//! Video tower of DemoVLP: region tokens = Linear(feature) + Linear(location) + temporal
//! embedding of the token's frame, a learned [CLS], a ViT transformer (pre-norm blocks), final
//! LayerNorm. Parameter paths follow timm's `VisionTransformer` (`cls_token`,
//! `blocks.N.norm1`, `blocks.N.attn.qkv`, `blocks.N.attn.proj`, `blocks.N.norm2`,
//! `blocks.N.mlp.fc1/fc2`, `norm`) so a timm ViT-B/16 `model.safetensors` initializes the
//! transformer directly (`patch_embed`, `pos_embed` and `head` are not used; `pos_embed[0]` is
//! added to `cls_token`, as the ViT's [CLS] always sees it).
//!
//! Grid input (`input = "grid"`, shards of a patch-grid extractor): with
//! `[model.video.region_learner]` the patches go through [`RegionLearner`] and its S learned
//! regions per frame become the tokens (embedding: region + learned slot embedding + temporal,
//! no location); without it each frame is one token, the mean of its patches (the mean-pooled
//! baseline).
//!
//! `region_token_layernorm` and `final_layernorm` (both on by default) switch off the two
//! LayerNorms the public DemoVLP code lacks, so its released weights (converted by
//! `detector/convert_demovlp.py`) reproduce its embeddings.
//!
//! Attention: padded regions are never attended to; with `frame_attention` a region token sees
//! only [CLS] and the regions of its own frame, while [CLS] sees everything (as the public
//! DemoVLP code does).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::train::layers::{self, Ctx};
use crate::train::region_learner::{RegionLearner, RegionLearnerConfig};

/// What the video tower reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoInput {
    /// Detector regions (features + box locations), `model_kind = "regions"` shards.
    #[default]
    Regions,
    /// Patch grids, `model_kind = "grid"` shards.
    Grid,
}

/// Video tower sizes (defaults: ViT-B, 2048-d VG features, 7-d locations, 8 frames).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    /// `regions` (detector shards) or `grid` (patch-grid shards).
    #[serde(default)]
    pub input: VideoInput,
    /// RegionLearner over grid input (absent: mean-pooled grid, one token per frame).
    #[serde(default)]
    pub region_learner: Option<RegionLearnerConfig>,
    /// Region feature size D.
    #[serde(default = "d2048")]
    pub feature_dim: i64,
    /// Location entries used (7: with area; 6: as the public code).
    #[serde(default = "seven")]
    pub location_dim: i64,
    /// Transformer width.
    #[serde(default = "d768")]
    pub hidden_size: i64,
    /// Transformer depth.
    #[serde(default = "twelve")]
    pub num_layers: i64,
    /// Heads.
    #[serde(default = "twelve")]
    pub num_heads: i64,
    /// MLP width / hidden size.
    #[serde(default = "four")]
    pub mlp_ratio: f64,
    /// Temporal embedding rows.
    #[serde(default = "eight")]
    pub max_frames: usize,
    /// Restrict region tokens to their own frame.
    #[serde(default = "yes")]
    pub frame_attention: bool,
    /// Dropout on embeddings and block outputs.
    #[serde(default)]
    pub dropout: f64,
    /// LayerNorm ε (timm: 1e-6).
    #[serde(default = "eps6")]
    pub layer_norm_eps: f64,
    /// Optional timm ViT safetensors to initialize the transformer from.
    #[serde(default)]
    pub init_vit: Option<PathBuf>,
    /// LayerNorm (`embed_norm`) over the input tokens ([CLS] and regions) before the first
    /// block. On by default: a ViT block sees LayerNorm'd inputs anyway, but the residual
    /// stream starts from the raw sum feature + location + temporal, whose scale depends on
    /// the detector's feature statistics. The public DemoVLP code has none (`false` to match
    /// its released weights; the variables stay in the checkpoint either way).
    #[serde(default = "yes")]
    pub region_token_layernorm: bool,
    /// Final LayerNorm (`norm`) after the last block. On by default, as every pre-norm ViT
    /// (and the paper's description) has it; the public DemoVLP code builds `norm` (it holds
    /// the ViT-B/16 values) but never applies it, so its released weights expect `false`.
    #[serde(default = "yes")]
    pub final_layernorm: bool,
}

fn d2048() -> i64 {
    2048
}
fn seven() -> i64 {
    7
}
fn d768() -> i64 {
    768
}
fn twelve() -> i64 {
    12
}
fn four() -> f64 {
    4.0
}
fn eight() -> usize {
    8
}
fn yes() -> bool {
    true
}
fn eps6() -> f64 {
    1e-6
}

impl Default for VideoConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl VideoConfig {
    /// Checks sizes.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_size % self.num_heads != 0 {
            bail!("model.video.hidden_size must be a multiple of num_heads");
        }
        if !(1..=7).contains(&self.location_dim) {
            bail!("model.video.location_dim must be in 1..=7");
        }
        if self.feature_dim <= 0 || self.num_layers < 0 || self.max_frames == 0 {
            bail!("model.video: feature_dim, max_frames must be > 0");
        }
        if let Some(rl) = &self.region_learner {
            if self.input != VideoInput::Grid {
                bail!("model.video.region_learner needs model.video.input = \"grid\"");
            }
            rl.validate(self.hidden_size)?;
        }
        Ok(())
    }
}

struct Block {
    norm1: layers::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    norm2: layers::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
    dropout: f64,
}

impl Block {
    fn new(p: nn::Path, c: &VideoConfig) -> Self {
        let d = c.hidden_size;
        let m = (d as f64 * c.mlp_ratio).round() as i64;
        Self {
            norm1: layers::layer_norm(&p / "norm1", d, c.layer_norm_eps),
            qkv: layers::linear(&p / "attn" / "qkv", d, 3 * d),
            proj: layers::linear(&p / "attn" / "proj", d, d),
            norm2: layers::layer_norm(&p / "norm2", d, c.layer_norm_eps),
            fc1: layers::linear(&p / "mlp" / "fc1", d, m),
            fc2: layers::linear(&p / "mlp" / "fc2", m, d),
            heads: c.num_heads,
            dropout: c.dropout,
        }
    }
    fn forward(&self, x: &Tensor, mask: &Tensor, ctx: Ctx) -> Tensor {
        let h = layers::apply_ln(&self.norm1, x);
        let qkv = layers::apply_linear(&self.qkv, &h, ctx).chunk(3, -1);
        let a = layers::attention(&qkv[0], &qkv[1], &qkv[2], self.heads, mask, 0.0, ctx);
        let a = layers::dropout(
            &layers::apply_linear(&self.proj, &a, ctx),
            self.dropout,
            ctx,
        );
        let x = x + a;
        let h = layers::apply_ln(&self.norm2, &x);
        let h = layers::apply_linear(&self.fc1, &h, ctx).gelu("none");
        let h = layers::dropout(&layers::apply_linear(&self.fc2, &h, ctx), self.dropout, ctx);
        x + h
    }
}

/// Output of the video tower.
pub struct VideoOutput {
    /// [CLS] state `[B, d]`.
    pub cls: Tensor,
    /// Region states `[B, F*K, d]`.
    pub regions: Tensor,
    /// `[B, F*K]` float, 1 = real region.
    pub region_mask: Tensor,
    /// RegionLearner outputs (grid input with the region learner on).
    pub learned: Option<LearnedRegions>,
}

/// What RegionLearner produced in a forward pass.
pub struct LearnedRegions {
    /// Masks `[B*F, S, Hg, Wg]`.
    pub masks: Tensor,
    /// Codes `[B*F, Hg*Wg]`.
    pub indices: Tensor,
    /// Commitment term (unweighted).
    pub commitment: Tensor,
    /// Real patch tokens the commitment averages over (not those of padding frames).
    pub real_tokens: i64,
}

/// `[B, F]`: 1 for a real frame, 0 for a padding frame of a video with fewer frames than its
/// batch. The batch marks every patch of a real grid frame as a real region; a mask of another
/// shape (none given) counts every frame as real.
fn real_frames(region_mask: &Tensor, b: i64, f: i64) -> Tensor {
    let s = region_mask.size();
    if s.len() == 3 && s[0] == b && s[1] == f && s[2] > 0 {
        region_mask.select(2, 0).gt(0.5).to_kind(Kind::Float)
    } else {
        Tensor::ones([b, f], (Kind::Float, region_mask.device()))
    }
}

/// The video encoder.
pub struct VideoEncoder {
    feature_embed: nn::Linear,
    location_embed: Option<nn::Linear>,
    temporal_embed: nn::Embedding,
    region_learner: Option<RegionLearner>,
    region_norm: Option<layers::LayerNorm>,
    slot_embed: Option<Tensor>,
    cls_token: Tensor,
    embed_norm: layers::LayerNorm,
    blocks: Vec<Block>,
    norm: layers::LayerNorm,
    /// The config it was built from.
    pub config: VideoConfig,
}

impl VideoEncoder {
    /// Builds the variables under `p`.
    pub fn new(p: nn::Path, c: &VideoConfig) -> Self {
        let d = c.hidden_size;
        Self {
            feature_embed: layers::linear(&p / "feature_embed", c.feature_dim, d),
            location_embed: (c.input == VideoInput::Regions)
                .then(|| layers::linear(&p / "location_embed", c.location_dim, d)),
            temporal_embed: layers::embedding(&p / "temporal_embed", c.max_frames as i64, d),
            region_learner: c
                .region_learner
                .as_ref()
                .map(|rl| RegionLearner::new(&p / "region_learner", d, rl)),
            region_norm: c
                .region_learner
                .as_ref()
                .map(|_| layers::layer_norm(&p / "region_norm", d, c.layer_norm_eps)),
            slot_embed: c.region_learner.as_ref().map(|rl| {
                p.var(
                    "slot_embed",
                    &[rl.regions, d],
                    nn::Init::Randn {
                        mean: 0.0,
                        stdev: 0.02,
                    },
                )
            }),
            cls_token: p.var(
                "cls_token",
                &[1, 1, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
            embed_norm: layers::layer_norm(&p / "embed_norm", d, c.layer_norm_eps),
            blocks: (0..c.num_layers)
                .map(|i| Block::new(&p / "blocks" / i, c))
                .collect(),
            norm: layers::layer_norm(&p / "norm", d, c.layer_norm_eps),
            config: c.clone(),
        }
    }

    /// The RegionLearner, when configured.
    pub fn region_learner(&self) -> Option<&RegionLearner> {
        self.region_learner.as_ref()
    }

    /// The RegionLearner, to lend its codebook a data-parallel group.
    pub fn region_learner_mut(&mut self) -> Option<&mut RegionLearner> {
        self.region_learner.as_mut()
    }

    /// Region input: `features [B, F, K, D]`, `locations [B, F, K, 7]`, `region_mask [B, F, K]`
    /// (float). Grid input: `features [B, F, Hg*Wg, D]` with `grid_hw`; locations and mask
    /// are ignored.
    pub fn forward(
        &self,
        features: &Tensor,
        locations: &Tensor,
        region_mask: &Tensor,
        grid_hw: Option<(i64, i64)>,
        ctx: Ctx,
    ) -> VideoOutput {
        let (b, f, _, _) = features.size4().expect("features [B,F,K,D]");
        let d = self.config.hidden_size;
        let dev = features.device();
        let frames = Tensor::arange(f, (Kind::Int64, dev));
        let temporal = frames.apply(&self.temporal_embed).view([1, f, 1, d]);
        let (x, region_mask, learned) = match self.config.input {
            VideoInput::Regions => {
                let loc = locations.narrow(3, 0, self.config.location_dim);
                let loc_embed = self.location_embed.as_ref().expect("region input");
                let x = layers::apply_linear(&self.feature_embed, features, ctx)
                    .to_kind(Kind::Float)
                    + layers::apply_linear(loc_embed, &loc, ctx).to_kind(Kind::Float)
                    + temporal;
                (x, region_mask.shallow_clone(), None)
            }
            VideoInput::Grid => {
                // Padding frames stay out of attention, RWA and the codebook, as padded regions
                // do: otherwise a video's embedding would depend on its batchmates' frames.
                let real = real_frames(region_mask, b, f);
                match (&self.region_learner, &self.slot_embed, &self.region_norm) {
                    (Some(rl), Some(slot), Some(norm)) => {
                        let p = features.size()[2];
                        let hw = grid_hw.expect("RegionLearner input needs grid_hw");
                        let z = layers::apply_linear(&self.feature_embed, features, ctx)
                            .to_kind(Kind::Float)
                            .view([b * f, p, d]);
                        let out = rl.forward(&z, hw, f, Some(&real.view([b * f])), ctx);
                        let s = rl.config.regions;
                        // Pooled regions are products of small terms (projected patches × conv
                        // masks): normalize them before the slot and temporal embeddings are
                        // added, or those drown the content.
                        let r = layers::apply_ln(norm, &out.regions.view([b, f, s, d]));
                        let x = r + slot.view([1, 1, s, d]) + temporal;
                        let mask = real.unsqueeze(2).expand([b, f, s], false).contiguous();
                        let learned = LearnedRegions {
                            masks: out.masks,
                            indices: out.indices,
                            commitment: out.commitment,
                            real_tokens: out.real_tokens,
                        };
                        (x, mask, Some(learned))
                    }
                    _ => {
                        let mean = features.mean_dim(2, true, features.kind());
                        let x = layers::apply_linear(&self.feature_embed, &mean, ctx)
                            .to_kind(Kind::Float)
                            + temporal;
                        (x, real.unsqueeze(2), None)
                    }
                }
            }
        };
        let k = x.size()[2];
        let x = x.view([b, f * k, d]);
        let x = Tensor::cat(&[self.cls_token.expand([b, 1, d], false), x], 1);
        let x = if self.config.region_token_layernorm {
            layers::apply_ln(&self.embed_norm, &x)
        } else {
            x
        };
        let mut x = layers::dropout(&x, self.config.dropout, ctx);

        // Attention mask [B, 1, T, T], T = 1 + F*K.
        let rmask = region_mask.view([b, f * k]).gt(0.5);
        let key_valid = Tensor::cat(
            &[
                Tensor::ones([b, 1], (Kind::Bool, dev)),
                rmask.shallow_clone(),
            ],
            1,
        );
        let mut mask = key_valid.view([b, 1, 1, 1 + f * k]);
        if self.config.frame_attention && f > 1 {
            let fid = Tensor::cat(
                &[
                    Tensor::from_slice(&[-1i64]).to_device(dev),
                    frames.repeat_interleave_self_int(k, None, None),
                ],
                0,
            );
            let same = fid.unsqueeze(1).eq_tensor(&fid.unsqueeze(0));
            let is_cls = fid.eq(-1);
            let allowed = same
                .logical_or(&is_cls.unsqueeze(1))
                .logical_or(&is_cls.unsqueeze(0));
            mask = mask.logical_and(&allowed.view([1, 1, 1 + f * k, 1 + f * k]));
        }
        for blk in &self.blocks {
            x = blk.forward(&x, &mask, ctx);
        }
        let x = if self.config.final_layernorm {
            layers::apply_ln(&self.norm, &x)
        } else {
            x
        };
        VideoOutput {
            cls: x.select(1, 0),
            regions: x.narrow(1, 1, f * k),
            region_mask: rmask.to_kind(Kind::Float),
            learned,
        }
    }

    /// Initializes `cls_token`, `blocks.*` and `norm.*` from a timm ViT safetensors file
    /// (`vit_base_patch16_224` naming; an optional `model.`/`module.` prefix is accepted).
    /// Returns the number of tensors copied. Sizes must match the config.
    pub fn load_timm_vit(&self, vs: &nn::VarStore, prefix: &str, path: &Path) -> Result<usize> {
        let tensors = Tensor::read_safetensors(path)
            .with_context(|| format!("cannot read ViT weights {}", path.display()))?;
        let mut map: std::collections::HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, t)| {
                let k = k.strip_prefix("module.").unwrap_or(&k).to_string();
                (k.strip_prefix("model.").unwrap_or(&k).to_string(), t)
            })
            .collect();
        if let (Some(cls), Some(pos)) = (map.get("cls_token"), map.get("pos_embed")) {
            let merged = cls + pos.narrow(1, 0, 1);
            map.insert("cls_token".into(), merged);
        }
        let vars = vs.variables();
        let mut n = 0;
        let mut missing = vec![];
        tch::no_grad(|| -> Result<()> {
            for (name, var) in &vars {
                let Some(key) = name.strip_prefix(&format!("{prefix}.")) else {
                    continue;
                };
                if !(key == "cls_token" || key.starts_with("blocks.") || key.starts_with("norm.")) {
                    continue;
                }
                match map.get(key) {
                    Some(t) if t.size() == var.size() => {
                        var.shallow_clone().copy_(&t.to_device(var.device()));
                        n += 1;
                    }
                    Some(t) => bail!(
                        "ViT weight {key}: shape {:?}, model expects {:?}",
                        t.size(),
                        var.size()
                    ),
                    None => missing.push(key.to_string()),
                }
            }
            Ok(())
        })?;
        if !missing.is_empty() {
            missing.sort();
            bail!(
                "{} lacks {} transformer weights, e.g. {:?} (num_layers/hidden_size must match the ViT)",
                path.display(),
                missing.len(),
                &missing[..missing.len().min(5)]
            );
        }
        Ok(n)
    }
}
