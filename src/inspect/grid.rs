//! Grid shards (`schemas/shard-v2.md`) in `inspect`: an item's frames (no boxes, the mean
//! cell norm instead) and the value checks of `--validate`.

use super::item::{item_with_frames, FrameDetail, ItemDetail};
use super::validate::{non_finite, Ctx};
use super::BLOCK_ROWS;
use crate::shard::{ShardError, ShardReader};

/// Mean L2 norm of the `d`-wide cells of `grid`.
fn mean_cell_norm(grid: &[f32], d: usize) -> f32 {
    let cells = grid.len() / d.max(1);
    let sum: f64 = grid
        .chunks_exact(d)
        .map(|c| {
            c.iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
                .sqrt()
        })
        .sum();
    (sum / cells.max(1) as f64) as f32
}

/// Item `row` of a grid shard.
pub(super) fn read_grid_item(r: &ShardReader, row: usize) -> anyhow::Result<ItemDetail> {
    let d = r.feature_dim()?;
    let (start, n) = r.frame_ranges()?[row];
    let rows = start as usize..start as usize + n as usize;
    let (ts, fts) = r.read_times(rows.clone())?;
    let grid = r.read_grid_rows(rows)?;
    let per_frame = grid.len() / (n as usize).max(1);
    let frames = (0..n as usize)
        .map(|f| FrameDetail {
            index: f,
            row: start + f as u64,
            timestamp: ts[f],
            frame_time: fts[f],
            num_boxes: 0,
            boxes: Vec::new(),
            grid_mean_norm: Some(mean_cell_norm(&grid[f * per_frame..(f + 1) * per_frame], d)),
        })
        .collect();
    item_with_frames(r, row, frames)
}

/// Value checks of a grid shard's frame rows: finite times and finite grid values (the frame
/// ranges and `frame_item` are checked for every kind of shard by the caller).
pub(super) fn check_grid_rows(
    r: &ShardReader,
    ctx: &mut Ctx,
    owner: &[Option<(usize, usize)>],
) -> Result<(), ShardError> {
    let d = r.feature_dim()?;
    let (h, w) = r.grid_hw()?;
    let per_frame = h * w * d;
    let t = owner.len();
    let mut start = 0usize;
    while start < t {
        let count = BLOCK_ROWS.min(t - start);
        let grid = r.read_grid_rows(start..start + count)?;
        let (ts, fts) = r.read_times(start..start + count)?;
        for f in 0..count {
            let row = start + f;
            let (item, fi) = match owner[row] {
                Some((i, fi)) => (Some(i), Some(fi)),
                None => (None, None),
            };
            let mut add = |check: &str, msg: String| ctx.add(item, fi, Some(row), check, msg);
            let cells = &grid[f * per_frame..(f + 1) * per_frame];
            if let Some((cell, col, val, count)) = non_finite(cells, d) {
                add(
                    "non-finite",
                    format!(
                        "grid_features: {count} non-finite value(s), first {val} at cell {cell} \
                         (y {}, x {}) column {col}",
                        cell / w,
                        cell % w
                    ),
                );
            }
            for (name, v) in [("timestamps", ts[f]), ("frame_times", fts[f])] {
                if !v.is_finite() {
                    add("non-finite", format!("{name} = {v}"));
                }
            }
        }
        start += count;
    }
    Ok(())
}
