//! The stage threads and the messages between them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::stats::{StageStats, Summary};
use super::{ExtractConfig, PipelineError};
use crate::decode::{decode_media, DecodeOptions, RgbFrame};
use crate::detect::{
    batch_from_rgb, pool_grid, Batch, Candidates, Detector, DetectorInfo, FrameOutput, ModelKind,
    Preprocess,
};
use crate::job::lock::ShardLock;
use crate::job::{self, DoneRecord, ItemError, ShardPlan};
use crate::manifest::{Item, ItemKind};
use crate::select::select;
use crate::shard::{ExtractedFrame, ExtractedItem, ShardMeta, ShardWriter};

/// One manifest item on its way, numbered in manifest order.
struct Work<'a> {
    seq: u64,
    shard: u64,
    item: &'a Item,
}

/// Per-frame facts kept after the pixels are gone.
#[derive(Clone, Copy)]
struct FrameMeta {
    time: f64,
    frame_time: f64,
    resized_w: u32,
    resized_h: u32,
}

/// A decoded item: RGB frames already at the detector's input size (u8: a quarter of the
/// memory of normalised floats while it waits in the channels).
struct Decoded {
    kind: ItemKind,
    warnings: Vec<String>,
    width: u32,
    height: u32,
    duration: f64,
    frames: Vec<FrameMeta>,
    rgb: Vec<RgbFrame>,
}

/// Whole items in manifest order, and their frames already collated into padded batches.
struct Group<'a> {
    seq: u64,
    entries: Vec<Entry<'a, Decoded>>,
    batches: Vec<Batch>,
}

/// A decoded item after detection.
struct Detected {
    kind: ItemKind,
    warnings: Vec<String>,
    width: u32,
    height: u32,
    duration: f64,
    frames: Vec<FrameMeta>,
    outputs: Vec<FrameOutput>,
}

/// An item and how its current stage went; failures travel in order with the rest so that
/// the writer knows when a shard is complete.
struct Entry<'a, T> {
    seq: u64,
    shard: u64,
    item: &'a Item,
    result: Result<T, ItemError>,
}

fn failure(item: &Item, stage: &str, reason: impl std::fmt::Display) -> ItemError {
    ItemError {
        id: item.id.clone(),
        path: item.path.to_string_lossy().into_owned(),
        manifest_index: item.index,
        stage: stage.into(),
        reason: reason.to_string(),
    }
}

/// Locks of the shards this run is working on, taken by the feeder, released after commit.
type Locks = Mutex<HashMap<u64, ShardLock>>;

/// A lock not refreshed for this long is taken over (its worker is presumed dead).
const LOCK_STALE_AFTER: Duration = Duration::from_secs(30 * 60);

struct Stats {
    decode: StageStats,
    collate: StageStats,
    detect: StageStats,
    select: StageStats,
    write: StageStats,
}

pub(super) fn run(
    items: &[Item],
    todo: &[ShardPlan],
    detectors: Vec<Detector>,
    cfg: &ExtractConfig,
) -> Result<Summary, PipelineError> {
    let info = detectors[0].info().clone();
    let devices: Vec<String> = detectors.iter().map(|d| d.device().to_string()).collect();
    let stats = Stats {
        decode: StageStats::default(),
        collate: StageStats::default(),
        detect: StageStats::default(),
        select: StageStats::default(),
        write: StageStats::default(),
    };
    let threads = cfg.decode_threads.max(1);
    let (work_tx, work_rx) = bounded::<Work>(threads * 2);
    let (decoded_tx, decoded_rx) = bounded::<Entry<Decoded>>(threads * 2);
    let (batch_tx, batch_rx) = bounded::<Group>(detectors.len() + 1);
    let (detected_tx, detected_rx) = bounded::<(u64, Vec<Entry<Detected>>)>(detectors.len() + 2);
    let (out_tx, out_rx) = bounded::<Entry<Extracted>>(64);
    let planned: u64 = todo.iter().map(|s| (s.end - s.start) as u64).sum();
    let progress = if cfg.progress {
        let pb = ProgressBar::new(planned);
        pb.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} items ({per_sec}, eta {eta}) {msg}")
                .expect("template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let decode_opts = DecodeOptions {
        num_frames: cfg.frames,
        resize: Some(info.preprocess.resize_rule()),
        threads: cfg.decoder_threads,
    };

    let locks: Locks = Mutex::new(HashMap::new());
    let result = std::thread::scope(|s| {
        let feeder = s.spawn(|| feed(items, todo, work_tx, &cfg.out, &locks));
        for _ in 0..threads {
            let (rx, tx) = (work_rx.clone(), decoded_tx.clone());
            let (stats, opts) = (&stats, &decode_opts);
            s.spawn(move || decode_stage(rx, tx, opts, stats));
        }
        drop((work_rx, decoded_tx));
        s.spawn(|| {
            batch_stage(
                decoded_rx,
                batch_tx,
                cfg.batch_size,
                &info.preprocess,
                &stats,
            )
        });
        for mut det in detectors {
            let (rx, tx) = (batch_rx.clone(), detected_tx.clone());
            let (stats, bs) = (&stats, cfg.batch_size);
            let pre = &info.preprocess;
            s.spawn(move || detect_stage(&mut det, rx, tx, bs, pre, stats));
        }
        drop((batch_rx, detected_tx));
        s.spawn(|| select_stage(detected_rx, out_tx, cfg, &info, &stats));
        let written = write_stage(out_rx, todo, cfg, &info, &stats, &progress, &locks);
        let fed = feeder.join().expect("feeder thread");
        // A write error is the first cause; else a feeder error (a lock that cannot be made).
        written.and_then(|summary| fed.map(|()| summary))
    });
    progress.finish_and_clear();
    let mut summary = result?;
    summary.devices = devices;
    summary.stage_busy = [
        ("decode".into(), stats.decode.busy()),
        ("collate".into(), stats.collate.busy()),
        ("detect".into(), stats.detect.busy()),
        ("select".into(), stats.select.busy()),
        ("write".into(), stats.write.busy()),
    ];
    Ok(summary)
}

fn feed<'a>(
    items: &'a [Item],
    todo: &[ShardPlan],
    tx: Sender<Work<'a>>,
    out: &std::path::Path,
    locks: &Locks,
) -> Result<(), PipelineError> {
    let mut seq = 0;
    for shard in todo {
        // Another worker may hold the shard (or have finished it since the plan was read).
        let path = job::lock_path(out, shard.id);
        let lock = match ShardLock::try_acquire(&path, LOCK_STALE_AFTER) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            // Not a reason to skip the shard quietly (a full disk, say): end the run.
            Err(e) => return Err(crate::shard::ShardError::at(&path, e).into()),
        };
        if job::read_done(out, shard.id).is_some() {
            continue;
        }
        locks.lock().expect("locks").insert(shard.id, lock);
        for item in job::shard_items(items, shard) {
            if tx
                .send(Work {
                    seq,
                    shard: shard.id,
                    item,
                })
                .is_err()
            {
                return Ok(());
            }
            seq += 1;
        }
    }
    Ok(())
}

fn decode_stage<'a>(
    rx: Receiver<Work<'a>>,
    tx: Sender<Entry<'a, Decoded>>,
    opts: &DecodeOptions,
    stats: &Stats,
) {
    for w in rx {
        let result = stats.decode.time(|| {
            if let Some(reason) = crate::manifest::refusal(w.item) {
                return Err(failure(w.item, "manifest", reason));
            }
            decode_media(&w.item.path, opts)
                .map_err(|e| failure(w.item, "decode", e))
                .map(|m| Decoded {
                    kind: m.kind,
                    warnings: m.warnings,
                    width: m.width,
                    height: m.height,
                    duration: m.duration,
                    frames: m
                        .frames
                        .iter()
                        .map(|f| FrameMeta {
                            time: f.time,
                            frame_time: f.frame_time,
                            resized_w: f.width,
                            resized_h: f.height,
                        })
                        .collect(),
                    rgb: m.frames,
                })
        });
        if tx
            .send(Entry {
                seq: w.seq,
                shard: w.shard,
                item: w.item,
                result,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Collates the frames of whole items into padded batches of `batch_size` frames.
fn collate(entries: &[Entry<Decoded>], batch_size: usize, pre: &Preprocess) -> Vec<Batch> {
    let frames: Vec<&RgbFrame> = entries
        .iter()
        .filter_map(|e| e.result.as_ref().ok())
        .flat_map(|d| d.rgb.iter())
        .collect();
    frames
        .chunks(batch_size)
        .map(|c| batch_from_rgb(c, pre))
        .collect()
}

/// Restores manifest order, groups whole items until a group has `batch_size` frames, and
/// collates them (this thread, not the detector's, pays for normalisation and padding).
fn batch_stage<'a>(
    rx: Receiver<Entry<'a, Decoded>>,
    tx: Sender<Group<'a>>,
    batch_size: usize,
    pre: &Preprocess,
    stats: &Stats,
) {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut group: Vec<Entry<Decoded>> = Vec::new();
    let mut frames = 0;
    let mut seq = 0;
    let send = |entries: Vec<Entry<'a, Decoded>>, seq: &mut u64| -> bool {
        let batches = stats.collate.time(|| collate(&entries, batch_size, pre));
        let ok = tx
            .send(Group {
                seq: *seq,
                entries,
                batches,
            })
            .is_ok();
        *seq += 1;
        ok
    };
    for e in rx {
        pending.insert(e.seq, e);
        while let Some(e) = pending.remove(&next) {
            next += 1;
            // Groups never cross shards: a shard's contents then depend only on its own items,
            // whatever the worker split (padding inside a batch can touch a detector's output).
            if group.last().is_some_and(|b| b.shard != e.shard) {
                if !send(std::mem::take(&mut group), &mut seq) {
                    return;
                }
                frames = 0;
            }
            frames += e.result.as_ref().map_or(0, |d| d.rgb.len());
            group.push(e);
            if frames >= batch_size {
                if !send(std::mem::take(&mut group), &mut seq) {
                    return;
                }
                frames = 0;
            }
        }
    }
    if !group.is_empty() {
        send(group, &mut seq);
    }
}

/// Runs the model over prepared batches; the outputs of all frames in order.
fn run_batches(det: &mut Detector, batches: &[Batch]) -> Result<Vec<FrameOutput>, String> {
    let mut out = Vec::new();
    for b in batches {
        out.extend(det.infer(b).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn detect_stage<'a>(
    det: &mut Detector,
    rx: Receiver<Group<'a>>,
    tx: Sender<(u64, Vec<Entry<'a, Detected>>)>,
    batch_size: usize,
    pre: &Preprocess,
    stats: &Stats,
) {
    for group in rx {
        let detected = stats.detect.time(|| {
            // One failing batch must not take its neighbours down: retry item by item.
            let mut all = run_batches(det, &group.batches).ok().map(|v| v.into_iter());
            group
                .entries
                .into_iter()
                .map(|e| {
                    let result = e.result.and_then(|d| {
                        let n = d.rgb.len();
                        let cands = match all.as_mut() {
                            Some(it) => Ok(it.by_ref().take(n).collect()),
                            None => {
                                let frames: Vec<&RgbFrame> = d.rgb.iter().collect();
                                let batches: Vec<Batch> = frames
                                    .chunks(batch_size)
                                    .map(|c| batch_from_rgb(c, pre))
                                    .collect();
                                run_batches(det, &batches).map_err(|r| failure(e.item, "detect", r))
                            }
                        }?;
                        if let Some(bad) = cands.iter().find_map(|c| c.non_finite()) {
                            return Err(failure(
                                e.item,
                                "detect",
                                format!("the detector output {bad} for this item's frames; nothing was written for it"),
                            ));
                        }
                        Ok(Detected {
                            kind: d.kind,
                            warnings: d.warnings,
                            width: d.width,
                            height: d.height,
                            duration: d.duration,
                            frames: d.frames,
                            outputs: cands,
                        })
                    });
                    Entry {
                        seq: e.seq,
                        shard: e.shard,
                        item: e.item,
                        result,
                    }
                })
                .collect::<Vec<_>>()
        });
        if tx.send((group.seq, detected)).is_err() {
            return;
        }
    }
}

/// Maps candidate boxes from resized-image pixels to the original frame, clipped to it.
fn to_original(c: &Candidates, f: &FrameMeta, width: u32, height: u32) -> Vec<[f32; 4]> {
    let sx = width as f32 / f.resized_w.max(1) as f32;
    let sy = height as f32 / f.resized_h.max(1) as f32;
    let (w, h) = (width as f32, height as f32);
    c.boxes
        .iter()
        .map(|b| {
            [
                (b[0] * sx).clamp(0.0, w),
                (b[1] * sy).clamp(0.0, h),
                (b[2] * sx).clamp(0.0, w),
                (b[3] * sy).clamp(0.0, h),
            ]
        })
        .collect()
}

/// `(Hg, Wg)` as stored: the model's grid, or `--grid-pool N` × N.
pub(super) fn stored_grid_hw(cfg: &ExtractConfig, info: &DetectorInfo) -> (usize, usize) {
    cfg.grid_pool.map_or(info.grid_hw, |n| (n, n))
}

/// An item ready for its shard, and what its record should say about it.
struct Extracted {
    item: ExtractedItem,
    warnings: Vec<String>,
}

fn extract_item(item: &Item, d: Detected, cfg: &ExtractConfig, info: &DetectorInfo) -> Extracted {
    let dim = info.feature_dim;
    let frames = d
        .outputs
        .par_iter()
        .zip(d.frames.par_iter())
        .map(|(out, f)| {
            let c = match out {
                FrameOutput::Regions(c) => c,
                FrameOutput::Grid(grid) => {
                    return ExtractedFrame {
                        timestamp: f.time,
                        frame_time: f.frame_time,
                        regions: Vec::new(),
                        features: pool_grid(grid, info.grid_hw, dim, stored_grid_hw(cfg, info)),
                    }
                }
            };
            let boxes = to_original(c, f, d.width, d.height);
            let regions = select(c, &boxes, info.classes.len(), &cfg.select);
            let mut features = Vec::with_capacity(regions.len() * dim);
            for r in &regions {
                features.extend_from_slice(&c.features[r.candidate * dim..(r.candidate + 1) * dim]);
            }
            ExtractedFrame {
                timestamp: f.time,
                frame_time: f.frame_time,
                regions,
                features,
            }
        })
        .collect();
    Extracted {
        item: ExtractedItem {
            // Video or image as the decoder found the file, not as its name suggested.
            item: Item {
                kind: d.kind,
                ..item.clone()
            },
            width: d.width,
            height: d.height,
            duration: d.duration,
            frames,
        },
        warnings: d.warnings,
    }
}

fn select_stage<'a>(
    rx: Receiver<(u64, Vec<Entry<'a, Detected>>)>,
    tx: Sender<Entry<'a, Extracted>>,
    cfg: &ExtractConfig,
    info: &DetectorInfo,
    stats: &Stats,
) {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    for (seq, batch) in rx {
        pending.insert(seq, batch);
        while let Some(batch) = pending.remove(&next) {
            next += 1;
            let outs: Vec<_> = stats.select.time(|| {
                batch
                    .into_iter()
                    .map(|e| Entry {
                        seq: e.seq,
                        shard: e.shard,
                        item: e.item,
                        result: e.result.map(|d| extract_item(e.item, d, cfg, info)),
                    })
                    .collect()
            });
            for o in outs {
                if tx.send(o).is_err() {
                    return;
                }
            }
        }
    }
}

/// The shard being written and its done-record in the making.
struct OpenShard {
    writer: ShardWriter,
    record: DoneRecord,
}

fn write_stage(
    rx: Receiver<Entry<Extracted>>,
    todo: &[ShardPlan],
    cfg: &ExtractConfig,
    info: &DetectorInfo,
    stats: &Stats,
    progress: &ProgressBar,
    locks: &Locks,
) -> Result<Summary, PipelineError> {
    let mut summary = Summary::default();
    let mut open: Option<OpenShard> = None;
    let config_json = cfg.recorded_json();
    let finish = |o: OpenShard, summary: &mut Summary| -> Result<(), PipelineError> {
        let OpenShard { writer, mut record } = o;
        let path = writer.commit()?;
        record.bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        job::write_done(&cfg.out, &record)?;
        locks.lock().expect("locks").remove(&record.shard_id);
        summary.shards_written += 1;
        Ok(())
    };
    for e in rx {
        stats.write.time(|| -> Result<(), PipelineError> {
            if open.as_ref().is_some_and(|o| o.record.shard_id != e.shard) {
                finish(open.take().expect("open"), &mut summary)?;
            }
            if open.is_none() {
                let plan = todo
                    .iter()
                    .find(|s| s.id == e.shard)
                    .expect("planned shard");
                summary.items += (plan.end - plan.start) as u64;
                let meta = ShardMeta {
                    shard_id: e.shard,
                    detector: info.clone(),
                    model_kind: info.kind,
                    max_boxes: match info.kind {
                        ModelKind::Regions => cfg.select.max_boxes,
                        ModelKind::Grid => 0,
                    },
                    grid_hw: stored_grid_hw(cfg, info),
                    feature_dim: info.feature_dim,
                    feature_dtype: cfg.feature_dtype,
                    compression: cfg.compression,
                    config_json: config_json.clone(),
                };
                open = Some(OpenShard {
                    writer: ShardWriter::create(&cfg.out, &meta)?,
                    record: DoneRecord {
                        shard_id: e.shard,
                        planned: (plan.end - plan.start) as u64,
                        written: 0,
                        frames: 0,
                        boxes: 0,
                        bytes: 0,
                        failed: Vec::new(),
                        warnings: Vec::new(),
                    },
                });
            }
            let o = open.as_mut().expect("open");
            if let Some(l) = locks.lock().expect("locks").get(&e.shard) {
                l.refresh();
            }
            match e.result {
                Ok(Extracted { item: x, warnings }) => {
                    o.writer.append_item(&x)?;
                    o.record
                        .warnings
                        .extend(warnings.into_iter().map(|w| failure(e.item, "decode", w)));
                    // Grid frames have no regions: 0 boxes.
                    let boxes: u64 = x
                        .frames
                        .iter()
                        .map(|f| f.regions.len().min(cfg.select.max_boxes) as u64)
                        .sum();
                    o.record.written += 1;
                    o.record.frames += x.frames.len() as u64;
                    o.record.boxes += boxes;
                    summary.done += 1;
                    summary.frames += x.frames.len() as u64;
                    summary.boxes += boxes;
                }
                Err(err) => {
                    o.record.failed.push(err);
                    summary.failed += 1;
                    progress.set_message(format!("{} failed", summary.failed));
                }
            }
            progress.inc(1);
            Ok(())
        })?;
    }
    if let Some(o) = open.take() {
        stats.write.time(|| finish(o, &mut summary))?;
    }
    Ok(summary)
}
