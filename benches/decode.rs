//! Decode + N-frame sampling throughput of `regionfeat::decode::decode_media` (issue 2).
//!
//! ```text
//! cargo bench --bench decode -- [--repeat R] [--workers N] [--frames 8] [--threads 1]
//!                                [--times-out FILE.json] [--json] [--verbose] VIDEO... | --list FILE
//! ```
//! Every video is decoded to `--frames` RGB24 frames at the original size (no resize), each
//! decoder single-threaded (`--threads 1`); `--workers N` decodes N videos at a time (one
//! thread each, videos handed out from a shared counter). One untimed warm-up pass reads the
//! files into the page cache, then `R` timed passes over the list. Prints videos/s (and a JSON
//! line with `--json`); `--times-out` writes the sample and frame times of every video for
//! the cross-check with decord and PyAV (`benches/decode_ref.py`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use regionfeat::decode::{decode_media, DecodeOptions};
use regionfeat::manifest::kind_for_path;

struct Args {
    videos: Vec<PathBuf>,
    repeat: usize,
    workers: usize,
    frames: usize,
    threads: usize,
    times_out: Option<PathBuf>,
    json: bool,
    verbose: bool,
}

fn parse() -> Args {
    let mut a = Args { videos: vec![], repeat: 3, workers: 1, frames: 8, threads: 1, times_out: None, json: false, verbose: false };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        let mut val = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match s.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--repeat" => a.repeat = val("--repeat").parse().expect("--repeat"),
            "--workers" => a.workers = val("--workers").parse().expect("--workers"),
            "--frames" => a.frames = val("--frames").parse().expect("--frames"),
            "--threads" => a.threads = val("--threads").parse().expect("--threads"),
            "--times-out" => a.times_out = Some(val("--times-out").into()),
            "--json" => a.json = true,
            "--verbose" => a.verbose = true,
            "--list" => {
                let list = std::fs::read_to_string(val("--list")).expect("read --list");
                a.videos.extend(list.lines().map(str::trim).filter(|l| !l.is_empty()).map(PathBuf::from));
            }
            _ if s.starts_with("--") => panic!("unknown flag {s}"),
            _ => a.videos.push(s.into()),
        }
    }
    if a.videos.is_empty() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/webvid/videos");
        for sub in std::fs::read_dir(dir).expect("examples").flatten() {
            for f in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                a.videos.push(f.path());
            }
        }
        a.videos.sort();
    }
    a
}

/// Decodes every video once with `workers` threads; returns (sample times, frame times) per video.
fn pass(a: &Args, opts: &DecodeOptions) -> Vec<(Vec<f64>, Vec<f64>)> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(vec![(Vec::new(), Vec::new()); a.videos.len()]);
    std::thread::scope(|s| {
        for _ in 0..a.workers.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = a.videos.get(i) else { break };
                let t = Instant::now();
                let m = decode_media(path, kind_for_path(path), opts)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if a.verbose {
                    eprintln!("{:8.2} ms  {:4} frames decoded  {}", t.elapsed().as_secs_f64() * 1e3, m.decoded_frames, path.display());
                }
                let times = (m.frames.iter().map(|f| f.time).collect(), m.frames.iter().map(|f| f.frame_time).collect());
                std::hint::black_box(&m.frames);
                out.lock().unwrap()[i] = times;
            });
        }
    });
    out.into_inner().unwrap()
}

fn main() {
    let a = parse();
    let opts = DecodeOptions { num_frames: a.frames, resize: None, threads: a.threads };
    let times = pass(&a, &opts); // warm-up: page cache, FFmpeg init
    let start = Instant::now();
    for _ in 0..a.repeat {
        pass(&a, &opts);
    }
    let secs = start.elapsed().as_secs_f64();
    let n = a.videos.len() * a.repeat;
    let vps = n as f64 / secs;
    eprintln!(
        "regionfeat decode: {} videos x {} repeats, {} worker(s), {} decoder thread(s): {:.3}s, {:.2} videos/s",
        a.videos.len(),
        a.repeat,
        a.workers,
        a.threads,
        secs,
        vps
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({"tool": "regionfeat", "videos": a.videos.len(), "repeat": a.repeat,
                "workers": a.workers, "seconds": secs, "videos_per_s": vps})
        );
    }
    if let Some(p) = &a.times_out {
        let map: serde_json::Map<String, serde_json::Value> = a
            .videos
            .iter()
            .zip(&times)
            .map(|(v, (t, ft))| (v.display().to_string(), serde_json::json!({"times": t, "frame_times": ft})))
            .collect();
        std::fs::write(p, serde_json::to_string(&map).unwrap()).expect("write --times-out");
    }
}
