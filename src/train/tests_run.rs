//! Run management: evaluation every N steps with `best` selection, keep-k step checkpoints and
//! atomic replacement, metrics as JSONL and TensorBoard events (read back by an independent
//! reader, `tests/train/read_tfevents.py`), the learning-rate schedule under gradient
//! accumulation, the memory estimate and its refusal, and device warnings.

use std::path::Path;
use std::sync::Arc;

use super::checkpoint;
use super::config::{BestMetric, EvalConfig, TrainConfig};
use super::data::RegionSource;
use super::synth::{self, PlantedSpec};
use super::tests::{mem, rng_lock, run_py, tiny_config};
use super::trainer::{RunOptions, Trainer};

fn planted(items: usize, seed: u64) -> PlantedSpec {
    PlantedSpec {
        items,
        seed,
        ..Default::default()
    }
}

fn with_eval(
    mut cfg: TrainConfig,
    dir: &Path,
    every_steps: u64,
    metric: BestMetric,
) -> TrainConfig {
    cfg.eval = Some(EvalConfig {
        shards: dir.join("data"),
        frames: 1,
        batch_size: 64,
        every_epochs: 0,
        every_steps,
        metric,
        use_local: true,
    });
    cfg
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn evaluates_every_n_steps_keeps_the_best_and_the_newest_k_checkpoints() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    // 128 items / 16 = 8 steps in one epoch; eval every 2 steps (not at the epoch end), a step
    // checkpoint every 2 steps, the newest 2 kept.
    let cfg = tiny_config(
        dir.path(),
        "[log]\nsave_every_steps = 2\nkeep_last = 2\n[optim]\nlr = 5e-3\n",
    );
    let cfg = with_eval(cfg, dir.path(), 2, BestMetric::Rsum);
    let test: Arc<dyn RegionSource> = Arc::new(synth::planted(&planted(48, 77)));
    let mut t = Trainer::new(
        cfg.clone(),
        Some(vec![mem(&planted(128, 1))]),
        Some(test.clone()),
        &RunOptions::default(),
    )
    .unwrap();
    let s = t.run(&RunOptions::default()).unwrap();
    assert_eq!(s.steps.len(), 8);
    // Once per multiple of 2, and no second evaluation at the last step.
    let eval_steps: Vec<u64> = s.evals.iter().map(|e| e.step).collect();
    assert_eq!(eval_steps, [2, 4, 6, 8]);
    // `best` flags mark each new maximum of the configured metric.
    let mut best_so_far = f64::NEG_INFINITY;
    for e in &s.evals {
        let want = e.t2v.r1 + e.t2v.r5 + e.t2v.r10 + e.v2t.r1 + e.v2t.r5 + e.v2t.r10;
        assert!((e.score - want).abs() < 1e-12, "rsum");
        assert_eq!(e.best, e.score > best_so_far, "step {}", e.step);
        best_so_far = best_so_far.max(e.score);
    }
    let best = s.evals.iter().rfind(|e| e.best).unwrap();
    let out = &cfg.output_dir;
    let best_state = checkpoint::load_state(&out.join("best")).unwrap();
    assert_eq!(best_state.step, best.step);
    assert_eq!(best_state.best_step, Some(best.step));
    assert_eq!(best_state.best_metric.as_deref(), Some("rsum"));
    assert_eq!(best_state.best_score, Some(best.score));
    // The `best` weights score what was recorded when they were saved.
    let again = Trainer::new(
        cfg.clone(),
        Some(vec![mem(&planted(128, 1))]),
        Some(test),
        &RunOptions {
            init: Some(out.join("best")),
            ..Default::default()
        },
    )
    .unwrap();
    let m = again.evaluate().unwrap().unwrap();
    assert!(
        (BestMetric::Rsum.score(&m) - best.score).abs() < 1e-9,
        "best checkpoint scores {} now, {} when saved",
        BestMetric::Rsum.score(&m),
        best.score
    );
    // Keep-k: step-6 and step-8 remain; `last` is step 8, sharing its files by hard link.
    let steps: Vec<u64> = checkpoint::step_checkpoints(out)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [6, 8]);
    assert_eq!(checkpoint::load_state(&out.join("last")).unwrap().step, 8);
    {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&out.join("last/model.safetensors")),
            ino(&out.join("step-8/model.safetensors"))
        );
    }
    let names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".tmp") || n.ends_with(".old")),
        "leftovers: {names:?}"
    );
    // One metrics file: train and eval records share kind/time/step/epoch/samples.
    let recs = read_jsonl(&out.join("metrics.jsonl"));
    let evals: Vec<&serde_json::Value> = recs.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(evals.len(), 4);
    assert_eq!(recs.iter().filter(|r| r["kind"] == "train").count(), 8);
    for r in &recs {
        for k in ["time", "step", "epoch", "samples"] {
            assert!(r[k].is_number(), "{k} missing in {r}");
        }
    }
    for (r, e) in evals.iter().zip(&s.evals) {
        assert_eq!(r["step"], e.step);
        assert_eq!(r["best"], e.best);
        assert_eq!(r["metric"], "rsum");
        assert_eq!(r["t2v"]["r1"].as_f64().unwrap(), e.t2v.r1);
    }
}

#[test]
fn metrics_jsonl_and_tensorboard_events_agree() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), "[optim]\nmax_steps = 4\n");
    let cfg = with_eval(cfg, dir.path(), 3, BestMetric::T2vRsum);
    let out = cfg.output_dir.clone();
    let s = Trainer::new(
        cfg,
        Some(vec![mem(&planted(96, 1))]),
        Some(Arc::new(synth::planted(&planted(32, 5)))),
        &RunOptions::default(),
    )
    .unwrap()
    .run(&RunOptions::default())
    .unwrap();
    assert_eq!(s.steps.len(), 4);
    let json = dir.path().join("events.json");
    run_py("read_tfevents.py", &[&out, &json]);
    let tb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(tb["files"].as_array().unwrap().len(), 1);
    assert_eq!(tb["file_versions"][0], "brain.Event:2");
    let events = tb["events"].as_array().unwrap();
    let recs = read_jsonl(&out.join("metrics.jsonl"));
    // Steps 1-4 train, evaluations at 3 and at the end (4).
    assert_eq!(recs.len(), 6);
    assert_eq!(events.len(), recs.len());
    for (r, ev) in recs.iter().zip(events) {
        let kind = r["kind"].as_str().unwrap();
        assert_eq!(ev["step"], r["step"], "{r}");
        assert!((ev["wall_time"].as_f64().unwrap() - r["time"].as_f64().unwrap()).abs() < 1e-6);
        let values = ev["values"].as_object().unwrap();
        // Every numeric field of the record is a scalar `<kind>/<path>`, and nothing else.
        let mut want = vec![];
        for (k, v) in r.as_object().unwrap() {
            if k == "step" || k == "time" {
                continue;
            }
            match v {
                serde_json::Value::Number(n) => {
                    want.push((format!("{kind}/{k}"), n.as_f64().unwrap()))
                }
                serde_json::Value::Object(o) => {
                    for (k2, v2) in o {
                        want.push((format!("{kind}/{k}/{k2}"), v2.as_f64().unwrap()));
                    }
                }
                _ => {}
            }
        }
        assert_eq!(values.len(), want.len(), "{r} vs {ev}");
        for (tag, x) in want {
            let got = values
                .get(&tag)
                .unwrap_or_else(|| panic!("{tag} missing"))
                .as_f64()
                .unwrap();
            // Python's protobuf hands float32 fields out rounded to their shortest repr.
            assert_eq!(got as f32, x as f32, "{tag}");
        }
    }
    assert!(events[0]["values"]["train/loss"].as_f64().unwrap() > 0.0);
    assert!(events[3]["values"].get("eval/t2v/r1").is_some());
    // The reader checks the CRCs: one flipped payload byte makes it fail.
    let evfile = out.join(tb["files"][0].as_str().unwrap());
    let mut bytes = std::fs::read(&evfile).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40;
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("events.out.tfevents.0.x"), &bytes).unwrap();
    let o = std::process::Command::new(super::tests::python())
        .arg(super::tests::repo().join("tests/train/read_tfevents.py"))
        .arg(&bad)
        .arg(dir.path().join("bad.json"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("CRC"));
}

#[test]
fn an_interrupted_checkpoint_replacement_leaves_a_complete_checkpoint() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), "[optim]\nmax_steps = 2\n");
    let out = cfg.output_dir.clone();
    Trainer::new(
        cfg.clone(),
        Some(vec![mem(&planted(64, 1))]),
        None,
        &RunOptions::default(),
    )
    .unwrap()
    .run(&RunOptions::default())
    .unwrap();
    let last = out.join("last");
    assert_eq!(checkpoint::resolve(&last), Some(last.clone()));
    // A crash between "move the old one aside" and "rename the new one in": `last.old` is
    // complete, `last.tmp` maybe not, `last` missing.
    std::fs::rename(&last, out.join("last.old")).unwrap();
    std::fs::create_dir_all(out.join("last.tmp")).unwrap();
    assert_eq!(checkpoint::resolve(&last), Some(out.join("last.old")));
    // Resume finds it and continues at step 2.
    let mut cfg2 = cfg.clone();
    cfg2.optim.max_steps = Some(3);
    let opts = RunOptions {
        resume: true,
        ..Default::default()
    };
    let s = Trainer::new(cfg2, Some(vec![mem(&planted(64, 1))]), None, &opts)
        .unwrap()
        .run(&opts)
        .unwrap();
    assert_eq!(s.steps.len(), 1);
    assert_eq!(s.steps[0].step, 3);
    // The next save cleaned up: `last` at step 3, no `.old` or `.tmp`.
    assert_eq!(checkpoint::load_state(&last).unwrap().step, 3);
    assert!(!out.join("last.old").exists() && !out.join("last.tmp").exists());
}

#[test]
fn learning_rate_schedule_counts_optimizer_steps_under_accumulation() {
    let _rng = rng_lock();
    let run = |batch: usize, accum: usize| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny_config(
            dir.path(),
            &format!(
                "[data]\nbatch_size = {batch}\n[optim]\ngrad_accum = {accum}\nepochs = 2\nwarmup_steps = 2\nschedule = \"cosine\"\nmin_lr = 1e-5\n"
            ),
        );
        let s = Trainer::new(
            cfg.clone(),
            Some(vec![mem(&planted(96, 1))]),
            None,
            &RunOptions::default(),
        )
        .unwrap()
        .run(&RunOptions::default())
        .unwrap();
        (cfg, s)
    };
    // 96 items: 6 micro-batches of 16 per epoch, 3 optimizer steps with accumulation 2.
    let (cfg, acc) = run(16, 2);
    assert_eq!(acc.steps.len(), 6);
    for (i, st) in acc.steps.iter().enumerate() {
        let want = super::optim::learning_rate(&cfg.optim, i as u64, 6, 3);
        assert_eq!(st.lr, want, "step {}", i + 1);
        assert_eq!(
            st.samples,
            32 * (i as u64 + 1),
            "samples after step {}",
            i + 1
        );
    }
    // Warm-up then cosine over optimizer steps: the same sequence as one batch of 32.
    let (_, big) = run(32, 1);
    let a: Vec<f64> = acc.steps.iter().map(|s| s.lr).collect();
    let b: Vec<f64> = big.steps.iter().map(|s| s.lr).collect();
    assert_eq!(a, b);
    assert_eq!(a[1], cfg.optim.lr);
    assert!(a[2..].windows(2).all(|w| w[1] < w[0]), "{a:?}");
}

#[test]
fn memory_estimate_counts_parameters_and_refuses_a_config_that_cannot_fit() {
    use super::memory::{self, Workload};
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), "");
    let text =
        super::text::TextModelConfig::from_file(&cfg.model.text.config_path().unwrap()).unwrap();
    let (vs, _) = super::model::build(&cfg.model, &text, tch::Device::Cpu, false).unwrap();
    let numel: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    let w = Workload::of(&cfg, 8, tch::Device::Cpu, 1);
    assert_eq!(w.batch, 16);
    // Data parallel: each of 4 processes holds a quarter and contrasts with all 16.
    let w4 = Workload::of(&cfg, 8, tch::Device::Cpu, 4);
    assert_eq!((w4.batch, w4.contrast, w4.processes), (4, 16, 4));
    let e4 = memory::estimate(&cfg, &text, &vs, &w4);
    assert!(!w.bf16, "bf16 is CUDA-only");
    let e = memory::estimate(&cfg, &text, &vs, &w);
    assert_eq!(e.params as i64, numel);
    assert_eq!((4 * e4.activations, e4.weights), (e.activations, e.weights));
    assert!(e4.loss * 4 <= e.loss + 64 && e4.loss * 4 + 64 >= e.loss);
    assert_eq!(e.weights, 4 * e.params);
    assert_eq!(e.optimizer, 2 * e.grads);
    // Activations grow with the batch, the RWA loss with batch × contrast.
    let w2 = Workload {
        batch: 32,
        contrast: 32,
        ..w
    };
    let e2 = memory::estimate(&cfg, &text, &vs, &w2);
    assert_eq!(e2.activations, 2 * e.activations);
    assert!(e2.loss >= 4 * e.loss - 64 && e2.loss <= 4 * e.loss);
    assert_eq!(e2.weights, e.weights);
    // The largest batch under a limit fits and the next one does not.
    let limit = e.total() + (e2.total() - e.total()) / 2;
    let (b, fit) =
        memory::largest_fitting_batch(&cfg, &text, e.params, e.trainable, &w2, limit).unwrap();
    assert!(fit.total() <= limit && (16..32).contains(&b), "{b}");
    let next = memory::estimate_with(
        &cfg,
        &text,
        e.params,
        e.trainable,
        &Workload {
            batch: b + 1,
            contrast: b + 1,
            ..w
        },
    );
    assert!(next.total() > limit);

    // Through the trainer: a batch of 65,536 contrasts 4·10⁹ pairs of 8 regions × 16 words
    // (≈ 2·10¹³ bytes of RWA tensors), more than any machine's free memory.
    let huge = tiny_config(dir.path(), "[data]\nbatch_size = 65536\n");
    let err = match Trainer::new(
        huge.clone(),
        Some(vec![mem(&planted(64, 1))]),
        None,
        &RunOptions::default(),
    ) {
        Ok(_) => panic!("a 65,536 batch was accepted"),
        Err(e) => format!("{e:#}"),
    };
    for want in [
        "needs about",
        "GiB free",
        "data.batch_size =",
        "optim.grad_accum =",
        "check = \"warn\"",
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    assert!(err.contains("MemAvailable"), "{err}");
    // `check = "warn"` goes on (to the next problem: 64 items are fewer than one batch).
    let mut warn = huge;
    warn.memory.check = super::config::MemoryCheck::Warn;
    let err = format!(
        "{:#}",
        Trainer::new(
            warn,
            Some(vec![mem(&planted(64, 1))]),
            None,
            &RunOptions::default()
        )
        .err()
        .unwrap()
    );
    assert!(err.contains("fewer than one batch"), "{err}");
    // `memory.limit_gib` replaces the free memory: a tiny limit refuses the tiny config.
    let mut small = tiny_config(dir.path(), "[memory]\nlimit_gib = 0.0001\n");
    let err = format!(
        "{:#}",
        Trainer::new(
            small.clone(),
            Some(vec![mem(&planted(64, 1))]),
            None,
            &RunOptions::default()
        )
        .err()
        .unwrap()
    );
    assert!(err.contains("memory.limit_gib"), "{err}");
    small.memory.check = super::config::MemoryCheck::Off;
    assert!(Trainer::new(
        small,
        Some(vec![mem(&planted(64, 1))]),
        None,
        &RunOptions::default()
    )
    .is_ok());
}

#[test]
fn options_that_do_not_apply_to_the_device_are_named() {
    use super::device_notes::warnings;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(dir.path(), "");
    let cpu = tch::Device::Cpu;
    cfg.optim.bf16 = true;
    let w = warnings(&cfg, cpu);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("optim.bf16 = true has no effect on the CPU"),
        "{w:?}"
    );
    cfg.optim.bf16 = false;
    assert!(warnings(&cfg, cpu).is_empty());
    if !tch::Cuda::is_available() {
        cfg.device = "auto".into();
        let w = warnings(&cfg, super::device_from_str("auto").unwrap());
        assert!(
            w[0].contains("device = \"auto\" found no CUDA device"),
            "{w:?}"
        );
        let e = super::device_from_str("cuda:3").unwrap_err().to_string();
        assert!(e.contains("sees 0 CUDA device"), "{e}");
    }
    // Validation: keep_last without periodic saves is an error naming the fix.
    let mut c = tiny_config(dir.path(), "");
    c.log.keep_last = 3;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("log.save_every_steps"), "{e}");
}
