//! `regionfeat search ... --draw SHEET.png`: a contact sheet of search hits, one tile per hit.
//! A tile is the hit's rank, score, id and caption over one frame of the item (the middle one),
//! decoded again from the source path recorded in the shard, with its stored boxes (or, for a
//! grid shard, the grid the model saw). A hit whose item or media cannot be found gets a
//! placeholder tile stating why, so one moved file does not lose the whole sheet.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;

use super::draw::{decode_again, draw_boxes, draw_grid, fit, Canvas, DrawOptions, PAD, TEXT};
use super::font::{self, GLYPH_H};
use super::item::{read_item, ItemDetail};
use super::{locate, png};
use crate::decode::RgbFrame;

/// One hit to draw.
#[derive(Debug, Clone)]
pub struct SheetHit {
    /// 1-based rank.
    pub rank: usize,
    /// Score shown.
    pub score: f32,
    /// Item id (looked up in the shards).
    pub id: String,
    /// Caption shown.
    pub caption: String,
}

/// Where a hit landed on the sheet.
#[derive(Debug, Clone, Serialize)]
pub struct SheetTile {
    /// 1-based rank.
    pub rank: usize,
    /// Item id.
    pub id: String,
    /// Left edge of the frame area.
    pub x: u32,
    /// Top edge of the frame area.
    pub y: u32,
    /// Frame area width.
    pub width: u32,
    /// Frame area height.
    pub height: u32,
    /// Frame of the item drawn (`None` for a placeholder).
    pub frame: Option<usize>,
    /// Boxes drawn.
    pub boxes: usize,
    /// Why the tile is a placeholder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// What was drawn.
#[derive(Debug, Clone, Serialize)]
pub struct SheetReport {
    /// PNG written.
    pub path: String,
    /// Sheet width.
    pub width: u32,
    /// Sheet height.
    pub height: u32,
    /// Tiles per row.
    pub columns: usize,
    /// One per hit, in rank order.
    pub tiles: Vec<SheetTile>,
}

/// Frame area aspect ratio (height / width) of a tile; frames are letterboxed into it.
const TILE_ASPECT: f64 = 0.75;
/// Label lines above a tile's frame.
const LABEL_LINES: u32 = 2;
/// Placeholder fill.
const MISSING_FILL: [u8; 3] = [70, 30, 30];

fn load_hit(
    shards: &Path,
    id: &str,
    opts: &DrawOptions,
) -> anyhow::Result<(ItemDetail, RgbFrame, usize)> {
    let l = locate(shards, id)?;
    let item = read_item(&l.reader, l.row)?;
    if item.frames.is_empty() {
        bail!("item {id:?} has no frames");
    }
    let (_, frames) = decode_again(&item, opts.root.as_deref())?;
    let f = frames.len() / 2;
    let frame = frames.into_iter().nth(f).context("no frame decoded")?;
    Ok((item, frame, f))
}

/// Draws `hits` of the items in the shards under `shards` into the PNG `out`
/// (`opts.columns` tiles per row, frame areas `opts.frame_width` wide, `opts.top` boxes each).
pub fn draw_hits(
    shards: &Path,
    hits: &[SheetHit],
    out: &Path,
    opts: &DrawOptions,
) -> anyhow::Result<SheetReport> {
    if hits.is_empty() {
        bail!("no hits to draw");
    }
    let cols = opts.columns.clamp(1, hits.len());
    let rows = hits.len().div_ceil(cols);
    let fw = opts.frame_width.max(64);
    let fh = (fw as f64 * TILE_ASPECT).round() as u32;
    let label_h = LABEL_LINES * (GLYPH_H + 4);
    let cell_h = label_h + fh;
    let width = cols as u32 * fw + (cols as u32 + 1) * PAD;
    let height = PAD + rows as u32 * (cell_h + PAD);
    if width as u64 * height as u64 > 200_000_000 {
        bail!("contact sheet {width}x{height} is too large");
    }
    let mut c = Canvas::new(width, height);
    let max_chars = (fw / font::ADVANCE) as usize;
    let mut tiles = vec![];
    for (i, hit) in hits.iter().enumerate() {
        let (col, row) = ((i % cols) as u32, (i / cols) as u32);
        let cx = PAD + col * (fw + PAD);
        let cy = PAD + row * (cell_h + PAD);
        let (ox, oy) = (cx, cy + label_h);
        c.clip = (
            cx as i64,
            cy as i64,
            (cx + fw) as i64,
            (cy + label_h) as i64,
        );
        c.text(
            &fit(
                &format!("#{} {:.4} {}", hit.rank, hit.score, hit.id),
                max_chars,
            ),
            cx as i64,
            cy as i64 + 1,
            1,
            TEXT,
        );
        c.text(
            &fit(&hit.caption, max_chars),
            cx as i64,
            (cy + GLYPH_H + 5) as i64,
            1,
            TEXT,
        );
        c.clip = (ox as i64, oy as i64, (ox + fw) as i64, (oy + fh) as i64);
        let mut tile = SheetTile {
            rank: hit.rank,
            id: hit.id.clone(),
            x: ox,
            y: oy,
            width: fw,
            height: fh,
            frame: None,
            boxes: 0,
            missing: None,
        };
        match load_hit(shards, &hit.id, opts) {
            Ok((item, frame, f)) => {
                // Letterbox: keep the aspect ratio, centre in the frame area.
                let s = (fw as f64 / frame.width.max(1) as f64)
                    .min(fh as f64 / frame.height.max(1) as f64);
                let (dw, dh) = (
                    ((frame.width as f64 * s).round() as u32).clamp(1, fw),
                    ((frame.height as f64 * s).round() as u32).clamp(1, fh),
                );
                let (px, py) = (ox + (fw - dw) / 2, oy + (fh - dh) / 2);
                c.paste_scaled(&frame, (px, py), (dw, dh));
                let (sx, sy) = (
                    dw as f64 / item.width.max(1) as f64,
                    dh as f64 / item.height.max(1) as f64,
                );
                if let Some(hw) = item.grid_hw {
                    draw_grid(&mut c, &item, hw, (px, py), (sx, sy));
                }
                let detail = &item.frames[f];
                let shown = &detail.boxes[..opts.top.unwrap_or(usize::MAX).min(detail.boxes.len())];
                draw_boxes(&mut c, shown, (px, py), (sx, sy));
                tile.frame = Some(f);
                tile.boxes = shown.len();
            }
            Err(e) => {
                let reason = format!("{e:#}");
                c.fill(ox as i64, oy as i64, fw as i64, fh as i64, MISSING_FILL);
                c.text("media missing:", ox as i64 + 4, oy as i64 + 4, 1, TEXT);
                // The reason, wrapped at the tile width.
                let per_line = max_chars.saturating_sub(1).max(1);
                let chars: Vec<char> = reason.chars().collect();
                for (li, line) in chars.chunks(per_line).enumerate() {
                    let y = oy + 4 + (li as u32 + 1) * (GLYPH_H + 3);
                    if y + GLYPH_H > oy + fh {
                        break;
                    }
                    let s: String = line.iter().collect();
                    c.text(&s, ox as i64 + 4, y as i64, 1, TEXT);
                }
                tile.missing = Some(reason);
            }
        }
        c.unclip();
        tiles.push(tile);
    }
    let png = png::encode_rgb(c.w, c.h, &c.rgb);
    std::fs::write(out, png).with_context(|| format!("writing {}", out.display()))?;
    Ok(SheetReport {
        path: out.display().to_string(),
        width,
        height,
        columns: cols,
        tiles,
    })
}
