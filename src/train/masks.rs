//! Learned-region masks of one grid item from a RegionLearner checkpoint, for
//! `regionfeat inspect --draw --checkpoint` (drawn by [`crate::inspect::draw_region_masks`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::inspect::RegionMasks;
use crate::train::checkpoint::{self, files};
use crate::train::config::TrainConfig;
use crate::train::layers::Ctx;
use crate::train::model;
use crate::train::text::TextModelConfig;

/// A checkpoint's model, ready to compute masks.
pub struct MaskModel {
    model: model::DemoVlp,
    _vs: tch::nn::VarStore,
    device: Device,
}

impl MaskModel {
    /// Loads `ck` (a checkpoint directory of a `input = "grid"` config with
    /// `[model.video.region_learner]`).
    pub fn load(ck: &Path, device: Device) -> Result<Self> {
        for f in [files::MODEL, files::TEXT_CONFIG, files::CONFIG] {
            if !ck.join(f).exists() {
                bail!("{} is not a checkpoint: {f} is missing", ck.display());
            }
        }
        let text = std::fs::read_to_string(ck.join(files::CONFIG))?;
        let cfg: TrainConfig = toml::from_str(&text)
            .with_context(|| format!("invalid {}", ck.join(files::CONFIG).display()))?;
        if cfg.model.video.region_learner.is_none() {
            bail!(
                "{} has no RegionLearner (model.video.input = {:?}, no [model.video.region_learner]): \
                 there are no learned regions to draw",
                ck.display(),
                cfg.model.video.input
            );
        }
        let text_cfg = TextModelConfig::from_file(&ck.join(files::TEXT_CONFIG))?;
        let (vs, model) = model::build(&cfg.model, &text_cfg, device, false)?;
        checkpoint::load_weights(&vs, &ck.join(files::MODEL), true)?;
        Ok(Self {
            model,
            _vs: vs,
            device,
        })
    }

    /// Masks of `frames` frames of patch features `[frames, Hg*Wg, D]`: `[frames, S, Hg, Wg]`.
    /// Frames go through one at a time (masks come before the interaction step, so they do
    /// not depend on the other frames).
    pub fn masks(
        &self,
        features: &[f32],
        frames: usize,
        grid: (usize, usize),
    ) -> Result<RegionMasks> {
        let v = &self.model.video;
        let rl = v.region_learner().context("no RegionLearner")?;
        let d = v.config.feature_dim;
        let p = (grid.0 * grid.1) as i64;
        if features.len() as i64 != frames as i64 * p * d {
            bail!(
                "{} feature values for {frames} frames of {}x{} patches of {d}: the checkpoint's \
                 feature_dim does not match the shard",
                features.len(),
                grid.0,
                grid.1
            );
        }
        let f = frames as i64;
        let x = Tensor::from_slice(features)
            .view([f, 1, p, d])
            .to_device(self.device);
        let out = tch::no_grad(|| {
            v.forward(
                &x,
                &Tensor::zeros([f, 1, p, 7], (Kind::Float, self.device)),
                &Tensor::ones([f, 1, p], (Kind::Float, self.device)),
                Some((grid.0 as i64, grid.1 as i64)),
                Ctx::eval(),
            )
        });
        let learned = out
            .learned
            .context("the model produced no learned regions")?;
        let masks: Vec<f32> = Vec::<f32>::try_from(
            learned
                .masks
                .to_kind(Kind::Float)
                .to_device(Device::Cpu)
                .contiguous()
                .view([-1]),
        )?;
        Ok(RegionMasks {
            regions: rl.config.regions as usize,
            grid,
            masks,
        })
    }
}
