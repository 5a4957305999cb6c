//! `index.jsonl`: item_id → (shard, row, frames, caption) over all committed shards, in
//! manifest order. Built after extraction; the trainer reads it instead of opening every shard.
//! Both directions stream line by line, so memory does not grow with the index (5.8M lines are
//! about 1.2 GB of text).

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{plan_shards, read_done};
use crate::shard::{commit_file, schema, ShardError, ShardReader};

/// File name of the index inside an extraction output directory.
pub const FILE_NAME: &str = "index.jsonl";

/// One line of `index.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Item id.
    pub id: String,
    /// Shard file name (relative to the output directory).
    pub shard: String,
    /// Item row inside the shard.
    pub row: u64,
    /// First frame row.
    pub frame_start: u64,
    /// Frame rows.
    pub num_frames: u32,
    /// 0 video, 1 image.
    pub kind: u8,
    /// Manifest row.
    pub manifest_index: u64,
    /// Caption.
    pub caption: String,
    /// All captions, written only when the item has more than one (else it is `caption`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captions: Vec<String>,
}

impl IndexEntry {
    /// Every caption of the item (`captions`, else `caption` when not empty).
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

/// Builds the index over shards `0..shards` (all must be committed); returns the entry count.
pub fn build(out: &Path, items: usize, shard_size: usize) -> Result<usize, ShardError> {
    let dest = out.join(FILE_NAME);
    // Unique per process: several workers may build the index at once.
    let tmp = out.join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(|e| ShardError::at(&tmp, e))?;
    let mut text = BufWriter::new(file);
    let mut n = 0;
    for s in plan_shards(items, shard_size) {
        if read_done(out, s.id).is_none() {
            return Err(ShardError::at(
                out,
                format!("shard {} is not committed yet: index not built", s.id),
            ));
        }
        let name = schema::shard_file_name(s.id);
        let r = ShardReader::open(&out.join(&name))?;
        let ids = r.item_ids()?;
        let caps = r.captions()?;
        let mut all = r.all_captions()?.into_iter();
        let kinds = r.kinds()?;
        let mi = r.manifest_indices()?;
        for (row, (((id, cap), (start, nf)), (kind, m))) in ids
            .into_iter()
            .zip(caps)
            .zip(r.frame_ranges()?)
            .zip(kinds.into_iter().zip(mi))
            .enumerate()
        {
            let e = IndexEntry {
                id,
                shard: name.clone(),
                row: row as u64,
                frame_start: start,
                num_frames: nf,
                kind,
                manifest_index: m,
                caption: cap,
                captions: all.next().filter(|c| c.len() > 1).unwrap_or_default(),
            };
            serde_json::to_writer(&mut text, &e)
                .map_err(std::io::Error::from)
                .and_then(|_| text.write_all(b"\n"))
                .map_err(|e| ShardError::at(&tmp, e))?;
            n += 1;
        }
    }
    text.into_inner()
        .map_err(|e| ShardError::at(&tmp, e.into_error()))?;
    commit_file(&tmp, &dest)?;
    Ok(n)
}

/// Reads all of `index.jsonl` into memory (small indexes, tools and tests; the trainer uses
/// [`visit`]).
pub fn read(out: &Path) -> std::io::Result<Vec<IndexEntry>> {
    let mut v = vec![];
    visit(out, |e| {
        v.push(e);
        Ok(())
    })?;
    Ok(v)
}

/// Streams `index.jsonl` in file order, one line at a time, handing each entry to `f`; returns
/// the number of entries. A line that does not parse is an `InvalidData` error naming its line
/// number; blank lines are skipped; an error from `f` stops the walk and is returned.
pub fn visit(
    out: &Path,
    mut f: impl FnMut(IndexEntry) -> std::io::Result<()>,
) -> std::io::Result<usize> {
    let path = out.join(FILE_NAME);
    let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?);
    let mut line = String::new();
    let (mut n, mut line_no) = (0, 0usize);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(n);
        }
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let e: IndexEntry = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} line {line_no}: {e}", path.display()),
            )
        })?;
        f(e)?;
        n += 1;
    }
}
