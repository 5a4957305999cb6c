//! `plan.json`: the item → shard mapping an output directory was started with. Every worker
//! checks it, so a rerun with another manifest or shard size cannot mix two plans. The worker
//! count is not part of the mapping: changing it between runs is safe (shards are the unit of
//! work, guarded by locks and done-records) and only recorded. Everything else that changes a
//! shard's content (captions, media paths, selection and storage settings) is checked too, so
//! a resumed run never adds shards made another way.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
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
    /// sha256 over the captions in manifest order (absent in plans of older versions).
    #[serde(default)]
    pub captions_sha256: Option<String>,
    /// sha256 over the media paths and kinds in manifest order (absent in older plans).
    #[serde(default)]
    pub paths_sha256: Option<String>,
    /// Other settings that change shard content, by flag (e.g. `--max-boxes`).
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
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

/// sha256 over one length-prefixed field per item (so that no two lists collide by moving a
/// boundary).
fn digest_of<'a>(fields: impl Iterator<Item = &'a [u8]>) -> String {
    let mut h = sha2::Sha256::new();
    for f in fields {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f);
    }
    hex::encode(h.finalize())
}

/// sha256 over the captions.
pub fn captions_digest(items: &[Item]) -> String {
    digest_of(items.iter().map(|it| it.caption.as_bytes()))
}

/// sha256 over the media paths (OS bytes) and kinds.
pub fn paths_digest(items: &[Item]) -> String {
    let kinds: Vec<[u8; 1]> = items.iter().map(|it| [it.kind as u8]).collect();
    digest_of(
        items
            .iter()
            .zip(&kinds)
            .flat_map(|(it, k)| [it.path.as_os_str().as_bytes(), &k[..]]),
    )
}

/// What differs between a recorded plan and the wanted one, one phrase per difference.
/// Fields an older plan did not record are not compared.
pub fn differences(have: &PlanRecord, want: &PlanRecord) -> Vec<String> {
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
    let changed = |a: &Option<String>, b: &Option<String>| a.is_some() && b.is_some() && a != b;
    if changed(&have.captions_sha256, &want.captions_sha256) {
        diffs.push("the manifest's captions differ".into());
    }
    if changed(&have.paths_sha256, &want.paths_sha256) {
        diffs.push(
            "the media paths differ (another --root, or paths changed in the manifest)".into(),
        );
    }
    for (key, then) in &have.settings {
        match want.settings.get(key) {
            Some(now) if now != then => diffs.push(format!("{key} was {then}, now {now}")),
            _ => {}
        }
    }
    diffs
}

/// Writes `plan.json` if absent, else checks that `want` matches it. With `force_replan`, a
/// differing plan is replaced instead: every committed shard (made the old way) is removed so
/// that all are redone, and the returned text says what differed and what will be redone.
pub fn check_or_write(
    out: &Path,
    want: &PlanRecord,
    force_replan: bool,
) -> Result<Option<String>, String> {
    let path = out.join("plan.json");
    let write = || {
        write_atomic(&path, &serde_json::to_vec_pretty(want).expect("json"))
            .map_err(|e: ShardError| e.to_string())
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return write().map(|()| None);
    };
    let have: PlanRecord =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let diffs = differences(&have, want);
    if diffs.is_empty() {
        return Ok(None);
    }
    if !force_replan {
        return Err(format!(
            "{} was planned differently: {}. Nothing was written; shards made both ways would be mixed. Use a new --out directory, restore the original settings, or pass --force-replan to redo every shard.",
            out.display(),
            diffs.join("; ")
        ));
    }
    let removed = remove_committed(out).map_err(|e| format!("{}: {e}", out.display()))?;
    write()?;
    Ok(Some(format!(
        "--force-replan: {} was planned differently ({}); removed {removed} committed shard(s) of the old plan, all {} shard(s) of the new plan will be extracted",
        out.display(),
        diffs.join("; "),
        want.shards
    )))
}

/// Removes the results of an old plan: done-records first (a shard without one does not
/// count), then shards, index and error list. Returns the number of done-records removed.
fn remove_committed(out: &Path) -> std::io::Result<usize> {
    let names: Vec<String> = std::fs::read_dir(out)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let shard_file = |n: &str| n.starts_with("shard-") && n.ends_with(".h5");
    let mut removed = 0;
    for n in names
        .iter()
        .filter(|n| n.starts_with("shard-") && n.ends_with(".done.json"))
    {
        std::fs::remove_file(out.join(n))?;
        removed += 1;
    }
    for n in names
        .iter()
        .filter(|n| shard_file(n) || *n == "index.jsonl" || *n == "errors.jsonl")
    {
        std::fs::remove_file(out.join(n))?;
    }
    Ok(removed)
}

/// Reads `plan.json`.
pub fn read(out: &Path) -> Option<PlanRecord> {
    serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn item(id: &str, path: &str, caption: &str) -> Item {
        Item {
            index: 0,
            id: id.into(),
            path: PathBuf::from(path),
            caption: caption.into(),
            captions: vec![],
            kind: crate::manifest::ItemKind::Video,
        }
    }

    fn plan(items: &[Item], settings: &[(&str, serde_json::Value)]) -> PlanRecord {
        PlanRecord {
            items: items.len() as u64,
            ids_sha256: ids_digest(items),
            shard_size: 2,
            shards: 1,
            num_workers: 1,
            frames: 8,
            detector_sha256: "d".into(),
            captions_sha256: Some(captions_digest(items)),
            paths_sha256: Some(paths_digest(items)),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn every_content_setting_is_compared_and_named() {
        let a = [item("1", "/r/a.mp4", "a cat")];
        let base = plan(
            &a,
            &[
                ("--max-boxes", 30.into()),
                ("--compression", "gzip:4".into()),
            ],
        );
        assert!(differences(&base, &base).is_empty());
        let other = plan(
            &a,
            &[("--max-boxes", 10.into()), ("--compression", "none".into())],
        );
        let d = differences(&base, &other).join("; ");
        assert!(d.contains("--max-boxes was 30, now 10"), "{d}");
        assert!(
            d.contains("--compression was \"gzip:4\", now \"none\""),
            "{d}"
        );
        let captions = plan(
            &[item("1", "/r/a.mp4", "a dog")],
            &[("--max-boxes", 30.into())],
        );
        assert_eq!(
            differences(&base, &captions),
            ["the manifest's captions differ"]
        );
        let paths = plan(
            &[item("1", "/s/a.mp4", "a cat")],
            &[("--max-boxes", 30.into())],
        );
        assert!(differences(&base, &paths)[0].contains("media paths"));
        // A plan written by an older version records none of these: not compared.
        let mut old = base.clone();
        old.captions_sha256 = None;
        old.settings.clear();
        assert!(differences(&old, &other).is_empty());
    }
}
