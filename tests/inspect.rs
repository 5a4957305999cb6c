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
        "regionfeat-shard v2",
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

/// Copies the files of an extract output directory (not its subfolders).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Damages shard-000000.h5 of `out` with `corrupt_shard.py MODE` at item row 1 frame 3.
fn damage(out: &Path, mode: &str) {
    run_python(&[
        path_str(&py("corrupt_shard.py")),
        path_str(&out.join("shard-000000.h5")),
        mode,
        "1",
        "3",
    ]);
}

fn output_text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o))
}

/// Each kind of damage a reader must refuse, with the dataset its message must name.
const DAMAGE: &[(&str, &str)] = &[
    ("max-boxes", "boxes"),
    ("drop-features", "features"),
    ("drop-boxes", "boxes"),
    ("drop-frame_start", "frame_start"),
    ("drop-timestamps", "timestamps"),
    ("drop-caption", "caption"),
    ("retype-classes", "classes"),
    ("huge-num-boxes", "num_boxes"),
    ("huge-class", "classes"),
    ("huge-attribute", "attributes"),
    ("bad-kind", "kind"),
    ("frame-start", "frame_start"),
    ("frame-item", "frame_item"),
    ("flip-features", "features"),
];

#[test]
fn every_reading_command_refuses_each_kind_of_damage_by_name() {
    let dir = tempdir();
    let good = dir.path().join("good");
    extract_samples(&good);
    let manifest = examples().join("samples.jsonl");
    for &(mode, dataset) in DAMAGE {
        let out = dir.path().join(mode);
        copy_dir(&good, &out);
        damage(&out, mode);
        let (o, png) = (path_str(&out), out.join("sheet.png"));
        let (npz, tsv) = (dir.path().join("npz"), dir.path().join("tsv"));
        let id = "webvid/1000002";
        let commands: [(&[&str], i32); 8] = [
            (&["inspect", o], 2),
            (&["inspect", o, "--json"], 2),
            (&["inspect", o, "--item", id], 2),
            (&["inspect", o, "--item", id, "--draw", path_str(&png)], 2),
            // --validate lists problems and exits 1 (its documented "problems found").
            (&["inspect", o, "--validate"], 1),
            (
                &[
                    "export",
                    o,
                    "--format",
                    "demovlp-npz",
                    "--out",
                    path_str(&npz),
                ],
                2,
            ),
            (
                &[
                    "export",
                    o,
                    "--format",
                    "bottomup-tsv",
                    "--out",
                    path_str(&tsv),
                ],
                2,
            ),
            (
                &["verify", "--manifest", path_str(&manifest), "--out", o],
                2,
            ),
        ];
        for (args, code) in commands {
            let r = regionfeat(args);
            let text = output_text(&r);
            assert_eq!(r.status.code(), Some(code), "{mode}: {args:?}:\n{text}");
            assert!(
                text.contains("shard-000000.h5") && text.contains(&format!("dataset {dataset}")),
                "{mode}: {args:?} does not name shard and dataset {dataset}:\n{text}"
            );
            assert!(!text.contains("panicked"), "{mode}: {args:?}:\n{text}");
        }
        assert!(!png.exists(), "{mode}: a sheet was drawn");
    }
}

#[test]
fn verify_fails_every_shard_that_validate_flags() {
    let dir = tempdir();
    let good = dir.path().join("good");
    extract_samples(&good);
    let manifest = examples().join("samples.jsonl");
    let verify = |out: &Path| {
        regionfeat(&[
            "verify",
            "--manifest",
            path_str(&manifest),
            "--out",
            path_str(out),
        ])
    };
    assert_eq!(verify(&good).status.code(), Some(0));
    for (mode, check) in [
        ("nan-feature", "non-finite"),
        ("box-outside", "box-outside-image"),
        ("num-boxes", "padding"),
        ("unsorted", "scores-order"),
    ] {
        let out = dir.path().join(mode);
        copy_dir(&good, &out);
        damage(&out, mode);
        let r = verify(&out);
        let text = output_text(&r);
        assert_eq!(r.status.code(), Some(2), "{mode}:\n{text}");
        assert!(
            text.contains("corrupt: shard-000000.h5: item webvid/1000002 frame 3")
                && text.contains(check),
            "{mode}:\n{text}"
        );
    }
}

#[test]
fn an_interrupted_tsv_export_leaves_no_file_under_the_final_name() {
    let dir = tempdir();
    let out = dir.path().join("x");
    extract_samples(&out);
    // The last item's last frame cannot be read: the export fails after writing most rows.
    run_python(&[
        path_str(&py("corrupt_shard.py")),
        path_str(&out.join("shard-000000.h5")),
        "flip-features",
        "9",
        "0",
    ]);
    let tsv = dir.path().join("tsv");
    let r = regionfeat(&[
        "export",
        path_str(&out),
        "--format",
        "bottomup-tsv",
        "--out",
        path_str(&tsv),
    ]);
    assert_eq!(r.status.code(), Some(2), "{}", output_text(&r));
    assert!(
        !tsv.join("shard-000000.tsv").exists(),
        "a truncated TSV is visible"
    );
}

#[test]
fn export_npz_gives_every_id_its_own_folder_inside_out() {
    let dir = tempdir();
    let image = examples().join("cc3m/images/000000001.png");
    let long = "L".repeat(300);
    let ids: Vec<String> = [
        "",
        ".",
        "..",
        "_",
        "x/./y",
        "x/_/y",
        "x/../y",
        "../../escape",
        "/abs",
        "a",
        "a/0.npz",
        "meta.tsv",
        "ids.jsonl",
        "%",
        "~",
        &long,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let manifest = dir.path().join("m.jsonl");
    let rows: Vec<String> = ids
        .iter()
        .map(|id| {
            serde_json::json!({"id": id, "path": path_str(&image), "caption": id}).to_string()
        })
        .collect();
    std::fs::write(&manifest, rows.join("\n")).unwrap();
    let shards = dir.path().join("shards");
    let o = regionfeat(&[
        "extract",
        "--manifest",
        path_str(&manifest),
        "--detector",
        path_str(&crate::util::test_detector()),
        "--out",
        path_str(&shards),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // OUT two levels down: anything written outside it would show up in `box`.
    let boxdir = dir.path().join("box");
    let out = boxdir.join("deeper/out");
    let (code, s) = json_of(&[
        "export",
        path_str(&shards),
        "--format",
        "demovlp-npz",
        "--out",
        path_str(&out),
        "--json",
    ]);
    assert_eq!(code, 0, "{s:#}");
    assert_eq!(s["items"], 16);
    // 16 frames + meta.tsv + ids.jsonl, all distinct files.
    assert_eq!(s["files"], 18);
    let mut files = Vec::new();
    let mut stack = vec![boxdir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert_eq!(files.len(), 18, "{files:#?}");
    assert!(files.iter().all(|f| f.starts_with(&out)), "{files:#?}");
    // numpy reads each item back through ids.jsonl and finds its own frames.
    let res = run_python(&[
        path_str(&py("check_export.py")),
        path_str(&shards.join("shard-000000.h5")),
        path_str(&out),
        "demovlp-npz",
    ]);
    let v: Value = serde_json::from_str(res.trim()).unwrap();
    assert_eq!(v["frames"], 16);
}
