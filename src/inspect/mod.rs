//! `regionfeat inspect` and `regionfeat export`: see, check and hand over what is inside the
//! shards. Everything here reads shards through [`crate::shard::ShardReader`] only (no dataset
//! names outside `src/shard/`).
//!
//! - [`summarize`]: counts, histograms, class frequencies, statistics, provenance;
//! - [`item_detail`]: one item frame by frame, box by box;
//! - [`validate`]: schema conformance and value checks, each problem named by item and frame;
//! - [`draw_item`]: a contact sheet of an item's frames (decoded again) with its boxes;
//! - [`draw_hits`]: a contact sheet of search hits, one frame of each with its boxes;
//! - [`draw_region_masks`]: a grid item's learned-region masks (RegionLearner checkpoint);
//! - [`export`]: per-frame DemoVLP/MILVLG `.npz` files or bottom-up-attention TSV rows.

mod draw;
mod draw_hits;
mod draw_masks;
mod export;
mod font;
mod grid;
mod item;
mod npy;
mod png;
mod summary;
mod validate;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::shard::ShardReader;

pub use draw::{draw_item, DrawOptions, DrawReport, DrawnFrame};
pub use draw_hits::{draw_hits, SheetHit, SheetReport, SheetTile};
pub use draw_masks::{draw_item_masks, draw_region_masks, MaskFn, MaskReport, RegionMasks};
pub use export::{export, ExportFormat, ExportSummary};
pub use item::{item_detail, BoxDetail, FrameDetail, ItemDetail};
pub use summary::{summarize, ClassCount, Histogram, ShardSummary, Stats, Summary};
pub use validate::{check_shard, validate, Problem, ShardCheck, Validation};

/// The shard files named by `path`: the file itself, or every committed `shard-*.h5` of an
/// output directory, in name order.
pub fn shard_paths(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        bail!("{}: no such shard file or directory", path.display());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "h5")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shard-"))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        bail!("{}: no shard-*.h5 file in this directory", path.display());
    }
    Ok(out)
}

/// The done-record next to a shard (`shard-NNNNNN.done.json`), if the shard has the standard name.
fn done_record_path(shard: &Path) -> Option<PathBuf> {
    let name = shard.file_name()?.to_str()?;
    let stem = name.strip_suffix(".h5")?;
    Some(shard.with_file_name(format!("{stem}.done.json")))
}

/// Display name of a shard in messages: its file name.
fn shard_name(shard: &Path) -> String {
    shard
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| shard.display().to_string())
}

/// An item located in a shard.
struct Located {
    reader: ShardReader,
    row: usize,
}

/// Finds item `id` in the shards under `path`.
fn locate(path: &Path, id: &str) -> anyhow::Result<Located> {
    for p in shard_paths(path)? {
        let reader = ShardReader::open(&p)?;
        if let Some(row) = reader.item_ids()?.iter().position(|x| x == id) {
            return Ok(Located { reader, row });
        }
    }
    bail!("item {id:?} is in no shard under {}", path.display())
}

/// Frame rows read per block while scanning a shard (bounds memory: 64 × K × D floats).
const BLOCK_ROWS: usize = 64;
