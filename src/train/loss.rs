//! Losses and similarities of DemoVLP: global symmetric InfoNCE and region-word alignment (RWA).
//!
//! Conventions: every similarity matrix is indexed `[video, text]`. Embeddings are
//! L2-normalized before they come here. Masks are float (1 valid, 0 padding) and padding is
//! excluded from every softmax, mean and threshold (the public DemoVLP code counts padding in
//! its means; we do not).
//!
//! RWA, region→word for a pair (video i, text j), with c_{n,l} = ⟨r_n, t_l⟩:
//! a_{n,l} = softmax_l(λ c_{n,l}) over valid words; a'_{n,l} = a_{n,l}·1[a_{n,l} > mean_k a_{n,k}]
//! (optionally renormalized); α_n = Σ_l a'_{n,l} t_l; S_{i,j} = mean_n ⟨r_n, α_n⟩ over valid
//! regions. ⟨r_n, α_n⟩ = Σ_l a'_{n,l} c_{n,l}, so α is never materialized. Word→region is the
//! same with the roles swapped (softmax over regions, mean over words).

use tch::{Kind, Tensor};

/// RWA options.
#[derive(Debug, Clone, Copy)]
pub struct RwaOptions {
    /// λ multiplying the cosines inside the softmax.
    pub scale: f64,
    /// Renormalize kept weights to sum to 1.
    pub renormalize: bool,
}

impl Default for RwaOptions {
    fn default() -> Self {
        Self {
            scale: 1.0,
            renormalize: false,
        }
    }
}

/// Global similarity `[Bv, Bt]` of normalized embeddings (cosine, no temperature).
pub fn global_similarity(video: &Tensor, text: &Tensor) -> Tensor {
    video.matmul(&text.transpose(0, 1))
}

/// Symmetric InfoNCE on a `[B, B]` similarity whose diagonal holds the positives.
/// Returns `(video→text, text→video)` (each a mean over the batch).
pub fn info_nce(sim: &Tensor, temperature: f64) -> (Tensor, Tensor) {
    let b = sim.size()[0];
    let sim_kind = sim.kind();
    let logits = sim / temperature;
    let target = Tensor::arange(b, (Kind::Int64, sim.device()));
    let v2t = logits.log_softmax(-1, sim_kind).nll_loss(&target);
    let t2v = logits
        .transpose(0, 1)
        .log_softmax(-1, sim_kind)
        .nll_loss(&target);
    (v2t, t2v)
}

/// Masked softmax along `dim`, then the mean-threshold refinement. `mask` broadcasts to `logits`.
fn refine(logits: &Tensor, mask: &Tensor, dim: i64, opts: RwaOptions) -> Tensor {
    let valid = mask.gt(0.5);
    let neg = logits.masked_fill(&valid.logical_not(), -1e30);
    let a = neg.softmax(dim, logits.kind()) * mask;
    let count = mask
        .sum_dim_intlist(dim, true, logits.kind())
        .clamp_min(1.0);
    let mean = a.sum_dim_intlist(dim, true, logits.kind()) / &count;
    let keep = a
        .gt_tensor(&mean)
        .logical_and(&valid)
        .to_kind(logits.kind());
    let kept = a * keep;
    if opts.renormalize {
        let s = kept
            .sum_dim_intlist(dim, true, logits.kind())
            .clamp_min(1e-12);
        kept / s
    } else {
        kept
    }
}

/// RWA similarities `(region→word, word→region)`, each `[Bv, Bt]`.
///
/// `regions [Bv, N, E]`, `region_mask [Bv, N]`, `words [Bt, L, E]`, `word_mask [Bt, L]`.
pub fn rwa_similarity(
    regions: &Tensor,
    region_mask: &Tensor,
    words: &Tensor,
    word_mask: &Tensor,
    opts: RwaOptions,
) -> (Tensor, Tensor) {
    let (r2w, w2r) = rwa_directions(regions, region_mask, words, word_mask, opts, true, true);
    (r2w.expect("asked for"), w2r.expect("asked for"))
}

/// [`rwa_similarity`], computing only the directions asked for (a data-parallel rank needs
/// region→word for its own videos and word→region for its own texts).
pub fn rwa_directions(
    regions: &Tensor,
    region_mask: &Tensor,
    words: &Tensor,
    word_mask: &Tensor,
    opts: RwaOptions,
    want_r2w: bool,
    want_w2r: bool,
) -> (Option<Tensor>, Option<Tensor>) {
    let kind = regions.kind();
    // c[i, j, n, l]
    let c = Tensor::einsum("ine,jle->ijnl", &[regions, words], None::<&[i64]>);
    let logits = &c * opts.scale;

    // region → word: softmax over words (dim 3), score per region, mean over valid regions.
    let r2w = want_r2w.then(|| {
        let wm = word_mask.to_kind(kind).unsqueeze(0).unsqueeze(2); // [1,Bt,1,L]
        let a = refine(&logits, &wm, 3, opts);
        let per_region = (&a * &c).sum_dim_intlist(3, false, kind); // [Bv,Bt,N]
        let rm2 = region_mask.to_kind(kind).unsqueeze(1); // [Bv,1,N]
        (per_region * &rm2).sum_dim_intlist(2, false, kind)
            / rm2.sum_dim_intlist(2, false, kind).clamp_min(1.0)
    });

    // word → region: softmax over regions (dim 2), score per word, mean over valid words.
    let w2r = want_w2r.then(|| {
        let rm = region_mask.to_kind(kind).unsqueeze(1).unsqueeze(-1); // [Bv,1,N,1]
        let b = refine(&logits, &rm, 2, opts);
        let per_word = (&b * &c).sum_dim_intlist(2, false, kind); // [Bv,Bt,L]
        let wm2 = word_mask.to_kind(kind).unsqueeze(0); // [1,Bt,L]
        (per_word * &wm2).sum_dim_intlist(2, false, kind)
            / wm2.sum_dim_intlist(2, false, kind).clamp_min(1.0)
    });
    (r2w, w2r)
}

/// The four loss terms of one batch.
pub struct LossTerms {
    /// Global video→text.
    pub global_v2t: Tensor,
    /// Global text→video.
    pub global_t2v: Tensor,
    /// RWA region→word (video→text).
    pub local_v2t: Option<Tensor>,
    /// RWA word→region (text→video).
    pub local_t2v: Option<Tensor>,
}

impl LossTerms {
    /// Weighted total.
    pub fn total(&self, rwa_weight: f64) -> Tensor {
        let mut t = &self.global_v2t + &self.global_t2v;
        if let (Some(a), Some(b)) = (&self.local_v2t, &self.local_t2v) {
            t += (a + b) * rwa_weight;
        }
        t
    }
}

/// Embeddings of one batch (normalized), as the model returns them.
pub struct Embeddings {
    /// `[Bv, E]`.
    pub video: Tensor,
    /// `[Bv, N, E]`.
    pub regions: Tensor,
    /// `[Bv, N]`.
    pub region_mask: Tensor,
    /// `[Bt, E]`.
    pub text: Tensor,
    /// `[Bt, L, E]`.
    pub words: Tensor,
    /// `[Bt, L]`.
    pub word_mask: Tensor,
}

/// All loss terms. RWA v2t uses the region→word matrix over rows (each video against all
/// texts); RWA t2v uses the word→region matrix over columns.
pub fn losses(e: &Embeddings, temperature: f64, rwa: Option<(RwaOptions, f64)>) -> LossTerms {
    let g = global_similarity(&e.video, &e.text);
    let (global_v2t, global_t2v) = info_nce(&g, temperature);
    let (local_v2t, local_t2v) = match rwa {
        Some((opts, local_t)) => {
            let (r2w, w2r) =
                rwa_similarity(&e.regions, &e.region_mask, &e.words, &e.word_mask, opts);
            let b = r2w.size()[0];
            let sim_kind = r2w.kind();
            let target = Tensor::arange(b, (Kind::Int64, r2w.device()));
            let v2t = (r2w / local_t).log_softmax(-1, sim_kind).nll_loss(&target);
            let t2v = (w2r / local_t)
                .transpose(0, 1)
                .log_softmax(-1, sim_kind)
                .nll_loss(&target);
            (Some(v2t), Some(t2v))
        }
        None => (None, None),
    };
    LossTerms {
        global_v2t,
        global_t2v,
        local_v2t,
        local_t2v,
    }
}

/// Sum over rows `offset..offset + n` of `-log softmax(logits / t)[i, offset + i]` (the row's
/// positive is its own index in the global batch), divided by `global`.
fn row_nll(logits: &Tensor, t: f64, offset: i64, global: i64) -> Tensor {
    let n = logits.size()[0];
    let target = Tensor::arange_start(offset, offset + n, (Kind::Int64, logits.device()));
    let logp = (logits / t).log_softmax(-1, logits.kind());
    -logp
        .gather(1, &target.unsqueeze(1), false)
        .sum(logits.kind())
        / global as f64
}

/// One data-parallel rank's share of [`losses`]: `all` is the gathered global batch, rows
/// `offset..offset + n` are this rank's samples. Each term covers only this rank's rows (its
/// videos against all texts, its texts against all videos) and is divided by the global batch
/// size, so the terms summed over ranks equal `losses(all, ..)` and the gradient of the sum
/// with respect to `all` is the sum of the ranks' gradients.
pub fn losses_shard(
    all: &Embeddings,
    offset: i64,
    n: i64,
    temperature: f64,
    rwa: Option<(RwaOptions, f64)>,
) -> LossTerms {
    let global = all.video.size()[0];
    let video = all.video.narrow(0, offset, n);
    let text = all.text.narrow(0, offset, n);
    let global_v2t = row_nll(
        &global_similarity(&video, &all.text),
        temperature,
        offset,
        global,
    );
    // Rows of the transposed similarity: this rank's texts against all videos.
    let global_t2v = row_nll(
        &global_similarity(&text, &all.video),
        temperature,
        offset,
        global,
    );
    let (local_v2t, local_t2v) = match rwa {
        Some((opts, local_t)) => {
            let (r2w, _) = rwa_directions(
                &all.regions.narrow(0, offset, n),
                &all.region_mask.narrow(0, offset, n),
                &all.words,
                &all.word_mask,
                opts,
                true,
                false,
            );
            let (_, w2r) = rwa_directions(
                &all.regions,
                &all.region_mask,
                &all.words.narrow(0, offset, n),
                &all.word_mask.narrow(0, offset, n),
                opts,
                false,
                true,
            );
            let v2t = row_nll(&r2w.expect("asked for"), local_t, offset, global);
            let t2v = row_nll(
                &w2r.expect("asked for").transpose(0, 1),
                local_t,
                offset,
                global,
            );
            (Some(v2t), Some(t2v))
        }
        None => (None, None),
    };
    LossTerms {
        global_v2t,
        global_t2v,
        local_v2t,
        local_t2v,
    }
}

/// Retrieval metrics of one direction.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq)]
pub struct Recall {
    /// Fraction of queries with the positive at rank 1.
    pub r1: f64,
    /// … within the top 5.
    pub r5: f64,
    /// … within the top 10.
    pub r10: f64,
    /// Median rank (1-based).
    pub medr: f64,
    /// Mean rank (1-based).
    pub meanr: f64,
}

/// Text→video and video→text metrics.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq)]
pub struct RetrievalMetrics {
    /// Text→video.
    pub t2v: Recall,
    /// Video→text.
    pub v2t: Recall,
}

fn recall_from_ranks(ranks: &[usize]) -> Recall {
    let n = ranks.len().max(1) as f64;
    let at = |k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / n;
    let mut s = ranks.to_vec();
    s.sort_unstable();
    let medr = if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2] as f64
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) as f64 / 2.0
    };
    Recall {
        r1: at(1),
        r5: at(5),
        r10: at(10),
        medr,
        meanr: ranks.iter().sum::<usize>() as f64 / n,
    }
}

/// Metrics from a `[Nv, Nt]` similarity (row-major), where text `j` belongs to video
/// `text_video[j]`. Rank = 1 + number of candidates scoring strictly higher than the positive;
/// video→text uses the best-ranked of the video's captions.
pub fn retrieval_metrics(
    sim: &[f32],
    nv: usize,
    nt: usize,
    text_video: &[usize],
) -> RetrievalMetrics {
    assert_eq!(sim.len(), nv * nt);
    assert_eq!(text_video.len(), nt);
    let t2v: Vec<usize> = (0..nt)
        .map(|j| {
            let pos = sim[text_video[j] * nt + j];
            1 + (0..nv).filter(|&i| sim[i * nt + j] > pos).count()
        })
        .collect();
    let v2t: Vec<usize> = (0..nv)
        .filter_map(|i| {
            let row = &sim[i * nt..(i + 1) * nt];
            (0..nt)
                .filter(|&j| text_video[j] == i)
                .map(|j| 1 + row.iter().filter(|&&s| s > row[j]).count())
                .min()
        })
        .collect();
    RetrievalMetrics {
        t2v: recall_from_ranks(&t2v),
        v2t: recall_from_ranks(&v2t),
    }
}
