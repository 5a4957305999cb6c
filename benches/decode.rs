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
    let mut a = Args {
        videos: vec![],
        repeat: 3,
        workers: 1,
        frames: 8,
        threads: 1,
        times_out: None,
        json: false,
        verbose: false,
    };
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
                a.videos.extend(
                    list.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(PathBuf::from),
                );
            }
            _ if s.starts_with("--") => panic!("unknown flag {s}"),
            _ => a.videos.push(s.into()),
        }
    }
    if a.videos.is_empty() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/webvid/videos");
        for sub in std::fs::read_dir(dir).expect("examples").flatten() {
            for f in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                a.videos.push(f.path());
            }
        }
        a.videos.sort();
    }
    a
}

/// FNV-1a of the pixels (the cross-check compares frames exactly, not only their times).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Decodes every video once with `workers` threads; returns (sample times, frame times) per video.
fn pass(a: &Args, opts: &DecodeOptions, hash: bool) -> Vec<(Vec<f64>, Vec<f64>, Vec<String>)> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(vec![(Vec::new(), Vec::new(), Vec::new()); a.videos.len()]);
    std::thread::scope(|s| {
        for _ in 0..a.workers.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = a.videos.get(i) else { break };
                let t = Instant::now();
                let m =
                    decode_media(path, opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if a.verbose {
                    eprintln!(
                        "{:8.2} ms  {:4} frames decoded  {}",
                        t.elapsed().as_secs_f64() * 1e3,
                        m.decoded_frames,
                        path.display()
                    );
                }
                let times = (
                    m.frames.iter().map(|f| f.time).collect(),
                    m.frames.iter().map(|f| f.frame_time).collect(),
                    m.frames
                        .iter()
                        .filter(|_| hash)
                        .map(|f| format!("{:016x}", fnv1a(&f.rgb)))
                        .collect(),
                );
                std::hint::black_box(&m.frames);
                out.lock().unwrap()[i] = times;
            });
        }
    });
    out.into_inner().unwrap()
}

/// CPU time of this process (all threads), seconds, from /proc/self/stat (utime + stime).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
    });
    ticks / 100.0 // USER_HZ
}

fn main() {
    let a = parse();
    let opts = DecodeOptions {
        num_frames: a.frames,
        resize: None,
        threads: a.threads,
    };
    let times = pass(&a, &opts, a.times_out.is_some()); // warm-up: page cache, FFmpeg init
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    for _ in 0..a.repeat {
        pass(&a, &opts, false);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let n = a.videos.len() * a.repeat;
    let vps = n as f64 / secs;
    eprintln!(
        "regionfeat decode: {} videos x {} repeats, {} worker(s), {} decoder thread(s): {:.3}s, {:.2} videos/s, {:.1} CPU ms/video",
        a.videos.len(),
        a.repeat,
        a.workers,
        a.threads,
        secs,
        vps,
        cpu * 1e3 / n as f64
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({"tool": "regionfeat", "videos": a.videos.len(), "repeat": a.repeat,
                "workers": a.workers, "seconds": secs, "videos_per_s": vps,
                "cpu_seconds": cpu, "cpu_ms_per_video": cpu * 1e3 / n as f64})
        );
    }
    if let Some(p) = &a.times_out {
        let map: serde_json::Map<String, serde_json::Value> = a
            .videos
            .iter()
            .zip(&times)
            .map(|(v, (t, ft, h))| {
                (
                    v.display().to_string(),
                    serde_json::json!({"times": t, "frame_times": ft, "rgb_fnv1a": h}),
                )
            })
            .collect();
        std::fs::write(p, serde_json::to_string(&map).unwrap()).expect("write --times-out");
    }
}
