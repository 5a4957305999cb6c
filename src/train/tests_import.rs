//! Released DemoVLP weights: a checkpoint of the public architecture (transcribed in
//! `tests/train/demovlp_public.py`, saved as the public trainer saves it, keys
//! `module.object_model.*`, `module.text_model.*`, `module.txt_proj.1.*`) goes through
//! `detector/convert_demovlp.py`, and our towers with the converted weights and config must give
//! the public forward's embeddings for the same regions, locations and token ids.

use std::path::Path;
use std::process::Command;

use tch::{Device, Kind, Tensor};

use super::checkpoint;
use super::config::{ModelConfig, TrainConfig};
use super::import::init_mismatches;
use super::layers::Ctx;
use super::model::{self, TensorBatch};
use super::tests::{assert_close, json_vec, python, repo, rng_lock, run_py, to_vec};
use super::text::TextModelConfig;

fn tensor(v: &serde_json::Value, shape: &[i64], kind: Kind) -> Tensor {
    Tensor::from_slice(&json_vec(v)).view(shape).to_kind(kind)
}

fn shape(v: &serde_json::Value) -> Vec<i64> {
    let mut out = vec![];
    let mut cur = v;
    while let serde_json::Value::Array(a) = cur {
        out.push(a.len() as i64);
        cur = &a[0];
    }
    out
}

/// Writes the release checkpoint and reference outputs, converts it; returns the reference.
fn convert_reference(d: &Path) -> serde_json::Value {
    run_py("demovlp_reference.py", &[d]);
    let out = Command::new(python())
        .arg(repo().join("detector/convert_demovlp.py"))
        .arg(d.join("demovlp.pth"))
        .arg("--out")
        .arg(d.join("conv"))
        .arg("--text-dir")
        .arg(d.join("text"))
        .args(["--video-heads", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "convert_demovlp.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(d.join("reference.json")).unwrap()).unwrap()
}

fn batch(r: &serde_json::Value) -> TensorBatch {
    let ids = tensor(&r["ids"], &shape(&r["ids"]), Kind::Int64);
    let am = tensor(
        &r["attention_mask"],
        &shape(&r["attention_mask"]),
        Kind::Int64,
    );
    TensorBatch {
        features: tensor(&r["features"], &shape(&r["features"]), Kind::Float),
        locations: tensor(&r["locations"], &shape(&r["locations"]), Kind::Float),
        region_mask: tensor(&r["region_mask"], &shape(&r["region_mask"]), Kind::Float),
        word_mask: am.to_kind(Kind::Float),
        ids,
        attention_mask: am,
        grid_hw: None,
    }
}

/// Video `[B, 1+N, E]` and text `[B, L, E]` embeddings of our model built with `model_cfg`
/// from the converted weights.
fn embed(conv: &Path, model_cfg: &ModelConfig, b: &TensorBatch) -> (Tensor, Tensor) {
    let text_cfg = TextModelConfig::from_file(&conv.join("text_config.json")).unwrap();
    let (vs, m) = model::build(model_cfg, &text_cfg, Device::Cpu, false).unwrap();
    let missing = checkpoint::load_weights(&vs, &conv.join("model.safetensors"), true).unwrap();
    assert!(missing.is_empty());
    let (g, r, _) = m.encode_video(b, Ctx::eval());
    let (s, w, _) = m.encode_text(b, Ctx::eval());
    assert_eq!(to_vec(&s), to_vec(&w.select(1, 0)));
    (Tensor::cat(&[g.unsqueeze(1), r], 1), w)
}

fn max_diff(a: &Tensor, b: &[f64]) -> f64 {
    to_vec(a)
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn demovlp_release_checkpoint_converts_and_matches_public_forward() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = convert_reference(d);
    let conv = d.join("conv");
    let cfg: TrainConfig =
        toml::from_str(&std::fs::read_to_string(conv.join("config.toml")).unwrap()).unwrap();
    let m = &cfg.model;
    assert!(m.text_proj_relu);
    assert!(!m.video.region_token_layernorm && !m.video.final_layernorm);
    assert_eq!((m.video.location_dim, m.video.max_frames), (6, 2));

    let b = batch(&r);
    let (video, text) = embed(&conv, m, &b);
    let (ref_video, ref_text) = (json_vec(&r["video"]), json_vec(&r["text"]));
    assert_eq!(video.size(), shape(&r["video"]));
    eprintln!(
        "max |ours - public|: video {:.2e}, text {:.2e}",
        max_diff(&video, &ref_video),
        max_diff(&text, &ref_text)
    );
    assert_close(&to_vec(&video), &ref_video, 1e-4, "video [CLS]+regions");
    assert_close(&to_vec(&text), &ref_text, 1e-4, "text [CLS]+words");

    // Each switch matters: with today's default the embeddings leave the public ones.
    let mut on = m.clone();
    on.video.region_token_layernorm = true;
    let mut fin = m.clone();
    fin.video.final_layernorm = true;
    for (what, c) in [("region_token_layernorm", on), ("final_layernorm", fin)] {
        let (v, _) = embed(&conv, &c, &b);
        let diff = max_diff(&v, &ref_video);
        assert!(
            diff > 1e-2,
            "{what} = true moved video embeddings only {diff}"
        );
    }
    let mut relu = m.clone();
    relu.text_proj_relu = false;
    let (_, t) = embed(&conv, &relu, &b);
    let diff = max_diff(&t, &ref_text);
    assert!(diff > 1e-2, "text_proj_relu = false moved text only {diff}");

    // `--init` from the converted weights with default switches names all three.
    assert!(init_mismatches(&conv, m).is_empty());
    let warnings = init_mismatches(
        &conv,
        &ModelConfig {
            video: m.video.clone(),
            ..ModelConfig::default()
        },
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("model.text_proj_relu = false here"));
    let mut defaults = m.clone();
    defaults.text_proj_relu = false;
    defaults.video.region_token_layernorm = true;
    defaults.video.final_layernorm = true;
    let w = init_mismatches(&conv, &defaults).join("\n");
    for name in [
        "text_proj_relu",
        "region_token_layernorm",
        "final_layernorm",
    ] {
        assert!(w.contains(name), "{name} not named in {w}");
    }
}
