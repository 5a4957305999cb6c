//! `regionfeat inspect PATH --item ID`: one item, frame by frame and box by box.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::{locate, shard_name};
use crate::shard::{ModelKind, ShardReader};

/// One valid box.
#[derive(Debug, Clone, Serialize)]
pub struct BoxDetail {
    /// Rank in the frame (0 = most confident).
    pub rank: usize,
    /// Class index.
    pub class: u32,
    /// Class name.
    pub class_name: String,
    /// Attribute index.
    pub attribute: u32,
    /// Attribute name.
    pub attribute_name: String,
    /// Attribute probability.
    pub attr_score: f32,
    /// Region confidence.
    pub score: f32,
    /// `x1, y1, x2, y2` in original-frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The 7-d location vector.
    pub location: [f32; 7],
}

/// One frame of an item.
#[derive(Debug, Clone, Serialize)]
pub struct FrameDetail {
    /// Frame index within the item.
    pub index: usize,
    /// Frame row in the shard.
    pub row: u64,
    /// Sample time, seconds.
    pub timestamp: f32,
    /// Presentation time of the frame taken, seconds.
    pub frame_time: f32,
    /// Valid boxes (0 in a grid shard).
    pub num_boxes: u32,
    /// The valid boxes, best first.
    pub boxes: Vec<BoxDetail>,
    /// Grid shards: mean L2 norm of the frame's cell features.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_mean_norm: Option<f32>,
}

/// An item and its frames.
#[derive(Debug, Clone, Serialize)]
pub struct ItemDetail {
    /// Shard file holding it.
    pub shard: String,
    /// Item row in the shard.
    pub row: usize,
    /// Manifest id.
    pub id: String,
    /// Caption.
    pub caption: String,
    /// Media path.
    pub source: String,
    /// `video` or `image`.
    pub kind: String,
    /// Manifest row.
    pub manifest_index: u64,
    /// Upright original width.
    pub width: u32,
    /// Upright original height.
    pub height: u32,
    /// Sampling duration, seconds.
    pub duration: f32,
    /// `[Hg, Wg]` when the item comes from a grid shard (frames then have no boxes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_hw: Option<[usize; 2]>,
    /// Frames in time order.
    pub frames: Vec<FrameDetail>,
}

fn name(names: &[String], i: u32) -> String {
    names
        .get(i as usize)
        .cloned()
        .unwrap_or_else(|| format!("?{i}"))
}

/// Reads item `row` of an open shard.
pub(super) fn read_item(r: &ShardReader, row: usize) -> anyhow::Result<ItemDetail> {
    if r.model_kind()? == ModelKind::Grid {
        return super::grid::read_grid_item(r, row);
    }
    let (k, classes, attrs) = (r.max_boxes()?, r.class_names()?, r.attribute_names()?);
    let (start, n) = r.frame_ranges()?[row];
    let b = r.read_frames(start, n as usize)?;
    let frames = (0..n as usize)
        .map(|f| {
            let m = (b.num_boxes[f] as usize).min(k);
            let boxes = (0..m)
                .map(|j| {
                    let i = f * k + j;
                    BoxDetail {
                        rank: j,
                        class: b.classes[i],
                        class_name: name(&classes, b.classes[i]),
                        attribute: b.attributes[i],
                        attribute_name: name(&attrs, b.attributes[i]),
                        attr_score: b.attr_scores[i],
                        score: b.scores[i],
                        bbox: b.boxes[i * 4..i * 4 + 4].try_into().expect("4"),
                        location: b.locations[i * 7..i * 7 + 7].try_into().expect("7"),
                    }
                })
                .collect();
            FrameDetail {
                index: f,
                row: start + f as u64,
                timestamp: b.timestamps[f],
                frame_time: b.frame_times[f],
                num_boxes: b.num_boxes[f],
                boxes,
                grid_mean_norm: None,
            }
        })
        .collect();
    item_with_frames(r, row, frames)
}

/// The item-level facts of row `row` around its `frames`.
pub(super) fn item_with_frames(
    r: &ShardReader,
    row: usize,
    frames: Vec<FrameDetail>,
) -> anyhow::Result<ItemDetail> {
    let [height, width] = r.image_hw()?[row];
    let grid_hw = match r.model_kind()? {
        ModelKind::Regions => None,
        ModelKind::Grid => r.grid_hw().map(|(h, w)| Some([h, w]))?,
    };
    Ok(ItemDetail {
        shard: shard_name(r.path()),
        row,
        id: r.item_ids()?[row].clone(),
        caption: r.captions()?[row].clone(),
        source: r.sources()?[row].clone(),
        kind: if r.kinds()?[row] == 0 {
            "video"
        } else {
            "image"
        }
        .into(),
        manifest_index: r.manifest_indices()?[row],
        width,
        height,
        duration: r.durations()?[row],
        grid_hw,
        frames,
    })
}

/// Finds item `id` under `path` (a shard or an output directory) and reads it.
pub fn item_detail(path: &Path, id: &str) -> anyhow::Result<ItemDetail> {
    let l = locate(path, id)?;
    read_item(&l.reader, l.row)
}

impl fmt::Display for ItemDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}, {}x{}, {} frames, duration {:.2}s)",
            self.id,
            self.kind,
            self.width,
            self.height,
            self.frames.len(),
            self.duration
        )?;
        writeln!(
            f,
            "shard:   {} row {}  (manifest row {})",
            self.shard, self.row, self.manifest_index
        )?;
        writeln!(f, "source:  {}", self.source)?;
        writeln!(f, "caption: {}", self.caption)?;
        if let Some([h, w]) = self.grid_hw {
            writeln!(f, "grid:    {h}x{w} cells per frame (grid model: no boxes)")?;
            for fr in &self.frames {
                writeln!(
                    f,
                    "frame {} (row {}): t={:.3}s  frame at {:.3}s  mean cell norm {:.3}",
                    fr.index,
                    fr.row,
                    fr.timestamp,
                    fr.frame_time,
                    fr.grid_mean_norm.unwrap_or(f32::NAN)
                )?;
            }
            return Ok(());
        }
        for fr in &self.frames {
            writeln!(
                f,
                "frame {} (row {}): t={:.3}s  frame at {:.3}s  {} boxes",
                fr.index, fr.row, fr.timestamp, fr.frame_time, fr.num_boxes
            )?;
            for b in &fr.boxes {
                let loc: Vec<String> = b.location.iter().map(|v| format!("{v:.3}")).collect();
                writeln!(
                    f,
                    "  {:>2}  {:<16} {:<10} ({:.2})  score {:.3}  box [{:.1}, {:.1}, {:.1}, {:.1}]  loc [{}]",
                    b.rank,
                    b.class_name,
                    b.attribute_name,
                    b.attr_score,
                    b.score,
                    b.bbox[0],
                    b.bbox[1],
                    b.bbox[2],
                    b.bbox[3],
                    loc.join(", ")
                )?;
            }
        }
        Ok(())
    }
}
