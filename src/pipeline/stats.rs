//! Per-stage busy time and the end-of-run summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Busy nanoseconds of one stage, summed over its threads.
#[derive(Debug, Default)]
pub struct StageStats {
    busy_ns: AtomicU64,
}

impl StageStats {
    /// Runs `f`, adding its wall time to the stage's busy time.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.busy_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    /// Total busy time.
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed))
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    /// Items planned in the shards this run processed.
    pub items: u64,
    /// Items written.
    pub done: u64,
    /// Items that failed (see errors.jsonl).
    pub failed: u64,
    /// Frame rows written.
    pub frames: u64,
    /// Regions written.
    pub boxes: u64,
    /// Shards committed by this run.
    pub shards_written: u64,
    /// Shards skipped because already committed.
    pub shards_skipped: u64,
    /// Files a directory scan did not take (listed in skipped.jsonl).
    pub skipped_files: u64,
    /// Lines in errors.jsonl (whole output directory).
    pub errors_logged: u64,
    /// Items in `index.jsonl` when this run completed the plan.
    pub index_items: Option<u64>,
    /// Why `index.jsonl` could not be built, if so (run `regionfeat verify`).
    pub index_error: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
    /// Busy time per stage: decode, collate, detect, select, write.
    pub stage_busy: [(String, Duration); 5],
    /// Detector devices used.
    pub devices: Vec<String>,
}

impl Summary {
    /// Items per second over the wall time.
    pub fn items_per_sec(&self) -> f64 {
        (self.done + self.failed) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "items: {} done, {} failed (of {} planned); shards: {} written, {} already done",
            self.done, self.failed, self.items, self.shards_written, self.shards_skipped
        )?;
        writeln!(
            f,
            "frames: {}  boxes: {}  time: {:.2}s  throughput: {:.2} items/s, {:.1} frames/s",
            self.frames,
            self.boxes,
            secs,
            self.items_per_sec(),
            self.frames as f64 / secs.max(1e-9)
        )?;
        write!(f, "stage busy time (summed over threads):")?;
        for (name, d) in &self.stage_busy {
            write!(f, "  {name} {:.2}s", d.as_secs_f64())?;
        }
        writeln!(f)?;
        write!(f, "devices: {}", self.devices.join(", "))?;
        if self.skipped_files > 0 {
            write!(
                f,
                "\nskipped files: {} (not media, unreadable or a folder loop; listed in skipped.jsonl)",
                self.skipped_files
            )?;
        }
        match (&self.index_items, &self.index_error) {
            (Some(n), _) => write!(f, "\nindex.jsonl: {n} items (all shards committed)"),
            (None, Some(e)) => write!(f, "\nindex.jsonl not built: {e} (run regionfeat verify)"),
            (None, None) => Ok(()),
        }
    }
}
