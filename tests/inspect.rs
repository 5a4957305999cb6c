//! `regionfeat inspect` and `regionfeat export` on the bundled samples, checked against the
//! shard as h5py/numpy read it, and on shards corrupted on purpose.

use std::path::{Path, PathBuf};

use regionfeat::shard::ShardReader;
use serde_json::Value;

use crate::util::{
    examples, extract_samples, path_str, python, regionfeat, repo, run_python, stderr, tempdir,
};

fn py(script: &str) -> PathBuf {
    repo().join("tests/py").join(script)
}

fn json_of(args: &[&str]) -> (i32, Value) {
    let o = regionfeat(args);
    let code = o.status.code().unwrap_or(-1);
    let text = String::from_utf8_lossy(&o.stdout);
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{args:?}: {e}\n{text}\n{}", stderr(&o)));
    (code, v)
}

#[test]
fn inspect_json_matches_the_shard() {
    let dir = tempdir();
    let shard = extract_samples(dir.path());
    let (code, s) = json_of(&["inspect", path_str(dir.path()), "--json"]);
    assert_eq!(code, 0);
    let facts: Value = serde_json::from_str(
        run_python(&[path_str(&py("shard_facts.py")), path_str(&shard)]).trim(),
    )
    .unwrap();
    for (ours, theirs) in [
        ("items", "items"),
        ("videos", "videos"),
        ("frames", "frames"),
        ("boxes", "boxes"),
        ("schema_version", "schema_version"),
        ("detector_name", "detector_name"),
        ("detector_sha256", "detector_sha256"),
        ("config", "config"),
        ("bytes", "bytes"),
    ] {
        assert_eq!(s[ours], facts[theirs], "{ours}");
    }
    assert_eq!(s["items"], 10);
    assert_eq!(s["images"], 7);
    assert_eq!(s["boxes_per_frame"]["counts"], facts["histogram"]);
    let top: Vec<Value> = s["top_classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| serde_json::json!([c["name"], c["count"]]))
        .collect();
    assert_eq!(Value::Array(top), facts["top_classes"]);
    assert!(
        (s["scores"]["min"].as_f64().unwrap() - facts["score_min"].as_f64().unwrap()).abs() < 1e-6
    );
    assert!(
        (s["scores"]["max"].as_f64().unwrap() - facts["score_max"].as_f64().unwrap()).abs() < 1e-6
    );
    assert_eq!(s["shards"][0]["feature_dtype"], "f16");
    assert_eq!(s["shards"][0]["done_record"], true);
    let per_item = s["bytes_per_item"].as_f64().unwrap();
    assert!((per_item - facts["bytes"].as_f64().unwrap() / 10.0).abs() < 1e-6);
    // The text form names the same things.
    let o = regionfeat(&["inspect", path_str(&shard)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "10 items",
        "31 frames",
        "test-grid",
        "regionfeat-shard v1",
        "boxes per frame",
        "top 9 classes",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn inspect_item_lists_frames_and_boxes() {
    let dir = tempdir();
    let shard = extract_samples(dir.path());
    let (code, it) = json_of(&[
        "inspect",
        path_str(dir.path()),
        "--item",
        "webvid/1000002",
        "--json",
    ]);
    assert_eq!(code, 0);
    let r = ShardReader::open(&shard).unwrap();
    let (k, names, attrs) = (
        r.max_boxes().unwrap(),
        r.class_names().unwrap(),
        r.attribute_names().unwrap(),
    );
    let (start, n) = r.frame_ranges().unwrap()[1];
    let b = r.read_frames(start, n as usize).unwrap();
    let frames = it["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 8);
    assert_eq!(it["id"], "webvid/1000002");
    assert_eq!(it["caption"], r.captions().unwrap()[1]);
    for (f, fr) in frames.iter().enumerate() {
        assert_eq!(fr["timestamp"].as_f64().unwrap() as f32, b.timestamps[f]);
        let boxes = fr["boxes"].as_array().unwrap();
        assert_eq!(boxes.len(), b.num_boxes[f] as usize);
        for (j, bx) in boxes.iter().enumerate() {
            let i = f * k + j;
            assert_eq!(bx["class_name"], names[b.classes[i] as usize]);
            assert_eq!(bx["attribute_name"], attrs[b.attributes[i] as usize]);
            assert_eq!(bx["score"].as_f64().unwrap() as f32, b.scores[i]);
            assert_eq!(bx["box"][2].as_f64().unwrap() as f32, b.boxes[i * 4 + 2]);
            assert_eq!(bx["location"].as_array().unwrap().len(), 7);
        }
    }
    let o = regionfeat(&["inspect", path_str(&shard), "--item", "no/such/item"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no/such/item"), "{}", stderr(&o));
}

#[test]
fn validate_passes_clean_shards_and_names_each_corruption() {
    let dir = tempdir();
    let shard = extract_samples(dir.path());
    let (code, v) = json_of(&["inspect", path_str(dir.path()), "--validate", "--json"]);
    assert_eq!(
        (code, &v["ok"], v["problems"].as_array().unwrap().len()),
        (0, &Value::Bool(true), 0),
        "{v:#}"
    );
    assert_eq!(v["frames"], 31);
    // (mode, item row, frame, check that must name it)
    let cases = [
        ("nan-feature", 1, 3, "non-finite"),
        ("box-outside", 4, 0, "box-outside-image"),
        ("num-boxes", 0, 5, "padding"),
        ("unsorted", 2, 7, "scores-order"),
    ];
    for (mode, item, frame, check) in cases {
        let copy = dir.path().join(format!("{mode}.h5"));
        std::fs::copy(&shard, &copy).unwrap();
        let at: Value = serde_json::from_str(
            run_python(&[
                path_str(&py("corrupt_shard.py")),
                path_str(&copy),
                mode,
                &item.to_string(),
                &frame.to_string(),
            ])
            .trim(),
        )
        .unwrap();
        let (code, v) = json_of(&["inspect", path_str(&copy), "--validate", "--json"]);
        assert_eq!(code, 1, "{mode}: {v:#}");
        assert_eq!(v["ok"], false);
        let problems = v["problems"].as_array().unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p["check"] == check && p["item"] == at["item"] && p["frame"] == frame),
            "{mode}: no {check} problem at item {} frame {frame}: {v:#}",
            at["item"]
        );
        // Nothing else is blamed.
        for p in problems {
            assert_eq!(
                (&p["item"], &p["frame"]),
                (&at["item"], &Value::from(frame)),
                "{mode}: {p}"
            );
        }
        // The text form names item and frame too, and exits 1.
        let o = regionfeat(&["inspect", path_str(&copy), "--validate"]);
        assert_eq!(o.status.code(), Some(1));
        let text = String::from_utf8_lossy(&o.stdout);
        let want = format!("item {} frame {frame}", at["item"].as_str().unwrap());
        assert!(
            text.contains(&want) && text.contains(check),
            "{mode}: {want:?} not in\n{text}"
        );
    }
    // A directory whose shard lost its done-record is incomplete.
    std::fs::remove_file(dir.path().join("shard-000000.done.json")).unwrap();
    for mode in ["nan-feature", "box-outside", "num-boxes", "unsorted"] {
        std::fs::remove_file(dir.path().join(format!("{mode}.h5"))).unwrap();
    }
    let (code, v) = json_of(&["inspect", path_str(dir.path()), "--validate", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(v["problems"][0]["check"], "done-record", "{v:#}");
}

#[test]
fn export_npz_and_tsv_are_read_back_by_numpy() {
    let dir = tempdir();
    let shard = extract_samples(dir.path());
    for format in ["demovlp-npz", "bottomup-tsv"] {
        let out = dir.path().join(format);
        let (code, s) = json_of(&[
            "export",
            path_str(&shard),
            "--format",
            format,
            "--out",
            path_str(&out),
            "--json",
        ]);
        assert_eq!(code, 0);
        assert_eq!(
            (s["items"].as_u64(), s["frames"].as_u64()),
            (Some(10), Some(31))
        );
        let res = run_python(&[
            path_str(&py("check_export.py")),
            path_str(&shard),
            path_str(&out),
            format,
        ]);
        let v: Value = serde_json::from_str(res.trim()).unwrap();
        assert_eq!(v["frames"], 31, "{format}");
    }
    let npz = dir.path().join("demovlp-npz");
    assert!(
        npz.join("webvid/1000001/7.npz").exists() && !npz.join("webvid/1000001/8.npz").exists()
    );
    assert!(npz.join("cc3m/000000004/0.npz").exists());
    let meta = std::fs::read_to_string(npz.join("meta.tsv")).unwrap();
    assert_eq!(meta.lines().count(), 11);
    assert!(meta.lines().nth(1).unwrap().ends_with("\twebvid/1000001"));
}

fn draw(dir: &Path, id: &str, name: &str) -> (PathBuf, PathBuf, Value) {
    let png = dir.join(format!("{name}.png"));
    let (code, rep) = json_of(&[
        "inspect",
        path_str(dir),
        "--item",
        id,
        "--draw",
        path_str(&png),
        "--json",
    ]);
    assert_eq!(code, 0, "{rep:#}");
    let report = dir.join(format!("{name}.json"));
    std::fs::write(&report, rep.to_string()).unwrap();
    (png, report, rep)
}

#[test]
fn draw_puts_the_boxes_where_the_shard_says() {
    let dir = tempdir();
    let shard = extract_samples(dir.path());
    // 8 frames of a 1280x720 video: 4 columns x 2 rows of 320x180 frames.
    let (png, report, rep) = draw(dir.path(), "webvid/1000001", "video");
    assert_eq!(rep["width"], 4 * 320 + 5 * 8);
    assert_eq!(
        (rep["columns"].as_u64(), rep["rows"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(rep["frames"][0]["height"], 180);
    assert!(rep["height"].as_u64().unwrap() > 2 * 180);
    for f in rep["frames"].as_array().unwrap() {
        assert!(
            (f["decoded_time"].as_f64().unwrap() - f["timestamp"].as_f64().unwrap()).abs() < 1e-3
        );
    }
    let check = |png: &Path, report: &Path, id: &str| {
        std::process::Command::new(python())
            .args([
                path_str(&py("check_draw.py")),
                path_str(&shard),
                id,
                path_str(png),
                path_str(report),
            ])
            .output()
            .expect("python")
    };
    let o = check(&png, &report, "webvid/1000001");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The check fails when the boxes are not where the shard says (frames moved by 37 px).
    let mut moved = rep.clone();
    for f in moved["frames"].as_array_mut().unwrap() {
        f["x"] = Value::from(f["x"].as_u64().unwrap() + 37);
    }
    let moved_path = dir.path().join("moved.json");
    std::fs::write(&moved_path, moved.to_string()).unwrap();
    assert!(!check(&png, &moved_path, "webvid/1000001").status.success());
    // An image: one frame, one column, scaled to 320 px wide.
    let (png, report, rep) = draw(dir.path(), "cc3m/000000004", "image");
    assert_eq!(
        (rep["width"].as_u64(), rep["frames"][0]["width"].as_u64()),
        (Some(320 + 16), Some(320))
    );
    let o = check(&png, &report, "cc3m/000000004");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn read_shards_example_runs() {
    let dir = tempdir();
    extract_samples(dir.path());
    let out = run_python(&[
        path_str(&examples().join("read_shards.py")),
        path_str(dir.path()),
    ]);
    let r = ShardReader::open(&dir.path().join("shard-000000.h5")).unwrap();
    for id in r.item_ids().unwrap() {
        assert!(out.contains(&id), "{id} not in:\n{out}");
    }
    assert_eq!(out.matches("first frame t=").count(), 10, "{out}");
    assert!(out.contains("a smiling astronaut"), "{out}");
}
