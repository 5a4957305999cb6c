//! AdamW (decoupled weight decay, Loshchilov & Hutter), global-norm gradient clipping and the
//! learning-rate schedule. Written out on tensors (not tch's opaque C++ optimizer) so the
//! moment estimates can be saved in checkpoints and a resumed run continues exactly.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use tch::{nn, Tensor};

use crate::train::config::{OptimConfig, Schedule};

/// AdamW over the trainable variables of a var store.
pub struct AdamW {
    params: Vec<(String, Tensor, bool)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Optimizer steps taken.
    pub step: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

/// Weight decay applies to matrices only (not biases, norms, embeddings, [CLS]).
fn decays(name: &str, t: &Tensor) -> bool {
    t.dim() >= 2 && !name.contains("embed") && !name.contains("cls_token") && !name.contains("norm")
}

/// Trainable variables of `vs` sorted by name: a fixed order (optimizer state, and the same
/// order on every data-parallel rank).
pub fn trainable_sorted(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

impl AdamW {
    /// Creates zeroed state for every variable of `vs` (sorted by name).
    pub fn new(vs: &nn::VarStore, c: &OptimConfig) -> Self {
        let vars = trainable_sorted(vs);
        let exp_avg = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let exp_avg_sq = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let params = vars
            .into_iter()
            .map(|(n, t)| {
                let d = decays(&n, &t);
                (n, t, d)
            })
            .collect();
        Self {
            params,
            exp_avg,
            exp_avg_sq,
            step: 0,
            beta1: c.betas.0,
            beta2: c.betas.1,
            eps: c.eps,
            weight_decay: c.weight_decay,
        }
    }

    /// Clears gradients.
    pub fn zero_grad(&mut self) {
        for (_, p, _) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// Clips the global gradient norm to `max` (when > 0); returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max: f64) -> f64 {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self
                .params
                .iter()
                .map(|(_, p, _)| p.grad())
                .filter(|g| g.defined())
                .map(|g| g.to_kind(tch::Kind::Float).norm().square())
                .collect();
            if norms.is_empty() {
                return 0.0;
            }
            let total = Tensor::stack(&norms, 0)
                .sum(tch::Kind::Float)
                .sqrt()
                .double_value(&[]);
            if max > 0.0 && total > max {
                let coef = max / (total + 1e-6);
                for (_, p, _) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
            total
        })
    }

    /// One AdamW update at learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        tch::no_grad(|| {
            for (i, (_, p, decay)) in self.params.iter_mut().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                // In place, one temporary (as torch's single-tensor AdamW):
                // m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²; p ← p − lr/bc1 · m / (√v/√bc2 + ε).
                let m = &mut self.exp_avg[i];
                let v = &mut self.exp_avg_sq[i];
                let _ = m.lerp_(&g, 1.0 - self.beta1);
                let _ = v.g_mul_scalar_(self.beta2 / (1.0 - self.beta2));
                let _ = v.addcmul_(&g, &g);
                let _ = v.g_mul_scalar_(1.0 - self.beta2);
                if *decay && self.weight_decay > 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let mut denom = v.sqrt();
                let _ = denom.g_div_scalar_(bc2.sqrt());
                let _ = denom.g_add_scalar_(self.eps);
                let _ = denom.g_mul_scalar_(-bc1 / lr);
                let _ = p.addcdiv_(m, &denom);
            }
        });
    }

    /// Saves the moments (`exp_avg.<name>`, `exp_avg_sq.<name>`) as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = vec![];
        for (i, (n, _, _)) in self.params.iter().enumerate() {
            named.push((
                format!("exp_avg.{n}"),
                self.exp_avg[i].to_device(tch::Device::Cpu),
            ));
            named.push((
                format!("exp_avg_sq.{n}"),
                self.exp_avg_sq[i].to_device(tch::Device::Cpu),
            ));
        }
        Tensor::write_safetensors(&named, path)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Restores the moments saved by [`AdamW::save`]; `step` comes from the checkpoint state.
    pub fn load(&mut self, path: &Path, step: u64) -> Result<()> {
        let map: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("cannot read optimizer state {}", path.display()))?
            .into_iter()
            .collect();
        tch::no_grad(|| -> Result<()> {
            for (i, (n, _, _)) in self.params.iter().enumerate() {
                let m = map
                    .get(&format!("exp_avg.{n}"))
                    .with_context(|| format!("optimizer state lacks {n}"))?;
                let v = map
                    .get(&format!("exp_avg_sq.{n}"))
                    .with_context(|| format!("optimizer state lacks {n}"))?;
                self.exp_avg[i].copy_(m);
                self.exp_avg_sq[i].copy_(v);
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total`: linear warm-up, then the
/// schedule. Step milestones are in epochs (`steps_per_epoch` converts).
pub fn learning_rate(c: &OptimConfig, step: u64, total: u64, steps_per_epoch: u64) -> f64 {
    if c.warmup_steps > 0 && step < c.warmup_steps {
        return c.lr * (step + 1) as f64 / c.warmup_steps as f64;
    }
    match c.schedule {
        Schedule::Constant => c.lr,
        Schedule::Step => {
            let epoch = step as f64 / steps_per_epoch.max(1) as f64;
            let passed = c.milestones.iter().filter(|&&m| epoch >= m).count();
            c.lr * c.gamma.powi(passed as i32)
        }
        Schedule::Cosine => {
            let span = total.saturating_sub(c.warmup_steps).max(1) as f64;
            let prog = ((step - c.warmup_steps.min(step)) as f64 / span).min(1.0);
            c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * prog).cos())
        }
    }
}
