//! Planted-structure data: each caption word `w` has a hidden code vector; an item's regions
//! are the codes of its caption's words (plus noise), mixed with distractor regions and
//! padding. A model that learns region↔word correspondence retrieves perfectly; chance is
//! 1/N. Also writes a tiny BERT/DistilBERT `config.json` + `vocab.txt` for tests.

use std::path::Path;

use anyhow::Result;

use crate::train::data::{FrameBlock, MemoryItem, MemorySource, Rng, LOC_DIM};

/// Planted dataset parameters.
#[derive(Debug, Clone)]
pub struct PlantedSpec {
    /// Items.
    pub items: usize,
    /// Vocabulary of concept words (`word0` …).
    pub words: usize,
    /// Words per caption (distinct).
    pub words_per_caption: usize,
    /// Feature size D.
    pub feature_dim: usize,
    /// Regions per frame K (≥ words_per_caption + distractors).
    pub max_boxes: usize,
    /// Max distractor regions per frame (actual count random, so padding varies).
    pub distractors: usize,
    /// Frames per item; word regions are spread over frames.
    pub frames: usize,
    /// Noise std added to codes.
    pub noise: f32,
    /// Seed of codes (shared by train and test sets built with the same seed).
    pub code_seed: u64,
    /// Seed of the items.
    pub seed: u64,
}

impl Default for PlantedSpec {
    fn default() -> Self {
        Self {
            items: 256,
            words: 24,
            words_per_caption: 3,
            feature_dim: 32,
            max_boxes: 8,
            distractors: 3,
            frames: 1,
            noise: 0.1,
            code_seed: 7,
            seed: 1,
        }
    }
}

/// Concept word `i`.
pub fn word(i: usize) -> String {
    format!("word{i}")
}

/// Unit-norm code of each word (×2 so codes dominate the noise).
fn codes(spec: &PlantedSpec) -> Vec<Vec<f32>> {
    let mut r = Rng::new(spec.code_seed, &[0xC0DE]);
    (0..spec.words)
        .map(|_| {
            let v: Vec<f64> = (0..spec.feature_dim).map(|_| r.normal()).collect();
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| (2.0 * x / n) as f32).collect()
        })
        .collect()
}

/// Builds a caption from word indices.
pub fn caption(words: &[usize]) -> String {
    words.iter().map(|&w| word(w)).collect::<Vec<_>>().join(" ")
}

/// Random distinct word sets for `n` items.
pub fn random_word_sets(spec: &PlantedSpec, n: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    (0..n)
        .map(|_| {
            let mut ws: Vec<usize> = vec![];
            while ws.len() < spec.words_per_caption {
                let w = rng.below(spec.words);
                if !ws.contains(&w) {
                    ws.push(w);
                }
            }
            ws
        })
        .collect()
}

/// Items whose regions encode the given word sets.
pub fn planted_from_sets(spec: &PlantedSpec, sets: &[Vec<usize>]) -> MemorySource {
    assert!(
        spec.max_boxes * spec.frames >= spec.words_per_caption + spec.distractors * spec.frames
    );
    let codes = codes(spec);
    let mut rng = Rng::new(spec.seed, &[0x17E5]);
    let (k, d) = (spec.max_boxes, spec.feature_dim);
    let items = sets
        .iter()
        .enumerate()
        .map(|(i, ws)| {
            let mut feats = vec![0.0f32; spec.frames * k * d];
            let mut fb = FrameBlock {
                features: Default::default(),
                locations: vec![0.0; spec.frames * k * LOC_DIM],
                num_boxes: vec![0; spec.frames],
            };
            // Regions per frame: the frame's share of words, then distractors, shuffled.
            for f in 0..spec.frames {
                let mine: Vec<usize> = ws
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| j % spec.frames == f)
                    .map(|(_, &w)| w)
                    .collect();
                let nd = rng.below(spec.distractors + 1).min(k - mine.len());
                let mut regs: Vec<Option<usize>> = mine
                    .iter()
                    .map(|&w| Some(w))
                    .chain((0..nd).map(|_| None))
                    .collect();
                for a in (1..regs.len()).rev() {
                    regs.swap(a, rng.below(a + 1));
                }
                for (r, reg) in regs.iter().enumerate() {
                    let row = (f * k + r) * d;
                    for (x, out) in feats[row..row + d].iter_mut().enumerate() {
                        let base = reg.map_or(0.0, |w| codes[w][x]);
                        let distract = if reg.is_none() {
                            rng.normal() as f32
                        } else {
                            0.0
                        };
                        *out = base + spec.noise * rng.normal() as f32 + distract;
                    }
                    let (x1, y1) = (rng.unit() as f32 * 0.5, rng.unit() as f32 * 0.5);
                    let (w, h) = (0.1 + rng.unit() as f32 * 0.4, 0.1 + rng.unit() as f32 * 0.4);
                    let loc = [x1, y1, x1 + w, y1 + h, w, h, w * h];
                    fb.locations[(f * k + r) * LOC_DIM..(f * k + r + 1) * LOC_DIM]
                        .copy_from_slice(&loc);
                }
                fb.num_boxes[f] = regs.len() as u32;
            }
            fb.features = feats.into();
            MemoryItem {
                extra_captions: vec![],
                id: format!("item{i}"),
                caption: caption(ws),
                frames: fb,
            }
        })
        .collect();
    MemorySource {
        feature_dim: d,
        max_boxes: k,
        grid_hw: None,
        items,
    }
}

/// A planted dataset with random captions.
pub fn planted(spec: &PlantedSpec) -> MemorySource {
    let mut rng = Rng::new(spec.seed, &[0x5E75]);
    let sets = random_word_sets(spec, spec.items, &mut rng);
    planted_from_sets(spec, &sets)
}

/// Tiny text-model architecture for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyArch {
    /// BERT config.json.
    Bert,
    /// DistilBERT config.json.
    DistilBert,
}

/// Writes `vocab.txt` (special tokens, concept words, a few fillers) and a tiny `config.json`.
pub fn write_tiny_text_model(
    dir: &Path,
    words: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    arch: TinyArch,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut vocab: Vec<String> = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "and", "of", "##s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    vocab.extend((0..words).map(word));
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n")?;
    let cfg = match arch {
        TinyArch::Bert => serde_json::json!({
            "model_type": "bert", "vocab_size": vocab.len(), "hidden_size": hidden,
            "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": hidden * 2,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0
        }),
        TinyArch::DistilBert => serde_json::json!({
            "model_type": "distilbert", "vocab_size": vocab.len(), "dim": hidden, "n_layers": layers,
            "n_heads": heads, "hidden_dim": hidden * 2, "activation": "gelu", "dropout": 0.0,
            "attention_dropout": 0.0, "max_position_embeddings": 64, "sinusoidal_pos_embds": false, "pad_token_id": 0
        }),
    };
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
    Ok(())
}

/// Planted patch-grid dataset: every patch of a frame is background noise N(0, noise²) except
/// one patch per caption word (a random place in each frame) holding that word's code, scaled
/// to `object_norm`. Only a model that singles out those patches can tell items apart: the
/// mean over the grid drowns the codes in `Hg·Wg` noise patches. With `negatives`, each object
/// also appears as its negative (−code) at another place, so the grid mean carries no trace of
/// the objects at all, while pooling weighted by patch content (learned masks) still sees them.
#[derive(Debug, Clone)]
pub struct PlantedGridSpec {
    /// Items.
    pub items: usize,
    /// Vocabulary of concept words.
    pub words: usize,
    /// Words (objects) per caption.
    pub words_per_caption: usize,
    /// Patch feature size D.
    pub feature_dim: usize,
    /// Grid (Hg, Wg).
    pub grid: (usize, usize),
    /// Frames per item.
    pub frames: usize,
    /// Background noise std.
    pub noise: f32,
    /// Norm of an object patch's code.
    pub object_norm: f32,
    /// Also place each object's negative.
    pub negatives: bool,
    /// Seed of the word codes.
    pub code_seed: u64,
    /// Seed of the items.
    pub seed: u64,
}

impl Default for PlantedGridSpec {
    fn default() -> Self {
        Self {
            items: 256,
            words: 24,
            words_per_caption: 2,
            feature_dim: 32,
            grid: (8, 8),
            frames: 1,
            noise: 1.0,
            object_norm: 6.0,
            negatives: false,
            code_seed: 7,
            seed: 1,
        }
    }
}

/// A planted grid dataset with random captions.
pub fn planted_grid(spec: &PlantedGridSpec) -> MemorySource {
    let words = PlantedSpec {
        words: spec.words,
        words_per_caption: spec.words_per_caption,
        feature_dim: spec.feature_dim,
        code_seed: spec.code_seed,
        ..Default::default()
    };
    let mut rng = Rng::new(spec.seed, &[0x6A1D]);
    let sets = random_word_sets(&words, spec.items, &mut rng);
    planted_grid_from_sets(spec, &sets, &mut rng)
}

/// Grid items whose objects are the given word sets (`spec.items` is ignored); `rng` places
/// the objects and draws the noise.
pub fn planted_grid_from_sets(
    spec: &PlantedGridSpec,
    sets: &[Vec<usize>],
    rng: &mut Rng,
) -> MemorySource {
    let codes = codes(&PlantedSpec {
        words: spec.words,
        feature_dim: spec.feature_dim,
        code_seed: spec.code_seed,
        ..Default::default()
    });
    let (h, w) = spec.grid;
    let (p, d) = (h * w, spec.feature_dim);
    let per_word = if spec.negatives { 2 } else { 1 };
    assert!(sets.iter().all(|ws| p >= per_word * ws.len()));
    let scale = spec.object_norm / 2.0; // codes() have norm 2
    let items = sets
        .iter()
        .enumerate()
        .map(|(i, ws)| {
            let mut feats = vec![0.0f32; spec.frames * p * d];
            let mut fb = FrameBlock {
                features: Default::default(),
                locations: vec![0.0; spec.frames * p * LOC_DIM],
                num_boxes: vec![p as u32; spec.frames],
            };
            for f in 0..spec.frames {
                let frame = &mut feats[f * p * d..(f + 1) * p * d];
                for x in frame.iter_mut() {
                    *x = spec.noise * rng.normal() as f32;
                }
                let mut places: Vec<usize> = vec![];
                while places.len() < per_word * ws.len() {
                    let q = rng.below(p);
                    if !places.contains(&q) {
                        places.push(q);
                    }
                }
                for (j, &q) in places.iter().enumerate() {
                    let (wd, sign) = (ws[j % ws.len()], if j < ws.len() { 1.0 } else { -1.0 });
                    for (x, c) in frame[q * d..(q + 1) * d].iter_mut().zip(&codes[wd]) {
                        *x = sign * scale * c + 0.05 * rng.normal() as f32;
                    }
                }
            }
            fb.features = feats.into();
            MemoryItem {
                extra_captions: vec![],
                id: format!("grid{i}"),
                caption: caption(ws),
                frames: fb,
            }
        })
        .collect();
    MemorySource {
        feature_dim: d,
        max_boxes: p,
        grid_hw: Some(spec.grid),
        items,
    }
}
