//! Rust side of the loader benchmark (`benches/loader.sh` runs it against h5py + a PyTorch
//! `DataLoader` on the same shards, in the same run).
//!
//! Usage:
//! - `loader gen DIR '<json list of SyntheticShard>'`: writes the shards with our `ShardWriter`.
//! - `loader run '<json list of Case>'`: prints one `RESULT {json}` line per case.

#[cfg(feature = "train")]
mod bench {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use anyhow::{Context, Result};
    use regionfeat::shard::chunks::stats;
    use regionfeat::shard::synthetic::SyntheticShard;
    use regionfeat::shard::{ChunkReader, FeatureRows, ShardReader};
    use regionfeat::train::config::FrameSampling;
    use regionfeat::train::data::{
        epoch_order, tokenize, BatchSpec, FrameBlock, Loader, Mixture, RegionSource, LOC_DIM,
    };
    use regionfeat::train::shards::{list_shards, ShardSource};
    use regionfeat::train::text::TextTokenizer;

    /// One measurement.
    #[derive(serde::Deserialize)]
    struct Case {
        /// Shard directory.
        data: PathBuf,
        /// tokenizer.json.
        tokenizer: PathBuf,
        /// "chunks" (ShardSource, this build) or "hdf5" (the previous path, kept below).
        path: String,
        frames: usize,
        threads: usize,
        batch: usize,
        /// Batches timed (after `warmup`).
        batches: usize,
        warmup: usize,
        /// Count where reading time goes (chunk lookup, pread, inflate, unshuffle).
        #[serde(default)]
        profile: bool,
    }

    /// The loader's previous shard path (src/train/shards.rs before the chunk reader): one
    /// `ShardReader` per shard behind a mutex, every frame dataset read through HDF5 (under
    /// its process-wide lock), features widened to f32 on the host.
    /// Reader, captions, frame ranges.
    type OldShard = (Mutex<ShardReader>, Vec<String>, Vec<(u64, u32)>);

    struct Hdf5Source {
        shards: Vec<OldShard>,
        index: Vec<(u32, u32)>,
        k: usize,
        d: usize,
    }

    impl Hdf5Source {
        fn open(dir: &Path) -> Result<Self> {
            let (mut shards, mut index, mut kd) = (vec![], vec![], (0, 0));
            for (s, p) in list_shards(dir)?.into_iter().enumerate() {
                let r = ShardReader::open(&p)?;
                kd = (r.max_boxes()?, r.feature_dim()?);
                let caps: Vec<String> = r.captions()?;
                let ranges = r.frame_ranges()?;
                index.extend((0..caps.len()).map(|i| (s as u32, i as u32)));
                shards.push((Mutex::new(r), caps, ranges));
            }
            Ok(Self {
                shards,
                index,
                k: kd.0,
                d: kd.1,
            })
        }
    }

    impl RegionSource for Hdf5Source {
        fn len(&self) -> usize {
            self.index.len()
        }
        fn feature_dim(&self) -> usize {
            self.d
        }
        fn max_boxes(&self) -> usize {
            self.k
        }
        fn item_id(&self, i: usize) -> String {
            format!("{i}")
        }
        fn caption(&self, i: usize) -> String {
            let (s, r) = self.index[i];
            self.shards[s as usize].1[r as usize].clone()
        }
        fn num_frames(&self, i: usize) -> usize {
            let (s, r) = self.index[i];
            self.shards[s as usize].2[r as usize].1 as usize
        }
        fn read_frames(&self, i: usize, frames: &[usize]) -> Result<FrameBlock> {
            let (s, r) = self.index[i];
            let sh = &self.shards[s as usize];
            let (start, _) = sh.2[r as usize];
            let (lo, hi) = (*frames.iter().min().unwrap(), *frames.iter().max().unwrap());
            let reader = sh.0.lock().unwrap();
            let blk = reader.read_frames(start + lo as u64, hi - lo + 1)?;
            let (k, d) = (self.k, self.d);
            let mut out = FrameBlock::default();
            let mut feats = vec![];
            for &f in frames {
                let j = f - lo;
                feats.extend_from_slice(&blk.features[j * k * d..(j + 1) * k * d]);
                out.locations
                    .extend_from_slice(&blk.locations[j * k * LOC_DIM..(j + 1) * k * LOC_DIM]);
                out.num_boxes.push(blk.num_boxes[j]);
            }
            out.features = FeatureRows::F32(feats);
            Ok(out)
        }
    }

    fn run_case(c: &Case) -> Result<serde_json::Value> {
        let t_open = Instant::now();
        let src: Arc<dyn RegionSource> = match c.path.as_str() {
            "chunks" => Arc::new(ShardSource::open(&c.data)?),
            "hdf5" => Arc::new(Hdf5Source::open(&c.data)?),
            p => anyhow::bail!("path {p:?}: chunks or hdf5"),
        };
        let open_s = t_open.elapsed().as_secs_f64();
        let mix = Arc::new(Mixture::new(vec![src], true)?);
        let tok = Arc::new(TextTokenizer::from_file(&c.tokenizer, 32, true)?);
        let order = Arc::new(epoch_order(mix.len(), 7, 0, true));
        let spec = BatchSpec {
            frames: c.frames,
            sampling: FrameSampling::Random,
            seed: 7,
            epoch: 0,
        };
        let need = c.warmup + c.batches;
        anyhow::ensure!(
            need * c.batch <= order.len(),
            "{} items hold {} batches of {}, {need} asked",
            order.len(),
            order.len() / c.batch,
            c.batch
        );
        let loader = Loader::new(
            mix.clone(),
            tok.clone(),
            order.clone(),
            c.batch,
            false,
            0,
            spec,
            c.threads,
            2,
        );
        let mut t0 = Instant::now();
        let mut samples = 0usize;
        stats::enable(false);
        for (n, (_, hb)) in loader.take(need).enumerate() {
            let hb = hb?;
            if n + 1 == c.warmup {
                // Reader threads are ahead by their prefetch; steady state from here.
                t0 = Instant::now();
                stats::reset();
                stats::enable(c.profile);
            } else if n >= c.warmup {
                samples += hb.b;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        stats::enable(false);
        let st = stats::snapshot();
        // Tokenizing the same captions alone, for the breakdown.
        let t_tok = Instant::now();
        for b in c.warmup..need {
            let texts: Vec<String> = order[b * c.batch..(b + 1) * c.batch]
                .iter()
                .map(|&g| mix.caption(g))
                .collect();
            tokenize(&tok, &texts)?;
        }
        let tok_s = t_tok.elapsed().as_secs_f64();
        // Opening a shard is the one serial part left (HDF5 opens under its lock; the chunk
        // index walk is outside it): time it alone, files in the page cache.
        drop(mix);
        let mut opens = vec![];
        if c.profile && c.path == "chunks" {
            for p in list_shards(&c.data)? {
                let t = Instant::now();
                let r = ChunkReader::open(&p)?;
                opens.push(t.elapsed().as_secs_f64());
                drop(r);
            }
        }
        let open_shard_ms = 1e3 * opens.iter().sum::<f64>() / opens.len().max(1) as f64;
        Ok(serde_json::json!({
            "open_shard_ms": open_shard_ms,
            "path": c.path, "frames": c.frames, "threads": c.threads, "batch": c.batch,
            "samples": samples, "seconds": secs, "samples_per_s": samples as f64 / secs,
            "open_s": open_s, "tokenize_s": tok_s, "stats": st, "profile": c.profile,
            "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        }))
    }

    pub fn main() -> Result<()> {
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        match args.first().map(String::as_str) {
            Some("gen") => {
                let dir = PathBuf::from(args.get(1).context("gen DIR SPECS")?);
                let specs: Vec<SyntheticShard> =
                    serde_json::from_str(args.get(2).context("gen DIR SPECS")?)?;
                std::fs::create_dir_all(&dir)?;
                for s in &specs {
                    let p = s.write(&dir)?;
                    eprintln!("wrote {}", p.display());
                }
            }
            Some("run") => {
                let cases: Vec<Case> = serde_json::from_str(args.get(1).context("run CASES")?)?;
                for c in &cases {
                    println!("RESULT {}", run_case(c)?);
                }
            }
            _ => anyhow::bail!("usage: loader gen DIR SPECS | loader run CASES"),
        }
        Ok(())
    }
}

#[cfg(feature = "train")]
fn main() -> anyhow::Result<()> {
    bench::main()
}

#[cfg(not(feature = "train"))]
fn main() {
    eprintln!("the loader benchmark needs --features train");
}
