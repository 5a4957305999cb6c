//! `regionfeat inspect PATH --item ID --draw OUT.png --checkpoint CK` for grid items: the S
//! learned-region masks of a RegionLearner checkpoint over the item's frames (decoded again), as
//! in the paper's figure. One row per frame: the frame, then one cell per region where the
//! frame is dimmed outside the region (mask rescaled to [0, 1] per frame and region). The grid
//! covers the centered square the extractor saw (`shorter_then_center_crop`), so that square
//! is what is drawn.

use std::path::Path;

use serde::Serialize;

use super::draw::{decode_again, fit, grid_crop, Canvas, PAD, PALETTE, TEXT};
use super::font::{self, GLYPH_H};
use super::item::read_item;
use super::{locate, png};
use crate::decode::RgbFrame;
use crate::shard::ModelKind;

/// Learned-region masks of one item: `masks [F, S, Hg, Wg]` row-major.
#[derive(Debug, Clone)]
pub struct RegionMasks {
    /// Regions S.
    pub regions: usize,
    /// Grid (Hg, Wg).
    pub grid: (usize, usize),
    /// `[F, S, Hg, Wg]`.
    pub masks: Vec<f32>,
}

/// What was drawn.
#[derive(Debug, Clone, Serialize)]
pub struct MaskReport {
    /// PNG written.
    pub path: String,
    /// Item id.
    pub item: String,
    /// Sheet size.
    pub width: u32,
    /// Sheet size.
    pub height: u32,
    /// Frames drawn.
    pub frames: usize,
    /// Regions per frame.
    pub regions: usize,
    /// Per frame and region: the share of the mask's mass (after rescaling) in each grid cell,
    /// `[F][S][Hg*Wg]`, what the overlays show.
    pub normalized: Vec<Vec<Vec<f32>>>,
}

/// The square of a frame the grid model saw ([`grid_crop`]).
fn center_square(f: &RgbFrame) -> RgbFrame {
    let (x0, y0, side) = grid_crop(f.width, f.height);
    let (x0, y0, side) = (x0 as u32, y0 as u32, side as u32);
    let mut rgb = Vec::with_capacity(side as usize * side as usize * 3);
    for y in y0..y0 + side {
        let row = (y as usize * f.width as usize + x0 as usize) * 3;
        rgb.extend_from_slice(&f.rgb[row..row + side as usize * 3]);
    }
    RgbFrame {
        time: f.time,
        frame_time: f.frame_time,
        width: side,
        height: side,
        rgb,
        scale: f.scale,
    }
}

/// Rescales one mask to [0, 1] (a constant mask becomes all ones).
fn unit(m: &[f32]) -> Vec<f32> {
    let lo = m.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = m.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if hi - lo <= 1e-12 {
        vec![1.0; m.len()]
    } else {
        m.iter().map(|x| (x - lo) / (hi - lo)).collect()
    }
}

/// Computes the masks of a grid item from its patch rows.
pub type MaskFn<'a> = &'a dyn Fn(&[f32], usize, (usize, usize)) -> anyhow::Result<RegionMasks>;

/// Draws the learned-region masks of grid item `id` of the shards under `path` into `out`:
/// reads the item's patch rows, asks `masks_of` (a RegionLearner checkpoint, see
/// `train::masks`) for the masks, decodes the frames again and renders the sheet.
pub fn draw_item_masks(
    path: &Path,
    id: &str,
    out: &Path,
    cell: u32,
    root: Option<&Path>,
    masks_of: MaskFn,
) -> anyhow::Result<MaskReport> {
    let l = locate(path, id)?;
    l.reader.expect_kind(ModelKind::Grid)?;
    let item = read_item(&l.reader, l.row)?;
    let (start, n) = l.reader.frame_ranges()?[l.row];
    let grid = l.reader.grid_hw()?;
    let rows = l
        .reader
        .read_grid_rows(start as usize..start as usize + n as usize)?;
    let masks = masks_of(&rows, n as usize, grid)?;
    let (_, frames) = decode_again(&item, root)?;
    draw_region_masks(&item.id, &item.caption, &frames, &masks, cell, out)
}

/// Renders the sheet and writes it to `out`.
pub fn draw_region_masks(
    item: &str,
    caption: &str,
    frames: &[RgbFrame],
    masks: &RegionMasks,
    cell: u32,
    out: &std::path::Path,
) -> anyhow::Result<MaskReport> {
    let (s, (gh, gw)) = (masks.regions, masks.grid);
    let per_frame = s * gh * gw;
    anyhow::ensure!(
        masks.masks.len() == frames.len() * per_frame,
        "{} mask values for {} frames x {s} regions x {gh}x{gw}",
        masks.masks.len(),
        frames.len()
    );
    let cell = cell.max(16);
    let cols = (s + 1) as u32;
    let width = cols * cell + (cols + 1) * PAD;
    let grid_y = PAD + 2 * GLYPH_H + 4 + GLYPH_H + PAD;
    let row_h = GLYPH_H + 4 + cell + PAD;
    let height = grid_y + frames.len() as u32 * row_h;
    let mut c = Canvas::new(width, height);
    let max_chars = ((width - 2 * PAD) / font::ADVANCE) as usize;
    c.text(
        &fit(
            &format!("{item}  learned regions (S = {s}, grid {gh}x{gw})"),
            max_chars,
        ),
        PAD as i64,
        PAD as i64,
        1,
        TEXT,
    );
    c.text(
        &fit(caption, max_chars),
        PAD as i64,
        (PAD + GLYPH_H + 4) as i64,
        1,
        TEXT,
    );
    let mut normalized = vec![];
    for (f, frame) in frames.iter().enumerate() {
        let sq = center_square(frame);
        let y = grid_y + f as u32 * row_h;
        let oy = y + GLYPH_H + 4;
        c.text(
            &format!("#{f} t={:.2}s", frame.time),
            PAD as i64,
            y as i64,
            1,
            TEXT,
        );
        c.paste_scaled(&sq, (PAD, oy), (cell, cell));
        // The frame once, scaled, as the base of every region cell.
        let base: Vec<[u8; 3]> = {
            let mut tmp = Canvas::new(cell, cell);
            tmp.paste_scaled(&sq, (0, 0), (cell, cell));
            tmp.rgb
                .chunks_exact(3)
                .map(|p| [p[0], p[1], p[2]])
                .collect()
        };
        let mut per_region = vec![];
        for r in 0..s {
            let off = f * per_frame + r * gh * gw;
            let m = unit(&masks.masks[off..off + gh * gw]);
            let ox = PAD + (r as u32 + 1) * (cell + PAD);
            c.text(
                &format!("region {r}"),
                ox as i64,
                y as i64,
                1,
                PALETTE[r % PALETTE.len()],
            );
            for py in 0..cell {
                let gy = (py as usize * gh / cell as usize).min(gh - 1);
                for px in 0..cell {
                    let gx = (px as usize * gw / cell as usize).min(gw - 1);
                    let a = 0.15 + 0.85 * m[gy * gw + gx];
                    let p = base[(py * cell + px) as usize];
                    c.put(
                        (ox + px) as i64,
                        (oy + py) as i64,
                        p.map(|v| (v as f32 * a).round() as u8),
                    );
                }
            }
            c.rect(
                ox as i64,
                oy as i64,
                (ox + cell - 1) as i64,
                (oy + cell - 1) as i64,
                PALETTE[r % PALETTE.len()],
            );
            per_region.push(m);
        }
        normalized.push(per_region);
    }
    let png = png::encode_rgb(c.w, c.h, &c.rgb);
    std::fs::write(out, png).map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    Ok(MaskReport {
        path: out.display().to_string(),
        item: item.to_string(),
        width,
        height,
        frames: frames.len(),
        regions: s,
        normalized,
    })
}
