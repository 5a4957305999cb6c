//! The data-parallel step: each rank encodes its slice of the global batch, the embeddings are
//! gathered so the contrastive losses see every rank's negatives, and gradients are summed.
//!
//! Gradient flow, as `torch.distributed.nn.all_gather` does it (DemoVLP / Frozen-in-Time gather
//! embeddings with an all-gather whose backward keeps the local slice; this is the variant
//! that also splits the loss work): rank r gathers the global batch `G` (a leaf), computes only
//! its own rows of the loss (`loss::losses_shard`, already divided by the global batch), and
//! back-propagates to `G`. Summing those gradients over ranks gives d(global loss)/dG; rank r
//! takes its own slice and back-propagates it through its encoders. The parameter gradients,
//! summed over ranks ([`all_reduce_grads`]), are then exactly the single-process gradient of the
//! loss over the global batch. Terms computed on local samples only (the RegionLearner
//! commitment, a mean over the rank's tokens) are weighted local/global so that their sum is
//! the global mean too.

use anyhow::{Context, Result};
use tch::{nn, Kind, Tensor};

use crate::train::dist::group::{ProcessGroup, ReduceOp};
use crate::train::loss::{self, Embeddings, RwaOptions};

/// Global values of one micro-batch (the same on every rank).
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalTerms {
    /// Total loss (including the weighted commitment term).
    pub total: f64,
    /// Global video→text.
    pub global_v2t: f64,
    /// Global text→video.
    pub global_t2v: f64,
    /// RWA video→text (when on).
    pub local_v2t: Option<f64>,
    /// RWA text→video (when on).
    pub local_t2v: Option<f64>,
    /// Commitment term, unweighted (when given).
    pub commitment: Option<f64>,
}

/// How the loss is put together.
#[derive(Debug, Clone, Copy)]
pub struct LossSpec {
    /// Global InfoNCE temperature.
    pub temperature: f64,
    /// RWA options and its temperature, when on.
    pub rwa: Option<(RwaOptions, f64)>,
    /// RWA weight in the total.
    pub rwa_weight: f64,
}

/// Zero-pads dim 1 of `t` to `n`.
fn pad_dim1(t: &Tensor, n: i64) -> Tensor {
    let have = t.size()[1];
    if have == n {
        return t.shallow_clone();
    }
    let mut shape = t.size();
    shape[1] = n - have;
    Tensor::cat(
        &[
            t.shallow_clone(),
            Tensor::zeros(shape.as_slice(), (t.kind(), t.device())),
        ],
        1,
    )
}

fn leaf(t: Tensor) -> Tensor {
    t.set_requires_grad(true)
}

fn grad_or_zeros(t: &Tensor) -> Tensor {
    let g = t.grad();
    if g.defined() {
        g
    } else {
        t.zeros_like()
    }
}

/// Forward losses over the gathered global batch and backward for this rank's samples (see the
/// module docs); parameter gradients are left for [`all_reduce_grads`] to sum. `commitment` is
/// the rank's local `(term, weight, tokens it averages over)`; `scale` multiplies the backward
/// (1 / grad_accum).
pub fn backward_global(
    pg: &ProcessGroup,
    emb: &Embeddings,
    commitment: Option<(&Tensor, f64, i64)>,
    spec: &LossSpec,
    scale: f64,
) -> Result<GlobalTerms> {
    let b = emb.video.size()[0];
    let world = pg.world_size() as i64;
    let global = b * world;
    let offset = pg.rank() as i64 * b;
    let dev = emb.video.device();

    let gv = leaf(
        pg.all_gather(&emb.video)
            .context("gathering video embeddings")?,
    );
    let gt = leaf(
        pg.all_gather(&emb.text)
            .context("gathering text embeddings")?,
    );
    // RWA needs region and word tokens; ranks may have padded to different lengths (frames
    // per item, longest caption), so pad to the longest first.
    let (gr, grm, gw, gwm, n_local, l_local) = if spec.rwa.is_some() {
        let (n_local, l_local) = (emb.regions.size()[1], emb.words.size()[1]);
        let dims = Tensor::from_slice(&[n_local, l_local]).to_device(dev);
        pg.all_reduce(&dims, ReduceOp::Max)?;
        let (n, l) = (dims.int64_value(&[0]), dims.int64_value(&[1]));
        let gather = |t: &Tensor, len: i64| pg.all_gather(&pad_dim1(&t.detach(), len));
        (
            leaf(gather(&emb.regions, n).context("gathering region tokens")?),
            gather(&emb.region_mask, n)?,
            leaf(gather(&emb.words, l).context("gathering word tokens")?),
            gather(&emb.word_mask, l)?,
            n_local,
            l_local,
        )
    } else {
        let none = || Tensor::zeros([global, 1, 1], (Kind::Float, dev));
        let none_mask = || Tensor::zeros([global, 1], (Kind::Float, dev));
        (none(), none_mask(), none(), none_mask(), 0, 0)
    };
    let all = Embeddings {
        video: gv.shallow_clone(),
        regions: gr.shallow_clone(),
        region_mask: grm,
        text: gt.shallow_clone(),
        words: gw.shallow_clone(),
        word_mask: gwm,
    };
    let terms = loss::losses_shard(&all, offset, b, spec.temperature, spec.rwa);
    let partial = terms.total(spec.rwa_weight);
    (&partial * scale).backward();

    // d(global loss)/d(gathered) = Σ over ranks of d(rank's rows)/d(gathered).
    let mut leaves = vec![&gv, &gt];
    if spec.rwa.is_some() {
        leaves.push(&gr);
        leaves.push(&gw);
    }
    let grads: Vec<Tensor> = leaves.iter().map(|t| grad_or_zeros(t)).collect();
    let sizes: Vec<i64> = grads.iter().map(|g| g.numel() as i64).collect();
    let flat = Tensor::cat(
        &grads.iter().map(|g| g.reshape([-1])).collect::<Vec<_>>(),
        0,
    );
    pg.all_reduce(&flat, ReduceOp::Sum)
        .context("summing embedding gradients")?;
    let parts = flat.split_with_sizes(sizes.as_slice(), 0);
    let mine = |i: usize| {
        parts[i]
            .view(grads[i].size().as_slice())
            .narrow(0, offset, b)
    };

    // One backward through the encoders: ⟨local embeddings, their global-loss gradient⟩ has
    // exactly that gradient with respect to every parameter.
    let mut surrogate =
        (&emb.video * mine(0)).sum(Kind::Float) + (&emb.text * mine(1)).sum(Kind::Float);
    if spec.rwa.is_some() {
        surrogate += (&emb.regions * mine(2).narrow(1, 0, n_local)).sum(Kind::Float);
        surrogate += (&emb.words * mine(3).narrow(1, 0, l_local)).sum(Kind::Float);
    }
    let mut commit_value = 0.0;
    let mut commit_total = 0.0;
    if let Some((c, w, tokens)) = commitment {
        // The global mean over every rank's tokens: ranks may hold different numbers of real
        // tokens (padding frames are left out).
        let all = Tensor::from_slice(&[tokens as f64]).to_device(dev);
        pg.all_reduce(&all, ReduceOp::Sum)
            .context("summing commitment tokens")?;
        let share = tokens as f64 / all.double_value(&[0]).max(1.0);
        commit_value = c.double_value(&[]) * share;
        commit_total = commit_value * w;
        if w > 0.0 {
            surrogate += c * (w * share * scale);
        }
    }
    surrogate.backward();

    let opt = |t: &Option<Tensor>| t.as_ref().map_or(0.0, |t| t.double_value(&[]));
    let values = [
        partial.double_value(&[]) + commit_total,
        terms.global_v2t.double_value(&[]),
        terms.global_t2v.double_value(&[]),
        opt(&terms.local_v2t),
        opt(&terms.local_t2v),
        commit_value,
    ];
    let sums = Tensor::from_slice(&values).to_device(dev);
    pg.all_reduce(&sums, ReduceOp::Sum)
        .context("summing loss values")?;
    let v: Vec<f64> = Vec::<f64>::try_from(sums.to_device(tch::Device::Cpu))?;
    Ok(GlobalTerms {
        total: v[0],
        global_v2t: v[1],
        global_t2v: v[2],
        local_v2t: terms.local_v2t.as_ref().map(|_| v[3]),
        local_t2v: terms.local_t2v.as_ref().map(|_| v[4]),
        commitment: commitment.map(|_| v[5]),
    })
}

/// Trainable variables sorted by name: the same order on every rank.
fn trainable(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    crate::train::optim::trainable_sorted(vs)
}

/// Elements per all-reduce bucket: large enough to amortize latency, small enough that the
/// flat copy stays modest next to the model.
const BUCKET: i64 = 1 << 24;

/// Sums every trainable variable's gradient over ranks (in buckets of ≤ [`BUCKET`] elements).
/// A variable without a gradient contributes zeros and gets none written back.
pub fn all_reduce_grads(pg: &ProcessGroup, vs: &nn::VarStore) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        let vars = trainable(vs);
        let mut bucket: Vec<(Tensor, Tensor)> = vec![];
        let mut elems = 0i64;
        let flush = |bucket: &mut Vec<(Tensor, Tensor)>| -> Result<()> {
            if bucket.is_empty() {
                return Ok(());
            }
            let flat = Tensor::cat(
                &bucket
                    .iter()
                    .map(|(v, g)| {
                        if g.defined() {
                            g.reshape([-1])
                        } else {
                            v.zeros_like().reshape([-1])
                        }
                    })
                    .collect::<Vec<_>>(),
                0,
            );
            pg.all_reduce(&flat, ReduceOp::Sum)
                .context("summing gradients")?;
            let mut at = 0i64;
            for (v, g) in bucket.iter_mut() {
                let n = v.numel() as i64;
                if g.defined() {
                    g.copy_(&flat.narrow(0, at, n).view(g.size().as_slice()));
                }
                at += n;
            }
            bucket.clear();
            Ok(())
        };
        for (_, v) in vars {
            let g = v.grad();
            elems += v.numel() as i64;
            bucket.push((v, g));
            if elems >= BUCKET {
                flush(&mut bucket)?;
                elems = 0;
            }
        }
        flush(&mut bucket)
    })
}

/// Copies rank 0's parameters (and buffers) to every rank, so all start from the same weights
/// whatever each one initialized or loaded.
pub fn broadcast_params(pg: &ProcessGroup, vs: &nn::VarStore) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, v) in vars {
            pg.broadcast(&v, 0)
                .with_context(|| format!("broadcasting {name}"))?;
        }
        Ok(())
    })
}

/// Rank `rank`'s part of an epoch order cut into global batches of `global_batch`: for each
/// global batch, the `global_batch / world` items starting at `rank × that`. Batch `i` of the
/// result is this rank's slice of global batch `i`, so a data position (epoch, batch index)
/// means the same thing for every world size. A short last global batch is dropped.
pub fn rank_slice(order: &[usize], global_batch: usize, rank: usize, world: usize) -> Vec<usize> {
    let local = global_batch / world;
    order
        .chunks_exact(global_batch)
        .flat_map(|b| b[rank * local..(rank + 1) * local].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_slices_partition_each_global_batch() {
        let order: Vec<usize> = (100..113).collect(); // 13 items: 3 batches of 4, 1 left over
        let r0 = rank_slice(&order, 4, 0, 2);
        let r1 = rank_slice(&order, 4, 1, 2);
        assert_eq!(r0, vec![100, 101, 104, 105, 108, 109]);
        assert_eq!(r1, vec![102, 103, 106, 107, 110, 111]);
        assert_eq!(rank_slice(&order, 4, 0, 1), order[..12].to_vec());
    }

    use crate::train::data::Rng;
    use crate::train::loss::{losses, Embeddings, RwaOptions};

    fn randn(r: &mut Rng, shape: &[i64]) -> Tensor {
        let n: i64 = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| r.normal() as f32).collect();
        let t = Tensor::from_slice(&v).view(shape);
        &t / t.norm_scalaropt_dim(2.0, [-1], true)
    }

    fn mask(r: &mut Rng, b: i64, n: i64) -> Tensor {
        // First position always valid, the rest at random: padding of varying length.
        let v: Vec<f32> = (0..b * n)
            .map(|i| {
                if i % n == 0 || r.unit() < 0.6 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        Tensor::from_slice(&v).view([b, n])
    }

    fn leaves(e: &Embeddings) -> Embeddings {
        let l = |t: &Tensor| t.detach().copy().set_requires_grad(true);
        Embeddings {
            video: l(&e.video),
            regions: l(&e.regions),
            region_mask: e.region_mask.shallow_clone(),
            text: l(&e.text),
            words: l(&e.words),
            word_mask: e.word_mask.shallow_clone(),
        }
    }

    fn grads(e: &Embeddings) -> Vec<Tensor> {
        [&e.video, &e.regions, &e.text, &e.words]
            .iter()
            .map(|t| t.grad().copy())
            .collect()
    }

    /// The math of the data-parallel step without processes: the ranks' shares of the loss and
    /// their gradients with respect to the gathered batch add up to the single-batch loss and
    /// gradient, for global and RWA terms alike.
    #[test]
    fn rank_shares_add_up_to_the_global_loss_and_gradient() {
        let mut r = Rng::new(42, &[]);
        let (b, n, l, e) = (6i64, 5i64, 4i64, 8i64);
        let base = Embeddings {
            video: randn(&mut r, &[b, e]),
            regions: randn(&mut r, &[b, n, e]),
            region_mask: mask(&mut r, b, n),
            text: randn(&mut r, &[b, e]),
            words: randn(&mut r, &[b, l, e]),
            word_mask: mask(&mut r, b, l),
        };
        let rwa = Some((
            RwaOptions {
                scale: 20.0,
                renormalize: true,
            },
            0.07,
        ));
        let full = leaves(&base);
        let t = losses(&full, 0.05, rwa);
        let total = t.total(0.5);
        total.backward();
        let want = grads(&full);
        for world in [2i64, 3] {
            let local = b / world;
            let mut sum = [0f64; 5];
            let mut got: Vec<Tensor> = want.iter().map(|g| g.zeros_like()).collect();
            for rank in 0..world {
                let all = leaves(&base);
                let s = loss::losses_shard(&all, rank * local, local, 0.05, rwa);
                let part = s.total(0.5);
                part.backward();
                for (i, v) in [
                    &part,
                    &s.global_v2t,
                    &s.global_t2v,
                    s.local_v2t.as_ref().unwrap(),
                    s.local_t2v.as_ref().unwrap(),
                ]
                .iter()
                .enumerate()
                {
                    sum[i] += v.double_value(&[]);
                }
                for (g, h) in got.iter_mut().zip(grads(&all)) {
                    *g += h;
                }
            }
            let whole = [
                total.double_value(&[]),
                t.global_v2t.double_value(&[]),
                t.global_t2v.double_value(&[]),
                t.local_v2t.as_ref().unwrap().double_value(&[]),
                t.local_t2v.as_ref().unwrap().double_value(&[]),
            ];
            for (a, w) in sum.iter().zip(whole) {
                assert!((a - w).abs() < 1e-5, "world {world}: {a} vs {w}");
            }
            for (g, w) in got.iter().zip(&want) {
                let diff = (g - w).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "world {world}: gradient differs by {diff}");
            }
        }
    }

    #[test]
    fn pads_dim1_with_zeros() {
        let t = Tensor::ones([2, 3, 4], (Kind::Float, tch::Device::Cpu));
        let p = pad_dim1(&t, 5);
        assert_eq!(p.size(), vec![2, 5, 4]);
        assert_eq!(p.sum(Kind::Float).double_value(&[]), 24.0);
    }
}
