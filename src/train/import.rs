//! Starting from other weights: the released DemoVLP checkpoint (converted by
//! `detector/convert_demovlp.py` into a checkpoint directory whose `config.toml` records the
//! architecture switches it needs) or any checkpoint of ours.
//!
//! Shapes are checked when the weights are copied; what shapes cannot show is a run whose
//! switches differ from the ones the weights were trained with (e.g. DemoVLP weights, which
//! never saw the final LayerNorm, run with `final_layernorm = true`). [`init_mismatches`] names
//! each such difference, so `--init` and `eval --config` can warn instead of silently computing
//! other embeddings.

use std::path::Path;

use crate::train::checkpoint::files;
use crate::train::config::ModelConfig;

/// Differences in the architecture switches between the `[model]` a checkpoint directory was
/// written with (its `config.toml`) and `model`, one line each (empty: none, or the directory
/// has no readable `config.toml`, which is then reported as the only line).
pub fn init_mismatches(dir: &Path, model: &ModelConfig) -> Vec<String> {
    let path = dir.join(files::CONFIG);
    if !path.exists() {
        return vec![];
    }
    /// The rest of the file (data, loss, …) is not ours to compare.
    #[derive(serde::Deserialize)]
    struct Written {
        #[serde(default)]
        model: ModelConfig,
    }
    let theirs = match std::fs::read_to_string(&path)
        .map_err(anyhow::Error::from)
        .and_then(|t| Ok(toml::from_str::<Written>(&t)?))
    {
        Ok(w) => w.model,
        Err(e) => return vec![format!("cannot read [model] of {}: {e}", path.display())],
    };
    let (a, b) = (&theirs.video, &model.video);
    let checks: [(&str, String, String); 6] = [
        (
            "model.text_proj_relu",
            theirs.text_proj_relu.to_string(),
            model.text_proj_relu.to_string(),
        ),
        (
            "model.video.region_token_layernorm",
            a.region_token_layernorm.to_string(),
            b.region_token_layernorm.to_string(),
        ),
        (
            "model.video.final_layernorm",
            a.final_layernorm.to_string(),
            b.final_layernorm.to_string(),
        ),
        (
            "model.video.frame_attention",
            a.frame_attention.to_string(),
            b.frame_attention.to_string(),
        ),
        (
            "model.video.location_dim",
            a.location_dim.to_string(),
            b.location_dim.to_string(),
        ),
        (
            "model.video.input",
            format!("{:?}", a.input).to_lowercase(),
            format!("{:?}", b.input).to_lowercase(),
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, x, y)| x != y)
        .map(|(name, x, y)| {
            format!(
                "{name} = {y} here, but the weights in {} were trained with {x} (set it to {x} to \
                 reproduce them)",
                dir.display()
            )
        })
        .collect()
}
