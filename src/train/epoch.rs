//! What one training epoch is made of: which items, from which dataset, in which order.
//!
//! Three ways to mix the datasets of a [`Mixture`] (`data.mixing`):
//! - `concat` (default): all items of all datasets shuffled together, so each dataset's share is
//!   its size.
//! - `sample`: every position of the epoch is drawn from dataset `d` with weight `w_d`
//!   (`data.datasets[].weight`): exactly `round(S · w_d / Σw)` items of `d` per epoch, positions
//!   shuffled, so batches mix the datasets.
//! - `alternate`: each batch comes from one dataset, the datasets taking turns in proportion to
//!   their weights (equal weights: WebVid, CC3M, WebVid, …). This is DemoVLP's and
//!   Frozen-in-Time's pre-training: their trainer zips one loader per dataset and steps on each
//!   loader's batch in turn, so contrastive negatives come from the same dataset.
//!
//! Fixed-size epochs (`data.samples_per_epoch = S`, DemoVLP's `max_samples_per_epoch`, 1M in
//! its pre-training config) cut each dataset's stream of shuffled passes into epochs: epoch `e`
//! takes the next `S · share` items of each dataset, a new seeded permutation starting when a
//! dataset is exhausted, so no item repeats before its whole dataset has been seen (DemoVLP
//! reshuffles at every epoch and only ever sees the first 1M of each shuffle). Without `S` an
//! epoch is one pass over all items.
//!
//! Shard-local shuffling (`data.shuffle_block_shards = W`, default 32): a pass shuffles the
//! order of the dataset's shards, then shuffles the items of each run of `W` consecutive shards
//! among themselves, so a batch reads from at most `2·W` shard files and a bounded cache of open
//! shards serves almost every read (with a plain shuffle of 5.8M items over 5,665 shards nearly
//! every read opens a file). Items of one batch still come from `W` random shards; the
//! WebDataset and MosaicML Streaming loaders shuffle the same way. Datasets of at most `W`
//! shards (and data in memory) get the plain shuffle.
//!
//! Everything is a pure function of `(seed, epoch)`: a run resumes mid-epoch from
//! `(epoch, batch index)` with the same order, whatever was drawn before. Orders are `u32`
//! item indices (5.8M items: 23 MB).

use anyhow::{bail, ensure, Result};

use crate::train::config::Mixing;
use crate::train::data::{Mixture, Rng};

/// The epochs of a run over a [`Mixture`].
#[derive(Debug, Clone)]
pub struct EpochPlan {
    mixing: Mixing,
    shuffle: bool,
    seed: u64,
    /// Items per single-dataset block (`alternate`).
    block: usize,
    /// Global start of each source's items, and their count.
    starts: Vec<usize>,
    sizes: Vec<usize>,
    /// Items per epoch.
    len: usize,
    /// Items drawn from each source per epoch (`sample`, `alternate`).
    counts: Vec<usize>,
    /// Shards per shuffle block (0: plain shuffle).
    block_shards: usize,
    /// Per source: its shard runs `(first item, items)` relative to the source's start.
    runs: Vec<Vec<(u32, u32)>>,
}

/// Options of [`EpochPlan::new`].
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// How datasets share an epoch.
    pub mixing: Mixing,
    /// Per-dataset weights (`sample`, `alternate`); empty: all 1.
    pub weights: Vec<f64>,
    /// Items per epoch; `None`: one pass over all items.
    pub samples_per_epoch: Option<usize>,
    /// Items per single-dataset block for `alternate`: the batch size (under data parallelism,
    /// the global batch, so every rank's slice of a step comes from the same dataset).
    pub batch_size: usize,
    /// Shuffle (else every dataset is read in order).
    pub shuffle: bool,
    /// Shards whose items are shuffled together (0: one shuffle over all items).
    pub block_shards: usize,
    /// Seed.
    pub seed: u64,
}

/// `total` split in proportion to `weights` (largest remainder, ties to the lower index), so
/// the parts sum to `total` exactly.
pub fn allocate(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let quotas: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut parts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let given: usize = parts.iter().sum();
    let mut rest: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
    rest.sort_by(|&a, &b| {
        let (fa, fb) = (quotas[a] - quotas[a].floor(), quotas[b] - quotas[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in rest.iter().cycle().take(total.saturating_sub(given)) {
        parts[i] += 1;
    }
    parts
}

/// Smooth weighted round-robin: a sequence holding source `s` exactly `counts[s]` times, each
/// source spread evenly (equal counts: 0, 1, 0, 1, …).
pub fn interleave(counts: &[usize]) -> Vec<u32> {
    let total: usize = counts.iter().sum();
    let mut current = vec![0i64; counts.len()];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        let mut best = usize::MAX;
        for (s, &c) in counts.iter().enumerate() {
            current[s] += c as i64;
            if c > 0 && (best == usize::MAX || current[s] > current[best]) {
                best = s;
            }
        }
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out
}

/// Seeded permutation of `0..n` (Fisher–Yates; the same draws as [`crate::train::data::epoch_order`]).
fn permutation(n: usize, shuffle: bool, rng: impl FnOnce() -> Rng) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    if shuffle {
        let mut r = rng();
        for i in (1..n).rev() {
            v.swap(i, r.below(i + 1));
        }
    }
    v
}

/// Seeded shard-local permutation of the items of `runs` (which tile `0..n`): shards in random
/// order, items shuffled within each group of `block` consecutive shards.
fn block_permutation(runs: &[(u32, u32)], block: usize, rng: &mut Rng) -> Vec<u32> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let n = runs.iter().map(|r| r.1 as usize).sum();
    let mut out: Vec<u32> = Vec::with_capacity(n);
    for group in order.chunks(block.max(1)) {
        let lo = out.len();
        for &r in group {
            let (first, len) = runs[r];
            out.extend(first..first + len);
        }
        let part = &mut out[lo..];
        for i in (1..part.len()).rev() {
            part.swap(i, rng.below(i + 1));
        }
    }
    out
}

/// `count` positions of an endless stream of passes over `0..n`, from position `from`; pass `p`
/// is `pass(p)`.
fn stream(n: usize, from: u64, count: usize, pass: impl Fn(u64) -> Vec<u32>) -> Vec<u32> {
    let mut out = Vec::with_capacity(count);
    let mut pos = from;
    while out.len() < count {
        let (p, off) = (pos / n as u64, (pos % n as u64) as usize);
        let perm = pass(p);
        let take = (count - out.len()).min(n - off);
        out.extend_from_slice(&perm[off..off + take]);
        pos += take as u64;
    }
    out
}

impl EpochPlan {
    /// Checks the options against the mixture's datasets.
    pub fn new(mix: &Mixture, o: &PlanOptions) -> Result<Self> {
        let n_src = mix.num_sources();
        let weights = if o.weights.is_empty() {
            vec![1.0; n_src]
        } else {
            o.weights.clone()
        };
        ensure!(
            weights.len() == n_src,
            "{} weights for {n_src} datasets",
            weights.len()
        );
        if let Some(w) = weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
            bail!("dataset weight {w}: weights must be finite and ≥ 0");
        }
        ensure!(o.batch_size >= 1, "batch size must be ≥ 1");
        let starts: Vec<usize> = (0..n_src).map(|s| mix.source_range(s).start).collect();
        let sizes: Vec<usize> = (0..n_src).map(|s| mix.source_range(s).len()).collect();
        let len = o.samples_per_epoch.unwrap_or(mix.len());
        ensure!(len >= 1, "samples_per_epoch must be ≥ 1");
        let counts = match o.mixing {
            Mixing::Concat => {
                ensure!(
                    weights.iter().all(|&w| w == 1.0),
                    "dataset weights need data.mixing = \"sample\" or \"alternate\" (with \
                     \"concat\" each dataset counts by its size)"
                );
                vec![]
            }
            Mixing::Sample => allocate(len, &weights),
            Mixing::Alternate => allocate(len / o.batch_size, &weights)
                .into_iter()
                .map(|b| b * o.batch_size)
                .collect(),
        };
        for (s, (&c, &n)) in counts.iter().zip(&sizes).enumerate() {
            ensure!(
                c == 0 || n > 0,
                "dataset #{s} has weight {} but no usable (captioned) item",
                weights[s]
            );
        }
        let len = if counts.is_empty() {
            len
        } else {
            counts.iter().sum()
        };
        let runs = if o.block_shards > 0 && o.shuffle {
            (0..n_src)
                .map(|s| {
                    let base = starts[s];
                    mix.shard_runs(s)
                        .into_iter()
                        .map(|(g, l)| ((g - base) as u32, l as u32))
                        .collect()
                })
                .collect()
        } else {
            vec![]
        };
        ensure!(
            len >= 1,
            "an epoch of {:?} samples holds no whole batch of {} for any dataset",
            o.samples_per_epoch,
            o.batch_size
        );
        Ok(Self {
            mixing: o.mixing,
            shuffle: o.shuffle,
            seed: o.seed,
            block: o.batch_size,
            starts,
            sizes,
            len,
            counts,
            block_shards: o.block_shards,
            runs,
        })
    }

    /// Pass `p` over source `s` (`None`: over all items, for `concat`).
    fn pass(&self, s: Option<usize>, p: u64) -> Vec<u32> {
        let (n, salts) = match s {
            None => (self.sizes.iter().sum(), vec![0xE90C, p]),
            Some(s) => (self.sizes[s], vec![0x5EED, s as u64, p]),
        };
        // Fewer shards than a block: one block, i.e. the plain shuffle.
        let few = match s {
            Some(s) => self
                .runs
                .get(s)
                .is_none_or(|r| r.len() <= self.block_shards),
            None => self.runs.iter().map(Vec::len).sum::<usize>() <= self.block_shards,
        };
        if few {
            return permutation(n, self.shuffle, || Rng::new(self.seed, &salts));
        }
        let mut block_salts = vec![0xB10C_u64];
        block_salts.extend(&salts);
        let mut rng = Rng::new(self.seed, &block_salts);
        match s {
            Some(s) => block_permutation(&self.runs[s], self.block_shards, &mut rng),
            None => {
                let all: Vec<(u32, u32)> = self
                    .runs
                    .iter()
                    .zip(&self.starts)
                    .flat_map(|(r, &base)| r.iter().map(move |&(f, l)| (f + base as u32, l)))
                    .collect();
                block_permutation(&all, self.block_shards, &mut rng)
            }
        }
    }

    /// Items per epoch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never empty (checked by [`EpochPlan::new`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Items each dataset gives per epoch (`concat`: its size scaled to the epoch).
    pub fn counts(&self) -> Vec<usize> {
        if self.counts.is_empty() {
            let w: Vec<f64> = self.sizes.iter().map(|&n| n as f64).collect();
            return allocate(self.len, &w);
        }
        self.counts.clone()
    }

    /// Global item indices of `epoch`, in training order (`len()` of them).
    pub fn order(&self, epoch: u64) -> Vec<u32> {
        let seed = self.seed;
        if self.counts.is_empty() {
            // One stream over all items; with S = all items this is the plain epoch shuffle.
            let n: usize = self.sizes.iter().sum();
            return stream(n, epoch * self.len as u64, self.len, |p| self.pass(None, p));
        }
        // Each dataset's share of this epoch: the next `counts[s]` of its own stream.
        let mut parts: Vec<std::vec::IntoIter<u32>> = (0..self.sizes.len())
            .map(|s| {
                let (n, c) = (self.sizes[s], self.counts[s]);
                if c == 0 {
                    return vec![].into_iter();
                }
                let base = self.starts[s] as u32;
                let mut v = stream(n, epoch * c as u64, c, |p| self.pass(Some(s), p));
                v.iter_mut().for_each(|x| *x += base);
                v.into_iter()
            })
            .collect();
        let mut out = Vec::with_capacity(self.len);
        match self.mixing {
            Mixing::Sample => {
                let mut slots = interleave(&self.counts);
                if self.shuffle {
                    let mut r = Rng::new(seed, &[0x5A3F, epoch]);
                    for i in (1..slots.len()).rev() {
                        slots.swap(i, r.below(i + 1));
                    }
                }
                for s in slots {
                    out.push(parts[s as usize].next().expect("counted"));
                }
            }
            _ => {
                let blocks: Vec<usize> = self.counts.iter().map(|c| c / self.block).collect();
                for s in interleave(&blocks) {
                    out.extend(parts[s as usize].by_ref().take(self.block));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::train::data::{epoch_order, MemoryItem, MemorySource, RegionSource};

    fn memory(n: usize, tag: &str) -> MemorySource {
        MemorySource {
            feature_dim: 2,
            max_boxes: 1,
            grid_hw: None,
            items: (0..n)
                .map(|i| MemoryItem {
                    id: format!("{tag}{i}"),
                    caption: format!("{tag} {i}"),
                    extra_captions: vec![],
                    frames: Default::default(),
                })
                .collect(),
        }
    }

    fn source(n: usize, tag: &str) -> Arc<dyn RegionSource> {
        Arc::new(memory(n, tag))
    }

    fn mix(sizes: &[usize]) -> Mixture {
        let v = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| source(n, &format!("d{i}-")))
            .collect();
        Mixture::new(v, true).unwrap()
    }

    fn opts(mixing: Mixing, weights: &[f64], s: Option<usize>) -> PlanOptions {
        PlanOptions {
            mixing,
            weights: weights.to_vec(),
            samples_per_epoch: s,
            batch_size: 8,
            shuffle: true,
            block_shards: 0,
            seed: 7,
        }
    }

    #[test]
    fn allocation_is_exact_and_proportional() {
        assert_eq!(allocate(10, &[1.0, 1.0]), [5, 5]);
        assert_eq!(allocate(10, &[2.0, 1.0]), [7, 3]);
        assert_eq!(allocate(7, &[1.0, 1.0, 1.0]), [3, 2, 2]);
        assert_eq!(allocate(5, &[0.0, 1.0]), [0, 5]);
        assert_eq!(allocate(3, &[0.0, 0.0]), [0, 0]);
        let seq = interleave(&[2, 2]);
        assert_eq!(seq, [0, 1, 0, 1]);
        let seq = interleave(&[3, 1]);
        assert_eq!(seq.iter().filter(|&&s| s == 0).count(), 3);
        assert_eq!(seq.len(), 4);
    }

    #[test]
    fn concat_without_epoch_size_is_the_plain_epoch_shuffle() {
        let m = mix(&[30, 20]);
        let p = EpochPlan::new(&m, &opts(Mixing::Concat, &[], None)).unwrap();
        for e in 0..3 {
            let want: Vec<u32> = epoch_order(50, 7, e, true)
                .into_iter()
                .map(|x| x as u32)
                .collect();
            assert_eq!(p.order(e), want);
        }
    }

    #[test]
    fn sampled_proportions_follow_the_weights() {
        // CC3M-like dataset 3x larger than the WebVid-like one, weighted 1:3 the other way.
        let m = mix(&[400, 1200]);
        let p = EpochPlan::new(&m, &opts(Mixing::Sample, &[3.0, 1.0], Some(800))).unwrap();
        assert_eq!(p.len(), 800);
        assert_eq!(p.counts(), [600, 200]);
        let o = p.order(0);
        let from0 = o.iter().filter(|&&g| m.source_of(g as usize) == 0).count();
        assert_eq!(from0, 600);
        // Shuffled positions: the first quarter already holds about 3/4 of dataset 0.
        let head0 = o[..200]
            .iter()
            .filter(|&&g| m.source_of(g as usize) == 0)
            .count();
        assert!((120..=180).contains(&head0), "{head0}");
        // A dataset's items do not repeat before all of it has been drawn: 600 per epoch of
        // 400 items means epoch 0 holds one full pass plus 200 of the next.
        let mut seen = std::collections::HashMap::new();
        for &g in o.iter().filter(|&&g| m.source_of(g as usize) == 0) {
            *seen.entry(g).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 400);
        assert_eq!(seen.values().filter(|&&c| c == 2).count(), 200);
    }

    #[test]
    fn alternate_gives_single_dataset_batches_in_turn() {
        let m = mix(&[100, 60]);
        let p = EpochPlan::new(&m, &opts(Mixing::Alternate, &[1.0, 1.0], Some(64))).unwrap();
        let o = p.order(3);
        assert_eq!(o.len(), 64);
        let batch_sources: Vec<usize> = o
            .chunks(8)
            .map(|b| {
                let s = m.source_of(b[0] as usize);
                assert!(b.iter().all(|&g| m.source_of(g as usize) == s));
                s
            })
            .collect();
        assert_eq!(batch_sources, [0, 1, 0, 1, 0, 1, 0, 1]);
        // Weights 2:1 → two batches of dataset 0 for one of dataset 1.
        let p = EpochPlan::new(&m, &opts(Mixing::Alternate, &[2.0, 1.0], Some(48))).unwrap();
        let srcs: Vec<usize> = p
            .order(0)
            .chunks(8)
            .map(|b| m.source_of(b[0] as usize))
            .collect();
        assert_eq!(srcs, [0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn orders_are_reproducible_and_epochs_continue_the_streams() {
        let m = mix(&[50, 70]);
        for mixing in [Mixing::Concat, Mixing::Sample, Mixing::Alternate] {
            let w: &[f64] = if mixing == Mixing::Concat {
                &[]
            } else {
                &[1.0, 2.0]
            };
            let a = EpochPlan::new(&m, &opts(mixing, w, Some(40))).unwrap();
            // A second run (or a resumed one, which rebuilds the plan) sees the same epochs,
            // so a resume at (epoch, batch) continues with the same items.
            let b = EpochPlan::new(&m, &opts(mixing, w, Some(40))).unwrap();
            for e in [0, 1, 5] {
                assert_eq!(a.order(e), b.order(e), "{mixing:?} epoch {e}");
                assert_eq!(a.order(e)[16..], b.order(e)[16..]);
            }
            assert_ne!(a.order(0), a.order(1), "{mixing:?}");
            let mut other = opts(mixing, w, Some(40));
            other.seed = 8;
            assert_ne!(
                EpochPlan::new(&m, &other).unwrap().order(0),
                a.order(0),
                "{mixing:?}"
            );
            // Three epochs of 40 over 120 items: every item exactly once with concat.
            if mixing == Mixing::Concat {
                let mut all: Vec<u32> = (0..3).flat_map(|e| a.order(e)).collect();
                all.sort();
                assert_eq!(all, (0..120).collect::<Vec<u32>>());
            }
        }
    }

    #[test]
    fn bad_plans_are_refused_with_a_reason() {
        let m = mix(&[10, 10]);
        let e = EpochPlan::new(&m, &opts(Mixing::Concat, &[2.0, 1.0], None)).unwrap_err();
        assert!(e.to_string().contains("mixing"), "{e}");
        let e = EpochPlan::new(&m, &opts(Mixing::Sample, &[1.0], None)).unwrap_err();
        assert!(e.to_string().contains("1 weights for 2"), "{e}");
        let e = EpochPlan::new(&m, &opts(Mixing::Sample, &[-1.0, 1.0], None)).unwrap_err();
        assert!(e.to_string().contains("≥ 0"), "{e}");
        let e = EpochPlan::new(&m, &opts(Mixing::Alternate, &[1.0, 1.0], Some(4))).unwrap_err();
        assert!(e.to_string().contains("no whole batch"), "{e}");
    }

    /// A source whose items sit in shards of `per` items (as a ShardSource reports them).
    struct Sharded(MemorySource, usize);
    impl RegionSource for Sharded {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn feature_dim(&self) -> usize {
            2
        }
        fn max_boxes(&self) -> usize {
            1
        }
        fn item_id(&self, i: usize) -> String {
            self.0.item_id(i)
        }
        fn caption(&self, i: usize) -> String {
            self.0.caption(i)
        }
        fn num_frames(&self, _: usize) -> usize {
            1
        }
        fn read_frames(&self, _: usize, _: &[usize]) -> Result<crate::train::data::FrameBlock> {
            unreachable!()
        }
        fn shard_of(&self, i: usize) -> usize {
            i / self.1
        }
    }

    #[test]
    fn shard_blocks_keep_each_batch_within_few_shards() {
        let mem = |n: usize| memory(n, "x");
        // 40 shards of 25 items + 10 shards of 30.
        let m = Mixture::new(
            vec![
                Arc::new(Sharded(mem(1000), 25)),
                Arc::new(Sharded(mem(300), 30)),
            ],
            true,
        )
        .unwrap();
        let shard = |g: u32| {
            let g = g as usize;
            if g < 1000 {
                g / 25
            } else {
                100 + (g - 1000) / 30
            }
        };
        for mixing in [Mixing::Concat, Mixing::Alternate] {
            let mut o = opts(mixing, &[], None);
            o.block_shards = 4;
            o.batch_size = 20;
            let p = EpochPlan::new(&m, &o).unwrap();
            let order = p.order(0);
            let mut sorted = order.clone();
            sorted.sort();
            if mixing == Mixing::Concat {
                assert_eq!(sorted, (0..1300).collect::<Vec<u32>>());
            }
            for b in order.chunks(20) {
                let mut shards: Vec<usize> = b.iter().map(|&g| shard(g)).collect();
                shards.sort();
                shards.dedup();
                assert!(shards.len() <= 8, "{mixing:?}: {shards:?}");
            }
            // Still shuffled across epochs, and reproducible.
            assert_ne!(p.order(0), p.order(1));
            assert_eq!(EpochPlan::new(&m, &o).unwrap().order(1), p.order(1));
            // Items of a block do come from several shards (not one shard after another).
            let first: Vec<usize> = order[..20].iter().map(|&g| shard(g)).collect();
            assert!(first.windows(2).any(|w| w[0] != w[1]));
        }
    }
}
