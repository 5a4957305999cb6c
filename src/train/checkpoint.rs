//! Checkpoint directories: `model.safetensors` (weights, var-store names), `optimizer.safetensors`
//! (AdamW moments), `state.json` (step, data position, seed, best score), `config.toml` (the
//! trainer config), and the text tower's `text_config.json` + tokenizer file, so a checkpoint is
//! enough to evaluate. Written to `<name>.tmp` and renamed over `<name>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// Training position and counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Current epoch.
    pub epoch: u64,
    /// Next micro-batch index within the epoch.
    pub next_batch: u64,
    /// Samples consumed.
    pub samples: u64,
    /// Seed of the run (data order, frame choice, dropout stream).
    pub seed: u64,
    /// Best evaluation score so far (t2v R@1 + R@5 + R@10).
    pub best_score: Option<f64>,
}

/// File names inside a checkpoint directory.
pub mod files {
    /// Weights.
    pub const MODEL: &str = "model.safetensors";
    /// Optimizer moments.
    pub const OPTIM: &str = "optimizer.safetensors";
    /// [`super::TrainState`].
    pub const STATE: &str = "state.json";
    /// Trainer config.
    pub const CONFIG: &str = "config.toml";
    /// Text tower HF config.
    pub const TEXT_CONFIG: &str = "text_config.json";
}

/// What goes into a checkpoint besides the var store.
pub struct CheckpointParts<'a> {
    /// Training state.
    pub state: &'a TrainState,
    /// Trainer config (TOML text).
    pub config_toml: &'a str,
    /// Text tower config.json text.
    pub text_config_json: &'a str,
    /// Tokenizer file to copy.
    pub tokenizer: &'a Path,
}

/// Saves a checkpoint to `dir` atomically (tmp dir + rename).
pub fn save(
    dir: &Path,
    vs: &nn::VarStore,
    opt: Option<&crate::train::optim::AdamW>,
    parts: &CheckpointParts,
) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    // Weights on CPU, sorted by name.
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(tch::Device::Cpu)))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&named, tmp.join(files::MODEL))?;
    if let Some(o) = opt {
        o.save(&tmp.join(files::OPTIM))?;
    }
    std::fs::write(
        tmp.join(files::STATE),
        serde_json::to_string_pretty(parts.state)?,
    )?;
    std::fs::write(tmp.join(files::CONFIG), parts.config_toml)?;
    std::fs::write(tmp.join(files::TEXT_CONFIG), parts.text_config_json)?;
    let tok_name = parts
        .tokenizer
        .file_name()
        .context("tokenizer path has no file name")?;
    std::fs::copy(parts.tokenizer, tmp.join(tok_name))
        .with_context(|| format!("cannot copy {}", parts.tokenizer.display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    Ok(())
}

/// Reads `state.json`.
pub fn load_state(dir: &Path) -> Result<TrainState> {
    let p = dir.join(files::STATE);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("bad {}", p.display()))
}

/// Tokenizer file stored in a checkpoint.
pub fn tokenizer_file(dir: &Path) -> Result<PathBuf> {
    ["tokenizer.json", "vocab.txt"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .with_context(|| format!("{} holds no tokenizer.json or vocab.txt", dir.display()))
}

/// Copies checkpoint weights into `vs`. `strict`: every variable must be present. Shapes must
/// always match. Returns the variables left untouched.
pub fn load_weights(vs: &nn::VarStore, path: &Path, strict: bool) -> Result<Vec<String>> {
    if !path.exists() {
        bail!("checkpoint weights {} do not exist", path.display());
    }
    let map: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .into_iter()
        .collect();
    let mut missing = vec![];
    tch::no_grad(|| -> Result<()> {
        for (name, var) in vs.variables() {
            match map.get(&name) {
                Some(t) if t.size() == var.size() => {
                    var.shallow_clone().copy_(t);
                }
                Some(t) => bail!(
                    "{}: {name} has shape {:?}, model expects {:?}",
                    path.display(),
                    t.size(),
                    var.size()
                ),
                None => missing.push(name),
            }
        }
        Ok(())
    })?;
    missing.sort();
    if strict && !missing.is_empty() {
        bail!(
            "{} lacks {} variables, e.g. {:?}",
            path.display(),
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    Ok(missing)
}
