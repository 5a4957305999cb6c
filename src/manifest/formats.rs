//! The four manifest formats. Each parser yields items in file order.

use std::path::{Path, PathBuf};

use super::{kind_for_path, Item, Manifest, ManifestError};

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
    /// A retrieval benchmark's published annotation files (`super::benchmarks`).
    Benchmark(super::Benchmark, Option<super::Split>),
}

impl std::str::FromStr for ManifestFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "webvid" | "csv" => Ok(Self::WebVid),
            "cc3m" | "tsv" => Ok(Self::Cc3m),
            "jsonl" => Ok(Self::Jsonl),
            "dir" => Ok(Self::Dir),
            _ => match super::Benchmark::from_name(s) {
                Some(b) => Ok(Self::Benchmark(b, None)),
                None => Err(format!(
                    "unknown manifest format {s:?} (webvid, cc3m, jsonl, dir, msrvtt, msvd, didemo, lsmdc)"
                )),
            },
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
) -> Result<Manifest, ManifestError> {
    if format == ManifestFormat::Dir {
        return super::scan::scan_dir(manifest);
    }
    if let ManifestFormat::Benchmark(bench, split) = format {
        return Ok(Manifest {
            items: super::benchmarks::parse(bench, split, manifest, root)?,
            skipped: Vec::new(),
        });
    }
    let bytes = std::fs::read(manifest).map_err(|source| ManifestError::Io {
        path: manifest.to_path_buf(),
        source,
    })?;
    let text = manifest_text(&bytes, manifest)?;
    let items = match format {
        ManifestFormat::WebVid => parse_webvid(text, manifest, root),
        ManifestFormat::Cc3m => parse_cc3m(text, manifest, root),
        ManifestFormat::Jsonl => parse_jsonl(text, manifest, root),
        ManifestFormat::Dir | ManifestFormat::Benchmark(..) => unreachable!(),
    }?;
    Ok(Manifest {
        items,
        skipped: Vec::new(),
    })
}

/// The manifest as text: UTF-8 (the failing line is named otherwise), without the byte-order
/// mark that Windows tools put first, which would otherwise start the first id or caption.
fn manifest_text<'a>(bytes: &'a [u8], manifest: &Path) -> Result<&'a str, ManifestError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        row_error(
            manifest,
            line,
            format!("not valid UTF-8 (byte {at} of the file): save the manifest as UTF-8"),
        )
    })
}

/// Checks the quoting of a CSV text the way RFC 4180 writes it, which the lenient `csv` reader
/// does not: a quoted field that is never closed would swallow the following rows into one
/// caption, and text after a closing quote would be glued onto the field. Returns the line and
/// the reason of the first problem.
fn check_csv_quotes(text: &str) -> Result<(), (usize, String)> {
    let b = text.as_bytes();
    let (mut i, mut line, mut field_start) = (0, 1, true);
    while i < b.len() {
        if field_start && b[i] == b'"' {
            let opened = line;
            i += 1;
            loop {
                match b.get(i) {
                    None => {
                        return Err((
                            opened,
                            "a quoted field opened on this line is never closed: its quote would swallow the rest of the file".into(),
                        ))
                    }
                    Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\n') => {
                        line += 1;
                        i += 1;
                    }
                    Some(_) => i += 1,
                }
            }
            if !matches!(b.get(i), None | Some(b',' | b'\n' | b'\r')) {
                return Err((
                    line,
                    format!(
                        "text after the closing quote of a field opened on line {opened}: a quote inside a quoted field must be doubled (\"\")"
                    ),
                ));
            }
            field_start = false;
            continue;
        }
        match b[i] {
            b',' => field_start = true,
            b'\n' => {
                line += 1;
                field_start = true;
            }
            _ => field_start = false,
        }
        i += 1;
    }
    Ok(())
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
pub(super) fn id_from_path(rel: &str) -> String {
    let p = Path::new(rel);
    match p.extension() {
        Some(ext) => rel[..rel.len() - ext.len() - 1].to_string(),
        None => rel.to_string(),
    }
}

pub(super) fn item(index: usize, id: String, path: PathBuf, caption: String) -> Item {
    Item {
        index: index as u64,
        kind: kind_for_path(&path),
        id,
        path,
        caption,
        captions: Vec::new(),
    }
}

/// WebVid: the file is `{root}/{page_dir}/{videoid}.mp4`, unless `contentUrl` is a local
/// (non-URL) path, which is then taken relative to the root. The choice never looks at the disk,
/// so the same manifest always gives the same plan.
fn parse_webvid(text: &str, manifest: &Path, root: &Path) -> Result<Vec<Item>, ManifestError> {
    check_csv_quotes(text).map_err(|(line, reason)| row_error(manifest, line, reason))?;
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
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            row_error(manifest, line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
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

    fn parse_file(name: &str, bytes: &[u8]) -> Result<Vec<Item>, ManifestError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let format = ManifestFormat::detect(&p).unwrap();
        parse(format, &p, Path::new("/r")).map(|m| m.items)
    }

    #[test]
    fn a_byte_order_mark_starts_no_caption_or_id() {
        let tsv = parse_file("m.tsv", b"\xEF\xBB\xBFa cat\timages/1.jpg\n").unwrap();
        assert_eq!(tsv[0].caption, "a cat");
        let csv = parse_file(
            "m.csv",
            b"\xEF\xBB\xBFvideoid,contentUrl,duration,page_dir,name\n1,,PT5S,a,cat\n",
        )
        .unwrap();
        assert_eq!(csv[0].id, "1");
        let jsonl = parse_file("m.jsonl", b"\xEF\xBB\xBF{\"path\": \"v.mp4\"}\n").unwrap();
        assert_eq!(jsonl[0].id, "v");
    }

    #[test]
    fn a_bad_csv_quote_is_an_error_naming_its_line() {
        let head = "videoid,contentUrl,duration,page_dir,name\n";
        // Unclosed: the next rows would become part of the first caption.
        let unclosed = format!("{head}1,,PT5S,a,\"A cat sitting\n2,,PT5S,b,dog\n3,,PT5S,c,bird\n");
        let err = parse_file("m.csv", unclosed.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.csv:2:") && err.contains("never closed"),
            "{err}"
        );
        // Closed too early: text after the closing quote.
        let glued = format!("{head}1,,PT5S,a,\"A \"big\" cat\"\n");
        let err = parse_file("m.csv", glued.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.csv:2:") && err.contains("doubled"), "{err}");
        // Doubled quotes and quoted newlines are fine, and later rows keep their numbers.
        let ok = format!("{head}1,,PT5S,a,\"A \"\"big\"\"\ncat\"\n2,,PT5S,b,dog\n");
        let items = parse_file("m.csv", ok.as_bytes()).unwrap();
        assert_eq!(items[0].caption, "A \"big\"\ncat");
        assert_eq!(items[1].id, "2");
        let err = parse_file(
            "m.csv",
            format!("{head}1,,PT5S,a,x\n,,PT5S,b,y\n").as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("m.csv:3:"), "{err}");
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let err = parse_file("m.tsv", b"a cat\tx.jpg\nbad \xFF\ty.jpg\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.tsv:2:") && err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn nul_in_an_id_or_caption_is_refused_per_item() {
        let items = parse_file(
            "m.jsonl",
            b"{\"id\": \"a\", \"path\": \"a.jpg\"}\n{\"id\": \"a\\u0000\", \"path\": \"a.jpg\"}\n{\"id\": \"b\", \"path\": \"b.jpg\", \"caption\": \"x\\u0000y\"}\n",
        )
        .unwrap();
        assert_eq!(
            items[1].id, "a\0",
            "kept exactly, not normalised into a duplicate"
        );
        assert_eq!(super::super::refusal(&items[0]), None);
        assert!(super::super::refusal(&items[1]).unwrap().contains("NUL"));
        assert!(super::super::refusal(&items[2])
            .unwrap()
            .contains("caption"));
    }
}
