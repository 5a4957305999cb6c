//! `regionfeat inspect PATH`: what a shard or an output directory holds.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::{done_record_path, shard_name, shard_paths, BLOCK_ROWS};
use crate::shard::schema::attr;
use crate::shard::{FeatureDtype, ModelKind, ShardReader};

/// Classes listed in the summary.
const TOP_CLASSES: usize = 20;

/// Running min / max / mean / standard deviation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Values seen.
    pub count: u64,
    /// Smallest value (0 when none).
    pub min: f64,
    /// Largest value (0 when none).
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    #[serde(skip)]
    sum: f64,
    #[serde(skip)]
    sum_sq: f64,
}

impl Stats {
    fn push(&mut self, v: f64) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        if self.count == 0 || v > self.max {
            self.max = v;
        }
        self.count += 1;
        self.sum += v;
        self.sum_sq += v * v;
    }

    fn finish(&mut self) {
        if self.count > 0 {
            let n = self.count as f64;
            self.mean = self.sum / n;
            self.std = (self.sum_sq / n - self.mean * self.mean).max(0.0).sqrt();
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "min {:.4}  max {:.4}  mean {:.4}  std {:.4}  (n={})",
            self.min, self.max, self.mean, self.std, self.count
        )
    }
}

/// Frames by number of valid boxes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Histogram {
    /// `counts[b]` = frames with exactly `b` boxes (`b = 0..=K`).
    pub counts: Vec<u64>,
    /// Min / max / mean boxes per frame.
    pub stats: Stats,
}

/// A class (or attribute) and how many valid boxes carry it.
#[derive(Debug, Clone, Serialize)]
pub struct ClassCount {
    /// Index into the shard's `class_names` (or `attribute_names`).
    pub index: u32,
    /// Its name ("?" when out of range).
    pub name: String,
    /// Valid boxes with it.
    pub count: u64,
    /// Share of all valid boxes.
    pub fraction: f64,
}

/// Provenance and size of one shard.
#[derive(Debug, Clone, Serialize)]
pub struct ShardSummary {
    /// File name.
    pub file: String,
    /// Planned shard number.
    pub shard_id: u64,
    /// Items.
    pub items: usize,
    /// Frame rows.
    pub frames: usize,
    /// Size on disk.
    pub bytes: u64,
    /// Whether its done-record exists (committed shard).
    pub done_record: bool,
    /// `schema_version` attribute.
    pub schema_version: u32,
    /// Regions or grid.
    pub model_kind: ModelKind,
    /// `[Hg, Wg]` of a grid shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_hw: Option<[usize; 2]>,
    /// regionfeat version that wrote it.
    pub tool_version: String,
    /// Detector name.
    pub detector_name: String,
    /// Detector ONNX sha256.
    pub detector_sha256: String,
    /// K.
    pub max_boxes: usize,
    /// D.
    pub feature_dim: usize,
    /// `f16` or `f32`.
    pub feature_dtype: FeatureDtype,
    /// Extraction config.
    pub config: serde_json::Value,
}

/// Everything `inspect PATH` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The path inspected.
    pub path: String,
    /// Per shard.
    pub shards: Vec<ShardSummary>,
    /// Items in all shards.
    pub items: usize,
    /// Of which videos.
    pub videos: usize,
    /// Of which images.
    pub images: usize,
    /// Frame rows.
    pub frames: usize,
    /// Valid boxes.
    pub boxes: u64,
    /// Frames per item.
    pub frames_per_item: Stats,
    /// Boxes per frame.
    pub boxes_per_frame: Histogram,
    /// The most frequent classes over valid boxes.
    pub top_classes: Vec<ClassCount>,
    /// The most frequent attributes over valid boxes.
    pub top_attributes: Vec<ClassCount>,
    /// Scores of valid boxes.
    pub scores: Stats,
    /// Attribute probabilities of valid boxes.
    pub attr_scores: Stats,
    /// Feature values of valid boxes (grid shards: of every cell).
    pub features: Stats,
    /// L2 norm of each valid box's feature vector (grid shards: of each cell's).
    pub feature_norms: Stats,
    /// Bytes on disk, all shards.
    pub bytes: u64,
    /// Bytes on disk per item.
    pub bytes_per_item: f64,
    /// Bytes on disk per frame.
    pub bytes_per_frame: f64,
    /// Schema version (of the first shard; each shard has its own in `shards`).
    pub schema_version: u32,
    /// Regions or grid (first shard).
    pub model_kind: ModelKind,
    /// `[Hg, Wg]` (grid shards, first shard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_hw: Option<[usize; 2]>,
    /// Detector name (first shard).
    pub detector_name: String,
    /// Detector sha256 (first shard).
    pub detector_sha256: String,
    /// Whether every shard names the same detector, sha256 and config.
    pub consistent: bool,
    /// Extraction config (first shard).
    pub config: serde_json::Value,
}

fn top(counts: &[u64], names: &[String], n: usize, total: u64) -> Vec<ClassCount> {
    let mut idx: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] > 0).collect();
    idx.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    idx.truncate(n);
    idx.into_iter()
        .map(|i| ClassCount {
            index: i as u32,
            name: names.get(i).cloned().unwrap_or_else(|| "?".into()),
            count: counts[i],
            fraction: counts[i] as f64 / total.max(1) as f64,
        })
        .collect()
}

fn bump(counts: &mut Vec<u64>, i: usize) {
    if i >= counts.len() {
        counts.resize(i + 1, 0);
    }
    counts[i] += 1;
}

/// Summarizes a shard file or every shard of an output directory.
pub fn summarize(path: &Path) -> anyhow::Result<Summary> {
    let mut shards = Vec::new();
    let (mut items, mut videos, mut frames, mut boxes) = (0usize, 0usize, 0usize, 0u64);
    let mut frames_per_item = Stats::default();
    let mut hist = Histogram::default();
    let (mut class_counts, mut attr_counts) = (Vec::new(), Vec::new());
    let (mut scores, mut attr_scores, mut features, mut norms) = (
        Stats::default(),
        Stats::default(),
        Stats::default(),
        Stats::default(),
    );
    let (mut class_names, mut attribute_names) = (Vec::new(), Vec::new());
    for p in shard_paths(path)? {
        let r = ShardReader::open(&p)?;
        let (k, d) = (r.max_boxes()?, r.feature_dim()?);
        let n = r.len()?;
        let t = r.num_frame_rows()?;
        if shards.is_empty() {
            class_names = r.class_names()?;
            attribute_names = r.attribute_names()?;
        }
        let config_text = r.attr_str(attr::CONFIG)?;
        let model_kind = r.model_kind()?;
        let grid_hw = match model_kind {
            ModelKind::Regions => None,
            ModelKind::Grid => Some(r.grid_hw()?),
        };
        shards.push(ShardSummary {
            file: shard_name(&p),
            shard_id: r.shard_id()?,
            items: n,
            frames: t,
            bytes: std::fs::metadata(&p)
                .with_context(|| p.display().to_string())?
                .len(),
            done_record: done_record_path(&p).is_some_and(|d| d.exists()),
            schema_version: r.attr_num(attr::SCHEMA_VERSION)?,
            model_kind,
            grid_hw: grid_hw.map(|(h, w)| [h, w]),
            tool_version: r.attr_str(attr::TOOL_VERSION)?,
            detector_name: r.attr_str(attr::DETECTOR_NAME)?,
            detector_sha256: r.attr_str(attr::DETECTOR_SHA256)?,
            max_boxes: k,
            feature_dim: d,
            feature_dtype: r.feature_dtype()?,
            config: serde_json::from_str(&config_text)
                .unwrap_or(serde_json::Value::String(config_text)),
        });
        items += n;
        frames += t;
        videos += r.kinds()?.iter().filter(|&&k| k == 0).count();
        for (_, nf) in r.frame_ranges()? {
            frames_per_item.push(nf as f64);
        }
        if let Some((h, w)) = grid_hw {
            // A grid has no boxes: statistics over every cell's feature vector.
            let mut start = 0usize;
            while start < t {
                let count = BLOCK_ROWS.min(t - start);
                let g = r.read_grid_rows(start..start + count)?;
                for cell in g.chunks_exact(d) {
                    let mut sq = 0f64;
                    for &v in cell {
                        features.push(v as f64);
                        sq += (v as f64) * (v as f64);
                    }
                    norms.push(sq.sqrt());
                }
                debug_assert_eq!(g.len(), count * h * w * d);
                start += count;
            }
            continue;
        }
        if hist.counts.len() < k + 1 {
            hist.counts.resize(k + 1, 0);
        }
        let mut start = 0usize;
        while start < t {
            let count = BLOCK_ROWS.min(t - start);
            let b = r.read_frames(start as u64, count)?;
            for f in 0..count {
                let m = (b.num_boxes[f] as usize).min(k);
                bump(&mut hist.counts, b.num_boxes[f] as usize);
                hist.stats.push(b.num_boxes[f] as f64);
                boxes += m as u64;
                for j in f * k..f * k + m {
                    bump(&mut class_counts, b.classes[j] as usize);
                    bump(&mut attr_counts, b.attributes[j] as usize);
                    scores.push(b.scores[j] as f64);
                    attr_scores.push(b.attr_scores[j] as f64);
                    let feat = &b.features[j * d..(j + 1) * d];
                    let mut sq = 0f64;
                    for &v in feat {
                        features.push(v as f64);
                        sq += (v as f64) * (v as f64);
                    }
                    norms.push(sq.sqrt());
                }
            }
            start += count;
        }
    }
    for s in [
        &mut frames_per_item,
        &mut hist.stats,
        &mut scores,
        &mut attr_scores,
        &mut features,
        &mut norms,
    ] {
        s.finish();
    }
    let bytes: u64 = shards.iter().map(|s| s.bytes).sum();
    let first = shards[0].clone();
    let consistent = shards.iter().all(|s| {
        s.model_kind == first.model_kind
            && s.grid_hw == first.grid_hw
            && s.detector_sha256 == first.detector_sha256
            && s.detector_name == first.detector_name
            && s.config == first.config
    });
    Ok(Summary {
        path: path.display().to_string(),
        items,
        videos,
        images: items - videos,
        frames,
        boxes,
        frames_per_item,
        boxes_per_frame: hist,
        top_classes: top(&class_counts, &class_names, TOP_CLASSES, boxes),
        top_attributes: top(&attr_counts, &attribute_names, 10, boxes),
        scores,
        attr_scores,
        features,
        feature_norms: norms,
        bytes,
        bytes_per_item: bytes as f64 / items.max(1) as f64,
        bytes_per_frame: bytes as f64 / frames.max(1) as f64,
        schema_version: first.schema_version,
        model_kind: first.model_kind,
        grid_hw: first.grid_hw,
        detector_name: first.detector_name.clone(),
        detector_sha256: first.detector_sha256.clone(),
        consistent,
        config: first.config.clone(),
        shards,
    })
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} shard(s), {} items ({} videos, {} images), {} frames, {} boxes",
            self.path,
            self.shards.len(),
            self.items,
            self.videos,
            self.images,
            self.frames,
            self.boxes
        )?;
        writeln!(f, "schema:   regionfeat-shard v{}", self.schema_version)?;
        match self.grid_hw {
            Some([h, w]) => writeln!(
                f,
                "model:    {} (grid model: {h}x{w} cells per frame, no boxes)  sha256 {}",
                self.detector_name, self.detector_sha256
            )?,
            None => writeln!(
                f,
                "detector: {}  sha256 {}",
                self.detector_name, self.detector_sha256
            )?,
        }
        if !self.consistent {
            writeln!(
                f,
                "warning:  shards differ in detector or config (see --json)"
            )?;
        }
        writeln!(f, "config:   {}", self.config)?;
        writeln!(
            f,
            "disk:     {} bytes  ({:.0} per item, {:.0} per frame)",
            self.bytes, self.bytes_per_item, self.bytes_per_frame
        )?;
        for s in &self.shards {
            let layout = match s.grid_hw {
                Some([h, w]) => format!("grid {h}x{w}"),
                None => format!("K={}", s.max_boxes),
            };
            writeln!(
                f,
                "  {}  id {}  {} items  {} frames  {} bytes  {layout} D={} {:?}  tool {}{}",
                s.file,
                s.shard_id,
                s.items,
                s.frames,
                s.bytes,
                s.feature_dim,
                s.feature_dtype,
                s.tool_version,
                if s.done_record {
                    ""
                } else {
                    "  (no done-record: incomplete)"
                }
            )?;
        }
        writeln!(f, "frames per item: {}", self.frames_per_item)?;
        if self.grid_hw.is_some() {
            writeln!(f, "cell features:      {}", self.features)?;
            return write!(f, "cell feature norms: {}", self.feature_norms);
        }
        writeln!(f, "boxes per frame: {}", self.boxes_per_frame.stats)?;
        let peak = self
            .boxes_per_frame
            .counts
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        for (b, &c) in self
            .boxes_per_frame
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
        {
            let bar = "#".repeat(((c * 40).div_ceil(peak)) as usize);
            writeln!(f, "  {b:>4} | {bar} {c}")?;
        }
        writeln!(f, "top {} classes:", self.top_classes.len())?;
        for (i, c) in self.top_classes.iter().enumerate() {
            writeln!(
                f,
                "  {:>2}. {:<20} #{:<5} {:>7}  {:>5.1}%",
                i + 1,
                c.name,
                c.index,
                c.count,
                c.fraction * 100.0
            )?;
        }
        let attrs: Vec<String> = self
            .top_attributes
            .iter()
            .map(|c| format!("{} {}", c.name, c.count))
            .collect();
        writeln!(f, "top attributes: {}", attrs.join(", "))?;
        writeln!(f, "scores:        {}", self.scores)?;
        writeln!(f, "attr scores:   {}", self.attr_scores)?;
        writeln!(f, "features:      {}", self.features)?;
        write!(f, "feature norms: {}", self.feature_norms)
    }
}
