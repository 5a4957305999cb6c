//! `plan.json`: the item → shard mapping an output directory was started with. Every worker
//! checks it, so a rerun with another manifest or shard size cannot mix two plans. The worker
//! count is not part of the mapping: changing it between runs is safe (shards are the unit of
//! work, guarded by locks and done-records) and only recorded.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::manifest::Item;
use crate::shard::{write_atomic, ShardError};

/// The persisted plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// Items in the manifest.
    pub items: u64,
    /// sha256 over the item ids in manifest order.
    pub ids_sha256: String,
    /// Items per shard.
    pub shard_size: u64,
    /// Shards in the plan.
    pub shards: u64,
    /// Worker count of the first run (informational).
    pub num_workers: u64,
    /// Frames per video (changing it would mix shards of two configurations).
    pub frames: u64,
    /// sha256 of the detector (likewise).
    pub detector_sha256: String,
}

/// sha256 over ids, one per line.
pub fn ids_digest(items: &[Item]) -> String {
    let mut h = sha2::Sha256::new();
    for it in items {
        h.update(it.id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Writes `plan.json` if absent, else checks that `want` matches it.
pub fn check_or_write(out: &Path, want: &PlanRecord) -> Result<(), String> {
    let path = out.join("plan.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let have: PlanRecord =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut diffs = Vec::new();
            if have.items != want.items || have.ids_sha256 != want.ids_sha256 {
                diffs.push(format!(
                    "the manifest differs ({} items then, {} now, or other ids)",
                    have.items, want.items
                ));
            }
            if have.shard_size != want.shard_size {
                diffs.push(format!(
                    "--shard-size was {}, now {}",
                    have.shard_size, want.shard_size
                ));
            }
            if have.frames != want.frames {
                diffs.push(format!("--frames was {}, now {}", have.frames, want.frames));
            }
            if have.detector_sha256 != want.detector_sha256 {
                diffs.push("the detector model differs".into());
            }
            if diffs.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} was planned differently: {}. Use a new --out directory (or restore the original settings).",
                    out.display(),
                    diffs.join("; ")
                ))
            }
        }
        Err(_) => write_atomic(&path, &serde_json::to_vec_pretty(want).expect("json"))
            .map_err(|e: ShardError| e.to_string()),
    }
}

/// Reads `plan.json`.
pub fn read(out: &Path) -> Option<PlanRecord> {
    serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).ok()?).ok()
}
