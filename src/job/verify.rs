//! `regionfeat verify`: an output directory against its manifest — missing, duplicated or
//! corrupt items and shards, failed items with reasons.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use super::{plan_shards, read_done, ItemError};
use crate::manifest::Item;
use crate::shard::{schema, ShardReader};

/// What verify found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Shards in the plan.
    pub shards_planned: u64,
    /// Shards committed and readable.
    pub shards_ok: u64,
    /// Planned shards without a done-record.
    pub missing_shards: Vec<u64>,
    /// Shards that exist but cannot be read or disagree with their done-record.
    pub corrupt_shards: Vec<String>,
    /// Items written.
    pub items_ok: u64,
    /// Items in neither a shard nor the failure list of a committed shard.
    pub missing_items: Vec<String>,
    /// Items present more than once.
    pub duplicate_items: Vec<String>,
    /// Items in a shard that the plan puts elsewhere (or not at all).
    pub misplaced_items: Vec<String>,
    /// Failed items with reasons.
    pub failed_items: Vec<ItemError>,
    /// Leftover temporary or lock files (a run in progress, or a crashed one).
    pub leftovers: Vec<String>,
}

impl VerifyReport {
    /// 0: complete and clean; 1: complete, some items failed; 2: missing, duplicate or corrupt.
    pub fn exit_code(&self) -> u8 {
        if !self.missing_shards.is_empty()
            || !self.corrupt_shards.is_empty()
            || !self.missing_items.is_empty()
            || !self.duplicate_items.is_empty()
            || !self.misplaced_items.is_empty()
        {
            2
        } else if !self.failed_items.is_empty() {
            1
        } else {
            0
        }
    }
}

/// Checks `out` against `items` split into shards of `shard_size`.
pub fn verify(out: &Path, items: &[Item], shard_size: usize) -> VerifyReport {
    let plan = plan_shards(items.len(), shard_size);
    let mut rep = VerifyReport {
        shards_planned: plan.len() as u64,
        ..Default::default()
    };
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut accounted: HashSet<String> = HashSet::new();
    for s in &plan {
        let Some(done) = read_done(out, s.id) else {
            rep.missing_shards.push(s.id);
            continue;
        };
        let name = schema::shard_file_name(s.id);
        let path = out.join(&name);
        // The same checks as `inspect --validate`, reading every chunk once.
        let problems = crate::inspect::check_shard(&path, false).problems;
        if let Some(first) = problems.first() {
            let more = match problems.len() {
                1 => String::new(),
                n => format!(
                    " (and {} more problem(s): inspect --validate lists them)",
                    n - 1
                ),
            };
            rep.corrupt_shards.push(format!("{first}{more}"));
        }
        let expected: HashSet<&str> = items[s.start..s.end]
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        let read = (|| {
            let r = ShardReader::open(&path)?;
            Ok::<_, crate::shard::ShardError>((r.item_ids()?, r.num_frame_rows()?))
        })();
        let (ids, frames) = match read {
            Ok(x) => x,
            Err(e) => {
                if problems.is_empty() {
                    rep.corrupt_shards.push(format!("{name}: {e}"));
                }
                continue;
            }
        };
        if ids.len() as u64 != done.written || frames as u64 != done.frames {
            rep.corrupt_shards.push(format!(
                "{name}: {} items / {frames} frames, done-record says {} / {}",
                ids.len(),
                done.written,
                done.frames
            ));
        } else if problems.is_empty() {
            rep.shards_ok += 1;
        }
        for id in ids.iter().chain(done.failed.iter().map(|f| &f.id)) {
            *seen.entry(id.clone()).or_default() += 1;
            if !expected.contains(id.as_str()) {
                rep.misplaced_items.push(format!("{id} (in {name})"));
            }
            accounted.insert(id.clone());
        }
        rep.items_ok += ids.len() as u64;
        rep.failed_items.extend(done.failed);
    }
    let committed: HashSet<u64> = plan
        .iter()
        .map(|s| s.id)
        .filter(|id| !rep.missing_shards.contains(id))
        .collect();
    for s in &plan {
        if committed.contains(&s.id) {
            rep.missing_items.extend(
                items[s.start..s.end]
                    .iter()
                    .filter(|i| !accounted.contains(&i.id))
                    .map(|i| i.id.clone()),
            );
        }
    }
    let mut dups: Vec<String> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect();
    dups.sort();
    rep.duplicate_items = dups;
    if let Ok(entries) = std::fs::read_dir(out) {
        let mut left: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") || n.ends_with(".lock"))
            .collect();
        left.sort();
        rep.leftovers = left;
    }
    rep
}
