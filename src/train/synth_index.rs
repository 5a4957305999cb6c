//! A synthetic extraction output at pre-training scale, for the start-up and memory benchmark
//! (`benches/index_scale.sh`) and its small-scale test: `index.jsonl` with any number of items
//! (WebVid-like ids and captions of realistic length, some items with several captions) over
//! many real but tiny region shards written by [`ShardWriter`]. Every index entry points at real
//! frame rows of its shard (many entries share the same rows), so batches can be drawn; no
//! media is needed.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::detect::contract::{DetectorInfo, Preprocess};
use crate::job::index::{IndexEntry, FILE_NAME};
use crate::manifest::{Item, ItemKind};
use crate::select::Region;
use crate::shard::{
    schema, Compression, ExtractedFrame, ExtractedItem, FeatureDtype, ModelKind, ShardMeta,
    ShardWriter,
};
use crate::train::data::Rng;

/// Sizes of a synthetic dataset.
#[derive(Debug, Clone)]
pub struct SynthIndexSpec {
    /// Index entries.
    pub items: usize,
    /// Shard files (items are spread over them in contiguous runs, as extraction does).
    pub shards: usize,
    /// Frame rows per entry (1: images, as CC3M; more: videos).
    pub frames: usize,
    /// Every n-th item has three captions (0: never).
    pub multi_caption_every: usize,
    /// First digits of the ids (WebVid ids are ~10 digits, CC3M ~9).
    pub id_base: u64,
    /// D of the shards.
    pub feature_dim: usize,
    /// Seed of captions and features.
    pub seed: u64,
}

impl SynthIndexSpec {
    /// `items` video entries of 2 frames over `shards` shards of D = [`FEATURE_DIM`].
    pub fn new(items: usize, shards: usize) -> Self {
        Self {
            items,
            shards,
            frames: 2,
            multi_caption_every: 10,
            id_base: 1_000_000_000,
            feature_dim: FEATURE_DIM,
            seed: 0,
        }
    }
}

/// Default D of the tiny shards.
pub const FEATURE_DIM: usize = 16;
/// K of the tiny shards.
pub const MAX_BOXES: usize = 4;

const WORDS: &[&str] = &[
    "a",
    "the",
    "man",
    "woman",
    "dog",
    "cat",
    "walking",
    "running",
    "on",
    "in",
    "beach",
    "city",
    "street",
    "sunset",
    "aerial",
    "view",
    "of",
    "forest",
    "mountain",
    "river",
    "slow",
    "motion",
    "young",
    "happy",
    "family",
    "playing",
    "with",
    "ball",
    "close",
    "up",
    "hands",
    "typing",
    "laptop",
    "office",
    "business",
    "people",
    "meeting",
    "table",
    "background",
    "blue",
    "sky",
    "clouds",
    "timelapse",
    "night",
    "lights",
    "traffic",
    "road",
    "car",
    "driving",
    "snow",
    "winter",
    "summer",
    "green",
    "grass",
    "field",
    "flowers",
    "water",
    "waves",
    "ocean",
    "boat",
];

fn caption(rng: &mut Rng) -> String {
    let n = 6 + rng.below(12);
    let mut s = String::with_capacity(n * 7);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

fn detector(feature_dim: usize) -> DetectorInfo {
    DetectorInfo {
        name: "synthetic".into(),
        sha256: "0".repeat(64),
        preprocess: Preprocess {
            channel_order: "RGB".into(),
            pixel_mean: [0.0; 3],
            pixel_std: [1.0; 3],
            shorter_side: 8,
            max_side: 8,
            size_divisibility: 0,
            center_crop: 0,
        },
        classes: vec!["thing".into()],
        attributes: vec!["plain".into()],
        feature_dim,
        kind: ModelKind::Regions,
        grid_hw: (0, 0),
    }
}

/// Writes one tiny shard `dir/shard-<id>.h5` holding two items of `frames` frame rows each.
pub fn write_shard(
    dir: &Path,
    id: u64,
    frames: usize,
    feature_dim: usize,
    rng: &mut Rng,
) -> Result<()> {
    let meta = ShardMeta {
        shard_id: id,
        detector: detector(feature_dim),
        model_kind: ModelKind::Regions,
        max_boxes: MAX_BOXES,
        grid_hw: (0, 0),
        feature_dim,
        feature_dtype: FeatureDtype::F16,
        compression: Compression::None,
        config_json: "{}".into(),
    };
    let mut w = ShardWriter::create(dir, &meta)?;
    for row in 0..2u64 {
        let frames = (0..frames)
            .map(|f| {
                let regions: Vec<Region> = (0..MAX_BOXES)
                    .map(|r| Region {
                        candidate: r,
                        bbox: [0.0, 0.0, 4.0, 4.0],
                        score: 0.9,
                        class: 0,
                        attribute: 0,
                        attr_score: 0.5,
                    })
                    .collect();
                let features = (0..MAX_BOXES * feature_dim)
                    .map(|_| rng.normal() as f32)
                    .collect();
                ExtractedFrame {
                    timestamp: f as f64,
                    frame_time: f as f64,
                    regions,
                    features,
                }
            })
            .collect();
        w.append_item(&ExtractedItem {
            item: Item {
                index: id * 2 + row,
                id: format!("s{id}-{row}"),
                path: format!("s{id}-{row}.mp4").into(),
                caption: "tiny".into(),
                captions: vec![],
                kind: ItemKind::Video,
            },
            width: 8,
            height: 8,
            duration: 1.0,
            frames,
        })?;
    }
    w.commit()?;
    Ok(())
}

/// Writes `spec.shards` tiny shards and an `index.jsonl` of `spec.items` entries into `dir`.
pub fn write(dir: &Path, spec: &SynthIndexSpec) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let shards = spec.shards.clamp(1, spec.items.max(1));
    let frames = spec.frames.max(1);
    let mut rng = Rng::new(spec.seed, &[0x5171]);
    for s in 0..shards as u64 {
        write_shard(dir, s, frames, spec.feature_dim, &mut rng)?;
    }
    let path = dir.join(FILE_NAME);
    let f = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, f);
    for i in 0..spec.items {
        // Contiguous runs per shard, as extraction plans them; rows cycle over the two items.
        let s = (i as u128 * shards as u128 / spec.items as u128) as u64;
        let first = (s as u128 * spec.items as u128).div_ceil(shards as u128) as usize;
        let row = (i - first) as u64;
        let cap = caption(&mut rng);
        let captions = if spec.multi_caption_every > 0 && i % spec.multi_caption_every == 0 {
            vec![cap.clone(), caption(&mut rng), caption(&mut rng)]
        } else {
            vec![]
        };
        let e = IndexEntry {
            id: format!("{}", spec.id_base + i as u64),
            shard: schema::shard_file_name(s),
            row,
            frame_start: (row % 2) * frames as u64,
            num_frames: frames as u32,
            kind: if frames == 1 { 1 } else { 0 },
            manifest_index: i as u64,
            caption: cap,
            captions,
        };
        serde_json::to_writer(&mut out, &e)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
