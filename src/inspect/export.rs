//! `regionfeat export`: hands shards over in the formats existing tools read.
//!
//! - `demovlp-npz`: one `np.savez_compressed`-style file per frame, `OUT/{item_dir}/{frame}.npz`
//!   (frame = 0-based index within the item; images have `0.npz`; `item_dir` is the id itself
//!   for ordinary ids like `webvid/1000001`, escaped where it could leave OUT or clash
//!   with another id's files (`id_dir`) — and `OUT/ids.jsonl` maps every id to its folder), as MILVLG's
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

use anyhow::{bail, Context};
use serde::Serialize;

use super::npy::{self, Array, Value};
use super::{shard_paths, BLOCK_ROWS};
use crate::shard::{ModelKind, ShardReader};

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

/// Files `demovlp-npz` writes at the top of OUT, which no item folder may take.
const META_FILE: &str = "meta.tsv";
/// Item id → folder mapping of a `demovlp-npz` export, one JSON object a line.
pub const ID_MAP_FILE: &str = "ids.jsonl";
/// Longest folder-name part written (bytes); longer parts are shortened and hashed, well under
/// the 255 bytes file systems allow.
const MAX_PART: usize = 160;
/// Longest item folder written (bytes); longer ones become `~long/HASH`.
const MAX_DIR: usize = 1024;

/// 32 hex digits of the sha256 of `text`.
fn short_hash(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One `/`-separated part of an id as a folder name, injectively: `%`, `~`, backslash, control
/// characters and a leading `.` are percent-escaped (so `.`, `..` and hidden names cannot
/// occur), the empty part becomes `%`, the dot of a `.npz` ending is escaped (a folder is
/// never taken for a frame file), and so is the dot of the files export writes at the top.
/// A part longer than [`MAX_PART`] keeps its beginning and ends in `~` and a hash of the
/// whole part; `~` occurs nowhere else.
fn id_part(part: &str, top: bool) -> String {
    use std::fmt::Write;
    let ext_dot = part.rfind('.').filter(|&i| {
        part[i..].eq_ignore_ascii_case(".npz") || (top && [META_FILE, ID_MAP_FILE].contains(&part))
    });
    let mut s = String::new();
    for (i, c) in part.char_indices() {
        let escape = matches!(c, '%' | '~' | '\\')
            || c.is_control()
            || (c == '.' && (i == 0 || Some(i) == ext_dot));
        if escape {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(s, "%{b:02X}");
            }
        } else {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('%');
    }
    if s.len() > MAX_PART {
        let mut cut = MAX_PART - 33;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s = format!("{}~{}", &s[..cut], short_hash(part));
    }
    s
}

/// An item id as a folder relative to OUT: its `/`-separated parts through [`id_part`]
/// (distinct ids give distinct folders, none of them leaves OUT or is a prefix-clash with a
/// frame file), or `~long/HASH` when that would be longer than [`MAX_DIR`].
fn id_dir(id: &str) -> String {
    let dir = id
        .split('/')
        .enumerate()
        .map(|(i, part)| id_part(part, i == 0))
        .collect::<Vec<_>>()
        .join("/");
    if dir.len() > MAX_DIR {
        format!("~long/{}", short_hash(id))
    } else {
        dir
    }
}

/// Writes `bytes` to `dest` through a temporary name, so an interrupted export leaves no
/// truncated file under the final name. The temporary name starts with a dot, which no
/// [`id_dir`] part does.
fn write_file(dest: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = temp_name(dest);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("renaming to {}", dest.display()))?;
    Ok(())
}

/// `DIR/.NAME.tmp` for `DIR/NAME`.
fn temp_name(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.tmp"))
}

/// Exports the shards under `path` to `out` in `format`. Grid shards are refused before
/// anything is written: neither format has a place for a feature grid (both describe boxes).
pub fn export(path: &Path, format: ExportFormat, out: &Path) -> anyhow::Result<ExportSummary> {
    for p in shard_paths(path)? {
        let r = ShardReader::open(&p)?;
        if r.model_kind()? == ModelKind::Grid {
            let (h, w) = r.grid_hw()?;
            anyhow::bail!(
                "{}: a grid shard ({h}x{w} cells per frame, no boxes) cannot be exported as {}: \
                 the format describes regions with boxes and has no place for a grid. Read \
                 `grid_features` [T, {}, D] directly (h5py: examples/read_shards.py)",
                p.display(),
                match format {
                    ExportFormat::DemovlpNpz => "demovlp-npz",
                    ExportFormat::BottomupTsv => "bottomup-tsv",
                },
                h * w
            );
        }
    }
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
    let mut id_map = String::new();
    let mut dirs: std::collections::HashMap<String, String> = Default::default();
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
                let tmp = temp_name(&dest);
                let f = std::fs::File::create(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?;
                s.files += 1;
                Some((dest, tmp, std::io::BufWriter::new(f)))
            }
            ExportFormat::DemovlpNpz => None,
        };
        for (i, (start, n)) in r.frame_ranges()?.into_iter().enumerate() {
            let [h, w] = hw[i];
            let clean = |t: &str| t.replace(['\t', '\n', '\r'], " ");
            let dir = id_dir(&ids[i]);
            meta.push_str(&format!("{}\t{dir}\n", clean(&captions[i])));
            if format == ExportFormat::DemovlpNpz {
                if let Some(other) = dirs.insert(dir.clone(), ids[i].clone()) {
                    bail!(
                        "item id {:?} occurs twice under {} (second time in {})",
                        other,
                        path.display(),
                        p.display()
                    );
                }
                id_map.push_str(&serde_json::to_string(&serde_json::json!({
                    "id": ids[i],
                    "dir": dir,
                    "frames": n,
                }))?);
                id_map.push('\n');
            }
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
                        Some((_, _, wr)) => {
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
                            let dest = out.join(&dir).join(format!("{fi}.npz"));
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
        if let Some((dest, tmp, wr)) = tsv {
            // Visible under its final name only once complete (kill -9 leaves a dot-file).
            let f = wr
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.sync_all()
                .with_context(|| format!("writing {}", tmp.display()))?;
            drop(f);
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("renaming to {}", dest.display()))?;
            s.bytes += std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        }
    }
    if format == ExportFormat::DemovlpNpz {
        for (name, text) in [(META_FILE, &meta), (ID_MAP_FILE, &id_map)] {
            write_file(&out.join(name), text.as_bytes())?;
            s.files += 1;
            s.bytes += text.len() as u64;
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_dirs_are_distinct_and_stay_inside() {
        let long = "y".repeat(300);
        let very_long = format!("{long}/").repeat(20);
        let ids = [
            "",
            ".",
            "..",
            "_",
            "%",
            "%25",
            "~",
            "x/./y",
            "x/_/y",
            "x/../y",
            "x//y",
            "/abs",
            "a",
            "a/0.npz",
            "a/0%2Enpz",
            "meta.tsv",
            "ids.jsonl",
            "b/meta.tsv",
            ".hidden",
            "x\\y",
            "tab\there",
            "webvid/1000001",
            &long,
            &very_long,
            "ünï/cødé",
        ];
        let dirs: Vec<String> = ids.iter().map(|id| id_dir(id)).collect();
        let unique: std::collections::HashSet<&String> = dirs.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{dirs:?}");
        for d in &dirs {
            assert!(d.len() <= MAX_DIR, "{d}");
            for (i, part) in d.split('/').enumerate() {
                assert!(!part.is_empty() && !part.starts_with('.') && part.len() <= MAX_PART);
                assert!(!part.ends_with(".npz"), "{d}");
                assert!(i > 0 || (part != META_FILE && part != ID_MAP_FILE), "{d}");
                assert!(!part.contains(['\\', '\t']), "{d}");
            }
        }
        // Ordinary ids keep their readable folder.
        assert_eq!(id_dir("webvid/1000001"), "webvid/1000001");
        assert_eq!(id_dir("cc3m/000000004"), "cc3m/000000004");
        assert_eq!(id_dir("x/_/y"), "x/_/y");
        assert_eq!(id_dir(".."), "%2E.");
    }
}
