//! The two-tower model: video tower + text tower, each followed by a linear projection to the
//! joint space (shared by [CLS]/sentence and region/word tokens), L2-normalized.
//! Variable paths: `video.*`, `text.*`, `video_proj.*`, `text_proj.*`.

use anyhow::{Context, Result};
use tch::{nn, Device, Kind, Tensor};

use crate::train::config::ModelConfig;
use crate::train::layers::{self, Ctx};
use crate::train::loss::Embeddings;
use crate::train::text::{TextEncoder, TextModelConfig};
use crate::train::video::{LearnedRegions, VideoEncoder};

/// A batch on the device.
pub struct TensorBatch {
    /// `[B, F, K, D]` f32.
    pub features: Tensor,
    /// `[B, F, K, 7]` f32.
    pub locations: Tensor,
    /// `[B, F, K]` f32.
    pub region_mask: Tensor,
    /// `[B, L]` i64.
    pub ids: Tensor,
    /// `[B, L]` i64 (1 = token).
    pub attention_mask: Tensor,
    /// `[B, L]` f32 (1 = word, not special, not padding).
    pub word_mask: Tensor,
    /// Grid input: `(Hg, Wg)`, with `features [B, F, Hg*Wg, D]`.
    pub grid_hw: Option<(i64, i64)>,
}

/// DemoVLP two-tower model.
pub struct DemoVlp {
    /// Video tower.
    pub video: VideoEncoder,
    /// Text tower.
    pub text: TextEncoder,
    video_proj: nn::Linear,
    text_proj: nn::Linear,
    text_proj_relu: bool,
    /// Text config (HF).
    pub text_config: TextModelConfig,
}

impl DemoVlp {
    /// Builds all variables in `vs` (random init).
    pub fn new(vs: &nn::VarStore, cfg: &ModelConfig, text_config: &TextModelConfig) -> Self {
        let root = vs.root();
        let e = cfg.embed_dim as i64;
        Self {
            video: VideoEncoder::new(&root / "video", &cfg.video),
            text: TextEncoder::new(&root / "text", text_config),
            video_proj: layers::linear(&root / "video_proj", cfg.video.hidden_size, e),
            text_proj: layers::linear(&root / "text_proj", text_config.hidden_size(), e),
            text_proj_relu: cfg.text_proj_relu,
            text_config: text_config.clone(),
        }
    }

    /// Encodes videos: `(global [B,E], regions [B,N,E], region_mask [B,N])`, normalized, f32.
    pub fn encode_video(&self, b: &TensorBatch, ctx: Ctx) -> (Tensor, Tensor, Tensor) {
        let (g, r, m, _) = self.encode_video_full(b, ctx);
        (g, r, m)
    }

    /// [`Self::encode_video`] plus what RegionLearner produced (grid input with it on).
    pub fn encode_video_full(
        &self,
        b: &TensorBatch,
        ctx: Ctx,
    ) -> (Tensor, Tensor, Tensor, Option<LearnedRegions>) {
        let out = self
            .video
            .forward(&b.features, &b.locations, &b.region_mask, b.grid_hw, ctx);
        let g = layers::apply_linear(&self.video_proj, &out.cls, ctx).to_kind(Kind::Float);
        let r = layers::apply_linear(&self.video_proj, &out.regions, ctx).to_kind(Kind::Float);
        (normalize(&g), normalize(&r), out.region_mask, out.learned)
    }

    /// Encodes texts: `(sentence [B,E], words [B,L,E], word_mask [B,L])`, normalized, f32.
    pub fn encode_text(&self, b: &TensorBatch, ctx: Ctx) -> (Tensor, Tensor, Tensor) {
        let h = self.text.forward(&b.ids, &b.attention_mask, ctx);
        let h = if self.text_proj_relu { h.relu() } else { h };
        let p = layers::apply_linear(&self.text_proj, &h, ctx).to_kind(Kind::Float);
        let p = normalize(&p);
        (p.select(1, 0), p, b.word_mask.shallow_clone())
    }

    /// Both towers.
    pub fn forward(&self, b: &TensorBatch, ctx: Ctx) -> Embeddings {
        self.forward_full(b, ctx).0
    }

    /// Both towers, plus RegionLearner's outputs (commitment term, masks) when it is on.
    pub fn forward_full(&self, b: &TensorBatch, ctx: Ctx) -> (Embeddings, Option<LearnedRegions>) {
        let (video, regions, region_mask, learned) = self.encode_video_full(b, ctx);
        let (text, words, word_mask) = self.encode_text(b, ctx);
        let emb = Embeddings {
            video,
            regions,
            region_mask,
            text,
            words,
            word_mask,
        };
        (emb, learned)
    }
}

/// L2 normalization over the last axis.
pub fn normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12)
}

/// Builds a model and its var store on `device`, loading pretrained text/ViT weights as the
/// config asks.
pub fn build(
    cfg: &ModelConfig,
    text_config: &TextModelConfig,
    device: Device,
    load_pretrained: bool,
) -> Result<(nn::VarStore, DemoVlp)> {
    let vs = nn::VarStore::new(device);
    let model = DemoVlp::new(&vs, cfg, text_config);
    if load_pretrained {
        if cfg.text.load_weights {
            let path = cfg.text.weights_path()?;
            let rep = crate::train::text::load_hf_weights(&vs, "text", text_config, &path)
                .with_context(|| format!("loading text weights {}", path.display()))?;
            eprintln!(
                "text: loaded {} tensors from {} ({} unused)",
                rep.loaded,
                path.display(),
                rep.unused.len()
            );
        }
        if let Some(p) = &cfg.video.init_vit {
            let n = model.video.load_timm_vit(&vs, "video", p)?;
            eprintln!("video: initialized {n} tensors from {}", p.display());
        }
    }
    Ok((vs, model))
}
