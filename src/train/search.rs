//! `regionfeat embed` and `regionfeat search`: a checkpoint's global embeddings of a shard set,
//! stored as an index folder, then queried with free text or by item id.
//!
//! Index folder (`schemas/search-index.md`):
//! - `index.json`: format, version, sha256 of the checkpoint's weights / text config / tokenizer,
//!   embedding size, frames, shards, items and texts done so far (the resume point), complete.
//! - `items.jsonl`: one `{"id", "captions"}` per item, in shard order.
//! - `videos.f16`: `items × E` little-endian f16, one row per item (video embedding).
//! - `texts.f16`: `texts × E` f16, one row per caption (captions of item 0, then item 1, …).
//!
//! Rows are appended a chunk of items at a time, flushed, then `index.json` is rewritten
//! atomically, so a killed `embed` resumes after the last chunk it recorded. `search` maps the
//! row files read-only (memory-mapped) and scans them exactly ([`crate::scan::top_k`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use half::f16;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tch::{nn, Device, Kind, Tensor};

use crate::inspect::{draw_hits, DrawOptions, SheetHit};
use crate::scan::{self, Hit};
use crate::train::checkpoint::{self, files};
use crate::train::config::{FrameSampling, TrainConfig};
use crate::train::data::{tokenize, BatchSpec, Loader, Mixture, RegionSource};
use crate::train::eval::{self, EncodedSet};
use crate::train::layers::Ctx;
use crate::train::loss::{Embeddings, RwaOptions};
use crate::train::model::{self, DemoVlp};
use crate::train::shards::ShardSource;
use crate::train::text::{TextModelConfig, TextTokenizer};
use crate::train::trainer::device_from_str;

/// Index file names.
pub mod names {
    /// Metadata.
    pub const META: &str = "index.json";
    /// Item ids and captions.
    pub const ITEMS: &str = "items.jsonl";
    /// Video rows.
    pub const VIDEOS: &str = "videos.f16";
    /// Caption rows.
    pub const TEXTS: &str = "texts.f16";
}

/// Value of `format` in `index.json`.
pub const INDEX_FORMAT: &str = "regionfeat-search-index";

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// [`INDEX_FORMAT`].
    pub format: String,
    /// Layout version (1).
    pub version: u32,
    /// sha256 of the checkpoint's `model.safetensors`.
    pub checkpoint_sha256: String,
    /// sha256 of the text tower's config and tokenizer files.
    pub text_encoder_sha256: String,
    /// Embedding size E.
    pub embed_dim: usize,
    /// Frames per video.
    pub frames: usize,
    /// Shards embedded.
    pub shards: String,
    /// Items of the shard set.
    pub items_total: usize,
    /// Items whose video and caption rows are written.
    pub items_done: usize,
    /// Caption rows written.
    pub texts_done: usize,
    /// All items done.
    pub complete: bool,
}

/// One line of `items.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexItem {
    /// Item id.
    pub id: String,
    /// Its captions.
    pub captions: Vec<String>,
}

/// `regionfeat embed`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmbedArgs {
    /// Checkpoint directory (e.g. ckpt/finetune/best).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Shard directory (or one shard file).
    #[arg(long)]
    pub shards: PathBuf,
    /// Index folder to write (resumed when it holds an unfinished index of the same checkpoint).
    #[arg(long)]
    pub out: PathBuf,
    /// Frames per video (default: the config's eval.frames, else 8).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Encoding batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Items per flushed chunk (the resume granularity).
    #[arg(long, default_value_t = 1024)]
    pub chunk: usize,
    /// Device (auto, cpu, cuda, cuda:N).
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// What a search ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Videos (one row per item).
    Videos,
    /// Captions (one row per caption).
    Texts,
}

/// `regionfeat search`.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    /// Index folder written by `regionfeat embed`.
    #[arg(long)]
    pub index: PathBuf,
    /// The checkpoint the index was built with (its text tower encodes the query).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Free-text query.
    #[arg(conflicts_with = "like")]
    pub query: Option<String>,
    /// Query with the video of this item id instead of text.
    #[arg(long)]
    pub like: Option<String>,
    /// Rank videos or captions.
    #[arg(long, value_enum, default_value_t = Target::Videos)]
    pub to: Target,
    /// Results.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Re-rank the best N videos (N is raised to k) by global + local region-word similarity,
    /// scored as `eval` does: their regions are read again from the index's shards and encoded.
    #[arg(long, value_name = "N")]
    pub rerank: Option<usize>,
    /// Draw a contact sheet of the hits (one frame of each, with its regions) into this PNG.
    #[arg(long, value_name = "PNG")]
    pub draw: Option<PathBuf>,
    /// Folder that relative media paths in the shards are resolved against (`--draw`).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Device for the text tower (and the video tower with `--rerank`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn sha256_files(paths: &[PathBuf]) -> Result<String> {
    let mut h = sha2::Sha256::new();
    for p in paths {
        let mut f =
            std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
        std::io::copy(&mut f, &mut h)?;
    }
    Ok(hex::encode(h.finalize()))
}

/// Checkpoint identity: (weights sha256, text encoder sha256).
fn checkpoint_hashes(ck: &Path) -> Result<(String, String)> {
    for f in [files::MODEL, files::TEXT_CONFIG, files::CONFIG] {
        if !ck.join(f).exists() {
            bail!("{} is not a checkpoint: {} is missing", ck.display(), f);
        }
    }
    let weights = sha256_files(&[ck.join(files::MODEL)])?;
    let text = sha256_files(&[ck.join(files::TEXT_CONFIG), checkpoint::tokenizer_file(ck)?])?;
    Ok((weights, text))
}

struct Loaded {
    cfg: TrainConfig,
    model: DemoVlp,
    tok: Arc<TextTokenizer>,
    _vs: nn::VarStore,
}

fn load_checkpoint(ck: &Path, device: Device) -> Result<Loaded> {
    let cfg_path = ck.join(files::CONFIG);
    let cfg: TrainConfig = toml::from_str(
        &std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("cannot read {}", cfg_path.display()))?,
    )
    .with_context(|| format!("invalid config {}", cfg_path.display()))?;
    let text_cfg = TextModelConfig::from_file(&ck.join(files::TEXT_CONFIG))?;
    let tok = Arc::new(TextTokenizer::from_file(
        &checkpoint::tokenizer_file(ck)?,
        cfg.data.max_text_len,
        cfg.model.text.lowercase,
    )?);
    let (vs, model) = model::build(&cfg.model, &text_cfg, device, false)?;
    checkpoint::load_weights(&vs, &ck.join(files::MODEL), true)?;
    Ok(Loaded {
        cfg,
        model,
        tok,
        _vs: vs,
    })
}

fn ctx(device: Device) -> Ctx {
    Ctx {
        train: false,
        mixed: device.is_cuda().then_some(Kind::BFloat16),
    }
}

fn to_f16_bytes(t: &Tensor) -> Vec<u8> {
    let v: Vec<f32> =
        Vec::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).expect("f32 tensor");
    let mut out = Vec::with_capacity(v.len() * 2);
    for x in v {
        out.extend_from_slice(&f16::from_f32(x).to_le_bytes());
    }
    out
}

fn read_meta(dir: &Path) -> Result<IndexMeta> {
    let p = dir.join(names::META);
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("{} is not an index", dir.display()))?;
    let m: IndexMeta =
        serde_json::from_str(&text).with_context(|| format!("bad {}", p.display()))?;
    ensure!(
        m.format == INDEX_FORMAT && m.version == 1,
        "{}: format {:?} v{}, this regionfeat reads {INDEX_FORMAT:?} v1",
        p.display(),
        m.format,
        m.version
    );
    Ok(m)
}

fn write_meta(dir: &Path, m: &IndexMeta) -> Result<()> {
    crate::shard::write_atomic(
        &dir.join(names::META),
        serde_json::to_string_pretty(m)?.as_bytes(),
    )?;
    Ok(())
}

/// Opens `name` for appending after exactly `rows × E` f16 values (dropping a torn tail).
fn open_rows(dir: &Path, name: &str, rows: usize, dim: usize) -> Result<std::fs::File> {
    let p = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .with_context(|| format!("cannot open {}", p.display()))?;
    let want = (rows * dim * 2) as u64;
    ensure!(
        f.metadata()?.len() >= want,
        "{} is shorter than index.json says: delete the index folder and embed again",
        p.display()
    );
    f.set_len(want)?;
    Ok(f)
}

/// Batches of `rows` in order (keeping the last partial batch), `frames` uniform frames each,
/// read by two threads: what `embed` and the reranker encode.
fn read_in_order(
    mix: &Arc<Mixture>,
    tok: &Arc<TextTokenizer>,
    rows: Vec<usize>,
    frames: usize,
    batch: usize,
) -> Loader {
    let spec = BatchSpec {
        frames,
        sampling: FrameSampling::Uniform,
        seed: 0,
        epoch: 0,
    };
    Loader::new(
        mix.clone(),
        tok.clone(),
        Arc::new(rows),
        batch,
        true,
        0,
        spec,
        2,
        2,
    )
}

/// Runs `regionfeat embed`; returns the finished index metadata.
pub fn run_embed(args: &EmbedArgs) -> Result<IndexMeta> {
    let device = device_from_str(&args.device)?;
    let (weights_sha, text_sha) = checkpoint_hashes(&args.checkpoint)?;
    if let Ok(m) = read_meta(&args.out) {
        ensure!(
            m.checkpoint_sha256 == weights_sha && m.text_encoder_sha256 == text_sha,
            "{} holds an index of another checkpoint (weights sha256 {}…): use a new --out",
            args.out.display(),
            &m.checkpoint_sha256[..12.min(m.checkpoint_sha256.len())]
        );
    }
    let l = load_checkpoint(&args.checkpoint, device)?;
    let src: Arc<dyn RegionSource> = Arc::new(ShardSource::open(&args.shards)?);
    let mix = Arc::new(Mixture::new(vec![src], false)?);
    let frames = args
        .frames
        .or(l.cfg.eval.as_ref().map(|e| e.frames))
        .unwrap_or(8);
    let dim = l.cfg.model.embed_dim;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let fresh = IndexMeta {
        format: INDEX_FORMAT.into(),
        version: 1,
        checkpoint_sha256: weights_sha,
        text_encoder_sha256: text_sha,
        embed_dim: dim,
        frames,
        shards: args.shards.display().to_string(),
        items_total: mix.len(),
        items_done: 0,
        texts_done: 0,
        complete: false,
    };
    let mut meta = match read_meta(&args.out) {
        Ok(m) => {
            let same = IndexMeta {
                items_done: m.items_done,
                texts_done: m.texts_done,
                complete: m.complete,
                ..fresh.clone()
            };
            ensure!(
                m == same,
                "{} holds an index of another shard set or settings ({} items of {}, {} frames); use a new --out",
                args.out.display(),
                m.items_total,
                m.shards,
                m.frames
            );
            if m.items_done > 0 {
                eprintln!("resuming at item {} of {}", m.items_done, m.items_total);
            }
            m
        }
        Err(_) => {
            let mut items = String::new();
            for i in 0..mix.len() {
                let it = IndexItem {
                    id: mix.item_id(i),
                    captions: mix.captions(i),
                };
                items.push_str(&serde_json::to_string(&it)?);
                items.push('\n');
            }
            crate::shard::write_atomic(&args.out.join(names::ITEMS), items.as_bytes())?;
            let _ = std::fs::remove_file(args.out.join(names::VIDEOS));
            let _ = std::fs::remove_file(args.out.join(names::TEXTS));
            write_meta(&args.out, &fresh)?;
            fresh
        }
    };
    let mut videos = open_rows(&args.out, names::VIDEOS, meta.items_done, dim)?;
    let mut texts = open_rows(&args.out, names::TEXTS, meta.texts_done, dim)?;
    let c = ctx(device);
    let chunk = args.chunk.max(1);
    while meta.items_done < meta.items_total {
        let lo = meta.items_done;
        let hi = (lo + chunk).min(meta.items_total);
        let loader = read_in_order(
            &mix,
            &l.tok,
            (lo..hi).collect(),
            frames,
            args.batch_size.max(1),
        );
        let captions: Vec<String> = (lo..hi).flat_map(|i| mix.captions(i)).collect();
        tch::no_grad(|| -> Result<()> {
            for (bi, hb) in loader {
                let hb = hb.with_context(|| format!("reading items of batch {bi}"))?;
                let (v, _, _) = l.model.encode_video(&hb.to_device(device), c);
                videos.write_all(&to_f16_bytes(&v))?;
            }
            for part in captions.chunks(args.batch_size.max(1)) {
                let b = tokenize(&l.tok, part)?.to_device(device);
                let (t, _, _) = l.model.encode_text(&b, c);
                texts.write_all(&to_f16_bytes(&t))?;
            }
            Ok(())
        })?;
        videos.sync_data()?;
        texts.sync_data()?;
        meta.items_done = hi;
        meta.texts_done += captions.len();
        meta.complete = hi == meta.items_total;
        write_meta(&args.out, &meta)?;
        eprintln!("embedded {hi}/{} items", meta.items_total);
    }
    if !meta.complete {
        meta.complete = true;
        write_meta(&args.out, &meta)?;
    }
    Ok(meta)
}

/// An opened index: metadata, items, memory-mapped rows.
pub struct SearchIndex {
    /// `index.json`.
    pub meta: IndexMeta,
    /// Items.
    pub items: Vec<IndexItem>,
    /// Owning item of each caption row.
    pub text_item: Vec<usize>,
    videos: memmap2::Mmap,
    texts: memmap2::Mmap,
}

fn map_rows(dir: &Path, name: &str, rows: usize, dim: usize) -> Result<memmap2::Mmap> {
    let p = dir.join(name);
    let f = std::fs::File::open(&p).with_context(|| format!("cannot open {}", p.display()))?;
    let want = rows * dim * 2;
    ensure!(
        f.metadata()?.len() as usize >= want,
        "{} holds fewer rows than index.json says",
        p.display()
    );
    // SAFETY: the file is opened read-only and the index is not written while searched;
    // a concurrent writer only appends past the `want` bytes we read.
    let m =
        unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("cannot map {}", p.display()))?;
    Ok(m)
}

fn as_f16(bytes: &[u8], n: usize) -> &[f16] {
    // f16 has alignment 2; mmap'd pages are page-aligned.
    let (pre, rows, _) = unsafe { bytes[..n * 2].align_to::<f16>() };
    assert!(pre.is_empty(), "row file is not 2-byte aligned");
    rows
}

impl SearchIndex {
    /// Opens a complete index.
    pub fn open(dir: &Path) -> Result<Self> {
        let meta = read_meta(dir)?;
        ensure!(
            meta.complete,
            "{}: the index is unfinished ({} of {} items): run regionfeat embed again to resume",
            dir.display(),
            meta.items_done,
            meta.items_total
        );
        let text = std::fs::read_to_string(dir.join(names::ITEMS))
            .with_context(|| format!("cannot read {}", dir.join(names::ITEMS).display()))?;
        let items: Vec<IndexItem> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).with_context(|| format!("{}:{}", names::ITEMS, i + 1))
            })
            .collect::<Result<_>>()?;
        ensure!(
            items.len() == meta.items_total,
            "items.jsonl does not match index.json"
        );
        let text_item: Vec<usize> = items
            .iter()
            .enumerate()
            .flat_map(|(i, it)| std::iter::repeat_n(i, it.captions.len()))
            .collect();
        ensure!(
            text_item.len() == meta.texts_done,
            "texts do not match items.jsonl"
        );
        let videos = map_rows(dir, names::VIDEOS, meta.items_total, meta.embed_dim)?;
        let texts = map_rows(dir, names::TEXTS, meta.texts_done, meta.embed_dim)?;
        Ok(Self {
            meta,
            items,
            text_item,
            videos,
            texts,
        })
    }

    /// Video rows `items × E`.
    pub fn video_rows(&self) -> &[f16] {
        as_f16(&self.videos, self.meta.items_total * self.meta.embed_dim)
    }

    /// Caption rows `texts × E`.
    pub fn text_rows(&self) -> &[f16] {
        as_f16(&self.texts, self.meta.texts_done * self.meta.embed_dim)
    }

    /// The video embedding of item `id`.
    pub fn video_of(&self, id: &str) -> Result<Vec<f32>> {
        let i = self
            .items
            .iter()
            .position(|it| it.id == id)
            .with_context(|| format!("no item {id:?} in the index"))?;
        let e = self.meta.embed_dim;
        Ok(self.video_rows()[i * e..(i + 1) * e]
            .iter()
            .map(|v| v.to_f32())
            .collect())
    }

    /// The best `k` rows of `target` for `query`.
    pub fn rank(&self, query: &[f32], target: Target, k: usize) -> Vec<Hit> {
        let rows = match target {
            Target::Videos => self.video_rows(),
            Target::Texts => self.text_rows(),
        };
        scan::top_k(rows, self.meta.embed_dim, query, k)
    }
}

/// Checks that `ck` is the checkpoint `meta` was built with; says which part differs.
pub fn check_checkpoint(meta: &IndexMeta, ck: &Path) -> Result<()> {
    let (weights, text) = checkpoint_hashes(ck)?;
    ensure!(
        text == meta.text_encoder_sha256,
        "{}'s text encoder (config/tokenizer sha256 {}…) is not the one the index was built with ({}…): pass the index's checkpoint",
        ck.display(),
        &text[..12],
        &meta.text_encoder_sha256[..12.min(meta.text_encoder_sha256.len())]
    );
    ensure!(
        weights == meta.checkpoint_sha256,
        "the index was built from another checkpoint (weights sha256 {}…, {} has {}…): pass that checkpoint or embed again",
        &meta.checkpoint_sha256[..12.min(meta.checkpoint_sha256.len())],
        ck.display(),
        &weights[..12]
    );
    Ok(())
}

/// One printed result.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// 1-based.
    pub rank: usize,
    /// Inner product (cosine: rows and query are normalized).
    pub score: f32,
    /// Item id.
    pub id: String,
    /// The matched caption (texts) or the item's captions (videos).
    pub captions: Vec<String>,
    /// `--rerank`: the global cosine (f32, encoded again) that `score` = `global + local` adds up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<f32>,
    /// `--rerank`: the local region-word similarity (mean of region→word and word→region).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<f32>,
}

/// A hit after `--rerank`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reranked {
    /// Item row in the index.
    pub row: usize,
    /// The global cosine (f32).
    pub global: f32,
    /// The local region-word similarity.
    pub local: f32,
}

impl Reranked {
    /// `global + local`, as `eval` adds them with `use_local`.
    pub fn score(&self) -> f32 {
        self.global + self.local
    }
}

/// Scores index items `rows` against the text `query` as `eval` does with `use_local`
/// ([`eval::similarity`]: global cosine + mean of region→word and word→region RWA scores): the
/// items' regions are read again from the shards the index was built from (same frames and
/// sampling as `embed`) and encoded with the checkpoint, together with the query's words.
/// Returns the items ordered by `global + local`, then by row.
fn rerank(
    l: &Loaded,
    index: &SearchIndex,
    query: &str,
    rows: &[usize],
    device: Device,
) -> Result<Vec<Reranked>> {
    let shards = Path::new(&index.meta.shards);
    let src: Arc<dyn RegionSource> = Arc::new(ShardSource::open(shards).with_context(|| {
        format!(
            "--rerank reads the items' regions from the shards the index was built from ({})",
            shards.display()
        )
    })?);
    let mix = Arc::new(Mixture::new(vec![src], false)?);
    ensure!(
        mix.len() == index.items.len(),
        "{} holds {} items, the index {}: the shards changed since `embed`; embed again",
        shards.display(),
        mix.len(),
        index.items.len()
    );
    for &r in rows {
        ensure!(
            mix.item_id(r) == index.items[r].id,
            "{}: item {r} is {:?}, the index says {:?}: the shards changed since `embed`",
            shards.display(),
            mix.item_id(r),
            index.items[r].id
        );
    }
    let loader = read_in_order(&mix, &l.tok, rows.to_vec(), index.meta.frames, 64);
    let c = ctx(device);
    let (mut v, mut r, mut rm) = (vec![], vec![], vec![]);
    let (t, w, wm) = tch::no_grad(|| -> Result<_> {
        for (bi, hb) in loader {
            let hb = hb.with_context(|| format!("reading the regions of batch {bi}"))?;
            let (video, regions, mask) = l.model.encode_video(&hb.to_device(device), c);
            v.push(video.to_device(Device::Cpu));
            r.push(regions.to_device(Device::Cpu));
            rm.push(mask.to_device(Device::Cpu));
        }
        let b = tokenize(&l.tok, &[query.to_string()])?.to_device(device);
        Ok(l.model.encode_text(&b, c))
    })?;
    let rmax = r.iter().map(|x| x.size()[1]).max().unwrap_or(1);
    let set = EncodedSet {
        emb: Embeddings {
            video: Tensor::cat(&v, 0),
            regions: eval::pad_cat(&r, rmax),
            region_mask: eval::pad_cat(&rm, rmax),
            text: t.to_device(Device::Cpu),
            words: w.to_device(Device::Cpu),
            word_mask: wm.to_device(Device::Cpu),
        },
        ids: rows.iter().map(|&i| index.items[i].id.clone()).collect(),
        text_video: vec![0],
        captions: vec![query.to_string()],
    };
    let opts = RwaOptions {
        scale: l.cfg.loss.rwa_scale,
        renormalize: l.cfg.loss.rwa_renormalize,
    };
    let global = eval::flat(&eval::similarity(&set, false, opts));
    let local = eval::flat(&eval::local_similarity(&set, opts));
    let mut out: Vec<Reranked> = rows
        .iter()
        .zip(global.iter().zip(&local))
        .map(|(&row, (&global, &local))| Reranked { row, global, local })
        .collect();
    out.sort_by(|a, b| b.score().total_cmp(&a.score()).then(a.row.cmp(&b.row)));
    Ok(out)
}

/// Runs `regionfeat search`; returns the results it printed.
pub fn run_search(args: &SearchArgs) -> Result<Vec<SearchResult>> {
    let t0 = std::time::Instant::now();
    let index = SearchIndex::open(&args.index)?;
    check_checkpoint(&index.meta, &args.checkpoint)?;
    let load_s = t0.elapsed().as_secs_f64();
    if let Some(n) = args.rerank {
        ensure!(n > 0, "--rerank needs N > 0");
        ensure!(
            args.query.is_some() && args.to == Target::Videos,
            "--rerank scores a text query against videos (region-word similarity): drop --like / --to texts"
        );
    }
    ensure!(args.k > 0, "-k must be at least 1");
    let t1 = std::time::Instant::now();
    let device = device_from_str(&args.device)?;
    let mut text_model = None;
    let query: Vec<f32> = match (&args.query, &args.like) {
        (Some(q), None) => {
            if q.trim().is_empty() {
                bail!("empty query: give some words, or --like ITEM_ID");
            }
            let l = load_checkpoint(&args.checkpoint, device)?;
            ensure!(
                l.cfg.model.embed_dim == index.meta.embed_dim,
                "the checkpoint embeds into {} dims, the index holds {}",
                l.cfg.model.embed_dim,
                index.meta.embed_dim
            );
            let b = tokenize(&l.tok, std::slice::from_ref(q))?.to_device(device);
            let (t, _, _) = tch::no_grad(|| l.model.encode_text(&b, ctx(device)));
            let v = Vec::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).view([-1]))?;
            text_model = Some(l);
            v
        }
        (None, Some(id)) => index.video_of(id)?,
        _ => bail!("give a text query or --like ITEM_ID"),
    };
    let encode_s = t1.elapsed().as_secs_f64();
    let t2 = std::time::Instant::now();
    let n = args.rerank.map_or(args.k, |n| n.max(args.k));
    let hits = index.rank(&query, args.to, n);
    let rank_s = t2.elapsed().as_secs_f64();
    let t3 = std::time::Instant::now();
    let reranked = match (args.rerank, &text_model, &args.query) {
        (Some(_), Some(l), Some(q)) => {
            let rows: Vec<usize> = hits.iter().map(|h| h.row).collect();
            Some(rerank(l, &index, q, &rows, device)?)
        }
        _ => None,
    };
    let rerank_s = t3.elapsed().as_secs_f64();
    let hits: Vec<(Hit, Option<Reranked>)> = match reranked {
        Some(rr) => rr
            .into_iter()
            .take(args.k)
            .map(|x| {
                (
                    Hit {
                        row: x.row,
                        score: x.score(),
                    },
                    Some(x),
                )
            })
            .collect(),
        None => hits.into_iter().map(|h| (h, None)).collect(),
    };
    let results: Vec<SearchResult> = hits
        .iter()
        .enumerate()
        .map(|(r, (h, rr))| {
            let (item, captions) = match args.to {
                Target::Videos => (h.row, index.items[h.row].captions.clone()),
                Target::Texts => {
                    let item = index.text_item[h.row];
                    let first = index.text_item.partition_point(|&x| x < item);
                    (
                        item,
                        vec![index.items[item].captions[h.row - first].clone()],
                    )
                }
            };
            SearchResult {
                rank: r + 1,
                score: h.score,
                id: index.items[item].id.clone(),
                captions,
                global: rr.map(|x| x.global),
                local: rr.map(|x| x.local),
            }
        })
        .collect();
    let sheet = match &args.draw {
        Some(out) => {
            let hits: Vec<SheetHit> = results
                .iter()
                .map(|r| SheetHit {
                    rank: r.rank,
                    score: r.score,
                    id: r.id.clone(),
                    caption: r.captions.first().cloned().unwrap_or_default(),
                })
                .collect();
            let opts = DrawOptions {
                columns: 4,
                frame_width: 240,
                top: Some(10),
                root: args.root.clone(),
            };
            let report = draw_hits(Path::new(&index.meta.shards), &hits, out, &opts)?;
            for t in &report.tiles {
                if let Some(why) = &t.missing {
                    eprintln!("--draw: #{} {}: placeholder tile: {why}", t.rank, t.id);
                }
            }
            Some(report)
        }
        None => None,
    };
    if args.json {
        let mut v = serde_json::json!({
            "results": results,
            "timing_s": {"index_load": load_s, "query_encode": encode_s, "rank": rank_s},
        });
        if args.rerank.is_some() {
            v["timing_s"]["rerank"] = rerank_s.into();
        }
        if let Some(s) = &sheet {
            v["sheet"] = serde_json::to_value(s)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for r in &results {
            println!(
                "{:>3}. {:.4}  {}  {}",
                r.rank,
                r.score,
                r.id,
                r.captions.first().map(String::as_str).unwrap_or("")
            );
        }
        eprintln!(
            "{} {} ranked in {:.1} ms (index load {:.1} ms, query {:.1} ms)",
            match args.to {
                Target::Videos => index.items.len(),
                Target::Texts => index.text_item.len(),
            },
            match args.to {
                Target::Videos => "videos",
                Target::Texts => "captions",
            },
            rank_s * 1e3,
            load_s * 1e3,
            encode_s * 1e3
        );
        if let Some(n) = args.rerank {
            eprintln!(
                "re-ranked the top {} by global + local region-word similarity in {:.1} ms",
                n.max(args.k),
                rerank_s * 1e3
            );
        }
        if let Some(s) = &sheet {
            eprintln!(
                "contact sheet of {} hits written to {}",
                s.tiles.len(),
                s.path
            );
        }
    }
    Ok(results)
}
