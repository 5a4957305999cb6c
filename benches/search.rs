//! `regionfeat search` ranking speed (issue 11): exact top-k over f16 rows
//! ([`regionfeat::scan::top_k`]) for one text query at a time.
//!
//! Usage: `cargo bench --bench search -- ROWS.f16 DIM QUERIES.f32 K OUT.json`
//! (files from `benches/search_vs_faiss.sh`). Prints and writes: index load time (reading the
//! rows), per-query ranking times, the top-k rows of every query, peak RSS.

use std::time::Instant;

use half::f16;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Reads a little-endian f16 file straight into its rows (one buffer, as resident as the
/// memory-mapped index of `regionfeat search` once paged in).
fn read_f16(path: &str) -> Vec<f16> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("rows file");
    let n = f.metadata().expect("rows file").len() as usize / 2;
    let mut rows = vec![f16::ZERO; n];
    // SAFETY: f16 is 2 plain bytes; the file is little-endian like this machine.
    let bytes = unsafe { std::slice::from_raw_parts_mut(rows.as_mut_ptr() as *mut u8, n * 2) };
    f.read_exact(bytes).expect("rows file");
    rows
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.len() != 5 {
        eprintln!("usage: search ROWS.f16 DIM QUERIES.f32 K OUT.json");
        std::process::exit(2);
    }
    let dim: usize = args[1].parse().expect("DIM");
    let k: usize = args[3].parse().expect("K");
    let t = Instant::now();
    let rows = read_f16(&args[0]);
    let load_s = t.elapsed().as_secs_f64();
    let q: Vec<f32> = std::fs::read(&args[2])
        .expect("queries file")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n = rows.len() / dim;
    // Untimed warm-up (page cache, thread pool).
    let _ = regionfeat::scan::top_k(&rows, dim, &q[..dim], k);
    let mut times = vec![];
    let mut tops = vec![];
    for query in q.chunks_exact(dim) {
        let t = Instant::now();
        let hits = regionfeat::scan::top_k(&rows, dim, query, k);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        tops.push(hits.iter().map(|h| h.row).collect::<Vec<_>>());
    }
    // The portable kernel (row widened into a buffer, then an f32 dot) on a few queries, to
    // show what the in-register F16C widening buys.
    let mut portable = vec![];
    for query in q.chunks_exact(dim).take(5) {
        let t = Instant::now();
        let _ =
            regionfeat::scan::top_k_with(regionfeat::scan::Kernel::Portable, &rows, dim, query, k);
        portable.push(t.elapsed().as_secs_f64() * 1e3);
    }
    portable.sort_by(f64::total_cmp);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let out = serde_json::json!({
        "rows": n, "dim": dim, "k": k, "threads": rayon::current_num_threads(),
        "kernel": format!("{:?}", regionfeat::scan::kernel()),
        "portable_rank_ms_median": portable[portable.len() / 2],
        "load_s": load_s, "rank_ms": times, "rank_ms_median": median,
        "rank_ms_min": sorted[0], "peak_rss_mib": rss_kib("VmHWM:") as f64 / 1024.0,
        "rows_mib": (n * dim * 2) as f64 / (1024.0 * 1024.0), "top": tops,
    });
    std::fs::write(&args[4], out.to_string()).expect("write results");
    println!(
        "regionfeat scan ({:?}, {} threads): {n} rows x {dim}: load {:.0} ms, rank median {median:.2} ms (min {:.2}; portable kernel {:.2}), peak RSS {:.0} MiB",
        regionfeat::scan::kernel(),
        rayon::current_num_threads(),
        load_s * 1e3,
        sorted[0],
        portable[portable.len() / 2],
        rss_kib("VmHWM:") as f64 / 1024.0
    );
}
