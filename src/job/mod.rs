//! The job plan and its state on disk: which shards exist, which are committed (done-record
//! present), and the errors of failed items. The manifest order alone fixes item → shard.

pub mod index;
pub mod lock;
pub mod plan;
pub mod verify;
pub mod worker;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::Item;
use crate::shard::{schema, write_atomic, ShardError};

/// A failed item, as recorded in done-records and `errors.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemError {
    /// Manifest id.
    pub id: String,
    /// Media path.
    pub path: String,
    /// Manifest row.
    pub manifest_index: u64,
    /// Stage that failed: `manifest` (the item cannot be stored as given), `decode`, `detect`
    /// or `write`.
    pub stage: String,
    /// Why.
    pub reason: String,
}

/// The done-record written next to a committed shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneRecord {
    /// Shard number.
    pub shard_id: u64,
    /// Items planned for the shard.
    pub planned: u64,
    /// Items written.
    pub written: u64,
    /// Frame rows written.
    pub frames: u64,
    /// Regions written (sum of num_boxes).
    pub boxes: u64,
    /// Size of the shard file in bytes.
    pub bytes: u64,
    /// Failed items.
    pub failed: Vec<ItemError>,
    /// Items written with a caveat about their file (`reason` says what, e.g. duration
    /// metadata that disagreed with the packets); absent when there is none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<ItemError>,
}

/// One planned shard: a contiguous slice of the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardPlan {
    /// Shard number.
    pub id: u64,
    /// Manifest rows `start..end`.
    pub start: usize,
    /// End (exclusive).
    pub end: usize,
}

/// Splits a manifest of `len` items into shards of `shard_size`.
pub fn plan_shards(len: usize, shard_size: usize) -> Vec<ShardPlan> {
    let shard_size = shard_size.max(1);
    (0..len.div_ceil(shard_size))
        .map(|i| ShardPlan {
            id: i as u64,
            start: i * shard_size,
            end: ((i + 1) * shard_size).min(len),
        })
        .collect()
}

/// The shards worker `index` of `count` owns: every `count`-th shard, starting at `index`.
pub fn worker_share(plan: &[ShardPlan], index: usize, count: usize) -> Vec<ShardPlan> {
    plan.iter()
        .filter(|s| s.id as usize % count.max(1) == index)
        .cloned()
        .collect()
}

/// Path of a shard's done-record.
pub fn done_path(out: &Path, shard_id: u64) -> PathBuf {
    out.join(schema::done_file_name(shard_id))
}

/// Reads a done-record if the shard is committed.
pub fn read_done(out: &Path, shard_id: u64) -> Option<DoneRecord> {
    let text = std::fs::read_to_string(done_path(out, shard_id)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes a done-record atomically (after its shard was committed).
pub fn write_done(out: &Path, rec: &DoneRecord) -> Result<(), ShardError> {
    let json = serde_json::to_vec_pretty(rec).expect("done-record serialises");
    write_atomic(&done_path(out, rec.shard_id), &json)
}

/// Gathers the failed items of all done-records in `out` (shard order) into `errors.jsonl`.
pub fn write_errors_jsonl(out: &Path, plan: &[ShardPlan]) -> Result<usize, ShardError> {
    let mut lines = String::new();
    let mut n = 0;
    for s in plan {
        if let Some(rec) = read_done(out, s.id) {
            for e in &rec.failed {
                lines.push_str(&serde_json::to_string(e).expect("json"));
                lines.push('\n');
                n += 1;
            }
        }
    }
    write_atomic(&out.join("errors.jsonl"), lines.as_bytes())?;
    Ok(n)
}

/// Removes temporary files that a killed process left behind: `NAME.PID.tmp` (done-records,
/// plan, index, errors) whose process is gone. Shard `.h5.tmp` files are replaced when their
/// shard is redone.
pub fn clean_stale_tmp(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".tmp") else {
            continue;
        };
        let Some(pid) = stem.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Path of a shard's lock file.
pub fn lock_path(out: &Path, shard_id: u64) -> PathBuf {
    out.join(format!("shard-{shard_id:06}.lock"))
}

/// Items of a shard.
pub fn shard_items<'a>(items: &'a [Item], s: &ShardPlan) -> &'a [Item] {
    &items[s.start..s.end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_and_share_cover_everything_once() {
        let plan = plan_shards(10, 3);
        assert_eq!(plan.len(), 4);
        assert_eq!((plan[3].start, plan[3].end), (9, 10));
        let mut ids: Vec<u64> = (0..3)
            .flat_map(|w| worker_share(&plan, w, 3))
            .map(|s| s.id)
            .collect();
        ids.sort();
        assert_eq!(ids, vec![0, 1, 2, 3]);
        assert!(plan_shards(0, 3).is_empty());
    }
}
