//! `index.jsonl`: item_id → (shard, row, frames, caption) over all committed shards, in
//! manifest order. Built after extraction; the trainer reads it instead of opening every shard.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{plan_shards, read_done};
use crate::shard::{schema, write_atomic, ShardError, ShardReader};

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
    let mut text = String::new();
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
            text.push_str(&serde_json::to_string(&e).expect("json"));
            text.push('\n');
            n += 1;
        }
    }
    write_atomic(&out.join("index.jsonl"), text.as_bytes())?;
    Ok(n)
}

/// Reads `index.jsonl`.
pub fn read(out: &Path) -> std::io::Result<Vec<IndexEntry>> {
    std::fs::read_to_string(out.join("index.jsonl"))?
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .collect()
}
