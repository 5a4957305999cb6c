//! `regionfeat export`: hands shards over in the formats existing tools read.
//!
//! - `demovlp-npz`: one `np.savez_compressed`-style file per frame, `OUT/{item_id}/{frame}.npz`
//!   (frame = 0-based index within the item; images have `0.npz`), as MILVLG's
//!   bottom-up-attention.pytorch writes them and DemoVLP's loaders read them
//!   (`np.load(f, allow_pickle=True)`; `x`, `bbox`, `info.item()['objects_conf']`, ...):
//!   `x` f32 `[N, D]`, `bbox` f32 `[N, 4]` pixels, `num_bbox`, `image_h`, `image_w` (0-d i8),
//!   `info` (0-d object array: dict with `image_id`, `image_h`, `image_w`, `num_boxes`,
//!   `objects_id` i8 `[N]`, `objects_conf` f4 `[N]`, `attrs_id` i8 `[N]`, `attrs_conf` f4 `[N]`).
//!   `N` = the frame's valid boxes, best first. Class indices exclude the background, as in
//!   MILVLG's files. `OUT/meta.tsv` (header `caption\tname`) lists the items the way DemoVLP's
//!   `meta_data/*.tsv` do (column 0 caption, column 1 the relative folder).
//! - `bottomup-tsv`: `OUT/{shard}.tsv`, one row per frame with bottom-up-attention's
//!   `generate_tsv.py` fields `image_id, image_w, image_h, num_boxes, boxes, features` (no header;
//!   boxes and features base64 of little-endian f32). `image_id` is the item id for images and
//!   `{item_id}/{frame}` for video frames.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::npy::{self, Array, Value};
use super::{shard_paths, BLOCK_ROWS};
use crate::shard::ShardReader;

/// Target format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    /// Per-frame `.npz` (MILVLG / DemoVLP).
    DemovlpNpz,
    /// bottom-up-attention TSV.
    BottomupTsv,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "demovlp-npz" | "npz" => Ok(Self::DemovlpNpz),
            "bottomup-tsv" | "tsv" => Ok(Self::BottomupTsv),
            _ => Err(format!(
                "export format {s:?}: use demovlp-npz or bottomup-tsv"
            )),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// Format written.
    pub format: ExportFormat,
    /// Output directory.
    pub out: String,
    /// Items exported.
    pub items: usize,
    /// Frames exported.
    pub frames: usize,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exported {} items ({} frames) to {} as {:?}: {} file(s), {} bytes",
            self.items, self.frames, self.out, self.format, self.files, self.bytes
        )
    }
}

/// An item id as a relative folder: `/`-separated parts kept, anything that could leave the
/// output folder (`..`, `.`, empty parts, a leading `/`, backslashes) replaced by `_`.
fn id_dir(id: &str) -> PathBuf {
    id.split('/')
        .map(|part| match part {
            "" | "." | ".." => "_".to_string(),
            p => p.replace(['\\', '\0'], "_"),
        })
        .collect()
}

/// Writes `bytes` to `dest` through a temporary name, so an interrupted export leaves no
/// truncated file under the final name.
fn write_file(dest: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = dest.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("renaming to {}", dest.display()))?;
    Ok(())
}

/// Exports the shards under `path` to `out` in `format`.
pub fn export(path: &Path, format: ExportFormat, out: &Path) -> anyhow::Result<ExportSummary> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut s = ExportSummary {
        format,
        out: out.display().to_string(),
        items: 0,
        frames: 0,
        files: 0,
        bytes: 0,
    };
    let mut meta = String::from("caption\tname\n");
    for p in shard_paths(path)? {
        let r = ShardReader::open(&p)?;
        let (k, d) = (r.max_boxes()?, r.feature_dim()?);
        let ids = r.item_ids()?;
        let captions = r.captions()?;
        let kinds = r.kinds()?;
        let hw = r.image_hw()?;
        let mut tsv = match format {
            ExportFormat::BottomupTsv => {
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "shard".into());
                let dest = out.join(format!("{stem}.tsv"));
                let f = std::fs::File::create(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                s.files += 1;
                Some((dest, std::io::BufWriter::new(f)))
            }
            ExportFormat::DemovlpNpz => None,
        };
        for (i, (start, n)) in r.frame_ranges()?.into_iter().enumerate() {
            let [h, w] = hw[i];
            let clean = |t: &str| t.replace(['\t', '\n', '\r'], " ");
            meta.push_str(&format!(
                "{}\t{}\n",
                clean(&captions[i]),
                id_dir(&ids[i]).display()
            ));
            let mut done = 0usize;
            while done < n as usize {
                let count = BLOCK_ROWS.min(n as usize - done);
                let b = r.read_frames(start + done as u64, count)?;
                for f in 0..count {
                    let fi = done + f;
                    let m = (b.num_boxes[f] as usize).min(k);
                    let boxes = &b.boxes[f * k * 4..(f * k + m) * 4];
                    let feats = &b.features[f * k * d..(f * k + m) * d];
                    let image_id = if kinds[i] == 0 {
                        format!("{}/{fi}", ids[i])
                    } else {
                        ids[i].clone()
                    };
                    match &mut tsv {
                        Some((_, wr)) => {
                            let bytes = |v: &[f32]| {
                                npy::base64(
                                    &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                                )
                            };
                            writeln!(
                                wr,
                                "{}\t{w}\t{h}\t{m}\t{}\t{}",
                                image_id.replace(['\t', '\n', '\r'], "_"),
                                bytes(boxes),
                                bytes(feats)
                            )?;
                        }
                        None => {
                            let classes: Vec<i64> = b.classes[f * k..f * k + m]
                                .iter()
                                .map(|&c| c as i64)
                                .collect();
                            let attrs: Vec<i64> = b.attributes[f * k..f * k + m]
                                .iter()
                                .map(|&c| c as i64)
                                .collect();
                            let info = [
                                ("image_id", Value::Str(image_id)),
                                ("image_h", Value::Int(h as i64)),
                                ("image_w", Value::Int(w as i64)),
                                ("num_boxes", Value::Int(m as i64)),
                                ("objects_id", Value::Array(Array::i64(vec![m], &classes))),
                                (
                                    "objects_conf",
                                    Value::Array(Array::f32(vec![m], &b.scores[f * k..f * k + m])),
                                ),
                                ("attrs_id", Value::Array(Array::i64(vec![m], &attrs))),
                                (
                                    "attrs_conf",
                                    Value::Array(Array::f32(
                                        vec![m],
                                        &b.attr_scores[f * k..f * k + m],
                                    )),
                                ),
                            ];
                            let members = vec![
                                (
                                    "x.npy".to_string(),
                                    npy::npy(&Array::f32(vec![m, d], feats)),
                                ),
                                (
                                    "bbox.npy".to_string(),
                                    npy::npy(&Array::f32(vec![m, 4], boxes)),
                                ),
                                (
                                    "num_bbox.npy".to_string(),
                                    npy::npy(&Array::scalar_i64(m as i64)),
                                ),
                                (
                                    "image_h.npy".to_string(),
                                    npy::npy(&Array::scalar_i64(h as i64)),
                                ),
                                (
                                    "image_w.npy".to_string(),
                                    npy::npy(&Array::scalar_i64(w as i64)),
                                ),
                                ("info.npy".to_string(), npy::npy_object_dict(&info)),
                            ];
                            let bytes = npy::zip(&members);
                            let dest = out.join(id_dir(&ids[i])).join(format!("{fi}.npz"));
                            write_file(&dest, &bytes)?;
                            s.files += 1;
                            s.bytes += bytes.len() as u64;
                        }
                    }
                }
                done += count;
            }
            s.items += 1;
            s.frames += n as usize;
        }
        if let Some((dest, mut wr)) = tsv {
            wr.flush()
                .with_context(|| format!("writing {}", dest.display()))?;
            s.bytes += std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        }
    }
    if format == ExportFormat::DemovlpNpz {
        write_file(&out.join("meta.tsv"), meta.as_bytes())?;
        s.files += 1;
        s.bytes += meta.len() as u64;
    }
    Ok(s)
}
