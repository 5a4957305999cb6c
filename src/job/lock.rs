//! One writer per shard: `shard-NNNNNN.lock` created exclusively, refreshed while the shard is
//! being written, and taken over when stale (its process is gone on this host, or it was not
//! refreshed for `stale_after`).

use std::io::Write;
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
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn is_stale(path: &Path, stale_after: Duration) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if age > stale_after {
        return true;
    }
    match std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Owner>(&t).ok())
    {
        Some(o) => o.host == hostname() && o.pid != std::process::id() && !pid_alive(o.pid),
        // Unreadable (a writer killed mid-write): stale once it is a few seconds old.
        None => age > Duration::from_secs(5),
    }
}

impl ShardLock {
    /// Tries to take the lock; `Ok(None)` when a live worker holds it.
    pub fn try_acquire(path: &Path, stale_after: Duration) -> std::io::Result<Option<Self>> {
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    let owner = Owner {
                        host: hostname(),
                        pid: std::process::id(),
                    };
                    f.write_all(serde_json::to_string(&owner).expect("json").as_bytes())?;
                    f.sync_all()?;
                    return Ok(Some(Self {
                        path: path.to_path_buf(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if is_stale(path, stale_after) {
                        // Rename first so that two workers cannot both remove and re-create it.
                        let grave = path.with_extension(format!("stale.{}", std::process::id()));
                        if std::fs::rename(path, &grave).is_ok() {
                            let _ = std::fs::remove_file(&grave);
                        }
                        continue;
                    }
                    return Ok(None);
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
}
