//! The four manifest formats. Each parser yields items in file order.

use std::path::{Path, PathBuf};

use super::{kind_for_path, Item, ManifestError, MEDIA_EXTENSIONS};

/// Manifest formats understood by `read_manifest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// WebVid `results_*.csv`: `videoid,contentUrl,duration,page_dir,name` with a header.
    WebVid,
    /// CC3M `caption<TAB>path` (no header).
    Cc3m,
    /// One JSON object per line: `{"id", "path", "caption"}` (`id` and `caption` optional).
    Jsonl,
    /// A directory scanned recursively for media files (no captions).
    Dir,
}

impl std::str::FromStr for ManifestFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "webvid" | "csv" => Ok(Self::WebVid),
            "cc3m" | "tsv" => Ok(Self::Cc3m),
            "jsonl" => Ok(Self::Jsonl),
            "dir" => Ok(Self::Dir),
            _ => Err(format!(
                "unknown manifest format {s:?} (webvid, cc3m, jsonl, dir)"
            )),
        }
    }
}

impl ManifestFormat {
    /// Guesses the format from the path: a directory, or the file extension.
    pub fn detect(path: &Path) -> Result<Self, ManifestError> {
        if path.is_dir() {
            return Ok(Self::Dir);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(Self::WebVid),
            Some("tsv") => Ok(Self::Cc3m),
            Some("jsonl") | Some("ndjson") => Ok(Self::Jsonl),
            _ => Err(ManifestError::UnknownFormat(path.to_path_buf())),
        }
    }
}

pub(super) fn parse(
    format: ManifestFormat,
    manifest: &Path,
    root: &Path,
) -> Result<Vec<Item>, ManifestError> {
    if format == ManifestFormat::Dir {
        return scan_dir(manifest);
    }
    let text = std::fs::read_to_string(manifest).map_err(|source| ManifestError::Io {
        path: manifest.to_path_buf(),
        source,
    })?;
    match format {
        ManifestFormat::WebVid => parse_webvid(&text, manifest, root),
        ManifestFormat::Cc3m => parse_cc3m(&text, manifest, root),
        ManifestFormat::Jsonl => parse_jsonl(&text, manifest, root),
        ManifestFormat::Dir => unreachable!(),
    }
}

fn row_error(manifest: &Path, line: usize, reason: impl Into<String>) -> ManifestError {
    ManifestError::Row {
        path: manifest.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

fn is_url(s: &str) -> bool {
    s.contains("://")
}

/// `id` of a file given by a relative path: the path without its extension.
fn id_from_path(rel: &str) -> String {
    let p = Path::new(rel);
    match p.extension() {
        Some(ext) => rel[..rel.len() - ext.len() - 1].to_string(),
        None => rel.to_string(),
    }
}

fn item(index: usize, id: String, path: PathBuf, caption: String) -> Item {
    Item {
        index: index as u64,
        kind: kind_for_path(&path),
        id,
        path,
        caption,
    }
}

/// WebVid: the file is `{root}/{page_dir}/{videoid}.mp4`, unless `contentUrl` is a local
/// (non-URL) path, which is then taken relative to the root. The choice never looks at the disk,
/// so the same manifest always gives the same plan.
fn parse_webvid(text: &str, manifest: &Path, root: &Path) -> Result<Vec<Item>, ManifestError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| row_error(manifest, 1, e.to_string()))?
        .clone();
    let col = |name: &str| -> Result<usize, ManifestError> {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                row_error(
                    manifest,
                    1,
                    format!("WebVid header lacks column {name:?} (have: {headers:?})"),
                )
            })
    };
    let (c_id, c_url, c_dir, c_name) = (
        col("videoid")?,
        col("contentUrl")?,
        col("page_dir")?,
        col("name")?,
    );
    let mut items = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| row_error(manifest, line, e.to_string()))?;
        let id = record.get(c_id).unwrap_or("").trim().to_string();
        if id.is_empty() {
            return Err(row_error(manifest, line, "empty videoid"));
        }
        let url = record.get(c_url).unwrap_or("").trim();
        let path = if !url.is_empty() && !is_url(url) {
            root.join(url)
        } else {
            root.join(record.get(c_dir).unwrap_or("").trim())
                .join(format!("{id}.mp4"))
        };
        let caption = record.get(c_name).unwrap_or("").to_string();
        items.push(item(items.len(), id, path, caption));
    }
    Ok(items)
}

/// CC3M: `caption<TAB>path`; the id is the path without its extension.
fn parse_cc3m(text: &str, manifest: &Path, root: &Path) -> Result<Vec<Item>, ManifestError> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (caption, rel) = line
            .rsplit_once('\t')
            .ok_or_else(|| row_error(manifest, i + 1, "expected caption<TAB>path"))?;
        let rel = rel.trim();
        if rel.is_empty() || is_url(rel) {
            return Err(row_error(
                manifest,
                i + 1,
                format!("{rel:?} is not a local path: download the images first (e.g. img2dataset) and list their paths"),
            ));
        }
        items.push(item(
            items.len(),
            id_from_path(rel),
            root.join(rel),
            caption.to_string(),
        ));
    }
    Ok(items)
}

#[derive(serde::Deserialize)]
struct JsonlRow {
    id: Option<serde_json::Value>,
    path: String,
    #[serde(default)]
    caption: String,
}

fn parse_jsonl(text: &str, manifest: &Path, root: &Path) -> Result<Vec<Item>, ManifestError> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: JsonlRow = serde_json::from_str(line)
            .map_err(|e| row_error(manifest, i + 1, format!("bad JSON row: {e}")))?;
        let id = match row.id {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(row_error(
                    manifest,
                    i + 1,
                    format!("id must be a string or number, got {other}"),
                ))
            }
            None => id_from_path(&row.path),
        };
        items.push(item(items.len(), id, root.join(&row.path), row.caption));
    }
    Ok(items)
}

/// A directory: media files found recursively, sorted by relative path; id = relative path
/// without extension.
fn scan_dir(dir: &Path) -> Result<Vec<Item>, ManifestError> {
    let mut rels = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| ManifestError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ManifestError::Io {
                path: d.clone(),
                source,
            })?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| MEDIA_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                if let Ok(rel) = path.strip_prefix(dir) {
                    rels.push(rel.to_string_lossy().into_owned());
                }
            }
        }
    }
    rels.sort();
    Ok(rels
        .iter()
        .enumerate()
        .map(|(i, rel)| item(i, id_from_path(rel), dir.join(rel), String::new()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webvid_uses_local_content_url_else_page_dir() {
        let csv = "videoid,contentUrl,duration,page_dir,name\n\
                   1,videos/a/1.mp4,PT00H00M05S,a,\"A cat, sitting\"\n\
                   2,https://x/2.mp4,PT00H00M05S,b,dog\n";
        let items = parse_webvid(csv, Path::new("m.csv"), Path::new("/r")).unwrap();
        assert_eq!(items[0].path, PathBuf::from("/r/videos/a/1.mp4"));
        assert_eq!(items[0].caption, "A cat, sitting");
        assert_eq!(items[1].path, PathBuf::from("/r/b/2.mp4"));
        assert_eq!(items[1].index, 1);
    }

    #[test]
    fn webvid_missing_column_is_an_error() {
        let err =
            parse_webvid("videoid,name\n1,x\n", Path::new("m.csv"), Path::new("/r")).unwrap_err();
        assert!(err.to_string().contains("contentUrl"), "{err}");
    }

    #[test]
    fn cc3m_and_jsonl_rows() {
        let items = parse_cc3m(
            "a cat\timages/1.jpg\n\nb dog\timages/2.png\n",
            Path::new("m.tsv"),
            Path::new("/r"),
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].id, "images/2");
        assert_eq!(items[1].kind, super::super::ItemKind::Image);
        let items = parse_jsonl(
            "{\"id\": 7, \"path\": \"v.mp4\", \"caption\": \"hi\"}\n{\"path\": \"w.gif\"}\n",
            Path::new("m.jsonl"),
            Path::new("/r"),
        )
        .unwrap();
        assert_eq!(items[0].id, "7");
        assert_eq!(items[1].id, "w");
        assert!(parse_cc3m("no tab here\n", Path::new("m.tsv"), Path::new("/r")).is_err());
    }
}
