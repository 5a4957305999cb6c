//! Grid models (`schemas/grid-contract.md`) through `regionfeat extract` into v2 grid shards
//! (`schemas/shard-v2.md`), read back by the Rust reader, h5py and every command; v1 shards
//! still read.

use std::path::{Path, PathBuf};

use regionfeat::shard::{ModelKind, ShardReader};
use serde_json::Value;

use crate::util::{
    examples, extract_samples, ffmpeg, path_str, regionfeat, repo, run_python, stderr, tempdir,
    vit_tiny_model,
};

fn py(script: &str) -> String {
    repo()
        .join("tests/py")
        .join(script)
        .to_string_lossy()
        .into_owned()
}

fn extract_grid(out: &Path, extra: &[&str]) -> PathBuf {
    let model = vit_tiny_model();
    let mut args = vec![
        "extract",
        "--model",
        path_str(&model),
        "--out",
        path_str(out),
    ];
    args.extend_from_slice(extra);
    let o = regionfeat(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    out.join("shard-000000.h5")
}

fn json_stdout(args: &[&str]) -> (i32, Value) {
    let o = regionfeat(args);
    let text = String::from_utf8_lossy(&o.stdout);
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{args:?}: {e}\n{text}\n{}", stderr(&o)));
    (o.status.code().unwrap_or(-1), v)
}

#[test]
fn vit_tiny_extracts_the_samples_into_a_grid_shard() {
    let dir = tempdir();
    let shard = extract_grid(dir.path(), &[]);
    let r = ShardReader::open(&shard).unwrap();
    assert_eq!(r.schema_version().unwrap(), 2);
    assert_eq!(r.model_kind().unwrap(), ModelKind::Grid);
    assert_eq!(r.grid_hw().unwrap(), (14, 14));
    assert_eq!(r.feature_dim().unwrap(), 64);
    assert_eq!(r.max_boxes().unwrap(), 0);
    assert_eq!(r.attr_str("detector_name").unwrap(), "vit-tiny");
    assert!(ShardReader::check_open(&shard).is_ok(), "layout");
    let ids = r.item_ids().unwrap();
    assert_eq!(ids.len(), 10);
    let t = r.num_frame_rows().unwrap();
    assert_eq!(t, 3 * 8 + 7);
    let grid = r.read_grid_rows(0..t).unwrap();
    assert_eq!(grid.len(), t * 196 * 64);
    assert!(grid.iter().all(|v| v.is_finite()));
    let half = r.read_grid_rows_f16(3..5).unwrap();
    assert_eq!(half.len(), 2 * 196 * 64);
    assert_eq!(
        half.iter().map(|h| h.to_f32()).collect::<Vec<_>>(),
        grid[3 * 196 * 64..5 * 196 * 64]
    );
    // Frames differ from each other, cells within a frame differ from each other.
    let frame = |i: usize| &grid[i * 196 * 64..(i + 1) * 196 * 64];
    assert_ne!(frame(0), frame(8));
    assert_ne!(&frame(0)[..64], &frame(0)[195 * 64..]);
    // A region consumer is told what it got.
    let e = r.read_frames(0, 1).unwrap_err().to_string();
    assert!(e.contains("grid shard") && e.contains("14x14"), "{e}");
    // h5py agrees on the layout; the h5py example reads it.
    let v: Value =
        serde_json::from_str(run_python(&[&py("check_grid.py"), "shard", path_str(&shard)]).trim())
            .unwrap();
    assert_eq!(v["frames"], 31);
    assert_eq!(v["grid_hw"], serde_json::json!([14, 14]));
    assert_eq!(v["dtype"], "float16");
    assert_eq!(v["ids"][0], "webvid/1000001");
    let text = run_python(&[
        path_str(&examples().join("read_shards.py")),
        path_str(dir.path()),
    ]);
    assert!(text.contains("grid 14x14 D=64"), "{text}");
    assert!(
        text.contains("webvid/1000001 (video, 8 frames, grid [14, 14, 64])"),
        "{text}"
    );
    // The index and verify see the shard like any other.
    let index = std::fs::read_to_string(dir.path().join("index.jsonl")).unwrap();
    assert_eq!(index.lines().count(), 10);
    let o = regionfeat(&[
        "verify",
        "--manifest",
        path_str(&examples().join("samples.jsonl")),
        "--out",
        path_str(dir.path()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Images whose shorter side is already 224 are not resized, so Python can rebuild the exact
/// model input from the file (ffmpeg CLI) and run the model in onnxruntime.
fn images_at_224(dir: &Path) -> PathBuf {
    let media = dir.join("media");
    std::fs::create_dir_all(&media).unwrap();
    for (name, size, src) in [
        ("wide.png", "300x224", "testsrc2"),
        ("tall.png", "224x261", "mandelbrot"),
    ] {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &format!("{src}=size={size}"),
            "-frames:v",
            "1",
            "-pix_fmt",
            "rgb24",
            path_str(&media.join(name)),
        ]);
    }
    std::fs::copy(
        examples().join("webvid/videos/002/1000003.mp4"),
        media.join("clip.mp4"),
    )
    .unwrap();
    let manifest = dir.join("m.jsonl");
    std::fs::write(
        &manifest,
        "{\"id\": \"wide\", \"path\": \"wide.png\", \"caption\": \"w\"}\n\
         {\"id\": \"clip\", \"path\": \"clip.mp4\", \"caption\": \"c\"}\n\
         {\"id\": \"tall\", \"path\": \"tall.png\", \"caption\": \"t\"}\n",
    )
    .unwrap();
    manifest
}

#[test]
fn grid_values_match_onnxruntime_in_python_with_and_without_pooling() {
    let dir = tempdir();
    let manifest = images_at_224(dir.path());
    let media = dir.path().join("media");
    for (pool, out) in [("0", "full"), ("7", "pooled")] {
        let out = dir.path().join(out);
        let mut extra = vec![
            "--manifest",
            path_str(&manifest),
            "--root",
            path_str(&media),
            "--feature-dtype",
            "f32",
            "--frames",
            "3",
        ];
        if pool != "0" {
            extra.extend(["--grid-pool", pool]);
        }
        let shard = extract_grid(&out, &extra);
        let r = ShardReader::open(&shard).unwrap();
        let want_hw = if pool == "0" { (14, 14) } else { (7, 7) };
        assert_eq!(r.grid_hw().unwrap(), want_hw);
        let v: Value = serde_json::from_str(
            run_python(&[
                &py("check_grid.py"),
                "values",
                path_str(&shard),
                path_str(&vit_tiny_model()),
                path_str(&media),
                pool,
            ])
            .trim(),
        )
        .unwrap();
        assert_eq!(v["checked"], 2, "{v}");
        let diff = v["max_abs_diff"].as_f64().unwrap();
        assert!(
            diff < 1e-3,
            "grid differs from onnxruntime by {diff} (pool {pool})"
        );
    }
}

#[test]
fn grid_pool_is_refused_for_region_detectors_and_oversized() {
    let dir = tempdir();
    let o = regionfeat(&[
        "extract",
        "--detector",
        path_str(&crate::util::test_detector()),
        "--out",
        path_str(&dir.path().join("a")),
        "--grid-pool",
        "7",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--grid-pool applies to grid models"),
        "{}",
        stderr(&o)
    );
    let o = regionfeat(&[
        "extract",
        "--model",
        path_str(&vit_tiny_model()),
        "--out",
        path_str(&dir.path().join("b")),
        "--grid-pool",
        "15",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("14x14"), "{}", stderr(&o));
    assert!(!dir.path().join("b/shard-000000.h5").exists());
}

#[test]
fn a_grid_model_breaking_its_contract_is_refused_at_start() {
    let dir = tempdir();
    let cases = [
        // A preprocessing rule the extractor does not know.
        (
            "regionfeat.preprocess",
            r#"{"channel_order":"RGB","pixel_mean":[0,0,0],"pixel_std":[1,1,1],"resize":"stretch","size":224}"#,
            "shorter_then_center_crop",
        ),
        // Declared a region detector, but the outputs say grid.
        ("regionfeat.kind", "regions", "grid_features"),
        // D disagrees with the output.
        ("regionfeat.feature_dim", "65", "grid_features"),
    ];
    for (i, (key, value, says)) in cases.into_iter().enumerate() {
        let bad = dir.path().join(format!("bad{i}.onnx"));
        run_python(&[
            "-c",
            "import sys, onnx\n\
             m = onnx.load(sys.argv[1])\n\
             for p in m.metadata_props:\n    \
                 if p.key == sys.argv[3]: p.value = sys.argv[4]\n\
             onnx.save(m, sys.argv[2])",
            path_str(&vit_tiny_model()),
            path_str(&bad),
            key,
            value,
        ]);
        let out = dir.path().join(format!("out{i}"));
        let o = regionfeat(&[
            "extract",
            "--model",
            path_str(&bad),
            "--out",
            path_str(&out),
        ]);
        assert_eq!(o.status.code(), Some(2), "{key}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{key}: {}", stderr(&o));
        assert!(!out.join("shard-000000.h5").exists());
    }
}

#[test]
fn inspect_and_export_understand_grid_shards() {
    let dir = tempdir();
    let shard = extract_grid(dir.path(), &["--grid-pool", "7"]);
    let (code, s) = json_stdout(&["inspect", path_str(dir.path()), "--json"]);
    assert_eq!(code, 0);
    assert_eq!(s["model_kind"], "grid");
    assert_eq!(s["grid_hw"], serde_json::json!([7, 7]));
    assert_eq!(s["schema_version"], 2);
    assert_eq!(s["frames"], 31);
    assert_eq!(s["boxes"], 0);
    assert_eq!(s["features"]["count"], 31 * 49 * 64);
    assert_eq!(s["feature_norms"]["count"], 31 * 49);
    assert_eq!(s["config"]["grid_pool"], 7);
    let o = regionfeat(&["inspect", path_str(dir.path())]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("7x7 cells per frame"), "{text}");

    let (code, v) = json_stdout(&["inspect", path_str(dir.path()), "--validate", "--json"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["ok"], true);

    let (code, item) = json_stdout(&[
        "inspect",
        path_str(dir.path()),
        "--item",
        "webvid/1000001",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(item["grid_hw"], serde_json::json!([7, 7]));
    assert_eq!(item["frames"].as_array().unwrap().len(), 8);
    assert!(item["frames"][0]["grid_mean_norm"].as_f64().unwrap() > 0.0);

    // --draw: the frames with the grid the model saw.
    let png = dir.path().join("grid.png");
    let (code, rep) = json_stdout(&[
        "inspect",
        path_str(dir.path()),
        "--item",
        "webvid/1000001",
        "--draw",
        path_str(&png),
        "--json",
    ]);
    assert_eq!(code, 0, "{rep:#}");
    let report = dir.path().join("grid.json");
    std::fs::write(&report, rep.to_string()).unwrap();
    let v: Value = serde_json::from_str(
        run_python(&[
            &py("check_grid.py"),
            "draw",
            path_str(&png),
            path_str(&report),
        ])
        .trim(),
    )
    .unwrap();
    for c in v["cyan_per_frame"].as_array().unwrap() {
        // 8 vertical + 8 horizontal lines across a 180-px square at least.
        assert!(c.as_u64().unwrap() > 8 * 150, "{v}");
    }

    // Exports that have no place for a grid refuse, and write nothing.
    for format in ["bottomup-tsv", "demovlp-npz"] {
        let out = dir.path().join(format);
        let o = regionfeat(&[
            "export",
            path_str(&shard),
            "--format",
            format,
            "--out",
            path_str(&out),
        ]);
        assert_ne!(o.status.code(), Some(0));
        assert!(
            stderr(&o).contains("grid shard") && stderr(&o).contains("no place for a grid"),
            "{}",
            stderr(&o)
        );
        assert!(!out.exists());
    }
}

#[test]
fn v1_region_shards_still_read() {
    let dir = tempdir();
    let shard = extract_samples(dir.path());
    let r = ShardReader::open(&shard).unwrap();
    assert_eq!(r.schema_version().unwrap(), 2);
    assert_eq!(r.model_kind().unwrap(), ModelKind::Regions);
    let before = r.read_frames(0, 31).unwrap();
    drop(r);
    // Make it a v1 shard as earlier regionfeat versions wrote them.
    run_python(&[
        "-c",
        "import sys, h5py, numpy as np\n\
         f = h5py.File(sys.argv[1], 'r+')\n\
         f.attrs['schema_version'] = np.uint32(1)\n\
         del f.attrs['model_kind']\n\
         f.close()",
        path_str(&shard),
    ]);
    let r = ShardReader::open(&shard).unwrap();
    assert_eq!(r.schema_version().unwrap(), 1);
    assert_eq!(r.model_kind().unwrap(), ModelKind::Regions);
    assert!(ShardReader::check_open(&shard).is_ok(), "layout");
    assert_eq!(r.read_frames(0, 31).unwrap(), before);
    let e = r.grid_hw().unwrap_err().to_string();
    assert!(e.contains("region shard"), "{e}");
    let (code, v) = json_stdout(&["inspect", path_str(dir.path()), "--validate", "--json"]);
    assert_eq!(code, 0, "{v:#}");
    let (code, s) = json_stdout(&["inspect", path_str(dir.path()), "--json"]);
    assert_eq!(code, 0);
    assert_eq!(s["schema_version"], 1);
    assert_eq!(s["model_kind"], "regions");
    let o = regionfeat(&[
        "verify",
        "--manifest",
        path_str(&examples().join("samples.jsonl")),
        "--out",
        path_str(dir.path()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    drop(r);
    // A version this build does not know is refused with both versions named.
    run_python(&[
        "-c",
        "import sys, h5py, numpy as np\n\
         f = h5py.File(sys.argv[1], 'r+')\n\
         f.attrs['schema_version'] = np.uint32(3)\n\
         f.close()",
        path_str(&shard),
    ]);
    let e = ShardReader::open(&shard).err().unwrap().to_string();
    assert!(e.contains("v3") && e.contains("[1, 2]"), "{e}");
}
