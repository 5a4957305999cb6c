//! `regionfeat extract` end to end on the bundled samples and on broken files.

use regionfeat::select::location;
use regionfeat::shard::ShardReader;

use crate::util::{
    check_shard_with_h5py, examples, extract_samples, path_str, python, regionfeat, repo,
    run_python, stderr, tempdir, test_detector,
};

#[test]
fn samples_extract_and_read_back() {
    let dir = tempdir();
    extract_samples(dir.path());
    let r = ShardReader::open(&dir.path().join("shard-000000.h5")).unwrap();
    let (k, d) = (r.max_boxes().unwrap(), r.feature_dim().unwrap());
    assert_eq!((k, d), (30, 64));
    let ids = r.item_ids().unwrap();
    assert_eq!(ids.len(), 10);
    assert_eq!(ids[0], "webvid/1000001");
    let kinds = r.kinds().unwrap();
    let ranges = r.frame_ranges().unwrap();
    let hw = r.image_hw().unwrap();
    let durations = r.durations().unwrap();
    assert_eq!(r.captions().unwrap()[3], "a smiling astronaut in an orange spacesuit poses beside an american flag and a model of the space shuttle");
    for (i, &(start, n)) in ranges.iter().enumerate() {
        assert_eq!(n, if kinds[i] == 0 { 8 } else { 1 }, "item {i}");
        let b = r.read_frames(start, n as usize).unwrap();
        assert_eq!(b.features.len(), n as usize * k * d);
        let [h, w] = hw[i];
        for f in 0..n as usize {
            let m = b.num_boxes[f] as usize;
            assert!(m <= k && m >= 10, "num_boxes {m}");
            let scores = &b.scores[f * k..f * k + m];
            assert!(
                scores.windows(2).all(|p| p[0] >= p[1]),
                "scores not descending: {scores:?}"
            );
            assert!(
                b.scores[f * k + m..(f + 1) * k].iter().all(|&s| s == 0.0),
                "padding not zero"
            );
            for j in 0..m {
                let bx: [f32; 4] = b.boxes[(f * k + j) * 4..(f * k + j) * 4 + 4]
                    .try_into()
                    .unwrap();
                assert!(
                    bx[0] >= 0.0 && bx[2] <= w as f32 && bx[1] >= 0.0 && bx[3] <= h as f32,
                    "{bx:?}"
                );
                let loc = &b.locations[(f * k + j) * 7..(f * k + j) * 7 + 7];
                let want = location(&bx, w, h);
                assert!(
                    loc.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
                    "{loc:?} vs {want:?}"
                );
            }
        }
        if kinds[i] == 0 {
            let dur = durations[i];
            assert!(dur > 3.0, "duration {dur}");
            for (f, t) in b.timestamps.iter().enumerate() {
                let want = (f as f32 + 0.5) * dur / n as f32;
                assert!((t - want).abs() < 1e-4 && *t < dur, "t{f}={t} want {want}");
                assert!(b.frame_times[f] <= t + 1e-4, "frame after its sample time");
            }
        }
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("errors.jsonl")).unwrap(),
        ""
    );
}

#[test]
fn h5py_reads_the_shards() {
    let dir = tempdir();
    extract_samples(dir.path());
    let v = check_shard_with_h5py(&dir.path().join("shard-000000.h5"));
    assert_eq!(v["items"], 10);
    assert_eq!(v["frames"], 3 * 8 + 7);
}

#[test]
fn two_runs_give_identical_datasets() {
    let (a, b) = (tempdir(), tempdir());
    extract_samples(a.path());
    // A different shard size and thread count must not change the shard contents per item.
    let o = regionfeat(&[
        "extract",
        "--detector",
        path_str(&test_detector()),
        "--out",
        path_str(b.path()),
        "--decode-threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ra = ShardReader::open(&a.path().join("shard-000000.h5")).unwrap();
    let rb = ShardReader::open(&b.path().join("shard-000000.h5")).unwrap();
    assert_eq!(ra.item_ids().unwrap(), rb.item_ids().unwrap());
    assert_eq!(ra.image_hw().unwrap(), rb.image_hw().unwrap());
    let t = ra.num_frame_rows().unwrap();
    assert_eq!(t, rb.num_frame_rows().unwrap());
    assert_eq!(ra.read_frames(0, t).unwrap(), rb.read_frames(0, t).unwrap());
    assert_eq!(
        ra.attr_str("config").unwrap(),
        rb.attr_str("config").unwrap()
    );
}

#[test]
fn broken_files_are_logged_and_good_ones_extracted() {
    let dir = tempdir();
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let good = examples().join("webvid/videos/002/1000003.mp4");
    std::fs::copy(&good, media.join("good.mp4")).unwrap();
    std::fs::copy(
        examples().join("cc3m/images/000000002.png"),
        media.join("cat.png"),
    )
    .unwrap();
    let bytes = std::fs::read(examples().join("webvid/videos/001/1000002.mp4")).unwrap();
    std::fs::write(media.join("truncated.mp4"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(media.join("empty.mp4"), b"").unwrap();
    std::fs::write(
        media.join("text.mp4"),
        b"this is not a video at all\n".repeat(50),
    )
    .unwrap();
    crate::util::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=1",
        path_str(&media.join("audio.m4a")),
    ]);
    let rows = [
        ("good", "good.mp4"),
        ("truncated", "truncated.mp4"),
        ("empty", "empty.mp4"),
        ("text", "text.mp4"),
        ("audio", "audio.m4a"),
        ("missing", "missing.mp4"),
        ("cat", "cat.png"),
    ];
    let manifest = dir.path().join("m.jsonl");
    let text: String = rows
        .iter()
        .map(|(id, p)| {
            format!("{{\"id\": \"{id}\", \"path\": \"{p}\", \"caption\": \"c {id}\"}}\n")
        })
        .collect();
    std::fs::write(&manifest, text).unwrap();
    let out = dir.path().join("out");
    let o = regionfeat(&[
        "extract",
        "--manifest",
        path_str(&manifest),
        "--root",
        path_str(&media),
        "--detector",
        path_str(&test_detector()),
        "--out",
        path_str(&out),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "exit code must say something failed: {}",
        stderr(&o)
    );
    let errors: Vec<serde_json::Value> = std::fs::read_to_string(out.join("errors.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed: Vec<&str> = errors.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        failed,
        vec!["truncated", "empty", "text", "audio", "missing"]
    );
    for e in &errors {
        assert_eq!(e["stage"], "decode");
        assert!(!e["reason"].as_str().unwrap().is_empty());
        let file = rows.iter().find(|(id, _)| *id == e["id"]).unwrap().1;
        assert!(e["path"].as_str().unwrap().ends_with(file), "{e}");
    }
    let reasons: Vec<&str> = errors
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons[1], "empty file");
    assert_eq!(reasons[3], "no video stream");
    assert!(reasons[4].contains("No such file"), "{reasons:?}");
    let r = ShardReader::open(&out.join("shard-000000.h5")).unwrap();
    assert_eq!(r.item_ids().unwrap(), vec!["good", "cat"]);
    assert_eq!(r.manifest_indices().unwrap(), vec![0, 6]);
}

#[test]
fn a_model_breaking_the_contract_is_refused_at_start() {
    let dir = tempdir();
    let bad = dir.path().join("bad.onnx");
    run_python(&[
        path_str(&repo().join("detector/make_test_detector.py")),
        path_str(&bad),
        "--omit-metadata",
        "regionfeat.feature_dim",
    ]);
    let out = dir.path().join("out");
    let o = regionfeat(&[
        "extract",
        "--detector",
        path_str(&bad),
        "--out",
        path_str(&out),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("regionfeat.feature_dim"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("shard-000000.h5").exists());
    let o = regionfeat(&[
        "extract",
        "--detector",
        path_str(&dir.path().join("nope.onnx")),
        "--out",
        path_str(&out),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
    let _ = python();
}

#[test]
fn cuda_without_a_cuda_runtime_fails_loudly() {
    let dir = tempdir();
    let o = regionfeat(&[
        "extract",
        "--device",
        "cuda:0",
        "--detector",
        path_str(&test_detector()),
        "--out",
        path_str(dir.path()),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cuda:0"), "{}", stderr(&o));
}

#[test]
fn webvid_csv_and_cc3m_tsv_manifests() {
    let dir = tempdir();
    let o = regionfeat(&[
        "extract",
        "--manifest",
        path_str(&examples().join("webvid/results_sample.csv")),
        "--detector",
        path_str(&test_detector()),
        "--out",
        path_str(&dir.path().join("w")),
        "--frames",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ShardReader::open(&dir.path().join("w/shard-000000.h5")).unwrap();
    assert_eq!(r.item_ids().unwrap(), vec!["1000001", "1000002", "1000003"]);
    assert!(r.captions().unwrap()[1].starts_with("Cars wait in city traffic"));
    assert_eq!(r.num_frame_rows().unwrap(), 6);
    let o = regionfeat(&[
        "extract",
        "--manifest",
        path_str(&examples().join("cc3m/captions_sample.tsv")),
        "--detector",
        path_str(&test_detector()),
        "--out",
        path_str(&dir.path().join("c")),
        "--shard-size",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shards: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("c/shard-00000{i}.h5")))
        .collect();
    assert!(shards.iter().all(|p| p.exists()));
    let r = ShardReader::open(&shards[2]).unwrap();
    assert_eq!(r.item_ids().unwrap(), vec!["images/000000007"]);
}

#[test]
fn the_exported_vg_tiny_faster_rcnn_extracts_the_samples() {
    let dir = tempdir();
    let det = crate::util::vg_tiny_detector();
    let o = regionfeat(&[
        "extract",
        "--detector",
        path_str(&det),
        "--out",
        path_str(dir.path()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = check_shard_with_h5py(&dir.path().join("shard-000000.h5"));
    assert_eq!(v["items"], 10);
    let r = ShardReader::open(&dir.path().join("shard-000000.h5")).unwrap();
    assert_eq!(r.attr_str("detector_name").unwrap(), "vg-tiny");
    assert_eq!(r.feature_dim().unwrap(), 128, "vg-tiny preset: D = 128");
    let t = r.num_frame_rows().unwrap();
    let b = r.read_frames(0, t).unwrap();
    assert!(
        b.num_boxes.iter().all(|&n| n >= 1),
        "every frame keeps regions: {:?}",
        b.num_boxes
    );
    assert!(b.features.iter().any(|&x| x != 0.0));
}

#[test]
fn a_directory_of_media_is_a_manifest_without_captions() {
    let dir = tempdir();
    let o = regionfeat(&[
        "extract",
        "--manifest",
        path_str(&examples().join("cc3m/images")),
        "--detector",
        path_str(&test_detector()),
        "--out",
        path_str(dir.path()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = ShardReader::open(&dir.path().join("shard-000000.h5")).unwrap();
    let ids = r.item_ids().unwrap();
    assert_eq!(ids.len(), 7);
    assert_eq!(ids[0], "000000001");
    assert!(r.captions().unwrap().iter().all(String::is_empty));
    assert!(r.kinds().unwrap().iter().all(|&k| k == 1));
}

/// `(width, height)` of a file's first video stream, from the ffprobe CLI.
fn ffprobe_size(path: &std::path::Path) -> (u32, u32) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe CLI (apt ffmpeg)");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u32> = text.trim().split(',').map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

#[test]
fn models_that_declare_image_scales_get_each_frames_resize_factor() {
    // test-grid --image-scales copies `image_scales` into feature column 0 of every candidate.
    let dir = tempdir();
    let model = dir.path().join("grid-scales.onnx");
    run_python(&[
        path_str(&repo().join("detector/make_test_detector.py")),
        path_str(&model),
        "--image-scales",
    ]);
    let run = |det: &std::path::Path, out: &str| {
        let o = regionfeat(&[
            "extract",
            "--detector",
            path_str(det),
            "--out",
            path_str(&dir.path().join(out)),
            "--feature-dtype",
            "f32",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        ShardReader::open(&dir.path().join(out).join("shard-000000.h5")).unwrap()
    };
    let with = run(&model, "with");
    // A model without the input still runs (it is optional), on the same boxes.
    let without = run(&test_detector(), "without");
    let manifest = std::fs::read_to_string(examples().join("samples.jsonl")).unwrap();
    let paths: Vec<String> = manifest
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let (k, d) = (with.max_boxes().unwrap(), with.feature_dim().unwrap());
    let mut seen = Vec::new();
    for (i, &(start, n)) in with.frame_ranges().unwrap().iter().enumerate() {
        // py-faster-rcnn im_scale for test-grid's preprocess (shorter side 96, longer <= 160)
        let (w, h) = ffprobe_size(&examples().join(&paths[i]));
        let (short, long) = (w.min(h) as f64, w.max(h) as f64);
        let mut scale = 96.0 / short;
        if (long * scale).round() > 160.0 {
            scale = 160.0 / long;
        }
        let b = with.read_frames(start, n as usize).unwrap();
        for f in 0..n as usize {
            for j in 0..b.num_boxes[f] as usize {
                let got = b.features[(f * k + j) * d];
                assert_eq!(got, scale as f32, "{} frame {f} box {j}", paths[i]);
            }
        }
        assert_eq!(
            b.boxes,
            without.read_frames(start, n as usize).unwrap().boxes
        );
        seen.push(scale);
    }
    seen.dedup();
    assert!(seen.len() > 2, "the samples have several sizes: {seen:?}");
}

#[test]
fn an_exported_vg_tiny_with_image_scales_extracts_the_samples() {
    // A fresh export (examples/models/vg-tiny.onnx may predate the input).
    let dir = tempdir();
    let model = dir.path().join("vg-tiny.onnx");
    run_python(&[
        path_str(&repo().join("detector/export.py")),
        "--preset",
        "vg-tiny",
        "--seed",
        "0",
        "--out",
        path_str(&model),
    ]);
    let inputs = run_python(&[
        "-c",
        "import onnx,sys; print([i.name for i in onnx.load(sys.argv[1]).graph.input])",
        path_str(&model),
    ]);
    assert!(inputs.contains("image_scales"), "{inputs}");
    let out = dir.path().join("out");
    let o = regionfeat(&[
        "extract",
        "--detector",
        path_str(&model),
        "--out",
        path_str(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = check_shard_with_h5py(&out.join("shard-000000.h5"));
    assert_eq!(v["items"], 10);
}
