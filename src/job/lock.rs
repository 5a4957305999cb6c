//! One writer per shard: `shard-NNNNNN.lock` created exclusively, refreshed while the shard is
//! being written, and taken over when stale: its process is gone on this host (checked at
//! once, whatever the lock's age), or it was not refreshed for `stale_after`.
//!
//! The lock's content (host, pid, process start time) is written to a temporary file first and
//! hard-linked into place, so a lock file is never empty or half-written, even on a full disk
//! or when its writer is killed. An empty or unreadable lock can only come from elsewhere (an
//! older version): it is stale once it is a second old, and waited for until then.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A held shard lock; removed on drop.
#[derive(Debug)]
pub struct ShardLock {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Owner {
    host: String,
    pid: u32,
    /// Start time of the process (clock ticks after boot, /proc/PID/stat field 22): tells a
    /// reused pid from the holder.
    #[serde(default)]
    start: Option<u64>,
}

/// How long an empty or unreadable lock may be a writer still filling it in.
const UNREADABLE_GRACE: Duration = Duration::from_secs(1);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Start time of a live process, `None` when it is gone.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn me() -> Owner {
    let pid = std::process::id();
    Owner {
        host: hostname(),
        pid,
        start: process_start(pid),
    }
}

/// What a lock file found in place says.
enum Holder {
    /// A live worker holds it: leave the shard alone.
    Live,
    /// Its holder is gone: take it over. Holds the lock file's inode (`None`: it vanished).
    Stale(Option<u64>),
    /// Empty or unreadable and younger than [`UNREADABLE_GRACE`]: look again after this long.
    Unsure(Duration),
}

fn judge(path: &Path, stale_after: Duration) -> Holder {
    let Ok(meta) = std::fs::metadata(path) else {
        return Holder::Stale(None);
    };
    let stale = Holder::Stale(Some(meta.ino()));
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if age > stale_after {
        return stale;
    }
    let owner = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Owner>(&t).ok());
    let Some(o) = owner else {
        return if age >= UNREADABLE_GRACE {
            stale
        } else {
            Holder::Unsure(UNREADABLE_GRACE - age)
        };
    };
    if o.host != hostname() {
        // Another host's process cannot be checked: only the heartbeat tells.
        return Holder::Live;
    }
    let alive = match (process_start(o.pid), o.start) {
        (None, _) => false,
        (Some(now), Some(then)) => now == then,
        // An older lock without a start time: a live pid other than ours is its holder; our
        // own pid is a previous run of a restarted container (this process never asks twice).
        (Some(_), None) => o.pid != std::process::id(),
    };
    if alive {
        Holder::Live
    } else {
        stale
    }
}

/// Writes `content` to a temporary file next to `path` and links it into place; fails with
/// `AlreadyExists` when the lock is taken. On a filesystem without hard links, falls back to
/// an exclusive create (removed again if its content cannot be written).
fn create_exclusive(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!("{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        // EPERM, EOPNOTSUPP: no hard links here.
        Err(e) if e.raw_os_error().is_some_and(|code| code == 1 || code == 95) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?;
            if let Err(e) = f.write_all(content).and_then(|()| f.sync_all()) {
                drop(f);
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
            Ok(())
        }
        other => other,
    }
}

impl ShardLock {
    /// Tries to take the lock; `Ok(None)` when a live worker holds it.
    pub fn try_acquire(path: &Path, stale_after: Duration) -> std::io::Result<Option<Self>> {
        let content = serde_json::to_string(&me()).expect("json");
        for _ in 0..4 {
            match create_exclusive(path, content.as_bytes()) {
                Ok(()) => {
                    return Ok(Some(Self {
                        path: path.to_path_buf(),
                    }))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match judge(path, stale_after) {
                        Holder::Live => return Ok(None),
                        Holder::Unsure(wait) => std::thread::sleep(wait),
                        Holder::Stale(None) => {}
                        Holder::Stale(Some(judged)) => {
                            // Rename first so that two workers cannot both remove and re-create
                            // it; if what was moved is not the lock judged stale (another worker
                            // took over meanwhile), put that fresh lock back.
                            let grave =
                                path.with_extension(format!("stale.{}", std::process::id()));
                            if std::fs::rename(path, &grave).is_ok() {
                                let moved = std::fs::metadata(&grave).map(|m| m.ino()).ok();
                                if moved != Some(judged) {
                                    let _ = std::fs::hard_link(&grave, path);
                                }
                                let _ = std::fs::remove_file(&grave);
                            }
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Marks the lock as alive (its mtime is the heartbeat).
    pub fn refresh(&self) {
        if let Ok(f) = std::fs::OpenOptions::new().append(true).open(&self.path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }
}

impl Drop for ShardLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_and_stale_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.lock");
        let a = ShardLock::try_acquire(&p, Duration::from_secs(60))
            .unwrap()
            .expect("first");
        assert!(ShardLock::try_acquire(&p, Duration::from_secs(60))
            .unwrap()
            .is_none());
        drop(a);
        assert!(!p.exists());
        // A lock left by a dead process on this host is taken over.
        std::fs::write(
            &p,
            serde_json::to_string(&Owner {
                host: hostname(),
                pid: 4_000_000,
                start: None,
            })
            .unwrap(),
        )
        .unwrap();
        assert!(ShardLock::try_acquire(&p, Duration::from_secs(60))
            .unwrap()
            .is_some());
        // A lock of a live process on another host is respected until it ages out.
        std::fs::write(
            &p,
            serde_json::to_string(&Owner {
                host: "elsewhere".into(),
                pid: 1,
                start: None,
            })
            .unwrap(),
        )
        .unwrap();
        assert!(ShardLock::try_acquire(&p, Duration::from_secs(60))
            .unwrap()
            .is_none());
        assert!(ShardLock::try_acquire(&p, Duration::from_secs(0))
            .unwrap()
            .is_some());
    }

    fn fresh_lock_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shard-000000.lock");
        (dir, p)
    }

    #[test]
    fn a_dead_holder_is_never_honoured_whatever_the_lock_age() {
        let (_dir, p) = fresh_lock_dir();
        // A real process that held the lock and is gone now.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = process_start(pid);
        child.wait().unwrap();
        let dead = Owner {
            host: hostname(),
            pid,
            start,
        };
        std::fs::write(&p, serde_json::to_string(&dead).unwrap()).unwrap();
        let t = std::time::Instant::now();
        assert!(ShardLock::try_acquire(&p, Duration::from_secs(3600))
            .unwrap()
            .is_some());
        assert!(t.elapsed() < Duration::from_millis(500), "taken at once");
        // Our own pid, but another start time: a previous run of a restarted container.
        let reused = Owner {
            start: Some(process_start(std::process::id()).unwrap() + 1),
            ..me()
        };
        std::fs::write(&p, serde_json::to_string(&reused).unwrap()).unwrap();
        assert!(ShardLock::try_acquire(&p, Duration::from_secs(3600))
            .unwrap()
            .is_some());
    }

    #[test]
    fn an_empty_lock_is_taken_over_within_a_second() {
        let (_dir, p) = fresh_lock_dir();
        std::fs::write(&p, b"").unwrap();
        let t = std::time::Instant::now();
        let lock = ShardLock::try_acquire(&p, Duration::from_secs(3600)).unwrap();
        assert!(lock.is_some(), "a fresh empty lock is not honoured");
        assert!(t.elapsed() < Duration::from_secs(3));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(serde_json::from_str::<Owner>(&text).is_ok(), "{text:?}");
        drop(lock);
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert!(left.is_empty(), "no temporary file is left behind");
    }
}
