//! The run's metrics: one record stream written twice, as `metrics.jsonl` (one JSON object a
//! line) and, when on, as TensorBoard event files in the same directory.
//!
//! Every record has `kind` (`train` or `eval`), `time` (Unix seconds), `step` (optimizer
//! steps done), `epoch` and `samples`, then its values. The TensorBoard scalars are exactly the
//! record's numeric fields other than `step` and `time`, tagged `<kind>/<field>` with nested
//! objects joined by `/` (`train/loss`, `eval/t2v/r1`), at the record's step and time — so the
//! two outputs cannot disagree.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::train::tfevents::{self, EventWriter};

/// File name of the JSONL log in the output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Writer of the run's records.
pub struct RunLog {
    /// `None` for a process that logs nothing (data-parallel ranks other than 0).
    jsonl: Option<File>,
    jsonl_path: PathBuf,
    events: Option<EventWriter>,
}

/// Numeric leaves of a JSON value as `(tag, value)`, depth-first, `/`-joined.
fn scalars(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f32)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x as f32));
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                scalars(&format!("{prefix}/{k}"), x, out);
            }
        }
        _ => {}
    }
}

impl RunLog {
    /// Opens `dir/metrics.jsonl` for appending (a resumed run continues the file) and, with
    /// `tensorboard`, a new event file in `dir`.
    pub fn open(dir: &Path, tensorboard: bool) -> Result<Self> {
        let jsonl_path = dir.join(METRICS_FILE);
        let jsonl = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jsonl_path)
            .with_context(|| format!("cannot open {}", jsonl_path.display()))?;
        let events = if tensorboard {
            Some(
                EventWriter::create(dir)
                    .with_context(|| format!("cannot create an event file in {}", dir.display()))?,
            )
        } else {
            None
        };
        Ok(Self {
            jsonl: Some(jsonl),
            jsonl_path,
            events,
        })
    }

    /// A log that writes nothing: data-parallel ranks other than 0 compute the same global
    /// values as rank 0, which alone writes them.
    pub fn disabled() -> Self {
        Self {
            jsonl: None,
            jsonl_path: PathBuf::new(),
            events: None,
        }
    }

    /// The event file being written, if TensorBoard output is on.
    pub fn events_path(&self) -> Option<&Path> {
        self.events.as_ref().map(|e| e.path())
    }

    /// Writes one record of `kind`; `rec` must serialize to an object with a `step`. Returns
    /// the JSON written.
    pub fn write<T: Serialize>(&mut self, kind: &str, rec: &T) -> Result<serde_json::Value> {
        let time = tfevents::now();
        let body = serde_json::to_value(rec)?;
        let serde_json::Value::Object(fields) = body else {
            bail!("a {kind} record is not a JSON object");
        };
        let step = fields
            .get("step")
            .and_then(|s| s.as_u64())
            .with_context(|| format!("a {kind} record has no step"))?;
        let mut obj = serde_json::Map::new();
        obj.insert("kind".into(), kind.into());
        obj.insert("time".into(), time.into());
        obj.extend(fields);
        let v = serde_json::Value::Object(obj);
        let Some(jsonl) = &mut self.jsonl else {
            return Ok(v);
        };
        writeln!(jsonl, "{v}")
            .with_context(|| format!("cannot write {}", self.jsonl_path.display()))?;
        if let Some(ev) = &mut self.events {
            let mut values = vec![];
            if let serde_json::Value::Object(m) = &v {
                for (k, x) in m.iter().filter(|(k, _)| *k != "step" && *k != "time") {
                    scalars(&format!("{kind}/{k}"), x, &mut values);
                }
            }
            ev.scalars(time, step as i64, &values)
                .with_context(|| format!("cannot write {}", ev.path().display()))?;
        }
        Ok(v)
    }
}
