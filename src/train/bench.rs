//! Training-step timing of the full model on synthetic inputs (random weights), for comparison
//! with the same model in PyTorch eager (`benches/train_step.py`, which mirrors this code).
//! Driven by `benches/train_step.rs` (or the ignored test below) with a JSON spec.

use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::train::config::{ModelConfig, OptimConfig};
use crate::train::data::LOC_DIM;
use crate::train::layers::Ctx;
use crate::train::loss::{self, RwaOptions};
use crate::train::model::{self, TensorBatch};
use crate::train::optim::AdamW;
use crate::train::text::TextModelConfig;

/// Sizes of one benchmark case (shared with the Python script).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSpec {
    /// Case name.
    pub name: String,
    /// Batch size.
    pub batch: i64,
    /// Frames per item.
    pub frames: i64,
    /// Regions per frame.
    pub regions: i64,
    /// Region feature size.
    pub feature_dim: i64,
    /// Video width / depth / heads.
    pub video_hidden: i64,
    /// Video layers.
    pub video_layers: i64,
    /// Video heads.
    pub video_heads: i64,
    /// DistilBERT dim / layers / heads.
    pub text_hidden: i64,
    /// Text layers.
    pub text_layers: i64,
    /// Text heads.
    pub text_heads: i64,
    /// Caption length (tokens).
    pub text_len: i64,
    /// Joint space.
    pub embed_dim: i64,
    /// Timed steps (after one warm-up step).
    pub steps: usize,
    /// torch intra-op threads.
    pub threads: i32,
    /// Grid input through RegionLearner instead of detector regions (`regions` is then unused
    /// and each frame has Hg·Wg patches of `feature_dim`).
    #[serde(default)]
    pub region_learner: Option<BenchRegionLearner>,
}

/// RegionLearner sizes of a benchmark case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRegionLearner {
    /// Patch grid (Hg, Wg).
    pub grid: (i64, i64),
    /// Codebook entries.
    pub codebook_size: i64,
    /// Learned regions per frame.
    pub regions: i64,
    /// Interaction layers.
    pub interaction_depth: i64,
}

/// Result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Case.
    pub name: String,
    /// Mean seconds per training step.
    pub step_s: f64,
    /// Samples per second.
    pub samples_per_s: f64,
}

/// Times `spec.steps` full training steps (forward, global + RWA losses, backward, clipping,
/// AdamW) on CPU.
pub fn run(spec: &BenchSpec) -> Result<BenchResult> {
    tch::set_num_threads(spec.threads);
    tch::manual_seed(0);
    let device = Device::Cpu;
    let text_cfg = TextModelConfig::from_json(&serde_json::json!({
        "model_type": "distilbert", "vocab_size": 30522, "dim": spec.text_hidden, "n_layers": spec.text_layers,
        "n_heads": spec.text_heads, "hidden_dim": 4 * spec.text_hidden, "dropout": 0.1, "attention_dropout": 0.1,
        "max_position_embeddings": 512
    }).to_string())?;
    let mut mc: ModelConfig = toml::from_str("")?;
    mc.embed_dim = spec.embed_dim as usize;
    mc.video.feature_dim = spec.feature_dim;
    mc.video.hidden_size = spec.video_hidden;
    mc.video.num_layers = spec.video_layers;
    mc.video.num_heads = spec.video_heads;
    mc.video.max_frames = spec.frames.max(1) as usize;
    let mut k = spec.regions;
    let mut grid_hw = None;
    if let Some(rl) = &spec.region_learner {
        mc.video.input = crate::train::video::VideoInput::Grid;
        mc.video.region_learner = Some(crate::train::region_learner::RegionLearnerConfig {
            codebook_size: rl.codebook_size,
            regions: rl.regions,
            interaction_depth: rl.interaction_depth,
            ..Default::default()
        });
        k = rl.grid.0 * rl.grid.1;
        grid_hw = Some(rl.grid);
    }
    let (vs, m) = model::build(&mc, &text_cfg, device, false)?;
    let mut opt = AdamW::new(&vs, &OptimConfig::default());
    let (b, f) = (spec.batch, spec.frames);
    let nb = Tensor::randint_low(k / 2, k + 1, [b, f, 1], (Kind::Int64, device));
    let region_mask = Tensor::arange(k, (Kind::Int64, device))
        .view([1, 1, k])
        .lt_tensor(&nb)
        .to_kind(Kind::Float);
    let lens = Tensor::randint_low(
        spec.text_len / 2,
        spec.text_len + 1,
        [b, 1],
        (Kind::Int64, device),
    );
    let attention_mask = Tensor::arange(spec.text_len, (Kind::Int64, device))
        .view([1, -1])
        .lt_tensor(&lens)
        .to_kind(Kind::Int64);
    let batch = TensorBatch {
        grid_hw,
        features: Tensor::randn([b, f, k, spec.feature_dim], (Kind::Float, device)).relu(),
        locations: Tensor::rand([b, f, k, LOC_DIM as i64], (Kind::Float, device)),
        region_mask,
        ids: Tensor::randint_low(1000, 30000, [b, spec.text_len], (Kind::Int64, device))
            * &attention_mask,
        word_mask: attention_mask.to_kind(Kind::Float),
        attention_mask,
    };
    let step = |opt: &mut AdamW| {
        let e = m.forward(&batch, Ctx::train());
        let t = loss::losses(&e, 0.05, Some((RwaOptions::default(), 0.05)));
        t.total(1.0).backward();
        opt.clip_grad_norm(1.0);
        opt.step(1e-4);
        opt.zero_grad();
    };
    step(&mut opt);
    let t0 = Instant::now();
    for _ in 0..spec.steps {
        step(&mut opt);
    }
    let step_s = t0.elapsed().as_secs_f64() / spec.steps as f64;
    Ok(BenchResult {
        name: spec.name.clone(),
        step_s,
        samples_per_s: b as f64 / step_s,
    })
}

#[cfg(test)]
mod tests {
    /// `RF_BENCH_SPEC=<json list of BenchSpec> cargo test --release --features train --lib
    /// train::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_train_step() {
        let spec = std::env::var("RF_BENCH_SPEC").expect("RF_BENCH_SPEC");
        let specs: Vec<super::BenchSpec> = serde_json::from_str(&spec).unwrap();
        for s in &specs {
            let r = super::run(s).unwrap();
            println!("RESULT {}", serde_json::to_string(&r).unwrap());
        }
    }
}
