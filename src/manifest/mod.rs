//! Input lists → [`Item`]s: WebVid CSV, CC3M TSV, JSONL, or a directory of media files.
//!
//! The manifest's order is the plan: item `i` of the manifest always lands in shard
//! `i / shard_size`, whatever worker extracts it, so reruns and splits are deterministic.

pub mod benchmarks;
mod formats;
mod scan;

use std::path::{Path, PathBuf};

pub use benchmarks::{Benchmark, Split};
pub use formats::ManifestFormat;

/// Whether an item is decoded as a video (N sampled frames) or an image (1 frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// Sampled at N uniformly spaced timestamps.
    Video = 0,
    /// One frame; animated GIFs are treated as videos.
    Image = 1,
}

/// One input to extract.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Position in the manifest (0-based, counting only data rows); fixes the shard.
    pub index: u64,
    /// Stable identifier (WebVid `videoid`, CC3M path stem, JSONL `id`, file stem).
    pub id: String,
    /// Absolute or root-relative path of the media file, resolved against the root.
    pub path: PathBuf,
    /// Caption text (the first one when there are several), empty when the manifest has none.
    pub caption: String,
    /// All captions when the manifest gives several per item (benchmarks); empty when it gives
    /// at most one, which is then `caption`. Use [`Item::all_captions`].
    pub captions: Vec<String>,
    /// Video or image, guessed from the file extension.
    pub kind: ItemKind,
}

impl Item {
    /// Every caption of the item: `captions`, else `caption` when not empty.
    pub fn all_captions(&self) -> Vec<String> {
        if !self.captions.is_empty() {
            self.captions.clone()
        } else if self.caption.is_empty() {
            vec![]
        } else {
            vec![self.caption.clone()]
        }
    }
}

/// Errors while reading a manifest. These stop the run: a manifest we cannot parse has no plan.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Io {
        /// Manifest path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A row is malformed.
    #[error("{path}:{line}: {reason}")]
    Row {
        /// Manifest path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Two rows share an id: the shards would be ambiguous.
    #[error("{path}: duplicate item id {id:?} (rows {first} and {second})")]
    DuplicateId {
        /// Manifest path.
        path: PathBuf,
        /// The repeated id.
        id: String,
        /// First data row index.
        first: u64,
        /// Second data row index.
        second: u64,
    },
    /// The format could not be recognised.
    #[error("cannot tell the manifest format of {0}: use a .csv (WebVid), .tsv (CC3M), .jsonl file or a directory, or pass --format")]
    UnknownFormat(PathBuf),
}

/// File extensions treated as still images (everything else is opened as a video).
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "ppm", "pgm",
];

/// Extensions a directory scan picks up.
pub(crate) const MEDIA_EXTENSIONS: &[&str] = &[
    "mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "ts", "flv", "wmv", "ogv", "gif",
    "jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "ppm", "pgm",
];

/// Video unless the extension names a still-image format (GIF counts as video).
pub fn kind_for_path(path: &Path) -> ItemKind {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        ItemKind::Image
    } else {
        ItemKind::Video
    }
}

/// A file a directory scan found but does not extract, and why (listed in `skipped.jsonl`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SkippedFile {
    /// Path relative to the scanned directory (bytes that are not UTF-8 written as `\xNN`).
    pub path: String,
    /// Why it was not taken.
    pub reason: String,
}

/// A manifest read: the items in manifest order and what a directory scan left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    /// Items to extract, in plan order.
    pub items: Vec<Item>,
    /// Files and folders a directory scan did not take (always empty for list manifests).
    pub skipped: Vec<SkippedFile>,
}

/// Why an item cannot be stored exactly, if so. Such an item becomes an error record
/// (stage `manifest`) instead of a silently altered one: HDF5 strings end at the first NUL,
/// so an id or caption with a NUL would lose its tail (and two ids could merge into one).
pub fn refusal(item: &Item) -> Option<String> {
    if item.id.contains('\0') {
        return Some(format!(
            "the id {:?} contains a NUL character, which HDF5 strings cannot hold: fix the manifest",
            item.id
        ));
    }
    if let Some(at) = item.caption.find('\0') {
        return Some(format!(
            "the caption contains a NUL character (at byte {at}), which HDF5 strings cannot hold: fix the manifest"
        ));
    }
    if let Some(at) = item.captions.iter().find_map(|c| c.find('\0')) {
        return Some(format!(
            "the caption contains a NUL character (at byte {at}), which HDF5 strings cannot hold: fix the manifest"
        ));
    }
    None
}

/// Reads a manifest (or scans a directory) into items in manifest order.
///
/// `root` resolves relative media paths; it defaults to the manifest's folder.
pub fn read_manifest(
    manifest: &Path,
    root: Option<&Path>,
    format: Option<ManifestFormat>,
) -> Result<Vec<Item>, ManifestError> {
    load(manifest, root, format).map(|m| m.items)
}

/// [`read_manifest`], also returning what a directory scan skipped.
pub fn load(
    manifest: &Path,
    root: Option<&Path>,
    format: Option<ManifestFormat>,
) -> Result<Manifest, ManifestError> {
    let format = match format {
        Some(f) => f,
        None => ManifestFormat::detect(manifest)?,
    };
    let root = match root {
        Some(r) => r.to_path_buf(),
        None if manifest.is_dir() => manifest.to_path_buf(),
        None => manifest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let m = formats::parse(format, manifest, &root)?;
    check_unique_ids(manifest, &m.items)?;
    Ok(m)
}

fn check_unique_ids(manifest: &Path, items: &[Item]) -> Result<(), ManifestError> {
    let mut seen = std::collections::HashMap::with_capacity(items.len());
    for item in items {
        if let Some(first) = seen.insert(item.id.as_str(), item.index) {
            return Err(ManifestError::DuplicateId {
                path: manifest.to_path_buf(),
                id: item.id.clone(),
                first,
                second: item.index,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_extensions() {
        assert_eq!(kind_for_path(Path::new("a/b.JPG")), ItemKind::Image);
        assert_eq!(kind_for_path(Path::new("a/b.png")), ItemKind::Image);
        assert_eq!(kind_for_path(Path::new("a/b.gif")), ItemKind::Video);
        assert_eq!(kind_for_path(Path::new("a/b.mp4")), ItemKind::Video);
        assert_eq!(kind_for_path(Path::new("a/noext")), ItemKind::Video);
    }
}
