//! Detector-alone throughput (issue 7, pipeline efficiency): the same model, batch size and
//! frames as `regionfeat extract`, but with every frame decoded and preprocessed into memory
//! and collated into padded batches first, so only `Detector::run` (inference plus copying the
//! outputs) is timed — the pipeline's detector thread does exactly this work.
//!
//! ```text
//! cargo bench --bench detector_alone -- --detector MODEL.onnx --manifest FILE
//!     [--batch-size 8] [--frames 8] [--device cpu] [--intra-threads 0] [--repeat 1]
//!     [--max-items N] [--json]
//! ```
//! Frames are batched exactly as the pipeline batches them (manifest order, whole items,
//! `batch_size` frames per run). Prints frames/s and items/s.

use std::path::PathBuf;
use std::time::Instant;

use regionfeat::decode::RgbFrame;
use regionfeat::decode::{decode_media, DecodeOptions};
use regionfeat::detect::{batch_from_rgb, Batch, Detector, Device};
use regionfeat::manifest::read_manifest;

fn main() {
    let mut detector = None::<PathBuf>;
    let mut manifest = None::<PathBuf>;
    let (mut batch_size, mut frames, mut intra, mut repeat) = (8usize, 8usize, 0usize, 1usize);
    let mut max_items = usize::MAX;
    let mut device = Device::Cpu;
    let mut json = false;
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{s} needs a value"));
        match s.as_str() {
            "--bench" => {}
            "--detector" => detector = Some(val().into()),
            "--manifest" => manifest = Some(val().into()),
            "--batch-size" => batch_size = val().parse().expect("--batch-size"),
            "--frames" => frames = val().parse().expect("--frames"),
            "--intra-threads" => intra = val().parse().expect("--intra-threads"),
            "--repeat" => repeat = val().parse().expect("--repeat"),
            "--max-items" => max_items = val().parse().expect("--max-items"),
            "--device" => device = val().parse().expect("--device"),
            "--json" => json = true,
            _ => panic!("unknown argument {s}"),
        }
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let detector =
        detector.unwrap_or_else(|| PathBuf::from(root).join("examples/models/test-grid.onnx"));
    let manifest = manifest.unwrap_or_else(|| PathBuf::from(root).join("examples/samples.jsonl"));
    let mut det = Detector::open(&detector, device, intra).expect("open detector");
    let info = det.info().clone();
    let items = read_manifest(&manifest, None, None).expect("manifest");
    let opts = DecodeOptions {
        num_frames: frames,
        resize: Some(info.preprocess.resize_rule()),
        threads: 1,
    };
    let t = Instant::now();
    let mut decoded: Vec<Vec<RgbFrame>> = Vec::new();
    for item in items.iter().take(max_items) {
        if let Ok(m) = decode_media(&item.path, &opts) {
            decoded.push(m.frames);
        }
    }
    let n_items = decoded.len();
    let n_frames: usize = decoded.iter().map(Vec::len).sum();
    eprintln!(
        "decoded {n_items} items / {n_frames} frames into memory in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    // Batches as the pipeline forms them: whole items until >= batch_size frames, then chunks.
    let mut groups: Vec<Vec<&RgbFrame>> = Vec::new();
    let mut group: Vec<&RgbFrame> = Vec::new();
    for item in &decoded {
        group.extend(item.iter());
        if group.len() >= batch_size {
            groups.extend(group.chunks(batch_size).map(<[_]>::to_vec));
            group.clear();
        }
    }
    if !group.is_empty() {
        groups.extend(group.chunks(batch_size).map(<[_]>::to_vec));
    }
    let batches: Vec<Batch> = groups
        .iter()
        .map(|g| batch_from_rgb(g, &info.preprocess))
        .collect();
    // One untimed batch (ONNX Runtime warm-up), then the timed passes.
    if let Some(b) = batches.first() {
        det.run(b).expect("run");
    }
    let start = Instant::now();
    for _ in 0..repeat {
        for b in &batches {
            std::hint::black_box(det.run(b).expect("run"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let fps = (n_frames * repeat) as f64 / secs;
    let ips = (n_items * repeat) as f64 / secs;
    eprintln!(
        "detector alone ({}, batch {batch_size}, {device}): {n_frames} frames x {repeat} in {secs:.2}s: {fps:.1} frames/s, {ips:.2} items/s",
        info.name
    );
    if json {
        println!(
            "{}",
            serde_json::json!({"detector": info.name, "batch_size": batch_size, "device": device.to_string(),
                "items": n_items, "frames": n_frames, "repeat": repeat, "seconds": secs,
                "frames_per_s": fps, "items_per_s": ips})
        );
    }
}
