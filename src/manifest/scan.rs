//! A directory as a manifest: media files found recursively, sorted by relative path;
//! id = relative path without its extension.
//!
//! Symbolic links are followed, but every real directory is scanned once: a link to a folder
//! that contains it (`..`, `.`, an ancestor) is a loop and is not followed, and a second way to
//! a folder already scanned is not taken again. Nothing is dropped silently: files with other
//! extensions, unreadable folders, loops and special files are returned as [`SkippedFile`]s.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::formats::{id_from_path, item};
use super::{Manifest, ManifestError, SkippedFile, MEDIA_EXTENSIONS};

/// A folder waiting to be listed: its path relative to the scanned directory, its canonical
/// path, and the (device, inode) of it and its ancestors (a link back to one is a loop).
struct Pending {
    rel: PathBuf,
    canonical: PathBuf,
    chain: Vec<(u64, u64)>,
}

/// Text of an OS path for ids and messages: exact when it is UTF-8, else every byte that is not
/// valid UTF-8 written as `\xNN`, so two different names never give the same text by accident.
pub(super) fn path_text(p: &Path) -> String {
    let bytes = p.as_os_str().as_bytes();
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_string();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

fn skip(rel: &Path, reason: impl Into<String>) -> SkippedFile {
    SkippedFile {
        path: path_text(rel),
        reason: reason.into(),
    }
}

fn media_extension(name: &Path) -> Result<(), String> {
    match name.extension().map(OsStr::to_string_lossy) {
        None => Err("no file extension: not taken as media (rename it, or list it in a JSONL manifest)".into()),
        Some(e) if MEDIA_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()) => Ok(()),
        Some(e) => Err(format!(
            "extension .{e} is not a video or image type regionfeat scans for (audio and other files are not extracted)"
        )),
    }
}

/// Lists a folder's entry names in byte order.
fn sorted_names(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Option<std::io::Error>)> {
    let mut names = Vec::new();
    let mut failure = None;
    for entry in std::fs::read_dir(dir)? {
        match entry {
            Ok(e) => names.push(PathBuf::from(e.file_name())),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    names.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    Ok((names, failure))
}

pub(super) fn scan_dir(dir: &Path) -> Result<Manifest, ManifestError> {
    let io_error = |source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let canonical = dir.canonicalize().map_err(io_error)?;
    let meta = std::fs::metadata(&canonical).map_err(io_error)?;
    let mut visited: HashSet<(u64, u64)> = HashSet::from([(meta.dev(), meta.ino())]);
    let mut files: Vec<PathBuf> = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![Pending {
        rel: PathBuf::new(),
        canonical,
        chain: vec![(meta.dev(), meta.ino())],
    }];
    while let Some(folder) = stack.pop() {
        let (names, failure) = match sorted_names(&dir.join(&folder.rel)) {
            Ok(x) => x,
            // The scanned directory itself must be readable; below it, record and go on.
            Err(e) if folder.rel.as_os_str().is_empty() => return Err(io_error(e)),
            Err(e) => {
                skipped.push(skip(
                    &folder.rel,
                    format!("cannot read this folder ({e}): its files are not extracted"),
                ));
                continue;
            }
        };
        if let Some(e) = failure {
            skipped.push(skip(
                &folder.rel,
                format!(
                    "listing this folder failed part way ({e}): some of its files may be missing"
                ),
            ));
        }
        let mut subfolders = Vec::new();
        for name in names {
            let rel = folder.rel.join(&name);
            let path = dir.join(&rel);
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    let what = if path.is_symlink() {
                        "a symbolic link whose target cannot be reached"
                    } else {
                        "cannot be read"
                    };
                    skipped.push(skip(&rel, format!("{what} ({e})")));
                    continue;
                }
            };
            if meta.is_dir() {
                let id = (meta.dev(), meta.ino());
                let target = path.canonicalize().unwrap_or_else(|_| path.clone());
                if folder.chain.contains(&id) || folder.canonical.starts_with(&target) {
                    skipped.push(skip(
                        &rel,
                        format!(
                            "a link to {}, which contains this folder: following it would loop, so it is not followed",
                            target.display()
                        ),
                    ));
                } else if !visited.insert(id) {
                    skipped.push(skip(
                        &rel,
                        format!(
                            "the same folder as one already scanned ({}): not scanned twice",
                            target.display()
                        ),
                    ));
                } else {
                    let mut chain = folder.chain.clone();
                    chain.push(id);
                    subfolders.push(Pending {
                        rel,
                        canonical: target,
                        chain,
                    });
                }
            } else if !meta.is_file() {
                skipped.push(skip(&rel, "not a regular file (device, socket or pipe)"));
            } else {
                match media_extension(&name) {
                    Ok(()) => files.push(rel),
                    Err(reason) => skipped.push(skip(&rel, reason)),
                }
            }
        }
        // Last pushed is scanned first: keep sibling folders in name order.
        stack.extend(subfolders.into_iter().rev());
    }
    files.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    let items = files
        .iter()
        .enumerate()
        .map(|(i, rel)| {
            item(
                i,
                id_from_path(&path_text(rel)),
                dir.join(rel),
                String::new(),
            )
        })
        .collect();
    Ok(Manifest { items, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn links_back_to_an_ancestor_are_refused_and_each_folder_is_scanned_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        touch(&root.join("a/clip.mp4"));
        touch(&root.join("b/img.jpg"));
        // Two links to the parent (the case that never ended), one to the root, one to `a`.
        symlink("..", root.join("up1")).unwrap();
        symlink("..", root.join("a/up2")).unwrap();
        symlink(".", root.join("self")).unwrap();
        symlink(root.join("a"), root.join("z-again")).unwrap();
        let m = scan_dir(&root).unwrap();
        let ids: Vec<&str> = m.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a/clip", "b/img"]);
        let reasons: Vec<(&str, &str)> = m
            .skipped
            .iter()
            .map(|s| (s.path.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        for (p, r) in &reasons {
            if *p == "z-again" {
                assert!(r.contains("already scanned"), "{r}");
            } else {
                assert!(r.contains("loop"), "{p}: {r}");
            }
        }
    }

    #[test]
    fn other_extensions_are_listed_and_non_utf8_names_keep_their_os_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        touch(&root.join("song.m4a"));
        touch(&root.join("voice.wav"));
        touch(&root.join("README"));
        let raw = OsStr::from_bytes(b"caf\xE9.mp4");
        touch(&root.join(raw));
        let raw2 = OsStr::from_bytes(b"caf\xE8.mp4");
        touch(&root.join(raw2));
        let m = scan_dir(root).unwrap();
        let ids: Vec<&str> = m.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["caf\\xE8", "caf\\xE9"]);
        assert!(m.items[1].path.exists(), "the item keeps the OS path");
        assert_eq!(m.items[1].path, root.join(raw));
        let skipped: Vec<&str> = m.skipped.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(skipped, ["README", "song.m4a", "voice.wav"]);
        assert!(m.skipped[1].reason.contains(".m4a"));
        assert!(m.skipped[0].reason.contains("no file extension"));
    }
}
