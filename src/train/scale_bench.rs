//! The data layer at pre-training scale, measured (`benches/index_scale.rs`, driven by
//! `benches/index_scale.sh`, or the ignored test `tests_scale::index_scale_measure`): open
//! WebVid2.5M + CC3M-sized synthetic indexes ([`crate::train::synth_index`]), mix them, build an
//! epoch order and draw batches through the real loader (HDF5 reads, captions, tokenization),
//! reporting wall times, VmRSS/VmHWM from /proc/self/status and open files; and the same
//! start-up done the way main did it before (whole index in memory, every shard kept open) for
//! the same-run ratio.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::train::config::{FrameSampling, Mixing};
use crate::train::data::{BatchSpec, Loader, Mixture, RegionSource};
use crate::train::epoch::{EpochPlan, PlanOptions};
use crate::train::shards::{ShardOptions, ShardSource};
use crate::train::synth_index::{self, SynthIndexSpec};
use crate::train::text::TextTokenizer;

/// A `/proc/self/status` field in kB (0 when absent).
pub fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of this process.
pub fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Writes `root/webvid` (videos, 4 frames, some items with 3 captions) and `root/cc3m`
/// (images) with `shards` shards in all.
pub fn generate(root: &Path, webvid: usize, cc3m: usize, shards: usize) -> Result<f64> {
    let total = webvid + cc3m;
    let t = Instant::now();
    let sw = shards * webvid / total;
    synth_index::write(
        &root.join("webvid"),
        &SynthIndexSpec {
            frames: 4,
            id_base: 1_000_000_000,
            seed: 1,
            ..SynthIndexSpec::new(webvid, sw)
        },
    )?;
    synth_index::write(
        &root.join("cc3m"),
        &SynthIndexSpec {
            frames: 1,
            id_base: 100_000_000,
            multi_caption_every: 0,
            seed: 2,
            ..SynthIndexSpec::new(cc3m, shards - sw)
        },
    )?;
    Ok(t.elapsed().as_secs_f64())
}

/// Opens both datasets (at most `max_open` shards open each), mixes them (`alternate` and
/// `sample` with 1M-sample epochs, as DemoVLP), orders epoch 3 and draws `batches` batches of
/// `batch` from batch 7 on with 2 reader threads.
pub fn run(
    root: &Path,
    max_open: usize,
    batches: usize,
    batch: usize,
    mixing: Mixing,
    tokenizer: &Path,
    block_shards: usize,
) -> Result<serde_json::Value> {
    let rss0 = status_kb("VmRSS:");
    let t0 = Instant::now();
    let opts = ShardOptions {
        max_open_shards: max_open,
    };
    let webvid = ShardSource::open_with(&root.join("webvid"), &opts)?;
    let cc3m = ShardSource::open_with(&root.join("cc3m"), &opts)?;
    let table_mb = (webvid.table_bytes() + cc3m.table_bytes()) as f64 / 1e6;
    let shards = webvid.num_shards() + cc3m.num_shards();
    let (webvid, cc3m) = (Arc::new(webvid), Arc::new(cc3m));
    let sources: Vec<Arc<dyn RegionSource>> = vec![webvid.clone(), cc3m.clone()];
    let mix = Arc::new(Mixture::new(sources, true)?);
    let t_open = t0.elapsed().as_secs_f64();
    let rss_open = status_kb("VmRSS:");
    let t1 = Instant::now();
    let weights = if mixing == Mixing::Concat {
        vec![]
    } else {
        vec![1.0, 1.0]
    };
    let plan = EpochPlan::new(
        &mix,
        &PlanOptions {
            mixing,
            weights,
            samples_per_epoch: if mixing == Mixing::Concat {
                None
            } else {
                Some(1_000_000)
            },
            batch_size: batch,
            shuffle: true,
            block_shards,
            seed: 0,
        },
    )?;
    let order: Vec<usize> = plan.order(3).into_iter().map(|i| i as usize).collect();
    let t_order = t1.elapsed().as_secs_f64();
    let tok = Arc::new(TextTokenizer::from_file(tokenizer, 32, true)?);
    let t2 = Instant::now();
    let start = 7; // a resumed position mid-epoch
    let loader = Loader::new(
        mix.clone(),
        tok,
        Arc::new(order),
        batch,
        false,
        start,
        BatchSpec {
            frames: 1,
            sampling: FrameSampling::Random,
            seed: 0,
            epoch: 3,
        },
        2,
        2,
    );
    let mut n = 0usize;
    let mut max_fds = 0;
    for (_, b) in loader.take(batches) {
        n += b?.b;
        max_fds = max_fds.max(open_files());
    }
    let t_draw = t2.elapsed().as_secs_f64();
    let hwm = status_kb("VmHWM:");
    let (w, c) = (webvid.open_stats(), cc3m.open_stats());
    let r = serde_json::json!({
        "mixing": format!("{mixing:?}").to_lowercase(), "block_shards": block_shards,
        "items": mix.len(), "shards": shards, "max_open_shards": max_open,
        "open_s": t_open, "order_s": t_order, "epoch_items": plan.len(),
        "table_mb": table_mb,
        "rss_before_mb": rss0 as f64 / 1024.0,
        "rss_after_open_mb": rss_open as f64 / 1024.0,
        "samples": n, "draw_s": t_draw, "samples_per_s": n as f64 / t_draw,
        "max_open_fds": max_fds, "shards_open_at_end": w.0 + c.0,
        "shard_opens": w.1 + c.1,
        "vmhwm_mb": hwm as f64 / 1024.0,
    });
    Ok(r)
}

/// main's `ShardSource::open_index` before the packed tables (git 7314d68), step for step:
/// the whole index read into one String and parsed into a `Vec<IndexEntry>`, then every shard
/// opened (and kept open) while per-shard tables of `String`s are filled.
pub fn baseline(root: &Path) -> Result<serde_json::Value> {
    // main's ShardSource::open_index before this change (git 7314d68), step for step:
    // the whole index read into one String and parsed into a Vec<IndexEntry>, then
    // every shard opened (and kept open) while the per-shard tables are filled.
    use crate::job::index::IndexEntry;
    use crate::shard::ShardReader;
    struct Shard {
        _reader: std::sync::Mutex<ShardReader>,
        ids: Vec<String>,
        captions: Vec<Vec<String>>,
        ranges: Vec<(u64, u32)>,
    }
    let t0 = Instant::now();
    let mut kept = vec![];
    let mut items = 0;
    for ds in ["webvid", "cc3m"] {
        let dir = root.join(ds);
        let entries: Vec<IndexEntry> = std::fs::read_to_string(dir.join("index.jsonl"))?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let mut by_name: std::collections::HashMap<String, usize> = Default::default();
        let mut shards: Vec<Shard> = vec![];
        let mut index: Vec<(u32, u32)> = vec![];
        for e in entries {
            let s = match by_name.get(&e.shard) {
                Some(&s) => s,
                None => {
                    let r = ShardReader::open(&dir.join(&e.shard))?;
                    let _dims = (r.model_kind()?, r.feature_dim()?, r.max_boxes()?);
                    shards.push(Shard {
                        _reader: std::sync::Mutex::new(r),
                        ids: vec![],
                        captions: vec![],
                        ranges: vec![],
                    });
                    by_name.insert(e.shard.clone(), shards.len() - 1);
                    shards.len() - 1
                }
            };
            let sh = &mut shards[s];
            index.push((s as u32, sh.ids.len() as u32));
            sh.captions.push(e.all_captions());
            sh.ids.push(e.id);
            sh.ranges.push((e.frame_start, e.num_frames));
        }
        items += index.len();
        kept.push((shards, index));
    }
    let t_open = t0.elapsed().as_secs_f64();
    let r = serde_json::json!({
        "mode": "baseline (main 7314d68)", "items": items,
        "shards": kept.iter().map(|k| k.0.len()).sum::<usize>(),
        "open_s": t_open, "open_fds": open_files(),
        "rss_after_open_mb": status_kb("VmRSS:") as f64 / 1024.0,
        "vmhwm_mb": status_kb("VmHWM:") as f64 / 1024.0,
    });
    Ok(r)
}

/// `root` as a path (helper for callers holding strings).
pub fn dir(root: &str) -> PathBuf {
    PathBuf::from(root)
}
