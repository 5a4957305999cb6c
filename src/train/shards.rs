//! [`RegionSource`] over regionfeat shards (`schemas/shard-v1.md`, `schemas/shard-v2.md`: region
//! shards, and grid shards whose frames are `Hg·Wg` patch rows) through
//! [`crate::shard::ShardReader`] (checks) and a [`ChunkReader`] per shard (frame rows, inflated
//! on the reader threads outside the HDF5 lock).
//!
//! Built for WebVid2.5M + CC3M scale (5.8M items in thousands of shards): the item tables (ids,
//! every caption, frame ranges) are packed into a few flat arrays (about 20 bytes per item plus
//! the text), `index.jsonl` is streamed line by line, and shard files are opened only when a
//! batch reads them, through a bounded least-recently-used [`ShardCache`]
//! (`data.max_open_shards`). The first shard is opened at start to learn the dataset's kind and
//! sizes; every other shard is checked against them when first opened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::shard::{ChunkReader, ModelKind, ShardReader};
use crate::train::data::{FrameBlock, RegionSource, LOC_DIM};
use crate::train::shard_cache::{ShardCache, DEFAULT_MAX_OPEN};

/// How a [`ShardSource`] holds its shards open.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// Shard files held open at most (least recently used closed first).
    pub max_open_shards: usize,
}

impl Default for ShardOptions {
    fn default() -> Self {
        Self {
            max_open_shards: DEFAULT_MAX_OPEN,
        }
    }
}

/// What all shards of a source must agree on: (feature_dim, rows per frame, grid).
type Dims = (usize, usize, Option<(usize, usize)>);

/// Item tables, packed. Each item's record in `text` is: LEB128 id length, id bytes, LEB128
/// caption count, then per caption a LEB128 length and its bytes (UTF-8, checked on insert).
#[derive(Default)]
struct Tables {
    text: Vec<u8>,
    /// End of item i's record in `text` (its start is the previous end).
    text_end: Vec<u64>,
    shard: Vec<u32>,
    frame_start: Vec<u32>,
    num_frames: Vec<u32>,
}

fn put_len(v: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            v.push(b);
            return;
        }
        v.push(b | 0x80);
    }
}

fn get_len(v: &[u8], pos: &mut usize) -> usize {
    let (mut n, mut shift) = (0usize, 0);
    while let Some(&b) = v.get(*pos) {
        *pos += 1;
        n |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    n
}

fn get_str<'a>(v: &'a [u8], pos: &mut usize) -> &'a str {
    let n = get_len(v, pos);
    let s = v.get(*pos..*pos + n).unwrap_or_default();
    *pos += n;
    // Only valid UTF-8 goes in (it comes from `&str`).
    std::str::from_utf8(s).unwrap_or_default()
}

impl Tables {
    fn push(
        &mut self,
        id: &str,
        captions: &[&str],
        shard: u32,
        frame_start: u64,
        num_frames: u32,
    ) -> Result<()> {
        let start = u32::try_from(frame_start).with_context(|| {
            format!("item {id}: frame_start {frame_start} does not fit in 32 bits")
        })?;
        put_len(&mut self.text, id.len());
        self.text.extend_from_slice(id.as_bytes());
        put_len(&mut self.text, captions.len());
        for c in captions {
            put_len(&mut self.text, c.len());
            self.text.extend_from_slice(c.as_bytes());
        }
        self.text_end.push(self.text.len() as u64);
        self.shard.push(shard);
        self.frame_start.push(start);
        self.num_frames.push(num_frames);
        Ok(())
    }
    fn len(&self) -> usize {
        self.text_end.len()
    }
    fn record(&self, i: usize) -> &[u8] {
        let lo = if i == 0 {
            0
        } else {
            self.text_end[i - 1] as usize
        };
        &self.text[lo..self.text_end[i] as usize]
    }
    fn id(&self, i: usize) -> &str {
        get_str(self.record(i), &mut 0)
    }
    /// Captions of item i, first first.
    fn captions(&self, i: usize) -> impl Iterator<Item = &str> {
        let r = self.record(i);
        let mut pos = 0;
        get_str(r, &mut pos);
        let n = get_len(r, &mut pos);
        (0..n).map(move |_| get_str(r, &mut pos))
    }
    fn shrink(&mut self) {
        self.text.shrink_to_fit();
        self.text_end.shrink_to_fit();
        self.shard.shrink_to_fit();
        self.frame_start.shrink_to_fit();
        self.num_frames.shrink_to_fit();
    }
    /// Resident bytes of the tables.
    fn bytes(&self) -> usize {
        self.text.capacity()
            + self.text_end.capacity() * 8
            + (self.shard.capacity() + self.frame_start.capacity() + self.num_frames.capacity()) * 4
    }
}

/// All shards of one output directory (sorted by file name, or in the order of its
/// `index.jsonl`), or a single shard file.
pub struct ShardSource {
    tables: Tables,
    cache: ShardCache<ChunkReader>,
    feature_dim: usize,
    max_boxes: usize,
    grid_hw: Option<(usize, usize)>,
}

/// `shard-*.h5` files of a directory, sorted; a file path is returned as is.
pub fn list_shards(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list shards in {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shard-") && n.ends_with(".h5"))
        })
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("no shard-*.h5 files in {}", path.display());
    }
    Ok(v)
}

/// Kind and sizes of an open shard.
fn dims_of(r: &ShardReader) -> Result<Dims> {
    Ok(match r.model_kind()? {
        ModelKind::Regions => (r.feature_dim()?, r.max_boxes()?, None),
        ModelKind::Grid => {
            let (h, w) = r.grid_hw()?;
            (r.feature_dim()?, h * w, Some((h, w)))
        }
    })
}

/// Fails unless a shard's kind and sizes are the dataset's.
fn check_dims(p: &Path, got: Dims, want: Dims) -> Result<()> {
    let ((d, k, grid), (d0, k0, g0)) = (got, want);
    ensure!(
        g0.is_some() == grid.is_some(),
        "{}: a {} shard among {} shards (one dataset holds one kind)",
        p.display(),
        crate::train::data::kind_name(grid),
        crate::train::data::kind_name(g0)
    );
    ensure!(
        d0 == d && k0 == k && g0 == grid,
        "{}: feature_dim/rows per frame {d}/{k} differ from the other shards ({d0}/{k0})",
        p.display()
    );
    Ok(())
}

/// Opens a shard for the cache, checking it against the dataset.
/// Checks a shard against the dataset's sizes, then opens its frame-row reader.
fn open_checked(p: &Path, want: Dims) -> Result<ChunkReader> {
    let r = ShardReader::open(p)?;
    check_dims(p, dims_of(&r)?, want)?;
    drop(r);
    Ok(ChunkReader::open(p)?)
}

impl ShardSource {
    /// Opens an extraction output directory through its `index.jsonl` (manifest order; built by
    /// `regionfeat extract` once every shard is committed, or `regionfeat index`), else every
    /// `shard-*.h5` under `path` (or the one shard file given), with default options.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &ShardOptions::default())
    }

    /// [`ShardSource::open`] with options.
    pub fn open_with(path: &Path, opts: &ShardOptions) -> Result<Self> {
        ensure!(opts.max_open_shards >= 1, "max_open_shards must be ≥ 1");
        if path.is_dir() && path.join(crate::job::index::FILE_NAME).is_file() {
            return Self::open_index(path, opts);
        }
        Self::open_shards(path, opts)
    }

    /// Streams `index.jsonl` into the tables; of the shards it lists only the first is opened
    /// (for the dataset's kind and sizes), the others when a batch first reads them.
    fn open_index(dir: &Path, opts: &ShardOptions) -> Result<Self> {
        let index_path = dir.join(crate::job::index::FILE_NAME);
        let mut by_name: HashMap<String, u32> = HashMap::new();
        let mut paths: Vec<PathBuf> = vec![];
        let mut t = Tables::default();
        let mut bad: Option<anyhow::Error> = None;
        crate::job::index::visit(dir, |e| {
            let s = match by_name.get(&e.shard) {
                Some(&s) => s,
                None => {
                    let s = paths.len() as u32;
                    paths.push(dir.join(&e.shard));
                    by_name.insert(e.shard.clone(), s);
                    s
                }
            };
            let caps: Vec<&str> = if !e.captions.is_empty() {
                e.captions.iter().map(String::as_str).collect()
            } else if e.caption.is_empty() {
                vec![]
            } else {
                vec![e.caption.as_str()]
            };
            t.push(&e.id, &caps, s, e.frame_start, e.num_frames)
                .map_err(|err| {
                    let msg = format!("{err:#}");
                    bad = Some(err);
                    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
                })
        })
        .map_err(|e| bad.take().unwrap_or_else(|| e.into()))
        .with_context(|| format!("reading {}", index_path.display()))?;
        ensure!(t.len() > 0, "{} lists no item", index_path.display());
        ensure!(
            t.len() <= u32::MAX as usize,
            "{}: {} items, at most 2^32 per dataset",
            index_path.display(),
            t.len()
        );
        if let Some(p) = paths.iter().find(|p| !p.is_file()) {
            bail!(
                "{} names {}, which does not exist",
                index_path.display(),
                p.display()
            );
        }
        t.shrink();
        let first_path = paths[0].clone();
        let dims = dims_of(&ShardReader::open(&first_path)?)?;
        let cache = ShardCache::new(paths, opts.max_open_shards, move |_, p| {
            open_checked(p, dims)
        });
        cache.insert(0, ChunkReader::open(&first_path)?);
        Ok(Self::from_parts(t, cache, dims))
    }

    /// Reads the item tables of every shard (one open at a time, each checked against the
    /// first); frame rows are read later through the cache.
    fn open_shards(path: &Path, opts: &ShardOptions) -> Result<Self> {
        let paths = list_shards(path)?;
        let mut t = Tables::default();
        let mut dims: Option<Dims> = None;
        for (s, p) in paths.iter().enumerate() {
            let r = ShardReader::open(p)?;
            let got = dims_of(&r)?;
            match dims {
                None => dims = Some(got),
                Some(want) => check_dims(p, got, want)?,
            }
            let ids = r.item_ids()?;
            let captions = r.all_captions()?;
            let ranges = r.frame_ranges()?;
            for ((id, caps), (start, nf)) in ids.iter().zip(&captions).zip(ranges) {
                let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
                t.push(id, &caps, s as u32, start, nf)
                    .with_context(|| p.display().to_string())?;
            }
        }
        let dims = dims.context("no shards")?;
        t.shrink();
        let cache = ShardCache::new(paths, opts.max_open_shards, move |_, p| {
            open_checked(p, dims)
        });
        Ok(Self::from_parts(t, cache, dims))
    }

    fn from_parts(tables: Tables, cache: ShardCache<ChunkReader>, dims: Dims) -> Self {
        let (feature_dim, max_boxes, grid_hw) = dims;
        Self {
            tables,
            cache,
            feature_dim,
            max_boxes,
            grid_hw,
        }
    }

    /// Shard files of the source.
    pub fn num_shards(&self) -> usize {
        self.cache.paths().len()
    }

    /// Shard files held open now, and opened so far.
    pub fn open_stats(&self) -> (usize, u64) {
        (self.cache.open_now(), self.cache.opens())
    }

    /// Resident bytes of the item tables.
    pub fn table_bytes(&self) -> usize {
        self.tables.bytes()
    }
}

impl RegionSource for ShardSource {
    fn len(&self) -> usize {
        self.tables.len()
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
        self.tables.id(i).to_string()
    }
    fn caption(&self, i: usize) -> String {
        self.tables
            .captions(i)
            .next()
            .unwrap_or_default()
            .to_string()
    }
    fn has_caption(&self, i: usize) -> bool {
        self.tables
            .captions(i)
            .next()
            .is_some_and(|c| !c.trim().is_empty())
    }
    fn captions(&self, i: usize) -> Vec<String> {
        self.tables.captions(i).map(str::to_string).collect()
    }
    fn num_frames(&self, i: usize) -> usize {
        self.tables.num_frames[i] as usize
    }
    fn shard_of(&self, i: usize) -> usize {
        self.tables.shard[i] as usize
    }
    fn read_frames(&self, i: usize, frames: &[usize]) -> Result<FrameBlock> {
        let (start, count) = (self.tables.frame_start[i] as u64, self.tables.num_frames[i]);
        if let Some(&hi) = frames.iter().max() {
            ensure!(
                hi < count as usize,
                "frame {hi} of item {} out of range",
                self.tables.id(i)
            );
        }
        let reader = self.cache.get(self.shard_of(i))?;
        let rows: Vec<u64> = frames.iter().map(|&f| start + f as u64).collect();
        let got = reader.read_rows(&rows)?;
        let locations = if self.grid_hw.is_some() {
            // Grid rows have no boxes: the trainer ignores locations.
            vec![0.0; frames.len() * self.max_boxes * LOC_DIM]
        } else {
            got.locations
        };
        Ok(FrameBlock {
            features: got.features,
            locations,
            num_boxes: got.num_boxes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_tables_round_trip_ids_and_captions() {
        let mut t = Tables::default();
        let long = "x".repeat(300);
        t.push("a", &["one", "two"], 0, 5, 3).unwrap();
        t.push("", &[], 1, 0, 1).unwrap();
        t.push("ü-id", &[long.as_str(), "", "ç"], 7, 1 << 31, 9)
            .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.id(0), "a");
        assert_eq!(t.captions(0).collect::<Vec<_>>(), ["one", "two"]);
        assert_eq!(t.id(1), "");
        assert_eq!(t.captions(1).count(), 0);
        assert_eq!(t.id(2), "ü-id");
        assert_eq!(t.captions(2).collect::<Vec<_>>(), [long.as_str(), "", "ç"]);
        assert_eq!(
            (t.shard[2], t.frame_start[2], t.num_frames[2]),
            (7, 1 << 31, 9)
        );
        let e = t.push("big", &[], 0, 1 << 40, 1).unwrap_err();
        assert!(format!("{e:#}").contains("item big"), "{e:#}");
    }

    fn synth(dir: &Path, items: usize, shards: usize) {
        crate::train::synth_index::write(
            dir,
            &crate::train::synth_index::SynthIndexSpec::new(items, shards),
        )
        .unwrap();
    }

    #[test]
    fn index_tables_match_the_index_and_shards_open_lazily_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        synth(dir.path(), 600, 30);
        let src = ShardSource::open_with(dir.path(), &ShardOptions { max_open_shards: 4 }).unwrap();
        assert_eq!(src.len(), 600);
        assert_eq!(src.num_shards(), 30);
        // Only the first shard is open after start.
        assert_eq!(src.open_stats(), (1, 0));
        let want = crate::job::index::read(dir.path()).unwrap();
        for (i, e) in want.iter().enumerate() {
            assert_eq!(src.item_id(i), e.id);
            assert_eq!(src.captions(i), e.all_captions());
            assert_eq!(src.caption(i), e.caption);
            assert_eq!(src.num_frames(i), e.num_frames as usize);
            assert_eq!(src.shard_of(i), e.shard[6..12].parse::<usize>().unwrap());
        }
        assert!(src.captions(0).len() == 3 && src.captions(1).len() == 1);
        // Reading in a shuffled order touches every shard, never more than 4 open at once.
        let order = crate::train::data::epoch_order(600, 3, 0, true);
        let direct = ShardReader::open(&dir.path().join("shard-000007.h5")).unwrap();
        for &i in &order {
            let blk = src.read_frames(i, &[1]).unwrap();
            assert_eq!(blk.num_boxes, [4]);
            assert!(src.open_stats().0 <= 4);
            if src.shard_of(i) == 7 {
                let e = &want[i];
                let rows = direct.read_frames(e.frame_start + 1, 1).unwrap();
                assert_eq!(blk.features.to_f32(), rows.features);
            }
        }
        assert!(src.open_stats().1 >= 30, "{:?}", src.open_stats());
        assert!(format!("{:#}", src.read_frames(0, &[2]).unwrap_err()).contains("out of range"));
    }

    #[test]
    fn an_inconsistent_or_missing_shard_is_named_on_first_open() {
        let dir = tempfile::tempdir().unwrap();
        synth(dir.path(), 40, 4);
        // Shard 2 rewritten with another feature size: start-up succeeds (lazy), its first
        // read fails with its path and both sizes.
        let other = tempfile::tempdir().unwrap();
        let mut rng = crate::train::data::Rng::new(0, &[]);
        crate::train::synth_index::write_shard(other.path(), 2, 2, 8, &mut rng).unwrap();
        std::fs::copy(
            other.path().join("shard-000002.h5"),
            dir.path().join("shard-000002.h5"),
        )
        .unwrap();
        let src = ShardSource::open(dir.path()).unwrap();
        let i = (0..40).find(|&i| src.shard_of(i) == 2).unwrap();
        src.read_frames(0, &[0]).unwrap();
        let e = format!("{:#}", src.read_frames(i, &[0]).unwrap_err());
        assert!(
            e.contains("shard-000002.h5") && e.contains("8/4") && e.contains("16/4"),
            "{e}"
        );
        // Without the index the shards are read eagerly and the same shard fails at start.
        std::fs::rename(dir.path().join("index.jsonl"), dir.path().join("x")).unwrap();
        let e = format!("{:#}", ShardSource::open(dir.path()).err().unwrap());
        assert!(e.contains("shard-000002.h5"), "{e}");
        std::fs::rename(dir.path().join("x"), dir.path().join("index.jsonl")).unwrap();
        std::fs::remove_file(dir.path().join("shard-000003.h5")).unwrap();
        let e = format!("{:#}", ShardSource::open(dir.path()).err().unwrap());
        assert!(
            e.contains("shard-000003.h5") && e.contains("does not exist"),
            "{e}"
        );
        // A bad line names its number.
        std::fs::write(dir.path().join("index.jsonl"), "{\"id\": 1}\n").unwrap();
        let e = format!("{:#}", ShardSource::open(dir.path()).err().unwrap());
        assert!(e.contains("line 1"), "{e}");
    }
}
