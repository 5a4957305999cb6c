//! [`RegionSource`] over regionfeat shards (`schemas/shard-v1.md`, `schemas/shard-v2.md`: region
//! shards, and grid shards whose frames are `Hg·Wg` patch rows). Shards are checked with
//! [`crate::shard::ShardReader`]; frame rows are read through a [`ChunkReader`] per shard
//! (inflated on the reader threads, outside the HDF5 lock). Only the small item tables (ids,
//! captions, frame ranges) are held in memory; frame rows are read when a batch needs them.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::shard::{ChunkReader, ModelKind, ShardReader};
use crate::train::data::{FrameBlock, RegionSource, LOC_DIM};

struct Shard {
    /// Frame rows (features, locations, num_boxes); shared by the reader threads.
    reader: ChunkReader,
    ids: Vec<String>,
    /// All captions per item (the first is the item's caption).
    captions: Vec<Vec<String>>,
    ranges: Vec<(u64, u32)>,
}

/// All shards of one output directory (sorted by file name), or a single shard file.
pub struct ShardSource {
    shards: Vec<Shard>,
    /// Global item → (shard, row).
    index: Vec<(u32, u32)>,
    feature_dim: usize,
    max_boxes: usize,
    grid_hw: Option<(usize, usize)>,
}

/// What all shards of a source must agree on: (feature_dim, rows per frame, grid).
type Dims = (usize, usize, Option<(usize, usize)>);

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

/// Opens a shard and checks that its kind and sizes match the shards before it.
fn open_consistent(p: &Path, dims: &mut Option<Dims>) -> Result<ShardReader> {
    let r = ShardReader::open(p)?;
    let (d, k, grid) = match r.model_kind()? {
        ModelKind::Regions => (r.feature_dim()?, r.max_boxes()?, None),
        ModelKind::Grid => {
            let (h, w) = r.grid_hw()?;
            (r.feature_dim()?, h * w, Some((h, w)))
        }
    };
    match *dims {
        None => *dims = Some((d, k, grid)),
        Some((d0, k0, g0)) => {
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
            )
        }
    }
    Ok(r)
}

impl ShardSource {
    /// Opens an extraction output directory through its `index.jsonl` (manifest order; built by
    /// `regionfeat extract` once every shard is committed, or `regionfeat index`), else every
    /// `shard-*.h5` under `path` (or the one shard file given).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() && path.join("index.jsonl").is_file() {
            return Self::open_index(path);
        }
        Self::open_shards(path)
    }

    /// Opens the shards listed by `index.jsonl`: item tables come from the index, so only the
    /// shards' attributes are read here.
    fn open_index(dir: &Path) -> Result<Self> {
        let entries = crate::job::index::read(dir)
            .with_context(|| format!("reading {}", dir.join("index.jsonl").display()))?;
        ensure!(
            !entries.is_empty(),
            "{} lists no item",
            dir.join("index.jsonl").display()
        );
        let mut by_name: std::collections::HashMap<String, usize> = Default::default();
        let mut shards: Vec<Shard> = vec![];
        let mut index = vec![];
        let mut dims: Option<Dims> = None;
        for e in entries {
            let s = match by_name.get(&e.shard) {
                Some(&s) => s,
                None => {
                    let p = dir.join(&e.shard);
                    open_consistent(&p, &mut dims)?;
                    shards.push(Shard {
                        reader: ChunkReader::open(&p)?,
                        ids: vec![],
                        captions: vec![],
                        ranges: vec![],
                    });
                    by_name.insert(e.shard.clone(), shards.len() - 1);
                    shards.len() - 1
                }
            };
            let sh = &mut shards[s];
            index.push((s as u32, sh.ids.len() as u32));
            sh.captions.push(e.all_captions());
            sh.ids.push(e.id);
            sh.ranges.push((e.frame_start, e.num_frames));
        }
        let (feature_dim, max_boxes, grid_hw) = dims.context("no shards")?;
        Ok(Self {
            shards,
            index,
            feature_dim,
            max_boxes,
            grid_hw,
        })
    }

    fn open_shards(path: &Path) -> Result<Self> {
        let mut shards = vec![];
        let mut index = vec![];
        let mut dims: Option<Dims> = None;
        for (s, p) in list_shards(path)?.into_iter().enumerate() {
            let r = open_consistent(&p, &mut dims)?;
            let ids = r.item_ids()?;
            let captions = r.all_captions()?;
            let ranges = r.frame_ranges()?;
            for i in 0..ids.len() {
                index.push((s as u32, i as u32));
            }
            shards.push(Shard {
                reader: ChunkReader::open(&p)?,
                ids,
                captions,
                ranges,
            });
        }
        let (feature_dim, max_boxes, grid_hw) = dims.context("no shards")?;
        Ok(Self {
            shards,
            index,
            feature_dim,
            max_boxes,
            grid_hw,
        })
    }

    fn at(&self, i: usize) -> (&Shard, usize) {
        let (s, r) = self.index[i];
        (&self.shards[s as usize], r as usize)
    }
}

impl RegionSource for ShardSource {
    fn len(&self) -> usize {
        self.index.len()
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
        let (s, r) = self.at(i);
        s.ids[r].clone()
    }
    fn caption(&self, i: usize) -> String {
        let (s, r) = self.at(i);
        s.captions[r].first().cloned().unwrap_or_default()
    }
    fn captions(&self, i: usize) -> Vec<String> {
        let (s, r) = self.at(i);
        s.captions[r].clone()
    }
    fn num_frames(&self, i: usize) -> usize {
        let (s, r) = self.at(i);
        s.ranges[r].1 as usize
    }
    fn read_frames(&self, i: usize, frames: &[usize]) -> Result<FrameBlock> {
        let (s, r) = self.at(i);
        let (start, count) = s.ranges[r];
        if let Some(&hi) = frames.iter().max() {
            ensure!(
                hi < count as usize,
                "frame {hi} of item {} out of range",
                s.ids[r]
            );
        }
        let rows: Vec<u64> = frames.iter().map(|&f| start + f as u64).collect();
        // Shards are checked for agreement at open; a reader opened later must agree too.
        ensure!(
            s.reader.rows_per_frame() == self.max_boxes
                && s.reader.feature_dim() == self.feature_dim,
            "{}: rows per frame/feature_dim {}/{} differ from the other shards ({}/{})",
            s.reader.path().display(),
            s.reader.rows_per_frame(),
            s.reader.feature_dim(),
            self.max_boxes,
            self.feature_dim
        );
        let got = s.reader.read_rows(&rows)?;
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
