//! A bounded cache of open shard handles, opened on first use and closed least-recently-used
//! first, so a dataset of thousands of shard files trains under `ulimit -n 1024` and each open
//! HDF5 file's memory (about 0.65 MB) is paid only for the shards in use.
//!
//! The cache is generic over what is held per shard (a [`crate::shard::ShardReader`] today, any
//! `Send + Sync` per-shard reader tomorrow): it is given an `open` function, which also checks
//! the shard against the dataset (kind, D, K) so an inconsistent shard fails on first open with
//! its path in the message.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

/// Opens one shard (its index and path are given) into the cached handle.
pub type OpenFn<T> = dyn Fn(usize, &Path) -> Result<T> + Send + Sync;

/// Default bound on shard files held open per dataset (`data.max_open_shards`): two datasets
/// and an evaluation set stay well under the common `ulimit -n 1024`.
pub const DEFAULT_MAX_OPEN: usize = 128;

/// Open shards of one dataset, at most `capacity` held by the cache (handles still in use by a
/// reader thread stay open until it drops them, so the process bound is capacity + readers).
pub struct ShardCache<T> {
    paths: Vec<PathBuf>,
    capacity: usize,
    open: Box<OpenFn<T>>,
    lru: Mutex<Lru<T>>,
}

struct Lru<T> {
    tick: u64,
    /// shard → (handle, last use).
    open: HashMap<usize, (Arc<T>, u64)>,
    /// last use → shard (oldest first).
    by_age: BTreeMap<u64, usize>,
    opens: u64,
}

impl<T> Lru<T> {
    fn touch(&mut self, shard: usize) -> Option<Arc<T>> {
        self.tick += 1;
        let tick = self.tick;
        let (h, last) = self.open.get_mut(&shard)?;
        self.by_age.remove(last);
        *last = tick;
        self.by_age.insert(tick, shard);
        Some(h.clone())
    }
    fn evict_to(&mut self, keep: usize) {
        while self.open.len() > keep {
            let Some((_, s)) = self.by_age.pop_first() else {
                return;
            };
            self.open.remove(&s);
        }
    }
}

impl<T: Send + Sync> ShardCache<T> {
    /// A cache over `paths` holding at most `capacity` (≥ 1) open handles.
    pub fn new(
        paths: Vec<PathBuf>,
        capacity: usize,
        open: impl Fn(usize, &Path) -> Result<T> + Send + Sync + 'static,
    ) -> Self {
        Self {
            paths,
            capacity: capacity.max(1),
            open: Box::new(open),
            lru: Mutex::new(Lru {
                tick: 0,
                open: HashMap::new(),
                by_age: BTreeMap::new(),
                opens: 0,
            }),
        }
    }

    /// Shard files.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The handle of shard `shard`, opening it (and closing the least recently used one) when
    /// it is not open.
    pub fn get(&self, shard: usize) -> Result<Arc<T>> {
        let path = self
            .paths
            .get(shard)
            .with_context(|| format!("shard {shard} of {} requested", self.paths.len()))?;
        if let Some(h) = self.lock().touch(shard) {
            return Ok(h);
        }
        // Open outside the lock so hits of other threads do not wait on a slow open; two
        // threads missing the same shard both open it and the second keeps the first's.
        let h = match (self.open)(shard, path) {
            Ok(h) => h,
            Err(e) if self.lock().open.is_empty() => return Err(e),
            Err(_) => {
                // Possibly out of file descriptors (other files, a low ulimit): close half of
                // ours and try once more, so the error shown is the real one.
                self.lock().evict_to(self.capacity / 2);
                (self.open)(shard, path)?
            }
        };
        let mut lru = self.lock();
        lru.opens += 1;
        if let Some(h) = lru.touch(shard) {
            return Ok(h);
        }
        let cap = self.capacity;
        lru.evict_to(cap - 1);
        let h = Arc::new(h);
        let tick = lru.tick;
        lru.open.insert(shard, (h.clone(), tick));
        lru.by_age.insert(tick, shard);
        Ok(h)
    }

    /// Puts an already open handle in the cache (the shard opened at start to learn sizes).
    pub fn insert(&self, shard: usize, handle: T) {
        let mut lru = self.lock();
        if lru.touch(shard).is_some() {
            return;
        }
        let cap = self.capacity;
        lru.evict_to(cap - 1);
        let tick = lru.tick;
        lru.open.insert(shard, (Arc::new(handle), tick));
        lru.by_age.insert(tick, shard);
    }

    /// Handles held open now.
    pub fn open_now(&self) -> usize {
        self.lock().open.len()
    }

    /// Opens so far (misses).
    pub fn opens(&self) -> u64 {
        self.lock().opens
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<T>> {
        // A panic elsewhere cannot leave the maps inconsistent (no user code runs under the
        // lock), so a poisoned lock is still usable.
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cache(n: usize, cap: usize, opened: Arc<AtomicUsize>) -> ShardCache<(usize, PathBuf)> {
        let paths = (0..n).map(|i| PathBuf::from(format!("s{i}"))).collect();
        ShardCache::new(paths, cap, move |i, p| {
            opened.fetch_add(1, Ordering::SeqCst);
            anyhow::ensure!(p != Path::new("s5"), "bad shard {}", p.display());
            Ok((i, p.to_path_buf()))
        })
    }

    #[test]
    fn holds_at_most_capacity_and_evicts_least_recently_used() {
        let opened = Arc::new(AtomicUsize::new(0));
        let c = cache(5, 2, opened.clone());
        assert_eq!(c.get(0).unwrap().0, 0);
        assert_eq!(c.get(1).unwrap().0, 1);
        c.get(0).unwrap(); // 1 is now the oldest
        c.get(2).unwrap(); // evicts 1
        assert_eq!(c.open_now(), 2);
        assert_eq!(opened.load(Ordering::SeqCst), 3);
        c.get(0).unwrap(); // still open
        assert_eq!(opened.load(Ordering::SeqCst), 3);
        c.get(1).unwrap(); // reopened, evicts 2
        assert_eq!(opened.load(Ordering::SeqCst), 4);
        c.get(2).unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 5);
        assert_eq!(c.opens(), 5);
        assert_eq!(c.open_now(), 2);
    }

    #[test]
    fn open_errors_and_bad_indices_are_reported() {
        let c = cache(6, 2, Arc::new(AtomicUsize::new(0)));
        c.get(0).unwrap();
        let e = format!("{:#}", c.get(5).unwrap_err());
        assert!(e.contains("bad shard s5"), "{e}");
        assert!(format!("{:#}", c.get(9).unwrap_err()).contains("shard 9 of 6"));
    }

    #[test]
    fn shared_across_threads() {
        let opened = Arc::new(AtomicUsize::new(0));
        let c = Arc::new(cache(5, 3, opened));
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let s = (i * 7 + t) % 5;
                        assert_eq!(c.get(s).unwrap().0, s);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(c.open_now() <= 3);
    }
}
