//! Text tower: a BERT-family encoder built from a Hugging Face `config.json`, weights loaded
//! from the published `model.safetensors`, and a `tokenizers` tokenizer (`tokenizer.json`, or
//! a BERT WordPiece pipeline around `vocab.txt`).

pub mod bert;
pub mod distilbert;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{nn, Tensor};

use crate::train::layers::Ctx;
pub use bert::{BertConfig, BertModel};
pub use distilbert::{DistilBertConfig, DistilBertModel};
pub use tokenizer::TextTokenizer;

/// Architecture-tagged text config, read from HF `config.json`.
#[derive(Debug, Clone)]
pub enum TextModelConfig {
    /// `model_type = "bert"` (also MiniLM, which is BERT-architecture).
    Bert(BertConfig),
    /// `model_type = "distilbert"`.
    DistilBert(DistilBertConfig),
}

impl TextModelConfig {
    /// Parses a `config.json` text; the architecture comes from `model_type`, else from the
    /// field names.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        let model_type = v.get("model_type").and_then(|m| m.as_str()).unwrap_or("");
        let distil = match model_type {
            "distilbert" => true,
            "bert" => false,
            _ => v.get("n_layers").is_some(),
        };
        Ok(if distil {
            TextModelConfig::DistilBert(
                serde_json::from_value(v).context("DistilBERT config.json")?,
            )
        } else {
            TextModelConfig::Bert(serde_json::from_value(v).context("BERT config.json")?)
        })
    }

    /// Reads a `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("bad text model config {}", path.display()))
    }

    /// Hidden size.
    pub fn hidden_size(&self) -> i64 {
        match self {
            TextModelConfig::Bert(c) => c.hidden_size,
            TextModelConfig::DistilBert(c) => c.dim,
        }
    }

    /// Position limit.
    pub fn max_positions(&self) -> i64 {
        match self {
            TextModelConfig::Bert(c) => c.max_position_embeddings,
            TextModelConfig::DistilBert(c) => c.max_position_embeddings,
        }
    }

    /// Prefix of the published checkpoints' keys.
    fn hf_prefix(&self) -> &'static str {
        match self {
            TextModelConfig::Bert(_) => "bert.",
            TextModelConfig::DistilBert(_) => "distilbert.",
        }
    }
}

/// The text encoder.
pub enum TextEncoder {
    /// BERT.
    Bert(BertModel),
    /// DistilBERT.
    DistilBert(DistilBertModel),
}

impl TextEncoder {
    /// Builds the variables under `p`.
    pub fn new(p: nn::Path, c: &TextModelConfig) -> Self {
        match c {
            TextModelConfig::Bert(c) => TextEncoder::Bert(BertModel::new(p, c)),
            TextModelConfig::DistilBert(c) => TextEncoder::DistilBert(DistilBertModel::new(p, c)),
        }
    }
    /// Last hidden state `[B, L, H]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, ctx: Ctx) -> Tensor {
        match self {
            TextEncoder::Bert(m) => m.forward(ids, mask, ctx),
            TextEncoder::DistilBert(m) => m.forward(ids, mask, ctx),
        }
    }
}

/// What a pretrained load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Variables set.
    pub loaded: usize,
    /// Checkpoint keys that matched no variable (heads, pooler, buffers).
    pub unused: Vec<String>,
}

/// Copies tensors from an HF `model.safetensors` into the variables of `vs` under `prefix`
/// (e.g. `"text"`). Keys may carry the architecture prefix (`distilbert.`, `bert.`) or not;
/// old `LayerNorm.gamma/beta` names are accepted. Every variable under `prefix` must be found
/// with the right shape, else an error names the missing ones.
pub fn load_hf_weights(
    vs: &nn::VarStore,
    prefix: &str,
    cfg: &TextModelConfig,
    path: &Path,
) -> Result<LoadReport> {
    let tensors = Tensor::read_safetensors(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let hf_prefix = cfg.hf_prefix();
    let mut by_name: HashMap<String, Tensor> = HashMap::new();
    let mut report = LoadReport::default();
    for (k, t) in tensors {
        let mut key = k.strip_prefix(hf_prefix).unwrap_or(&k).to_string();
        if key.ends_with(".gamma") {
            key = format!("{}.weight", key.trim_end_matches(".gamma"));
        } else if key.ends_with(".beta") {
            key = format!("{}.bias", key.trim_end_matches(".beta"));
        }
        by_name.insert(format!("{prefix}.{key}"), t);
    }
    let vars = vs.variables();
    let mut missing = vec![];
    tch::no_grad(|| -> Result<()> {
        for (name, var) in vars
            .iter()
            .filter(|(n, _)| n.starts_with(&format!("{prefix}.")))
        {
            match by_name.remove(name) {
                Some(t) => {
                    if t.size() != var.size() {
                        bail!(
                            "{}: shape {:?} in {}, model expects {:?}",
                            name,
                            t.size(),
                            path.display(),
                            var.size()
                        );
                    }
                    let mut v = var.shallow_clone();
                    v.copy_(&t.to_device(var.device()));
                    report.loaded += 1;
                }
                None => missing.push(name.clone()),
            }
        }
        Ok(())
    })?;
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{} lacks {} weights the {} model needs, e.g. {:?} (is config.json the right architecture?)",
            path.display(),
            missing.len(),
            if hf_prefix == "bert." { "BERT" } else { "DistilBERT" },
            &missing[..missing.len().min(5)]
        );
    }
    report.unused = by_name.into_keys().collect();
    report.unused.sort();
    Ok(report)
}
