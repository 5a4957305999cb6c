//! Synthetic shards written by the real [`ShardWriter`] (tests and the loader benchmark): no
//! media or detector needed, same files and filters as `regionfeat extract` writes.

use std::path::{Path, PathBuf};

use super::{Compression, ExtractedFrame, ExtractedItem, FeatureDtype, ModelKind, ShardError};
use super::{ShardMeta, ShardWriter};
use crate::detect::{DetectorInfo, Preprocess};
use crate::manifest::{Item, ItemKind};
use crate::select::Region;

/// What to write.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SyntheticShard {
    /// Shard number (file `shard-NNNNNN.h5`).
    pub shard_id: u64,
    /// Items.
    pub items: usize,
    /// Frames per item: uniform in this inclusive range.
    pub frames: (usize, usize),
    /// K (region shards).
    pub max_boxes: usize,
    /// `Some((Hg, Wg))` for a grid shard.
    pub grid_hw: Option<(usize, usize)>,
    /// D.
    pub feature_dim: usize,
    /// Feature storage type.
    pub dtype: FeatureDtype,
    /// Filters.
    pub compression: Compression,
    /// Seed of the values.
    pub seed: u64,
}

impl Default for SyntheticShard {
    fn default() -> Self {
        Self {
            shard_id: 0,
            items: 8,
            frames: (1, 4),
            max_boxes: 5,
            grid_hw: None,
            feature_dim: 16,
            dtype: FeatureDtype::F16,
            compression: Compression::Gzip(4),
            seed: 1,
        }
    }
}

/// SplitMix64.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: [&str; 24] = [
    "a", "man", "woman", "dog", "is", "walking", "on", "the", "beach", "at", "sunset", "with",
    "red", "car", "driving", "through", "city", "street", "aerial", "view", "of", "green",
    "forest", "slow",
];

impl SyntheticShard {
    /// Writes the shard into `dir`; returns its path.
    ///
    /// Features look like pooled post-ReLU CNN features: about half exact zeros, the rest
    /// exponential with mean 1 (so deflate sees realistic entropy, not constant rows);
    /// a frame has between 2K/3 and K valid regions, the rest zero padding.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ShardError> {
        let d = self.feature_dim;
        let (kind, k, cells) = match self.grid_hw {
            Some((h, w)) => (ModelKind::Grid, 0, h * w),
            None => (ModelKind::Regions, self.max_boxes, 0),
        };
        let meta = ShardMeta {
            shard_id: self.shard_id,
            detector: DetectorInfo {
                name: "synthetic".into(),
                sha256: "0".repeat(64),
                preprocess: Preprocess {
                    channel_order: "BGR".into(),
                    pixel_mean: [0.0; 3],
                    pixel_std: [1.0; 3],
                    shorter_side: 600,
                    max_side: 1000,
                    size_divisibility: 0,
                    center_crop: 0,
                },
                classes: (0..16).map(|c| format!("class{c}")).collect(),
                attributes: (0..8).map(|a| format!("attr{a}")).collect(),
                feature_dim: d,
                kind,
                grid_hw: self.grid_hw.unwrap_or((0, 0)),
            },
            model_kind: kind,
            max_boxes: k,
            grid_hw: self.grid_hw.unwrap_or((0, 0)),
            feature_dim: d,
            feature_dtype: self.dtype,
            compression: self.compression,
            config_json: "{}".into(),
        };
        let mut w = ShardWriter::create(dir, &meta)?;
        let mut r = Mix(self.seed ^ self.shard_id.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let value = |r: &mut Mix| {
            if r.next() & 1 == 0 {
                0.0
            } else {
                let u = r.unit().max(1e-7);
                -u.ln()
            }
        };
        for i in 0..self.items {
            let (lo, hi) = self.frames;
            let nf = lo + r.below(hi - lo + 1);
            let (width, height) = (640u32, 360u32);
            let frames = (0..nf)
                .map(|f| {
                    let (regions, features) = if kind == ModelKind::Grid {
                        (vec![], (0..cells * d).map(|_| value(&mut r)).collect())
                    } else {
                        let n = (2 * k).div_ceil(3) + r.below(k - (2 * k).div_ceil(3) + 1);
                        let regions: Vec<Region> = (0..n)
                            .map(|j| {
                                let (x, y) = (r.unit() * 500.0, r.unit() * 250.0);
                                Region {
                                    candidate: j,
                                    bbox: [
                                        x,
                                        y,
                                        x + 20.0 + r.unit() * 120.0,
                                        y + 20.0 + r.unit() * 100.0,
                                    ],
                                    score: 1.0 - j as f32 / 100.0,
                                    class: r.below(16) as u32,
                                    attribute: r.below(8) as u32,
                                    attr_score: r.unit(),
                                }
                            })
                            .collect();
                        (regions, (0..n * d).map(|_| value(&mut r)).collect())
                    };
                    ExtractedFrame {
                        timestamp: f as f64,
                        frame_time: f as f64 + 0.02,
                        regions,
                        features,
                    }
                })
                .collect();
            let words = 8 + r.below(9);
            let caption: Vec<&str> = (0..words).map(|_| WORDS[r.below(WORDS.len())]).collect();
            let id = format!("s{}-{i}", self.shard_id);
            w.append_item(&ExtractedItem {
                item: Item {
                    index: i as u64,
                    path: PathBuf::from(format!("{id}.mp4")),
                    id,
                    caption: caption.join(" "),
                    captions: vec![],
                    kind: if nf > 1 {
                        ItemKind::Video
                    } else {
                        ItemKind::Image
                    },
                },
                width,
                height,
                duration: nf as f64,
                frames,
            })?;
        }
        w.commit()
    }
}
