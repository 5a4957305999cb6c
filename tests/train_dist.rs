//! Data-parallel training (feature `train`): `regionfeat train` started twice as torchrun would
//! (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) forms a c10d Gloo group on this CPU. With the
//! global batch split over two processes, the logged losses must be those of one process
//! training on the whole batch, only rank 0 may write files, and a run stopped with two
//! processes must resume exactly with one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use regionfeat::train::synth::{self, PlantedSpec, TinyArch};

use crate::util::{path_str, python, repo, stderr, tempdir};

const LAUNCH_VARS: [&str; 9] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_NPROCS",
    "SLURM_LOCALID",
];

/// Planted items with 1 or 2 frames and 2 to 5 caption words, so the two ranks pad regions and
/// words to different lengths; written by h5py (tests/train/make_shards.py).
fn write_dataset(dir: &Path) {
    let mut src = synth::planted(&PlantedSpec {
        items: 24,
        words: 12,
        words_per_caption: 2,
        feature_dim: 16,
        max_boxes: 4,
        distractors: 1,
        frames: 2,
        seed: 5,
        ..Default::default()
    });
    let (k, d) = (src.max_boxes, src.feature_dim);
    for (i, it) in src.items.iter_mut().enumerate() {
        for w in 0..i % 4 {
            it.caption
                .push_str(&format!(" {}", synth::word((i + w) % 12)));
        }
        if i % 3 != 2 {
            let mut f = it.frames.features.to_f32();
            f.truncate(k * d);
            it.frames.features = f.into();
            it.frames.locations.truncate(k * 7);
            it.frames.num_boxes.truncate(1);
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    let items: Vec<_> = src
        .items
        .iter()
        .map(|it| {
            serde_json::json!({"id": it.id, "caption": it.caption, "features": it.frames.features.to_f32(),
                "locations": it.frames.locations, "num_boxes": it.frames.num_boxes})
        })
        .collect();
    let spec = serde_json::json!({"feature_dim": d, "max_boxes": k, "items": items});
    let j = dir.join("items.json");
    std::fs::write(&j, spec.to_string()).unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/train/make_shards.py"))
        .arg(&j)
        .arg(dir)
        .arg("10")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_file(j).unwrap();
}

/// Global batch 8 over 24 items: 3 steps per epoch, 2 epochs. No dropout anywhere, so the
/// random streams of one and two processes cannot differ.
fn write_config(d: &Path) -> PathBuf {
    synth::write_tiny_text_model(&d.join("text"), 12, 32, 1, 4, TinyArch::Bert).unwrap();
    let cfg = format!(
        r#"
seed = 3
output_dir = "{d}/unused"
device = "cpu"
[data]
datasets = [{{ name = "planted", shards = "{d}/shards" }}]
frames = 2
frame_sampling = "random"
batch_size = 8
workers = 1
max_text_len = 16
[model]
embed_dim = 32
[model.text]
dir = "{d}/text"
load_weights = false
[model.video]
feature_dim = 16
hidden_size = 32
num_layers = 1
num_heads = 4
max_frames = 2
[optim]
lr = 2e-3
epochs = 2
schedule = "constant"
[log]
every_steps = 1
progress = false
"#,
        d = d.display()
    );
    let p = d.join("train.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

fn train_cmd(config: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_regionfeat"));
    c.args(["train", "--config", path_str(config), "--no-progress"])
        .args(["--output-dir", path_str(out)])
        .args(extra)
        .current_dir(repo());
    for v in LAUNCH_VARS {
        c.env_remove(v);
    }
    c
}

fn single(config: &Path, out: &Path, extra: &[&str]) {
    let o = train_cmd(config, out, extra).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Two ranks on 127.0.0.1 (rank r writes to `outs[r]`); returns their outputs.
fn two_ranks(config: &Path, outs: [&Path; 2], extra: &[&str]) -> [Output; 2] {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let spawn = |rank: usize| -> Child {
        train_cmd(config, outs[rank], extra)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .env("GLOO_SOCKET_IFNAME", "lo")
            .env("REGIONFEAT_DIST_TIMEOUT_S", "120")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (r0, r1) = (spawn(0), spawn(1));
    let (o0, o1) = (
        r0.wait_with_output().unwrap(),
        r1.wait_with_output().unwrap(),
    );
    for o in [&o0, &o1] {
        assert!(o.status.success(), "{}", stderr(o));
    }
    [o0, o1]
}

const TERMS: [&str; 6] = [
    "loss",
    "global_v2t",
    "global_t2v",
    "local_v2t",
    "local_t2v",
    "grad_norm",
];

/// Per logged step: (step, the values of [`TERMS`]).
fn step_logs(out: &Path) -> Vec<(u64, Vec<f64>)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            let terms = TERMS.iter().map(|t| v[t].as_f64().unwrap()).collect();
            (v["step"].as_u64().unwrap(), terms)
        })
        .collect()
}

fn assert_same_steps(got: &[(u64, Vec<f64>)], want: &[(u64, Vec<f64>)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: step count");
    for ((sa, a), (sb, b)) in got.iter().zip(want) {
        assert_eq!(sa, sb, "{what}: step numbers");
        for ((x, y), t) in a.iter().zip(b).zip(TERMS) {
            assert!(
                (x - y).abs() <= 1e-5,
                "{what}: step {sa} {t}: {x} vs {y} (diff {:.2e})",
                (x - y).abs()
            );
        }
    }
}

#[test]
fn two_gloo_processes_match_one_process_with_the_whole_batch() {
    let dir = tempdir();
    let d = dir.path();
    write_dataset(&d.join("shards"));
    let config = write_config(d);

    let one = d.join("one");
    single(&config, &one, &[]);
    let reference = step_logs(&one);
    assert_eq!(reference.len(), 6, "2 epochs × 3 steps");
    // The loss must move, or equal sequences would prove little.
    assert!((reference[0].1[0] - reference[5].1[0]).abs() > 1e-3);

    let (r0, r1) = (d.join("rank0"), d.join("rank1"));
    let outs = two_ranks(&config, [&r0, &r1], &[]);
    assert!(
        stderr(&outs[0]).contains("data-parallel: 2 processes"),
        "{}",
        stderr(&outs[0])
    );
    assert_same_steps(&step_logs(&r0), &reference, "2 ranks vs 1 process");
    assert!(r0.join("last/model.safetensors").exists());
    // Rank 1 writes nothing: no checkpoint, no metrics.
    let written: Vec<_> = std::fs::read_dir(&r1)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "rank 1 wrote {written:?}");

    // Stopped after 2 steps with 2 processes, resumed with 1: same sequence as never stopping.
    let split = d.join("split");
    two_ranks(&config, [&split, &d.join("split1")], &["--stop-after", "2"]);
    assert_eq!(step_logs(&split).len(), 2);
    single(&config, &split, &["--resume"]);
    assert_same_steps(
        &step_logs(&split),
        &reference,
        "resumed with 1 of 2 processes",
    );
}

#[test]
fn a_global_batch_that_does_not_split_is_refused() {
    let dir = tempdir();
    let d = dir.path();
    write_dataset(&d.join("shards"));
    let config = write_config(d);
    let odd = d.join("odd.toml");
    std::fs::write(
        &odd,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("batch_size = 8", "batch_size = 7"),
    )
    .unwrap();
    let o = train_cmd(&odd, &d.join("out"), &[])
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", "1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("data.batch_size = 7") && e.contains("WORLD_SIZE = 2"),
        "{e}"
    );
    // No MASTER_PORT: a clear message, not a hang.
    let o = train_cmd(&config, &d.join("out"), &[])
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("MASTER_PORT"), "{}", stderr(&o));
}
