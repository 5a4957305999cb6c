//! Retrieval benchmarks read in the files their authors publish: MSR-VTT (`MSRVTT_data.json`
//! plus the 9k train / 1k-A "JSFusion" test lists), MSVD (`AllVideoDescriptions.txt` plus split
//! lists), DiDeMo (`{train,val,test}_data.json`, one paragraph per video) and LSMDC
//! (`LSMDC16_annos_*.csv`, tab-separated). Each yields one [`Item`] per video with all of its
//! captions, in first-appearance order of the annotation file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{kind_for_path, Item, ManifestError};

/// A retrieval benchmark whose published annotation files we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benchmark {
    /// MSR-VTT: `MSRVTT_data.json` (videos + 200k sentences).
    MsrVtt,
    /// MSVD: `AllVideoDescriptions.txt` + `{train,val,test}_list.txt`.
    Msvd,
    /// DiDeMo: `{train,val,test}_data.json` (moment descriptions, joined per video).
    DiDeMo,
    /// LSMDC 2016: `LSMDC16_annos_*.csv` (tab-separated, clip ids).
    Lsmdc,
}

/// Which part of a benchmark to read (MSR-VTT and MSVD; DiDeMo and LSMDC have one file per
/// split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// MSR-VTT: the 9k training videos (`MSRVTT_train.9k.csv`); MSVD: `train_list.txt`.
    Train,
    /// MSVD: `val_list.txt`.
    Val,
    /// MSR-VTT: the 1k-A test (`MSRVTT_JSFUSION_test.csv`, one caption per video);
    /// MSVD: `test_list.txt`.
    Test,
    /// MSR-VTT: the official 6513 training videos (`split: "train"` in the JSON).
    FullTrain,
    /// MSR-VTT: the official 497 validation videos.
    FullVal,
    /// MSR-VTT: the official 2990 test videos, all 20 captions.
    FullTest,
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" | "train-9k" => Ok(Self::Train),
            "val" => Ok(Self::Val),
            "test" | "test-1ka" | "1k-a" => Ok(Self::Test),
            "full-train" => Ok(Self::FullTrain),
            "full-val" => Ok(Self::FullVal),
            "full-test" => Ok(Self::FullTest),
            _ => Err(format!(
                "unknown split {s:?} (train, val, test, full-train, full-val, full-test)"
            )),
        }
    }
}

impl Benchmark {
    /// The name used by `--format`.
    pub fn name(self) -> &'static str {
        match self {
            Self::MsrVtt => "msrvtt",
            Self::Msvd => "msvd",
            Self::DiDeMo => "didemo",
            Self::Lsmdc => "lsmdc",
        }
    }

    /// From a `--format` name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "msrvtt" => Some(Self::MsrVtt),
            "msvd" => Some(Self::Msvd),
            "didemo" => Some(Self::DiDeMo),
            "lsmdc" => Some(Self::Lsmdc),
            _ => None,
        }
    }
}

fn row_error(path: &Path, line: usize, reason: impl Into<String>) -> ManifestError {
    ManifestError::Row {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

fn read_text(path: &Path) -> Result<String, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(&text).to_string())
}

/// Videos with their captions in first-appearance order.
#[derive(Default)]
struct Grouped {
    order: Vec<String>,
    captions: HashMap<String, Vec<String>>,
}

impl Grouped {
    fn push(&mut self, video: &str, caption: String) {
        match self.captions.get_mut(video) {
            Some(c) => c.push(caption),
            None => {
                self.order.push(video.to_string());
                self.captions.insert(video.to_string(), vec![caption]);
            }
        }
    }

    fn into_items(
        mut self,
        keep: impl Fn(&str) -> bool,
        path_of: impl Fn(&str) -> PathBuf,
    ) -> Vec<Item> {
        let mut items = Vec::new();
        for id in self.order {
            if !keep(&id) {
                continue;
            }
            let captions = self.captions.remove(&id).unwrap_or_default();
            let path = path_of(&id);
            items.push(Item {
                index: items.len() as u64,
                kind: kind_for_path(&path),
                caption: captions.first().cloned().unwrap_or_default(),
                captions,
                id,
                path,
            });
        }
        items
    }
}

/// Reads `manifest` as `bench`. `split` is required for MSR-VTT and MSVD (their split lists
/// live next to the annotation file) and refused for DiDeMo and LSMDC (the file is the split).
pub fn parse(
    bench: Benchmark,
    split: Option<Split>,
    manifest: &Path,
    root: &Path,
) -> Result<Vec<Item>, ManifestError> {
    let needs_split = matches!(bench, Benchmark::MsrVtt | Benchmark::Msvd);
    match (needs_split, split) {
        (true, None) => {
            return Err(row_error(
                manifest,
                0,
                format!(
                    "--format {} needs --split (train, test{})",
                    bench.name(),
                    if bench == Benchmark::Msvd {
                        ", val"
                    } else {
                        ", full-train, full-val, full-test"
                    }
                ),
            ))
        }
        (false, Some(_)) => {
            return Err(row_error(
                manifest,
                0,
                format!(
                    "--format {}: the split is the annotation file you pass; drop --split",
                    bench.name()
                ),
            ))
        }
        _ => {}
    }
    match bench {
        Benchmark::MsrVtt => parse_msrvtt(manifest, root, split.expect("checked")),
        Benchmark::Msvd => parse_msvd(manifest, root, split.expect("checked")),
        Benchmark::DiDeMo => parse_didemo(manifest, root),
        Benchmark::Lsmdc => parse_lsmdc(manifest, root),
    }
}

/// A file next to the manifest; missing is an error naming what it is for.
fn sibling(manifest: &Path, name: &str, what: &str) -> Result<PathBuf, ManifestError> {
    let p = manifest
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(ManifestError::Io {
            path: p,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{what} is expected next to {}", manifest.display()),
            ),
        })
    }
}

/// 1-based line of the `n`-th occurrence of `needle` in `text` (for errors inside JSON arrays,
/// where serde gives no line per element).
fn line_of_nth(text: &str, needle: &str, n: usize) -> usize {
    text.match_indices(needle)
        .nth(n)
        .map(|(at, _)| 1 + text[..at].matches('\n').count())
        .unwrap_or(0)
}

fn json_error(path: &Path, e: serde_json::Error) -> ManifestError {
    row_error(path, e.line(), format!("bad JSON: {e}"))
}

/// Data rows of a CSV with their 1-based line numbers.
type CsvRows = Vec<(usize, csv::StringRecord)>;

/// A CSV with a header; returns the column positions of `want` and the data rows with
/// their 1-based line numbers.
fn read_csv(
    path: &Path,
    delimiter: u8,
    want: &[&str],
) -> Result<(Vec<usize>, CsvRows), ManifestError> {
    let text = read_text(path)?;
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = r
        .headers()
        .map_err(|e| row_error(path, 1, e.to_string()))?
        .clone();
    let cols = want
        .iter()
        .map(|w| {
            headers.iter().position(|h| h.trim() == *w).ok_or_else(|| {
                row_error(
                    path,
                    1,
                    format!("header lacks column {w:?} (have: {headers:?})"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = vec![];
    for rec in r.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
            row_error(path, line, e.to_string())
        })?;
        let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
        rows.push((line, rec));
    }
    Ok((cols, rows))
}

#[derive(serde::Deserialize)]
struct MsrVttData {
    videos: Vec<MsrVttVideo>,
    sentences: Vec<MsrVttSentence>,
}

#[derive(serde::Deserialize)]
struct MsrVttVideo {
    video_id: String,
    split: String,
}

#[derive(serde::Deserialize)]
struct MsrVttSentence {
    video_id: String,
    caption: String,
}

/// MSR-VTT: `MSRVTT_data.json` (`videos[{video_id, split}]`, `sentences[{video_id, caption}]`);
/// the video is `{root}/{video_id}.mp4`. Train: the 9k list `MSRVTT_train.9k.csv` (column
/// `video_id`), all captions. Test: the 1k-A list `MSRVTT_JSFUSION_test.csv`
/// (`key,vid_key,video_id,sentence`), its one sentence per video — the protocol of
/// JSFusion / Frozen-in-Time / DemoVLP. Full-*: the JSON's own `split` field.
fn parse_msrvtt(manifest: &Path, root: &Path, split: Split) -> Result<Vec<Item>, ManifestError> {
    let text = read_text(manifest)?;
    let data: MsrVttData = serde_json::from_str(&text).map_err(|e| json_error(manifest, e))?;
    let mut split_of = HashMap::new();
    for (i, v) in data.videos.iter().enumerate() {
        if v.video_id.trim().is_empty() {
            return Err(row_error(
                manifest,
                line_of_nth(&text, "\"split\"", i),
                format!("videos[{i}] has an empty video_id"),
            ));
        }
        split_of.insert(v.video_id.as_str(), v.split.as_str());
    }
    let path_of = |id: &str| root.join(format!("{id}.mp4"));
    if split == Split::Test {
        let list = sibling(manifest, "MSRVTT_JSFUSION_test.csv", "the 1k-A test list")?;
        let (cols, rows) = read_csv(&list, b',', &["video_id", "sentence"])?;
        let mut g = Grouped::default();
        for (line, rec) in rows {
            let id = rec.get(cols[0]).unwrap_or("").trim();
            let sentence = rec.get(cols[1]).unwrap_or("").trim();
            if id.is_empty() || sentence.is_empty() {
                return Err(row_error(&list, line, "empty video_id or sentence"));
            }
            if !split_of.contains_key(id) {
                return Err(row_error(
                    &list,
                    line,
                    format!("video {id:?} is not in {}", manifest.display()),
                ));
            }
            g.push(id, sentence.to_string());
        }
        return Ok(g.into_items(|_| true, path_of));
    }
    let mut g = Grouped::default();
    for (i, s) in data.sentences.iter().enumerate() {
        if !split_of.contains_key(s.video_id.as_str()) {
            return Err(row_error(
                manifest,
                line_of_nth(&text, "\"caption\"", i),
                format!(
                    "sentences[{i}] names video {:?}, which is not in videos",
                    s.video_id
                ),
            ));
        }
        g.push(&s.video_id, s.caption.trim().to_string());
    }
    let keep: HashSet<String> = match split {
        Split::Train => {
            let list = sibling(manifest, "MSRVTT_train.9k.csv", "the 9k train list")?;
            let (cols, rows) = read_csv(&list, b',', &["video_id"])?;
            let mut keep = HashSet::new();
            for (line, rec) in rows {
                let id = rec.get(cols[0]).unwrap_or("").trim().to_string();
                if !split_of.contains_key(id.as_str()) {
                    return Err(row_error(
                        &list,
                        line,
                        format!("video {id:?} is not in {}", manifest.display()),
                    ));
                }
                keep.insert(id);
            }
            keep
        }
        Split::FullTrain | Split::FullVal | Split::FullTest => {
            let want = match split {
                Split::FullTrain => "train",
                Split::FullVal => "validate",
                _ => "test",
            };
            split_of
                .iter()
                .filter(|(_, s)| **s == want)
                .map(|(v, _)| v.to_string())
                .collect()
        }
        Split::Val | Split::Test => {
            return Err(row_error(
                manifest,
                0,
                "MSR-VTT splits: train (9k), test (1k-A), full-train, full-val, full-test",
            ))
        }
    };
    Ok(g.into_items(|id| keep.contains(id), path_of))
}

/// MSVD: `AllVideoDescriptions.txt`: `#` comment lines, then `<video> <caption words…>`; the
/// video is `{root}/{video}.avi`; the split is `{train,val,test}_list.txt` next to it (one
/// video name per line).
fn parse_msvd(manifest: &Path, root: &Path, split: Split) -> Result<Vec<Item>, ManifestError> {
    let list_name = match split {
        Split::Train => "train_list.txt",
        Split::Val => "val_list.txt",
        Split::Test => "test_list.txt",
        _ => return Err(row_error(manifest, 0, "MSVD splits: train, val, test")),
    };
    let text = read_text(manifest)?;
    let mut g = Grouped::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((video, caption)) = line.split_once(' ') else {
            return Err(row_error(
                manifest,
                i + 1,
                "expected `<video> <caption>` (a video name, a space, the caption)",
            ));
        };
        if caption.trim().is_empty() || video.is_empty() {
            return Err(row_error(manifest, i + 1, "empty video name or caption"));
        }
        g.push(video, caption.trim().to_string());
    }
    let list = sibling(manifest, list_name, "the split list")?;
    let list_text = read_text(&list)?;
    let mut keep = HashSet::new();
    for (i, line) in list_text.lines().enumerate() {
        let v = line.trim();
        if v.is_empty() {
            continue;
        }
        if v.contains(char::is_whitespace) {
            return Err(row_error(&list, i + 1, "expected one video name per line"));
        }
        if !g.captions.contains_key(v) {
            return Err(row_error(
                &list,
                i + 1,
                format!("video {v:?} has no description in {}", manifest.display()),
            ));
        }
        keep.insert(v.to_string());
    }
    Ok(g.into_items(|id| keep.contains(id), |id| root.join(format!("{id}.avi"))))
}

#[derive(serde::Deserialize)]
struct DiDeMoMoment {
    video: String,
    description: String,
}

/// DiDeMo: a JSON list of moments `{video, description, times, …}`; the sentences of a video
/// are joined in file order into one paragraph (paragraph-to-video retrieval). The video is
/// `{root}/{video}`.
fn parse_didemo(manifest: &Path, root: &Path) -> Result<Vec<Item>, ManifestError> {
    let text = read_text(manifest)?;
    let moments: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| json_error(manifest, e))?;
    let mut g = Grouped::default();
    for (i, m) in moments.into_iter().enumerate() {
        let m: DiDeMoMoment = serde_json::from_value(m).map_err(|e| {
            row_error(
                manifest,
                line_of_nth(&text, "{", i),
                format!("moment {i}: {e}"),
            )
        })?;
        if m.video.trim().is_empty() {
            return Err(row_error(
                manifest,
                line_of_nth(&text, "{", i),
                format!("moment {i}: empty video"),
            ));
        }
        g.push(m.video.trim(), m.description.trim().to_string());
    }
    let mut items = g.into_items(|_| true, |v| root.join(v));
    for it in &mut items {
        let paragraph = it
            .captions
            .iter()
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        it.id = id_of(&it.id);
        it.caption = paragraph.clone();
        it.captions = vec![paragraph];
    }
    Ok(items)
}

/// `name.ext` → `name`.
fn id_of(file: &str) -> String {
    match file.rsplit_once('.') {
        Some((stem, ext)) if !ext.contains('/') => stem.to_string(),
        _ => file.to_string(),
    }
}

/// LSMDC 2016: `LSMDC16_annos_{training,val,test}.csv` and the 1000-clip challenge test,
/// tab-separated, no header: `clip_id, start, end, start_aligned, end_aligned, sentence`. The clip
/// `1004_Juno_00.00.32.849-00.00.35.458` is `{root}/1004_Juno/1004_Juno_00.00.32.849-00.00.35.458.avi`.
/// A clip listed twice keeps both sentences.
fn parse_lsmdc(manifest: &Path, root: &Path) -> Result<Vec<Item>, ManifestError> {
    let text = read_text(manifest)?;
    let mut g = Grouped::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 6 {
            return Err(row_error(
                manifest,
                i + 1,
                format!(
                    "expected 6 tab-separated fields (clip, start, end, start_aligned, end_aligned, sentence), got {}",
                    fields.len()
                ),
            ));
        }
        let clip = fields[0].trim();
        if !clip.contains('_') {
            return Err(row_error(
                manifest,
                i + 1,
                format!("{clip:?} is not an LSMDC clip id (<movie>_<start>-<end>)"),
            ));
        }
        if fields[5].trim().is_empty() {
            return Err(row_error(manifest, i + 1, "empty sentence"));
        }
        g.push(clip, fields[5].trim().to_string());
    }
    Ok(g.into_items(
        |_| true,
        |clip| {
            let movie = clip.rsplit_once('_').map(|(m, _)| m).unwrap_or(clip);
            root.join(movie).join(format!("{clip}.avi"))
        },
    ))
}

impl super::ManifestFormat {
    /// Attaches `--split` to a benchmark format; a split with any other format is refused.
    pub fn with_split(self, split: Option<Split>) -> Result<Self, String> {
        match (self, split) {
            (s, None) => Ok(s),
            (Self::Benchmark(b, _), Some(sp)) => Ok(Self::Benchmark(b, Some(sp))),
            (_, Some(_)) => {
                Err("--split applies to --format msrvtt|msvd (benchmark annotation files)".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/benchmarks")
            .join(rel)
    }

    fn read(bench: Benchmark, split: Option<Split>, rel: &str) -> Result<Vec<Item>, ManifestError> {
        parse(bench, split, &fixture(rel), Path::new("/v"))
    }

    /// A copy of a fixture folder with one file replaced.
    fn patched(dir: &str, file: &str, text: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(fixture(dir)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, t.path().join(p.file_name().unwrap())).unwrap();
        }
        std::fs::write(t.path().join(file), text).unwrap();
        t
    }

    fn err_text(r: Result<Vec<Item>, ManifestError>) -> String {
        r.expect_err("must fail").to_string()
    }

    #[test]
    fn msrvtt_9k_train_keeps_all_captions_in_order() {
        let items = read(
            Benchmark::MsrVtt,
            Some(Split::Train),
            "msrvtt/MSRVTT_data.json",
        )
        .unwrap();
        let ids: Vec<_> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["video0", "video1", "video2"]);
        assert_eq!(
            items[0].captions,
            [
                "a red square slides to the right",
                "a block moves across a dark screen",
                "something red moves"
            ]
        );
        assert_eq!(items[0].caption, items[0].captions[0]);
        assert_eq!(items[1].captions.len(), 2);
        assert_eq!(items[2].path, PathBuf::from("/v/video2.mp4"));
        assert_eq!(items[2].index, 2);
    }

    #[test]
    fn msrvtt_1ka_test_has_the_jsfusion_sentence_only() {
        let items = read(
            Benchmark::MsrVtt,
            Some(Split::Test),
            "msrvtt/MSRVTT_data.json",
        )
        .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].id, "video7010");
        assert_eq!(items[0].captions, ["a bar drops from the top"]);
    }

    #[test]
    fn msrvtt_full_splits_follow_the_json() {
        let tr = read(
            Benchmark::MsrVtt,
            Some(Split::FullTrain),
            "msrvtt/MSRVTT_data.json",
        )
        .unwrap();
        assert_eq!(tr.len(), 2);
        let va = read(
            Benchmark::MsrVtt,
            Some(Split::FullVal),
            "msrvtt/MSRVTT_data.json",
        )
        .unwrap();
        assert_eq!(va[0].id, "video2");
        let te = read(
            Benchmark::MsrVtt,
            Some(Split::FullTest),
            "msrvtt/MSRVTT_data.json",
        )
        .unwrap();
        assert_eq!(te[0].captions.len(), 2);
    }

    #[test]
    fn msrvtt_errors_name_the_file_and_line() {
        let e = err_text(read(Benchmark::MsrVtt, None, "msrvtt/MSRVTT_data.json"));
        assert!(e.contains("--split"), "{e}");
        let t = patched(
            "msrvtt",
            "MSRVTT_JSFUSION_test.csv",
            "key,vid_key,video_id,sentence\nret0,msr1,video7010,ok\nret1,msr9,video9999,missing video\n",
        );
        let e = err_text(parse(
            Benchmark::MsrVtt,
            Some(Split::Test),
            &t.path().join("MSRVTT_data.json"),
            Path::new("/v"),
        ));
        assert!(e.contains("MSRVTT_JSFUSION_test.csv:3"), "{e}");
        assert!(e.contains("video9999"), "{e}");
        let t = patched("msrvtt", "MSRVTT_train.9k.csv", "videoid\nvideo0\n");
        let e = err_text(parse(
            Benchmark::MsrVtt,
            Some(Split::Train),
            &t.path().join("MSRVTT_data.json"),
            Path::new("/v"),
        ));
        assert!(
            e.contains("MSRVTT_train.9k.csv:1") && e.contains("video_id"),
            "{e}"
        );
        let t = patched(
            "msrvtt",
            "MSRVTT_data.json",
            "{\"videos\": [{\"video_id\": \"video0\", \"split\": \"train\"}],\n \"sentences\": [\n {\"caption\": \"x\", \"video_id\": \"video0\"},\n {\"caption\": \"y\", \"video_id\": \"video5\"}]}\n",
        );
        let e = err_text(parse(
            Benchmark::MsrVtt,
            Some(Split::Train),
            &t.path().join("MSRVTT_data.json"),
            Path::new("/v"),
        ));
        assert!(
            e.contains("MSRVTT_data.json:4") && e.contains("video5"),
            "{e}"
        );
        let t = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixture("msrvtt/MSRVTT_data.json"),
            t.path().join("MSRVTT_data.json"),
        )
        .unwrap();
        let e = err_text(parse(
            Benchmark::MsrVtt,
            Some(Split::Test),
            &t.path().join("MSRVTT_data.json"),
            Path::new("/v"),
        ));
        assert!(
            e.contains("MSRVTT_JSFUSION_test.csv") && e.contains("1k-A"),
            "{e}"
        );
    }

    #[test]
    fn msvd_groups_descriptions_per_split() {
        let tr = read(
            Benchmark::Msvd,
            Some(Split::Train),
            "msvd/AllVideoDescriptions.txt",
        )
        .unwrap();
        assert_eq!(tr.len(), 2);
        assert_eq!(tr[0].id, "-4wsuPCjDBc_5_15");
        assert_eq!(tr[0].captions.len(), 3);
        assert_eq!(tr[0].captions[2], "an animal eats a nut");
        assert_eq!(tr[1].path, PathBuf::from("/v/zv2RIbUsnSw_335_341.avi"));
        let te = read(
            Benchmark::Msvd,
            Some(Split::Test),
            "msvd/AllVideoDescriptions.txt",
        )
        .unwrap();
        assert_eq!(te.len(), 1);
        assert_eq!(te[0].captions, ["a woman is slicing an onion"]);
        let va = read(
            Benchmark::Msvd,
            Some(Split::Val),
            "msvd/AllVideoDescriptions.txt",
        )
        .unwrap();
        assert_eq!(va[0].captions.len(), 2);
    }

    #[test]
    fn msvd_malformed_rows_name_the_line() {
        let t = patched(
            "msvd",
            "AllVideoDescriptions.txt",
            "# header\nzv2RIbUsnSw_335_341 a man plays\nnocaption\n",
        );
        let e = err_text(parse(
            Benchmark::Msvd,
            Some(Split::Val),
            &t.path().join("AllVideoDescriptions.txt"),
            Path::new("/v"),
        ));
        assert!(e.contains("AllVideoDescriptions.txt:3"), "{e}");
        let t = patched("msvd", "test_list.txt", "0lh_UWF9ZP4_62_69\nunknown_1_2\n");
        let e = err_text(parse(
            Benchmark::Msvd,
            Some(Split::Test),
            &t.path().join("AllVideoDescriptions.txt"),
            Path::new("/v"),
        ));
        assert!(
            e.contains("test_list.txt:2") && e.contains("unknown_1_2"),
            "{e}"
        );
    }

    #[test]
    fn didemo_joins_sentences_into_a_paragraph() {
        let items = read(Benchmark::DiDeMo, None, "didemo/test_data.json").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id, "10015567@N08_3655084291_d8b58466fa");
        assert_eq!(
            items[0].captions,
            ["the camera pans left a dog runs into view"]
        );
        assert_eq!(
            items[1].path,
            PathBuf::from("/v/10052814@N02_4583473451_ee5e48b17b.mp4")
        );
        let e = err_text(read(
            Benchmark::DiDeMo,
            Some(Split::Test),
            "didemo/test_data.json",
        ));
        assert!(e.contains("drop --split"), "{e}");
        let t = patched(
            "didemo",
            "test_data.json",
            "[\n{\"video\": \"a.mp4\", \"description\": \"x\"},\n{\"description\": \"no video\"}\n]\n",
        );
        let e = err_text(parse(
            Benchmark::DiDeMo,
            None,
            &t.path().join("test_data.json"),
            Path::new("/v"),
        ));
        assert!(e.contains("test_data.json:3") && e.contains("video"), "{e}");
    }

    #[test]
    fn lsmdc_clip_ids_map_to_movie_folders() {
        let items = read(Benchmark::Lsmdc, None, "lsmdc/LSMDC16_annos_test.csv").unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0].path,
            PathBuf::from("/v/1004_Juno/1004_Juno_00.00.32.849-00.00.35.458.avi")
        );
        assert_eq!(
            items[2].path,
            PathBuf::from(
                "/v/3001_21_JUMP_STREET/3001_21_JUMP_STREET_00.00.01.514-00.00.03.900.avi"
            )
        );
        assert_eq!(items[1].caption, "She drinks from a jug.");
        let t = patched(
            "lsmdc",
            "LSMDC16_annos_test.csv",
            "1004_Juno_00.00.32.849-00.00.35.458\ta\tb\tc\td\tfine\n1004_Juno_x\tonly three\tfields\n",
        );
        let e = err_text(parse(
            Benchmark::Lsmdc,
            None,
            &t.path().join("LSMDC16_annos_test.csv"),
            Path::new("/v"),
        ));
        assert!(
            e.contains("LSMDC16_annos_test.csv:2") && e.contains("6 tab-separated"),
            "{e}"
        );
    }

    #[test]
    fn format_names_and_splits_parse() {
        use super::super::ManifestFormat;
        let f: ManifestFormat = "msrvtt".parse().unwrap();
        assert_eq!(
            f.with_split(Some("test-1ka".parse().unwrap())).unwrap(),
            ManifestFormat::Benchmark(Benchmark::MsrVtt, Some(Split::Test))
        );
        assert!(ManifestFormat::Jsonl
            .with_split(Some(Split::Train))
            .is_err());
        assert!("bogus".parse::<Split>().is_err());
    }
}
