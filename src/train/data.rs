//! Data layer: items (caption + frame rows of region features) come from a [`RegionSource`];
//! several sources are concatenated into one index space ([`Mixture`]); a seeded epoch order
//! is cut into batches that reader threads assemble ahead of the training loop ([`Loader`]).
//! Rows are read on demand, so memory depends on batch size and prefetch depth only.
//!
//! Determinism: the epoch order depends on `(seed, epoch)`, the frames drawn for an item on
//! `(seed, epoch, item)`, so a data position is just `(epoch, batch index)`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{ensure, Result};
use crossbeam_channel::{bounded, Receiver};
use tch::{Device, Kind, Tensor};

pub use crate::shard::FeatureRows;
use crate::train::config::{CaptionSampling, FrameSampling};
use crate::train::model::TensorBatch;
use crate::train::text::TextTokenizer;

/// Location entries per region in the shards.
pub const LOC_DIM: usize = 7;

/// Region rows of some frames of one item.
#[derive(Debug, Clone, Default)]
pub struct FrameBlock {
    /// `[n, K, D]`, in the type the source stores (f16 shards stay f16 until the device).
    pub features: FeatureRows,
    /// `[n, K, 7]`.
    pub locations: Vec<f32>,
    /// `[n]` valid regions per frame.
    pub num_boxes: Vec<u32>,
}

/// Anything that yields captioned items with frame rows of region features.
pub trait RegionSource: Send + Sync {
    /// Items.
    fn len(&self) -> usize;
    /// No items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Feature size D.
    fn feature_dim(&self) -> usize;
    /// Regions per frame row K.
    fn max_boxes(&self) -> usize;
    /// Item id.
    fn item_id(&self, i: usize) -> String;
    /// Caption (the first when the item has several).
    fn caption(&self, i: usize) -> String;
    /// All captions of the item (default: `caption`, none when it is empty).
    fn captions(&self, i: usize) -> Vec<String> {
        let c = self.caption(i);
        if c.is_empty() {
            vec![]
        } else {
            vec![c]
        }
    }
    /// Whether the item has a non-blank caption (sources with packed tables answer without
    /// building a `String`).
    fn has_caption(&self, i: usize) -> bool {
        !self.caption(i).trim().is_empty()
    }
    /// Frame rows of the item (1 for images).
    fn num_frames(&self, i: usize) -> usize;
    /// File (shard) holding the item's rows; the epoch order can keep a batch's reads within a
    /// few shards (`data.shuffle_block_shards`). Sources in memory are one "shard".
    fn shard_of(&self, _i: usize) -> usize {
        0
    }
    /// Reads the given frames (indices within the item).
    fn read_frames(&self, i: usize, frames: &[usize]) -> Result<FrameBlock>;
    /// `Some((Hg, Wg))` for patch-grid data (`model_kind = "grid"`: K = Hg·Wg patches per frame,
    /// locations unused), `None` for detector regions.
    fn grid_hw(&self) -> Option<(usize, usize)> {
        None
    }
}

/// In-memory source (tests, synthetic data).
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    /// D.
    pub feature_dim: usize,
    /// K.
    pub max_boxes: usize,
    /// Patch grid `(Hg, Wg)` (K = Hg·Wg) for grid data; `None` for regions.
    pub grid_hw: Option<(usize, usize)>,
    /// Items.
    pub items: Vec<MemoryItem>,
}

/// One in-memory item.
#[derive(Debug, Clone)]
pub struct MemoryItem {
    /// Id.
    pub id: String,
    /// Caption.
    pub caption: String,
    /// More captions after `caption` (several-caption benchmarks).
    pub extra_captions: Vec<String>,
    /// All frames of the item.
    pub frames: FrameBlock,
}

impl RegionSource for MemorySource {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn feature_dim(&self) -> usize {
        self.feature_dim
    }
    fn max_boxes(&self) -> usize {
        self.max_boxes
    }
    fn grid_hw(&self) -> Option<(usize, usize)> {
        self.grid_hw
    }
    fn item_id(&self, i: usize) -> String {
        self.items[i].id.clone()
    }
    fn caption(&self, i: usize) -> String {
        self.items[i].caption.clone()
    }
    fn captions(&self, i: usize) -> Vec<String> {
        let it = &self.items[i];
        let mut v = vec![];
        if !it.caption.is_empty() {
            v.push(it.caption.clone());
        }
        v.extend(it.extra_captions.iter().cloned());
        v
    }
    fn num_frames(&self, i: usize) -> usize {
        self.items[i].frames.num_boxes.len()
    }
    fn read_frames(&self, i: usize, frames: &[usize]) -> Result<FrameBlock> {
        let it = &self.items[i].frames;
        let (k, d) = (self.max_boxes, self.feature_dim);
        let mut out = FrameBlock {
            features: FeatureRows::zeros(0, it.features.is_f16()),
            ..Default::default()
        };
        for &f in frames {
            ensure!(f < it.num_boxes.len(), "frame {f} out of range");
            out.features
                .extend_from(&it.features, f * k * d..(f + 1) * k * d);
            out.locations
                .extend_from_slice(&it.locations[f * k * LOC_DIM..(f + 1) * k * LOC_DIM]);
            out.num_boxes.push(it.num_boxes[f]);
        }
        Ok(out)
    }
}

/// Several sources in one index space (concatenation), keeping only captioned items when asked.
/// The index is one `u32` per item (5.8M items: 23 MB), grouped by source.
pub struct Mixture {
    sources: Vec<Arc<dyn RegionSource>>,
    /// Global index → local index in its source; source `s` holds `starts[s]..starts[s + 1]`.
    local: Vec<u32>,
    starts: Vec<usize>,
    feature_dim: usize,
    max_boxes: usize,
    grid_hw: Option<(usize, usize)>,
    captions: CaptionSampling,
    /// With [`CaptionSampling::All`]: the caption of each global item (parallel to `local`).
    caption_of: Vec<u32>,
}

impl Mixture {
    /// Concatenates `sources`; with `captioned_only`, items with an empty caption are dropped.
    pub fn new(sources: Vec<Arc<dyn RegionSource>>, captioned_only: bool) -> Result<Self> {
        ensure!(!sources.is_empty(), "no data sources");
        let feature_dim = sources[0].feature_dim();
        let grid_hw = sources[0].grid_hw();
        let mut local = vec![];
        let mut starts = vec![0];
        let mut max_boxes = 0;
        for src in &sources {
            ensure!(
                src.feature_dim() == feature_dim,
                "datasets disagree on feature_dim ({} vs {feature_dim})",
                src.feature_dim()
            );
            ensure!(
                src.grid_hw() == grid_hw,
                "datasets disagree on their kind: {} vs {} (all must be region shards or all grid shards of one grid size)",
                kind_name(src.grid_hw()),
                kind_name(grid_hw)
            );
            ensure!(
                src.len() <= u32::MAX as usize,
                "a dataset holds {} items, at most 2^32 are supported",
                src.len()
            );
            max_boxes = max_boxes.max(src.max_boxes());
            local.reserve(src.len());
            for i in 0..src.len() {
                if !captioned_only || src.has_caption(i) {
                    local.push(i as u32);
                }
            }
            starts.push(local.len());
        }
        ensure!(!local.is_empty(), "the datasets hold no usable items");
        local.shrink_to_fit();
        Ok(Self {
            sources,
            local,
            starts,
            feature_dim,
            max_boxes,
            grid_hw,
            captions: CaptionSampling::Random,
            caption_of: vec![],
        })
    }
    /// Patch grid of grid data, `None` for regions.
    pub fn grid_hw(&self) -> Option<(usize, usize)> {
        self.grid_hw
    }

    /// Sets how training steps pick among several captions; `All` makes every
    /// (video, caption) pair an item.
    pub fn with_caption_sampling(mut self, mode: CaptionSampling) -> Self {
        if mode == CaptionSampling::All && self.caption_of.is_empty() {
            let mut local = Vec::with_capacity(self.local.len());
            let mut starts = vec![0];
            for s in 0..self.sources.len() {
                for g in self.starts[s]..self.starts[s + 1] {
                    let l = self.local[g];
                    let n = self.sources[s].captions(l as usize).len().max(1);
                    for c in 0..n {
                        local.push(l);
                        self.caption_of.push(c as u32);
                    }
                }
                starts.push(local.len());
            }
            self.local = local;
            self.starts = starts;
        }
        self.captions = mode;
        self
    }

    /// All captions of global item `i`.
    pub fn captions(&self, i: usize) -> Vec<String> {
        let (s, l) = self.get(i);
        s.captions(l)
    }

    /// The caption a training step sees for global item `i` in `epoch`.
    pub fn step_caption(&self, i: usize, seed: u64, epoch: u64) -> String {
        if let Some(&c) = self.caption_of.get(i) {
            let caps = self.captions(i);
            return caps.get(c as usize).cloned().unwrap_or_default();
        }
        match self.captions {
            CaptionSampling::First | CaptionSampling::All => self.caption(i),
            CaptionSampling::Random => {
                let caps = self.captions(i);
                if caps.len() <= 1 {
                    return self.caption(i);
                }
                let mut r = Rng::new(seed, &[0xCA97, epoch, i as u64]);
                caps[r.below(caps.len())].clone()
            }
        }
    }
    /// Items.
    pub fn len(&self) -> usize {
        self.local.len()
    }
    /// No items.
    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
    }
    /// D.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }
    /// K (max over sources).
    pub fn max_boxes(&self) -> usize {
        self.max_boxes
    }
    /// Sources (datasets).
    pub fn num_sources(&self) -> usize {
        self.sources.len()
    }
    /// Global indices of source `s`'s items.
    pub fn source_range(&self, s: usize) -> std::ops::Range<usize> {
        self.starts[s]..self.starts[s + 1]
    }
    /// Runs of consecutive global items of source `s` stored in the same shard, as
    /// `(first global index, length)`, in index order.
    pub fn shard_runs(&self, s: usize) -> Vec<(usize, usize)> {
        let src = &self.sources[s];
        let mut runs: Vec<(usize, usize)> = vec![];
        let mut last = usize::MAX;
        for g in self.source_range(s) {
            let shard = src.shard_of(self.local[g] as usize);
            match runs.last_mut() {
                Some(r) if shard == last => r.1 += 1,
                _ => runs.push((g, 1)),
            }
            last = shard;
        }
        runs
    }
    /// Source (dataset) of global item `i`.
    pub fn source_of(&self, i: usize) -> usize {
        self.starts.partition_point(|&x| x <= i) - 1
    }
    fn get(&self, i: usize) -> (&dyn RegionSource, usize) {
        let s = self.source_of(i);
        (self.sources[s].as_ref(), self.local[i] as usize)
    }
    /// Caption of global item `i`.
    pub fn caption(&self, i: usize) -> String {
        let (s, l) = self.get(i);
        s.caption(l)
    }
    /// Id of global item `i`.
    pub fn item_id(&self, i: usize) -> String {
        let (s, l) = self.get(i);
        s.item_id(l)
    }
}

/// "regions" or "grid HgxWg", for messages.
pub fn kind_name(grid_hw: Option<(usize, usize)>) -> String {
    match grid_hw {
        None => "regions (detector boxes)".into(),
        Some((h, w)) => format!("grid ({h}x{w} patches)"),
    }
}

/// SplitMix64: tiny, seedable, reproducible everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From a seed and a stream of salts.
    pub fn new(seed: u64, salts: &[u64]) -> Self {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        for &s in salts {
            r.0 ^= s.wrapping_mul(0xD1B5_4A32_D192_ED03);
            r.next_u64();
        }
        r
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Seeded permutation of `0..n` for an epoch (Fisher–Yates).
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut r = Rng::new(seed, &[0xE90C, epoch]);
        for i in (1..n).rev() {
            v.swap(i, r.below(i + 1));
        }
    }
    v
}

/// Frames to take from an item with `nf` frame rows.
/// Uniform: all when `nf ≤ n`, else segment centers. Random: one random frame per segment.
pub fn sample_frames(nf: usize, n: usize, mode: FrameSampling, rng: &mut Rng) -> Vec<usize> {
    if nf == 0 {
        return vec![];
    }
    let n = n.min(nf);
    match mode {
        FrameSampling::Uniform => {
            if n == nf {
                (0..nf).collect()
            } else {
                (0..n)
                    .map(|i| ((i as f64 + 0.5) * nf as f64 / n as f64) as usize)
                    .collect()
            }
        }
        FrameSampling::Random => (0..n)
            .map(|i| {
                let lo = i * nf / n;
                let hi = ((i + 1) * nf / n).max(lo + 1);
                lo + rng.below(hi - lo)
            })
            .collect(),
    }
}

/// A batch assembled on the host.
#[derive(Debug)]
pub struct HostBatch {
    /// Items.
    pub b: usize,
    /// Frames (max over items).
    pub f: usize,
    /// Regions per frame.
    pub k: usize,
    /// Feature size.
    pub d: usize,
    /// Text length (max over items).
    pub l: usize,
    /// `[b, f, k, d]`: f16 when every item came from f16 rows (converted on the device).
    /// Empty once [`HostBatch::pin`] has moved it to page-locked memory.
    pub features: FeatureRows,
    /// `[b, f, k, 7]` (empty once pinned).
    pub locations: Vec<f32>,
    /// `[b, f, k]` (empty once pinned).
    pub region_mask: Vec<f32>,
    /// `[b, l]`.
    pub ids: Vec<i64>,
    /// `[b, l]`.
    pub attention_mask: Vec<i64>,
    /// `[b, l]`.
    pub word_mask: Vec<f32>,
    /// Global item indices.
    pub items: Vec<usize>,
    /// Patch grid for grid data.
    pub grid_hw: Option<(usize, usize)>,
    /// The three large arrays in page-locked memory (CUDA only), see [`HostBatch::pin`].
    pinned: Option<Pinned>,
}

/// Page-locked copies of a batch's features, locations and region mask.
#[derive(Debug)]
struct Pinned {
    features: Tensor,
    locations: Tensor,
    region_mask: Tensor,
}

/// How an epoch's items become batches.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// Frames per item.
    pub frames: usize,
    /// Frame choice.
    pub sampling: FrameSampling,
    /// Seed.
    pub seed: u64,
    /// Epoch (salts the frame choice).
    pub epoch: u64,
}

/// Reads and tokenizes the given items into a host batch.
pub fn assemble(
    mix: &Mixture,
    tok: &TextTokenizer,
    items: &[usize],
    spec: &BatchSpec,
) -> Result<HostBatch> {
    let (k, d) = (mix.max_boxes(), mix.feature_dim());
    let mut blocks = Vec::with_capacity(items.len());
    for &g in items {
        let (src, l) = mix.get(g);
        let mut rng = Rng::new(spec.seed, &[0xF4A3, spec.epoch, g as u64]);
        let frames = sample_frames(src.num_frames(l), spec.frames, spec.sampling, &mut rng);
        ensure!(!frames.is_empty(), "item {} has no frames", src.item_id(l));
        let blk = src.read_frames(l, &frames)?;
        blocks.push((blk, src.max_boxes()));
    }
    let f = blocks
        .iter()
        .map(|(b, _)| b.num_boxes.len())
        .max()
        .unwrap_or(1);
    let b = items.len();
    // f16 rows stay f16 (half the bytes to copy and move); a mix is widened to f32.
    let half = blocks.iter().all(|(blk, _)| blk.features.is_f16());
    let mut features = FeatureRows::zeros(b * f * k * d, half);
    let mut locations = vec![0f32; b * f * k * LOC_DIM];
    let mut region_mask = vec![0f32; b * f * k];
    for (i, (blk, sk)) in blocks.iter().enumerate() {
        for (fi, &nb) in blk.num_boxes.iter().enumerate() {
            let nb = (nb as usize).min(*sk);
            // The valid regions of a frame are consecutive rows on both sides.
            let (dst, src) = ((i * f + fi) * k, fi * sk);
            features.copy_from(dst * d, &blk.features, src * d..(src + nb) * d);
            for r in 0..nb {
                let dst = (i * f + fi) * k + r;
                let src = fi * sk + r;
                locations[dst * LOC_DIM..(dst + 1) * LOC_DIM]
                    .copy_from_slice(&blk.locations[src * LOC_DIM..(src + 1) * LOC_DIM]);
                region_mask[dst] = 1.0;
            }
        }
    }
    let texts: Vec<String> = items
        .iter()
        .map(|&g| mix.step_caption(g, spec.seed, spec.epoch))
        .collect();
    let TokenBatch {
        l,
        ids,
        attention_mask,
        word_mask,
    } = tokenize(tok, &texts)?;
    Ok(HostBatch {
        b,
        f,
        k,
        d,
        l,
        features,
        locations,
        region_mask,
        ids,
        attention_mask,
        word_mask,
        items: items.to_vec(),
        grid_hw: mix.grid_hw(),
        pinned: None,
    })
}

/// Token ids of several texts, padded to the longest.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// Text length.
    pub l: usize,
    /// `[b, l]`.
    pub ids: Vec<i64>,
    /// `[b, l]`.
    pub attention_mask: Vec<i64>,
    /// `[b, l]`.
    pub word_mask: Vec<f32>,
}

/// Tokenizes `texts` into one padded batch.
pub fn tokenize(tok: &TextTokenizer, texts: &[String]) -> Result<TokenBatch> {
    let toks: Vec<_> = texts.iter().map(|t| tok.encode(t)).collect::<Result<_>>()?;
    let b = texts.len();
    let l = toks.iter().map(|t| t.ids.len()).max().unwrap_or(2).max(2);
    let mut ids = vec![tok.pad_id; b * l];
    let mut attention_mask = vec![0i64; b * l];
    let mut word_mask = vec![0f32; b * l];
    for (i, t) in toks.iter().enumerate() {
        for (j, (&id, &w)) in t.ids.iter().zip(&t.word).enumerate() {
            ids[i * l + j] = id;
            attention_mask[i * l + j] = 1;
            word_mask[i * l + j] = w as f32;
        }
    }
    Ok(TokenBatch {
        l,
        ids,
        attention_mask,
        word_mask,
    })
}

impl TokenBatch {
    /// A text-only model batch (the video fields are empty) on `device`.
    pub fn to_device(&self, device: Device) -> TensorBatch {
        let (b, l) = ((self.ids.len() / self.l.max(1)) as i64, self.l as i64);
        let empty = Tensor::zeros([0], (Kind::Float, device));
        TensorBatch {
            features: empty.shallow_clone(),
            locations: empty.shallow_clone(),
            region_mask: empty,
            grid_hw: None,
            ids: Tensor::from_slice(&self.ids).view([b, l]).to_device(device),
            attention_mask: Tensor::from_slice(&self.attention_mask)
                .view([b, l])
                .to_device(device),
            word_mask: Tensor::from_slice(&self.word_mask)
                .view([b, l])
                .to_device(device),
        }
    }
}

impl HostBatch {
    /// Copies features, locations and region mask to page-locked memory (freeing the
    /// vectors), so that [`HostBatch::to_device`] copies to a CUDA device asynchronously.
    /// `device` names the accelerator (any CUDA device: pinned memory serves them all).
    /// Reader threads call it when CUDA is available; on CPU it is not needed.
    pub fn pin(&mut self, device: Device) -> Result<()> {
        if self.pinned.is_some() {
            return Ok(());
        }
        let feats = match &self.features {
            FeatureRows::F16(v) => Tensor::from_slice(v),
            FeatureRows::F32(v) => Tensor::from_slice(v),
        };
        self.pinned = Some(Pinned {
            features: feats.f_pin_memory(device)?,
            locations: Tensor::from_slice(&self.locations).f_pin_memory(device)?,
            region_mask: Tensor::from_slice(&self.region_mask).f_pin_memory(device)?,
        });
        self.features = FeatureRows::zeros(0, self.features.is_f16());
        self.locations = vec![];
        self.region_mask = vec![];
        Ok(())
    }

    /// Whether the batch is in page-locked memory.
    pub fn is_pinned(&self) -> bool {
        self.pinned.is_some()
    }

    /// Moves the batch to `device`; features become f32 there (after the copy, so f16 rows
    /// cross the bus at half the size). From pinned memory the copy does not block the host.
    pub fn to_device(&self, device: Device) -> TensorBatch {
        let (b, f, k, d, l) = (
            self.b as i64,
            self.f as i64,
            self.k as i64,
            self.d as i64,
            self.l as i64,
        );
        let (features, locations, region_mask) = match &self.pinned {
            Some(p) => {
                let mv = |t: &Tensor| t.to_device_(device, t.kind(), true, false);
                (mv(&p.features), mv(&p.locations), mv(&p.region_mask))
            }
            None => {
                let feats = match &self.features {
                    FeatureRows::F16(v) => Tensor::from_slice(v),
                    FeatureRows::F32(v) => Tensor::from_slice(v),
                };
                let mv = |t: Tensor| t.to_device(device);
                (
                    mv(feats),
                    mv(Tensor::from_slice(&self.locations)),
                    mv(Tensor::from_slice(&self.region_mask)),
                )
            }
        };
        TensorBatch {
            features: features.view([b, f, k, d]).to_kind(Kind::Float),
            locations: locations.view([b, f, k, LOC_DIM as i64]),
            region_mask: region_mask.view([b, f, k]),
            ids: Tensor::from_slice(&self.ids).view([b, l]).to_device(device),
            attention_mask: Tensor::from_slice(&self.attention_mask)
                .view([b, l])
                .to_device(device),
            word_mask: Tensor::from_slice(&self.word_mask)
                .view([b, l])
                .to_device(device),
            grid_hw: self.grid_hw.map(|(h, w)| (h as i64, w as i64)),
        }
    }
}

/// Batches of one epoch, read ahead by worker threads, delivered in order.
pub struct Loader {
    receivers: Vec<Receiver<(usize, Result<HostBatch>)>>,
    next: usize,
    end: usize,
    start: usize,
    pending: HashMap<usize, Result<HostBatch>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Loader {
    /// Starts `workers` threads reading batches `start..` of `order` (chunks of `batch_size`;
    /// a short last chunk is kept only when `keep_last`), each holding ≤ `prefetch` ready.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mix: Arc<Mixture>,
        tok: Arc<TextTokenizer>,
        order: Arc<Vec<usize>>,
        batch_size: usize,
        keep_last: bool,
        start: usize,
        spec: BatchSpec,
        workers: usize,
        prefetch: usize,
    ) -> Self {
        let n_batches = if keep_last {
            order.len().div_ceil(batch_size)
        } else {
            order.len() / batch_size
        };
        let workers = workers.max(1);
        // Batches for a GPU are handed over in page-locked memory (as PyTorch's
        // `pin_memory=True`); pinning costs a copy the CPU does not need.
        let pin = tch::Cuda::is_available().then_some(Device::Cuda(0));
        let mut receivers = vec![];
        let mut handles = vec![];
        for w in 0..workers {
            let (tx, rx) = bounded(prefetch.max(1));
            receivers.push(rx);
            let (mix, tok, order, spec) = (mix.clone(), tok.clone(), order.clone(), spec.clone());
            handles.push(std::thread::spawn(move || {
                let mut bi = start + w;
                while bi < n_batches {
                    let lo = bi * batch_size;
                    let hi = (lo + batch_size).min(order.len());
                    let r = assemble(&mix, &tok, &order[lo..hi], &spec).and_then(|mut hb| {
                        if let Some(dev) = pin {
                            hb.pin(dev)?;
                        }
                        Ok(hb)
                    });
                    if tx.send((bi, r)).is_err() {
                        return;
                    }
                    bi += workers;
                }
            }));
        }
        Self {
            receivers,
            next: start,
            end: n_batches,
            start,
            pending: HashMap::new(),
            handles,
        }
    }

    /// Batches in the epoch.
    pub fn num_batches(&self) -> usize {
        self.end
    }
}

impl Iterator for Loader {
    /// `(batch index within the epoch, batch)`.
    type Item = (usize, Result<HostBatch>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let bi = self.next;
        self.next += 1;
        if let Some(r) = self.pending.remove(&bi) {
            return Some((bi, r));
        }
        let w = (bi - self.start) % self.receivers.len();
        loop {
            match self.receivers[w].recv() {
                Ok((i, r)) if i == bi => return Some((bi, r)),
                Ok((i, r)) => {
                    self.pending.insert(i, r);
                }
                Err(_) => {
                    return Some((
                        bi,
                        Err(anyhow::anyhow!("reader thread for batch {bi} died")),
                    ))
                }
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
