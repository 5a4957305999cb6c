//! Checkpoint directories: `model.safetensors` (weights, var-store names), `optimizer.safetensors`
//! (AdamW moments), `state.json` (step, data position, seed, best score), `config.toml` (the
//! trainer config), and the text tower's `text_config.json` + tokenizer file, so a checkpoint is
//! enough to evaluate.
//!
//! Writes are atomic: files go to `<name>.tmp` and are synced, the old `<name>` is renamed to
//! `<name>.old`, the new one renamed into place, then `.old` removed — so a crash leaves either
//! the old or the new checkpoint complete ([`resolve`] finds `<name>.old` when the crash fell
//! between the two renames). Step checkpoints `step-N` are pruned to the newest k
//! ([`prune_steps`]); `last` is then a hard-linked copy of the newest one ([`link_copy`]).

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
    /// Best evaluation score so far (of `best_metric`).
    pub best_score: Option<f64>,
    /// The metric `best_score` measures (`eval.metric`; absent in older checkpoints: t2v_rsum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_metric: Option<String>,
    /// Step at which `best` was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_step: Option<u64>,
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
    let tmp = sibling(dir, "tmp");
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
    for entry in std::fs::read_dir(&tmp)? {
        sync_file(&entry?.path())?;
    }
    replace_dir(&tmp, dir)
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// `<dir>.<ext>` next to `dir` (`last` → `last.tmp`; a dot in the name is kept).
fn sibling(dir: &Path, ext: &str) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Moves the complete directory `tmp` to `dir`, replacing what is there without a moment in
/// which neither the old nor the new one exists under a name [`resolve`] knows.
fn replace_dir(tmp: &Path, dir: &Path) -> Result<()> {
    let old = sibling(dir, "old");
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("cannot remove {}", old.display()))?;
        }
        std::fs::rename(dir, &old)
            .with_context(|| format!("cannot move {} aside", dir.display()))?;
    }
    std::fs::rename(tmp, dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The renames are durable once the parent directory is synced.
        sync_file(parent)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(())
}

/// The complete checkpoint saved as `dir`: `dir` itself, or `<dir>.old` when a save was
/// interrupted between moving the old one aside and renaming the new one in.
pub fn resolve(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), sibling(dir, "old")]
        .into_iter()
        .find(|d| d.join(files::STATE).exists())
}

/// Makes `dst` a copy of checkpoint `src` (atomically, like [`save`]); files are hard links
/// where the file system allows (no second copy of the weights), else copies.
pub fn link_copy(src: &Path, dst: &Path) -> Result<()> {
    let tmp = sibling(dst, "tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let from = entry?.path();
        let to = tmp.join(from.file_name().context("file without a name")?);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
            sync_file(&to)?;
        }
    }
    replace_dir(&tmp, dst)
}

/// Directory name of the step checkpoint after optimizer step `step`.
pub fn step_name(step: u64) -> String {
    format!("step-{step}")
}

/// The complete step checkpoints `step-N` in `output_dir`, oldest first.
pub fn step_checkpoints(output_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = vec![];
    let entries = match std::fs::read_dir(output_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", output_dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(s) = step {
            if path.join(files::STATE).exists() {
                out.push((s, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes all but the newest `keep` step checkpoints; returns the deleted directories.
pub fn prune_steps(output_dir: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let all = step_checkpoints(output_dir)?;
    let n = all.len().saturating_sub(keep);
    let mut removed = vec![];
    for (_, dir) in all.into_iter().take(n) {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove old checkpoint {}", dir.display()))?;
        removed.push(dir);
    }
    Ok(removed)
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
