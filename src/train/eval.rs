//! Retrieval evaluation: encode every video and every caption of a set (several captions per
//! video where the benchmark has them), score all pairs with global + local (RWA) similarity — both `[video, text]`-oriented, so nothing is transposed
//! by accident — and compute R@1/5/10, MedR, MeanR in both directions. Embeddings can be
//! exported as safetensors.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use crate::train::config::FrameSampling;
use crate::train::data::{epoch_order, tokenize, BatchSpec, Loader, Mixture};
use crate::train::layers::Ctx;
use crate::train::loss::{self, Embeddings, RetrievalMetrics, RwaOptions};
use crate::train::model::DemoVlp;
use crate::train::text::TextTokenizer;

/// Encoded evaluation set (CPU tensors, regions and words padded across batches). Video `i`
/// is item `i`; text `j` is caption `j` in item order, belonging to video `text_video[j]`.
pub struct EncodedSet {
    /// The embeddings: `video`/`regions` per item, `text`/`words` per caption.
    pub emb: Embeddings,
    /// Item ids.
    pub ids: Vec<String>,
    /// Owning video of each text.
    pub text_video: Vec<usize>,
    /// The caption of each text.
    pub captions: Vec<String>,
}

/// Concatenates `[b, n_i, …]` parts along dim 0, zero-padding dim 1 to `dim1`.
pub(crate) fn pad_cat(parts: &[Tensor], dim1: i64) -> Tensor {
    let padded: Vec<Tensor> = parts
        .iter()
        .map(|t| {
            let n = t.size()[1];
            if n == dim1 {
                t.shallow_clone()
            } else {
                let mut shape = t.size();
                shape[1] = dim1 - n;
                Tensor::cat(
                    &[
                        t.shallow_clone(),
                        Tensor::zeros(shape.as_slice(), (t.kind(), t.device())),
                    ],
                    1,
                )
            }
        })
        .collect();
    Tensor::cat(&padded, 0)
}

/// Encodes all items of `mix` (in order) and all their captions.
pub fn encode(
    model: &DemoVlp,
    mix: &Arc<Mixture>,
    tok: &Arc<TextTokenizer>,
    frames: usize,
    sampling: FrameSampling,
    batch_size: usize,
    device: Device,
) -> Result<EncodedSet> {
    let order = Arc::new(epoch_order(mix.len(), 0, 0, false));
    let spec = BatchSpec {
        frames,
        sampling,
        seed: 0,
        epoch: 0,
    };
    let loader = Loader::new(
        mix.clone(),
        tok.clone(),
        order,
        batch_size,
        true,
        0,
        spec,
        2,
        2,
    );
    let ctx = Ctx {
        train: false,
        mixed: if device.is_cuda() {
            Some(Kind::BFloat16)
        } else {
            None
        },
    };
    let (mut v, mut r, mut rm, mut t, mut w, mut wm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut text_video, mut captions) = (vec![], vec![]);
    for i in 0..mix.len() {
        for c in mix.captions(i) {
            text_video.push(i);
            captions.push(c);
        }
    }
    tch::no_grad(|| -> Result<()> {
        for (bi, hb) in loader {
            let hb = hb.with_context(|| format!("reading evaluation batch {bi}"))?;
            let b = hb.to_device(device);
            let (video, regions, region_mask) = model.encode_video(&b, ctx);
            v.push(video.to_device(Device::Cpu));
            r.push(regions.to_device(Device::Cpu));
            rm.push(region_mask.to_device(Device::Cpu));
        }
        for chunk in captions.chunks(batch_size.max(1)) {
            let b = tokenize(tok, chunk)?.to_device(device);
            let (text, words, word_mask) = model.encode_text(&b, ctx);
            t.push(text.to_device(Device::Cpu));
            w.push(words.to_device(Device::Cpu));
            wm.push(word_mask.to_device(Device::Cpu));
        }
        Ok(())
    })?;
    let rmax = r.iter().map(|x| x.size()[1]).max().unwrap_or(1);
    let lmax = w.iter().map(|x| x.size()[1]).max().unwrap_or(1);
    Ok(EncodedSet {
        emb: Embeddings {
            video: Tensor::cat(&v, 0),
            regions: pad_cat(&r, rmax),
            region_mask: pad_cat(&rm, rmax),
            text: Tensor::cat(&t, 0),
            words: pad_cat(&w, lmax),
            word_mask: pad_cat(&wm, lmax),
        },
        ids: (0..mix.len()).map(|i| mix.item_id(i)).collect(),
        text_video,
        captions,
    })
}

/// Local (RWA) similarity `[Nv, Nt]` = mean of region→word and word→region, computed in
/// chunks to bound memory.
pub fn local_similarity(set: &EncodedSet, opts: RwaOptions) -> Tensor {
    let nv = set.emb.video.size()[0];
    let nt = set.emb.text.size()[0];
    let (r, l) = (set.emb.regions.size()[1], set.emb.words.size()[1]);
    // Keep [cv, ct, R, L] under ~32M elements.
    let ct = nt.clamp(1, 256);
    let cv = (32_000_000 / (ct * r * l).max(1)).clamp(1, nv.max(1));
    let mut rows = vec![];
    tch::no_grad(|| {
        for i in (0..nv).step_by(cv as usize) {
            let ni = cv.min(nv - i);
            let mut cols = vec![];
            for j in (0..nt).step_by(ct as usize) {
                let nj = ct.min(nt - j);
                let (r2w, w2r) = loss::rwa_similarity(
                    &set.emb.regions.narrow(0, i, ni),
                    &set.emb.region_mask.narrow(0, i, ni),
                    &set.emb.words.narrow(0, j, nj),
                    &set.emb.word_mask.narrow(0, j, nj),
                    opts,
                );
                cols.push((r2w + w2r) / 2.0);
            }
            rows.push(Tensor::cat(&cols, 1));
        }
    });
    Tensor::cat(&rows, 0)
}

/// Retrieval score `[Nv, Nt]`: global cosine, plus the local similarity when `use_local`.
pub fn similarity(set: &EncodedSet, use_local: bool, opts: RwaOptions) -> Tensor {
    let g = tch::no_grad(|| loss::global_similarity(&set.emb.video, &set.emb.text));
    if use_local {
        g + local_similarity(set, opts)
    } else {
        g
    }
}

/// Metrics of a `[Nv, Nt]` score of `set`.
pub fn metrics(set: &EncodedSet, sim: &Tensor) -> RetrievalMetrics {
    let (nv, nt) = (sim.size()[0] as usize, sim.size()[1] as usize);
    loss::retrieval_metrics(&flat(sim), nv, nt, &set.text_video)
}

/// The `[Nv, Nt]` score as a row-major f32 vector.
pub fn flat(sim: &Tensor) -> Vec<f32> {
    Vec::try_from(sim.to_kind(Kind::Float).contiguous().view([-1])).expect("f32 tensor")
}

/// Writes the embeddings (`video`, `regions`, `region_mask`, `text`, `words`, `word_mask`) as
/// safetensors, and the item ids next to it as `<name>.ids.json`.
pub fn export(set: &EncodedSet, path: &Path) -> Result<()> {
    let named = [
        ("video", &set.emb.video),
        ("regions", &set.emb.regions),
        ("region_mask", &set.emb.region_mask),
        ("text", &set.emb.text),
        ("words", &set.emb.words),
        ("word_mask", &set.emb.word_mask),
    ];
    Tensor::write_safetensors(&named, path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let ids = path.with_extension("ids.json");
    std::fs::write(&ids, serde_json::to_string(&set.ids)?)
        .with_context(|| format!("cannot write {}", ids.display()))?;
    Ok(())
}
