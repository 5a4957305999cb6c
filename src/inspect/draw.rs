//! `regionfeat inspect PATH --item ID --draw OUT.png`: decodes the item's frames again from its
//! source (same sampling, so the same timestamps) and draws its boxes with class names and
//! scores on a contact sheet: a grid of frames, each scaled to a fixed width.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

use super::font::{self, GLYPH_H};
use super::item::{read_item, BoxDetail, ItemDetail};
use super::{locate, png};
use crate::decode::{decode_media, DecodeOptions, RgbFrame};
use crate::manifest::ItemKind;

/// Margin around and between cells, pixels.
pub const PAD: u32 = 8;
/// Height of the title block (item id, caption) above the grid, pixels.
pub const TITLE_H: u32 = 2 * GLYPH_H + 4 + GLYPH_H;
/// Height of the per-frame label strip above each frame, pixels.
pub const LABEL_H: u32 = GLYPH_H + 4;
/// Thickness of box outlines, pixels.
pub const LINE: i64 = 2;
pub(super) const BACKGROUND: [u8; 3] = [24, 24, 24];
pub(super) const TEXT: [u8; 3] = [235, 235, 235];
/// Box colours, picked by class index.
pub const PALETTE: [[u8; 3]; 12] = [
    [255, 59, 48],
    [52, 199, 89],
    [0, 122, 255],
    [255, 204, 0],
    [175, 82, 222],
    [255, 149, 0],
    [90, 200, 250],
    [255, 45, 85],
    [162, 132, 94],
    [0, 199, 190],
    [191, 255, 0],
    [255, 255, 255],
];

/// Colour of boxes of class `c`.
pub fn class_colour(c: u32) -> [u8; 3] {
    PALETTE[c as usize % PALETTE.len()]
}

/// How to draw.
#[derive(Debug, Clone)]
pub struct DrawOptions {
    /// Frames per row.
    pub columns: usize,
    /// Width each frame is scaled to, pixels.
    pub frame_width: u32,
    /// Draw only the best this many boxes per frame (all valid boxes when `None`).
    pub top: Option<usize>,
    /// Folder that a relative source path is resolved against.
    pub root: Option<PathBuf>,
}

impl Default for DrawOptions {
    fn default() -> Self {
        Self {
            columns: 4,
            frame_width: 320,
            top: None,
            root: None,
        }
    }
}

/// A drawn box.
#[derive(Debug, Clone, Serialize)]
pub struct DrawnBox {
    /// Rank in the frame.
    pub rank: usize,
    /// Class index.
    pub class: u32,
    /// Outline colour.
    pub colour: [u8; 3],
}

/// Where a frame landed on the sheet.
#[derive(Debug, Clone, Serialize)]
pub struct DrawnFrame {
    /// Frame index within the item.
    pub index: usize,
    /// Sample time stored in the shard.
    pub timestamp: f32,
    /// Sample time of the frame decoded again.
    pub decoded_time: f64,
    /// Left edge of the frame image on the sheet.
    pub x: u32,
    /// Top edge of the frame image on the sheet.
    pub y: u32,
    /// Drawn width (= frame width option).
    pub width: u32,
    /// Drawn height (original aspect ratio kept).
    pub height: u32,
    /// Boxes drawn, best first.
    pub boxes: Vec<DrawnBox>,
}

/// What was drawn.
#[derive(Debug, Clone, Serialize)]
pub struct DrawReport {
    /// PNG written.
    pub path: String,
    /// Item id.
    pub item: String,
    /// Source decoded.
    pub source: String,
    /// Sheet width.
    pub width: u32,
    /// Sheet height.
    pub height: u32,
    /// Grid columns.
    pub columns: usize,
    /// Grid rows.
    pub rows: usize,
    /// Per frame.
    pub frames: Vec<DrawnFrame>,
}

pub(super) struct Canvas {
    pub(super) w: u32,
    pub(super) h: u32,
    pub(super) rgb: Vec<u8>,
    /// Drawing is clipped to `[x0, x1) × [y0, y1)`.
    pub(super) clip: (i64, i64, i64, i64),
}

impl Canvas {
    pub(super) fn new(w: u32, h: u32) -> Self {
        let mut rgb = vec![0u8; w as usize * h as usize * 3];
        for px in rgb.chunks_exact_mut(3) {
            px.copy_from_slice(&BACKGROUND);
        }
        Self {
            w,
            h,
            rgb,
            clip: (0, 0, w as i64, h as i64),
        }
    }

    pub(super) fn unclip(&mut self) {
        self.clip = (0, 0, self.w as i64, self.h as i64);
    }

    pub(super) fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        let (x0, y0, x1, y1) = self.clip;
        if x >= x0 && x < x1 && y >= y0 && y < y1 {
            let i = (y as usize * self.w as usize + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    pub(super) fn fill(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, c);
            }
        }
    }

    /// Outline of `[x1, x2] × [y1, y2]` (inclusive), `LINE` pixels thick, drawn inwards.
    pub(super) fn rect(&mut self, x1: i64, y1: i64, x2: i64, y2: i64, c: [u8; 3]) {
        let (w, h) = (x2 - x1 + 1, y2 - y1 + 1);
        let t = LINE.min(w).min(h).max(1);
        self.fill(x1, y1, w, t, c);
        self.fill(x1, y2 - t + 1, w, t, c);
        self.fill(x1, y1, t, h, c);
        self.fill(x2 - t + 1, y1, t, h, c);
    }

    pub(super) fn text(&mut self, s: &str, x: i64, y: i64, scale: u32, c: [u8; 3]) {
        let mut pts = Vec::new();
        font::render(s, x, y, scale, |px, py| pts.push((px, py)));
        for (px, py) in pts {
            self.put(px, py, c);
        }
    }

    /// Pastes `frame` scaled to `dw × dh` at `(x, y)`: area average when shrinking, nearest
    /// neighbour when enlarging.
    pub(super) fn paste_scaled(
        &mut self,
        frame: &RgbFrame,
        (x, y): (u32, u32),
        (dw, dh): (u32, u32),
    ) {
        let (src, sw, sh) = (&frame.rgb, frame.width, frame.height);
        let (fx, fy) = (sw as f64 / dw as f64, sh as f64 / dh as f64);
        for dy in 0..dh {
            let sy0 = (dy as f64 * fy) as u32;
            let sy1 = (((dy + 1) as f64 * fy).ceil() as u32).clamp(sy0 + 1, sh);
            for dx in 0..dw {
                let sx0 = (dx as f64 * fx) as u32;
                let sx1 = (((dx + 1) as f64 * fx).ceil() as u32).clamp(sx0 + 1, sw);
                let mut acc = [0u32; 3];
                for sy in sy0..sy1 {
                    let row = sy as usize * sw as usize;
                    for sx in sx0..sx1 {
                        let i = (row + sx as usize) * 3;
                        for (a, v) in acc.iter_mut().zip(&src[i..i + 3]) {
                            *a += *v as u32;
                        }
                    }
                }
                let n = (sy1 - sy0) * (sx1 - sx0);
                let c = acc.map(|a| ((a + n / 2) / n) as u8);
                self.put((x + dx) as i64, (y + dy) as i64, c);
            }
        }
    }
}

fn readable_on(c: [u8; 3]) -> [u8; 3] {
    let luma = 0.299 * c[0] as f32 + 0.587 * c[1] as f32 + 0.114 * c[2] as f32;
    if luma > 140.0 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

/// Cuts `s` to at most `max_chars` characters (with "..." when cut).
pub(super) fn fit(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars.saturating_sub(3)).collect();
        t.push_str("...");
        t
    }
}

pub(super) fn resolve_source(source: &str, root: Option<&Path>) -> PathBuf {
    let p = PathBuf::from(source);
    match root {
        Some(r) if p.is_relative() => r.join(p),
        _ => p,
    }
}

/// Draws item `id` of the shards under `path` into the PNG `out`.
pub fn draw_item(
    path: &Path,
    id: &str,
    out: &Path,
    opts: &DrawOptions,
) -> anyhow::Result<DrawReport> {
    let l = locate(path, id)?;
    let item = read_item(&l.reader, l.row)?;
    let (source, frames) = decode_again(&item, opts.root.as_deref())?;
    let (sheet, report) = render(&item, &frames, opts)?;
    let png = png::encode_rgb(sheet.w, sheet.h, &sheet.rgb);
    std::fs::write(out, png).with_context(|| format!("writing {}", out.display()))?;
    Ok(DrawReport {
        path: out.display().to_string(),
        source: source.display().to_string(),
        ..report
    })
}

/// Decodes the item's frames again from its source (same sampling) and checks that they are
/// the frames the shard was made from: `(source path, frames)`.
pub(super) fn decode_again(
    item: &ItemDetail,
    root: Option<&Path>,
) -> anyhow::Result<(PathBuf, Vec<RgbFrame>)> {
    let source = resolve_source(&item.source, root);
    let kind = if item.kind == "video" {
        ItemKind::Video
    } else {
        ItemKind::Image
    };
    let n = item.frames.len();
    let decoded = decode_media(
        &source,
        &DecodeOptions {
            num_frames: n,
            resize: None,
            threads: 1,
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "decoding {} again: {e} (is the source still there? --root)",
            source.display()
        )
    })?;
    if decoded.frames.len() != n {
        bail!(
            "{}: decoded {} frames, the shard has {n}",
            source.display(),
            decoded.frames.len()
        );
    }
    if (decoded.width, decoded.height) != (item.width, item.height) {
        bail!(
            "{}: decodes as {}x{}, the shard says {}x{} (the file changed?)",
            source.display(),
            decoded.width,
            decoded.height,
            item.width,
            item.height
        );
    }
    for (f, (d, s)) in decoded.frames.iter().zip(&item.frames).enumerate() {
        if kind == ItemKind::Video && (d.time - s.timestamp as f64).abs() > 1e-3 {
            bail!(
                "{}: frame {f} sampled at {:.4}s, the shard says {:.4}s (the file changed?)",
                source.display(),
                d.time,
                s.timestamp
            );
        }
    }
    Ok((source, decoded.frames))
}

/// Colour of the grid overlay of a grid shard.
pub const GRID_COLOUR: [u8; 3] = [0, 255, 255];

/// The square a grid model saw, in original-frame pixels `(x0, y0, side)`: the resize to the
/// model's size keeps the aspect ratio, so the centre crop is the centre square of the
/// shorter side (`schemas/grid-contract.md`; exact up to a pixel for aspect ratios <= 4).
pub fn grid_crop(width: u32, height: u32) -> (f64, f64, f64) {
    let side = width.min(height) as f64;
    (
        ((width as f64 - side) / 2.0).floor(),
        ((height as f64 - side) / 2.0).floor(),
        side,
    )
}

/// Outlines the crop square and its `h × w` cells, 1 pixel wide.
pub(super) fn draw_grid(
    c: &mut Canvas,
    item: &ItemDetail,
    [gh, gw]: [usize; 2],
    (ox, oy): (u32, u32),
    (sx, sy): (f64, f64),
) {
    let (x0, y0, side) = grid_crop(item.width, item.height);
    let (left, top) = (ox as f64 + x0 * sx, oy as f64 + y0 * sy);
    let (wpx, hpx) = (side * sx, side * sy);
    for i in 0..=gw {
        let x = (left + wpx * i as f64 / gw as f64).round() as i64;
        let x = if i == gw { x - 1 } else { x };
        c.fill(x, top.round() as i64, 1, hpx.round() as i64, GRID_COLOUR);
    }
    for j in 0..=gh {
        let y = (top + hpx * j as f64 / gh as f64).round() as i64;
        let y = if j == gh { y - 1 } else { y };
        c.fill(left.round() as i64, y, wpx.round() as i64, 1, GRID_COLOUR);
    }
}

/// Outlines `boxes` (original-frame pixels) on a frame pasted at `(ox, oy)` with scale
/// `(sx, sy)`, each with its class name and score; worst first, so the best boxes and their
/// labels end up on top.
pub(super) fn draw_boxes(
    c: &mut Canvas,
    boxes: &[BoxDetail],
    (ox, oy): (u32, u32),
    (sx, sy): (f64, f64),
) {
    let px = |b: &[f32; 4]| {
        let x1 = ox as i64 + (b[0] as f64 * sx).round() as i64;
        let y1 = oy as i64 + (b[1] as f64 * sy).round() as i64;
        let x2 = (ox as i64 + (b[2] as f64 * sx).round() as i64 - 1).max(x1);
        let y2 = (oy as i64 + (b[3] as f64 * sy).round() as i64 - 1).max(y1);
        (x1, y1, x2, y2)
    };
    for b in boxes.iter().rev() {
        let (x1, y1, x2, y2) = px(&b.bbox);
        let colour = class_colour(b.class);
        c.rect(x1, y1, x2, y2, colour);
        let text = format!("{} {:.2}", b.class_name, b.score);
        let (tw, th) = (font::text_width(&text, 1) as i64 + 2, GLYPH_H as i64 + 2);
        let ty = if y1 - th >= oy as i64 {
            y1 - th
        } else {
            y1 + LINE
        };
        c.fill(x1, ty, tw, th, colour);
        c.text(&text, x1 + 1, ty + 1, 1, readable_on(colour));
    }
}

fn render(
    item: &ItemDetail,
    frames: &[RgbFrame],
    opts: &DrawOptions,
) -> anyhow::Result<(Canvas, DrawReport)> {
    let n = frames.len();
    let cols = opts.columns.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let fw = opts.frame_width.max(16);
    let fh = ((item.height as f64 * fw as f64 / item.width.max(1) as f64).round() as u32).max(1);
    let cell_h = LABEL_H + fh;
    let width = cols as u32 * fw + (cols as u32 + 1) * PAD;
    let grid_y = PAD + TITLE_H + PAD;
    let height = grid_y + rows as u32 * (cell_h + PAD);
    if width as u64 * height as u64 > 200_000_000 {
        bail!("contact sheet {width}x{height} is too large");
    }
    let mut c = Canvas::new(width, height);
    let title = format!(
        "{}  {} {}x{}  {} frame(s)",
        item.id, item.kind, item.width, item.height, n
    );
    let max_chars = |scale: u32| ((width - 2 * PAD) / (font::ADVANCE * scale)) as usize;
    let title_scale = if title.chars().count() <= max_chars(2) {
        2
    } else {
        1
    };
    c.text(
        &fit(&title, max_chars(title_scale)),
        PAD as i64,
        PAD as i64,
        title_scale,
        TEXT,
    );
    c.text(
        &fit(&item.caption, max_chars(1)),
        PAD as i64,
        (PAD + 2 * GLYPH_H + 4) as i64,
        1,
        TEXT,
    );
    let (sx, sy) = (
        fw as f64 / item.width.max(1) as f64,
        fh as f64 / item.height.max(1) as f64,
    );
    let mut drawn = Vec::new();
    for (f, (frame, detail)) in frames.iter().zip(&item.frames).enumerate() {
        let (col, row) = ((f % cols) as u32, (f / cols) as u32);
        let cx = PAD + col * (fw + PAD);
        let cy = grid_y + row * (cell_h + PAD);
        let (ox, oy) = (cx, cy + LABEL_H);
        c.unclip();
        let label = match item.grid_hw {
            Some([h, w]) => format!("#{f}  t={:.2}s  grid {h}x{w}", detail.timestamp),
            None => format!(
                "#{f}  t={:.2}s  {} boxes",
                detail.timestamp, detail.num_boxes
            ),
        };
        c.clip = (
            cx as i64,
            cy as i64,
            (cx + fw) as i64,
            (cy + LABEL_H) as i64,
        );
        c.text(&label, cx as i64, cy as i64 + 1, 1, TEXT);
        c.unclip();
        c.paste_scaled(frame, (ox, oy), (fw, fh));
        c.clip = (ox as i64, oy as i64, (ox + fw) as i64, (oy + fh) as i64);
        if let Some(hw) = item.grid_hw {
            draw_grid(&mut c, item, hw, (ox, oy), (sx, sy));
        }
        let shown = &detail.boxes[..opts.top.unwrap_or(usize::MAX).min(detail.boxes.len())];
        draw_boxes(&mut c, shown, (ox, oy), (sx, sy));
        drawn.push(DrawnFrame {
            index: f,
            timestamp: detail.timestamp,
            decoded_time: frame.time,
            x: ox,
            y: oy,
            width: fw,
            height: fh,
            boxes: shown
                .iter()
                .map(|b| DrawnBox {
                    rank: b.rank,
                    class: b.class,
                    colour: class_colour(b.class),
                })
                .collect(),
        });
    }
    c.unclip();
    let report = DrawReport {
        path: String::new(),
        item: item.id.clone(),
        source: String::new(),
        width,
        height,
        columns: cols,
        rows,
        frames: drawn,
    };
    Ok((c, report))
}
