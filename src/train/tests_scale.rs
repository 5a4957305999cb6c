//! Trainer-level tests of the data layer at scale: weighted dataset mixing with fixed-size
//! epochs resumes exactly mid-epoch, and training reads a many-shard index through a small
//! open-shard cache.

use std::sync::Arc;

use super::data::RegionSource;
use super::synth::{self, PlantedSpec};
use super::synth_index::{self, SynthIndexSpec};
use super::tests::{merge_toml, rng_lock, tiny_config};
use super::trainer::{RunOptions, Trainer};

fn losses(s: &super::trainer::TrainSummary) -> Vec<f64> {
    s.steps.iter().map(|s| s.loss).collect()
}

#[test]
fn alternating_weighted_fixed_size_epochs_resume_exactly_mid_epoch() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data").display().to_string();
    // Two datasets weighted 2:1, alternating batches of 16, 80 samples per epoch (5 batches:
    // 3 of A, 2 of B), 3 epochs; the resumed run stops after 7 steps (epoch 1, batch 2).
    let extra = format!(
        r#"
[data]
datasets = [{{ name = "a", shards = "{d}", weight = 2.0 }}, {{ name = "b", shards = "{d}", weight = 1.0 }}]
mixing = "alternate"
samples_per_epoch = 80
[optim]
epochs = 3
"#
    );
    let mut merged: toml::Table = toml::from_str("").unwrap();
    merge_toml(&mut merged, toml::from_str(&extra).unwrap());
    let cfg = tiny_config(dir.path(), &toml::to_string(&merged).unwrap());
    let sources = || -> Vec<Arc<dyn RegionSource>> {
        [(96, 1), (40, 2)]
            .iter()
            .map(|&(items, seed)| {
                Arc::new(synth::planted(&PlantedSpec {
                    items,
                    seed,
                    ..Default::default()
                })) as Arc<dyn RegionSource>
            })
            .collect()
    };
    let opts = RunOptions::default();
    let full = Trainer::new(cfg.clone(), Some(sources()), None, &opts)
        .unwrap()
        .run(&opts)
        .unwrap();
    assert_eq!(full.steps.len(), 15);
    assert_eq!(full.state.samples, 15 * 16);
    let mut cfg2 = cfg.clone();
    let dir2 = tempfile::tempdir().unwrap();
    cfg2.output_dir = dir2.path().join("out");
    let stop = RunOptions {
        stop_after: Some(7),
        ..Default::default()
    };
    let first = Trainer::new(cfg2.clone(), Some(sources()), None, &stop)
        .unwrap()
        .run(&stop)
        .unwrap();
    assert_eq!((first.state.epoch, first.state.next_batch), (1, 2));
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    let rest = Trainer::new(cfg2, Some(sources()), None, &resume)
        .unwrap()
        .run(&resume)
        .unwrap();
    let (a, mut b) = (losses(&full), losses(&first));
    b.extend(losses(&rest));
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-6 * x.abs().max(1.0),
            "step {}: uninterrupted {x} vs resumed {y}",
            i + 1
        );
    }
    // Another seed draws other batches.
    let mut cfg3 = cfg.clone();
    cfg3.seed += 1;
    cfg3.output_dir = dir.path().join("out3");
    let other = Trainer::new(cfg3, Some(sources()), None, &opts)
        .unwrap()
        .run(&opts)
        .unwrap();
    assert_ne!(losses(&other), a);
}

#[test]
fn weights_without_a_mixing_mode_and_short_epochs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path(), "");
    let text = toml::to_string(&cfg).unwrap();
    let with = |extra: &str| {
        let mut v: toml::Table = toml::from_str(&text).unwrap();
        merge_toml(&mut v, toml::from_str(extra).unwrap());
        super::config::TrainConfig::from_toml(&toml::to_string(&v).unwrap())
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    };
    let d = dir.path().join("data").display().to_string();
    let two = |w: f64| {
        format!(
            "[data]\ndatasets = [{{ name = \"a\", shards = \"{d}\", weight = {w} }}, \
             {{ name = \"b\", shards = \"{d}\" }}]\n"
        )
    };
    assert!(with(&two(2.0)).contains("mixing"));
    assert!(with(&format!("{}mixing = \"sample\"\n", two(2.0))).is_empty());
    assert!(with(&format!("{}mixing = \"sample\"\n", two(-1.0))).contains("weight"));
    assert!(with("[data]\nsamples_per_epoch = 4\n").contains("samples_per_epoch"));
    assert!(with("[data]\nmax_open_shards = 0\n").contains("max_open_shards"));
    assert!(with("[data]\nmixing = \"shuffle\"\n").contains("unknown variant"));
}

#[test]
fn trains_from_a_many_shard_index_through_a_small_shard_cache() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("index");
    synth_index::write(&data, &SynthIndexSpec::new(256, 24)).unwrap();
    // 24 shards read through a cache of 3 open files, shuffled in blocks of 2 shards.
    let extra = format!(
        r#"
[data]
datasets = [{{ name = "synthetic", shards = "{}" }}]
max_open_shards = 3
shuffle_block_shards = 2
frames = 2
[model.video]
feature_dim = {}
[optim]
epochs = 2
"#,
        data.display(),
        synth_index::FEATURE_DIM
    );
    let cfg = tiny_config(dir.path(), &extra);
    let opts = RunOptions::default();
    let s = Trainer::new(cfg, None, None, &opts)
        .unwrap()
        .run(&opts)
        .unwrap();
    assert_eq!(s.steps.len(), 2 * 256 / 16);
    assert!(s.steps.iter().all(|s| s.loss.is_finite()));
}

/// The 5.8M-item measurement from a debug test binary (`benches/index_scale.sh` runs the
/// release bench): `INDEX_SCALE_DIR=/tmp/x INDEX_SCALE_MODE=gen|run|baseline cargo test
/// --features train --lib -- --ignored index_scale_measure --nocapture`, sizes from
/// `INDEX_SCALE_SIZES` (webvid,cc3m,shards; default 2500000,3300000,5665), run options from
/// `INDEX_SCALE_RUN` (max_open,batches,batch,mixing,block; default 128,40,256,alternate,32) and
/// `INDEX_SCALE_TOKENIZER`.
#[test]
#[ignore]
fn index_scale_measure() {
    use super::scale_bench;
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let root = std::path::PathBuf::from(var("INDEX_SCALE_DIR", "/tmp/regionfeat-index-scale"));
    match var("INDEX_SCALE_MODE", "run").as_str() {
        "gen" => {
            let v: Vec<usize> = var("INDEX_SCALE_SIZES", "2500000,3300000,5665")
                .split(',')
                .map(|x| x.parse().unwrap())
                .collect();
            let s = scale_bench::generate(&root, v[0], v[1], v[2]).unwrap();
            println!("generated in {s:.1} s");
        }
        "baseline" => println!("RESULT {}", scale_bench::baseline(&root).unwrap()),
        _ => {
            let r = var("INDEX_SCALE_RUN", "128,40,256,alternate,32");
            let v: Vec<&str> = r.split(',').collect();
            let mixing = match v[3] {
                "concat" => super::config::Mixing::Concat,
                "sample" => super::config::Mixing::Sample,
                _ => super::config::Mixing::Alternate,
            };
            let tok = var("INDEX_SCALE_TOKENIZER", "");
            let r = scale_bench::run(
                &root,
                v[0].parse().unwrap(),
                v[1].parse().unwrap(),
                v[2].parse().unwrap(),
                mixing,
                std::path::Path::new(&tok),
                v[4].parse().unwrap(),
            )
            .unwrap();
            println!("RESULT {r}");
        }
    }
}
