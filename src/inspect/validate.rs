//! `regionfeat inspect PATH --validate`: schema conformance and value checks. Every problem is
//! named with its shard, item id and frame index; the command exits 1 when there is any.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::{done_record_path, shard_name, shard_paths, BLOCK_ROWS};
use crate::select::location;
use crate::shard::check::{self, Row};
use crate::shard::{ModelKind, ShardError, ShardReader};

/// Slack for boxes on the image border (pixels).
const BOX_EPS: f32 = 1e-3;

/// One violation.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Shard file name.
    pub shard: String,
    /// Item id, when the problem belongs to an item.
    pub item: Option<String>,
    /// Frame index within the item, when it belongs to a frame.
    pub frame: Option<usize>,
    /// Frame row in the shard.
    pub row: Option<usize>,
    /// Which check failed (`schema`, `unreadable`, `non-finite`, `box-outside-image`,
    /// `locations`, `scores-order`, `num-boxes`, `padding`, `class-index`, `kind`,
    /// `frame-ranges`, `done-record`).
    pub check: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.shard)?;
        if let Some(item) = &self.item {
            write!(f, ": item {item}")?;
        }
        if let Some(frame) = self.frame {
            write!(f, " frame {frame}")?;
        }
        if let Some(row) = self.row {
            write!(f, " (row {row})")?;
        }
        write!(f, ": {}: {}", self.check, self.message)
    }
}

/// The outcome of validating a path.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// The path validated.
    pub path: String,
    /// Shards checked.
    pub shards: usize,
    /// Items checked.
    pub items: usize,
    /// Frame rows checked.
    pub frames: usize,
    /// Whether there is no problem.
    pub ok: bool,
    /// The problems found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        write!(
            f,
            "{}: {} shard(s), {} items, {} frames: {}",
            self.path,
            self.shards,
            self.items,
            self.frames,
            if self.ok {
                "OK".to_string()
            } else {
                format!("{} problem(s)", self.problems.len())
            }
        )
    }
}

pub(super) struct Ctx<'a> {
    shard: String,
    ids: &'a [String],
    problems: Vec<Problem>,
}

impl Ctx<'_> {
    pub(super) fn add(
        &mut self,
        item: Option<usize>,
        frame: Option<usize>,
        row: Option<usize>,
        check: &str,
        message: String,
    ) {
        self.problems.push(Problem {
            shard: self.shard.clone(),
            item: item.map(|i| self.ids.get(i).cloned().unwrap_or_else(|| format!("#{i}"))),
            frame,
            row,
            check: check.into(),
            message,
        });
    }
}

/// The first non-finite value of `v` (as `rows` of `width`), with how many there are.
pub(super) fn non_finite(v: &[f32], width: usize) -> Option<(usize, usize, f32, usize)> {
    let count = v.iter().filter(|x| !x.is_finite()).count();
    let first = v.iter().position(|x| !x.is_finite())?;
    Some((first / width, first % width, v[first], count))
}

/// Validates a shard file or every shard of an output directory.
pub fn validate(path: &Path) -> anyhow::Result<Validation> {
    let mut out = Validation {
        path: path.display().to_string(),
        shards: 0,
        items: 0,
        frames: 0,
        ok: true,
        problems: Vec::new(),
    };
    let in_dir = path.is_dir();
    for p in shard_paths(path)? {
        let c = check_shard(&p, in_dir);
        out.shards += 1;
        out.items += c.items;
        out.frames += c.frames;
        out.problems.extend(c.problems);
    }
    out.ok = out.problems.is_empty();
    Ok(out)
}

/// What [`check_shard`] found in one shard.
#[derive(Debug, Clone)]
pub struct ShardCheck {
    /// Items checked.
    pub items: usize,
    /// Frame rows checked.
    pub frames: usize,
    /// The problems found.
    pub problems: Vec<Problem>,
}

/// Checks one shard: its layout, then every value of every dataset (so each chunk is read
/// and decompressed once), and its done-record when `done_record`.
pub fn check_shard(p: &Path, done_record: bool) -> ShardCheck {
    let name = shard_name(p);
    let mut out = ShardCheck {
        items: 0,
        frames: 0,
        problems: Vec::new(),
    };
    let mut ctx = Ctx {
        shard: name.clone(),
        ids: &[],
        problems: Vec::new(),
    };
    let r = match ShardReader::check_open(p) {
        Ok(r) => r,
        Err(problems) => {
            for m in problems {
                ctx.add(None, None, None, "schema", m);
            }
            out.problems = ctx.problems;
            return out;
        }
    };
    if done_record {
        check_done_record(p, &r, &mut ctx);
    }
    let ids = match r.item_ids() {
        Ok(ids) => ids,
        Err(e) => {
            ctx.add(None, None, None, "unreadable", e.reason);
            out.problems = ctx.problems;
            return out;
        }
    };
    let mut ctx = Ctx {
        shard: name,
        ids: &ids,
        problems: ctx.problems,
    };
    if let Err(e) = check_values(&r, &mut ctx) {
        ctx.add(None, None, None, "unreadable", e.reason);
    }
    out.items = ids.len();
    out.frames = r.num_frame_rows().unwrap_or(0);
    out.problems = ctx.problems;
    out
}

fn check_done_record(p: &Path, r: &ShardReader, ctx: &mut Ctx) {
    let Some(done) = done_record_path(p) else {
        return;
    };
    let text = match std::fs::read_to_string(&done) {
        Ok(t) => t,
        Err(_) => {
            ctx.add(
                None,
                None,
                None,
                "done-record",
                "no done-record: the shard is incomplete".into(),
            );
            return;
        }
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        ctx.add(
            None,
            None,
            None,
            "done-record",
            "done-record is not JSON".into(),
        );
        return;
    };
    let (n, t) = (
        r.len().unwrap_or(0) as u64,
        r.num_frame_rows().unwrap_or(0) as u64,
    );
    for (key, have) in [("written", n), ("frames", t)] {
        if let Some(want) = v.get(key).and_then(|x| x.as_u64()) {
            if want != have {
                ctx.add(
                    None,
                    None,
                    None,
                    "done-record",
                    format!("done-record says {key} = {want}, the shard has {have}"),
                );
            }
        }
    }
}

fn check_values(r: &ShardReader, ctx: &mut Ctx) -> Result<(), ShardError> {
    let (k, d) = (r.max_boxes()?, r.feature_dim()?);
    let (n_classes, n_attrs) = (r.class_names()?.len(), r.attribute_names()?.len());
    // Every item dataset is read once, so a damaged chunk anywhere is found.
    let (starts, counts) = r.frame_ranges_unchecked()?;
    let hw = r.image_hw()?;
    r.captions()?;
    r.sources()?;
    r.manifest_indices()?;
    r.durations()?;
    let t = r.num_frame_rows()?;
    for issue in r.item_issues()? {
        match issue.at {
            Row::Item(i) => ctx.add(Some(i), None, None, issue.check, issue.to_string()),
            Row::Frame(row) => ctx.add(None, None, Some(row), issue.check, issue.to_string()),
        }
    }
    // Frame row → (item, frame within it), as far as the ranges say.
    let mut owner = vec![None; t];
    for (i, (&start, &n)) in starts.iter().zip(&counts).enumerate() {
        for f in 0..n as usize {
            let row = usize::try_from(start).ok().and_then(|s| s.checked_add(f));
            match row.and_then(|row| owner.get_mut(row)) {
                Some(o) => *o = Some((i, f)),
                None => break,
            }
        }
    }
    if r.model_kind()? == ModelKind::Grid {
        return super::grid::check_grid_rows(r, ctx, &owner);
    }
    let mut start = 0usize;
    while start < t {
        let count = BLOCK_ROWS.min(t - start);
        let b = match r.read_frames_unchecked(start as u64, count) {
            Ok(b) => b,
            Err(e) => {
                // A damaged chunk: name it and go on with the next block.
                ctx.add(None, None, Some(start), "unreadable", e.reason);
                start += count;
                continue;
            }
        };
        for f in 0..count {
            let row = start + f;
            let (item, fi) = match owner[row] {
                Some((i, fi)) => (Some(i), Some(fi)),
                None => (None, None),
            };
            let mut add = |check: &str, msg: String| ctx.add(item, fi, Some(row), check, msg);
            let [h, w] = item.map(|i| hw[i]).unwrap_or([0, 0]);
            let nb = b.num_boxes[f] as usize;
            let (classes, attributes) = (
                &b.classes[f * k..(f + 1) * k],
                &b.attributes[f * k..(f + 1) * k],
            );
            for issue in check::frame_row(
                row,
                b.num_boxes[f],
                classes,
                attributes,
                k,
                n_classes,
                n_attrs,
            ) {
                add(issue.check, issue.to_string());
            }
            let m = nb.min(k);
            let sl = |v: &[f32], width: usize| v[f * k * width..(f + 1) * k * width].to_vec();
            let (boxes, locs, scores, attr_scores, feats) = (
                sl(&b.boxes, 4),
                sl(&b.locations, 7),
                sl(&b.scores, 1),
                sl(&b.attr_scores, 1),
                sl(&b.features, d),
            );
            for (name, v, width) in [
                ("features", &feats, d),
                ("boxes", &boxes, 4),
                ("locations", &locs, 7),
                ("scores", &scores, 1),
                ("attr_scores", &attr_scores, 1),
            ] {
                if let Some((bx, col, val, count)) = non_finite(v, width) {
                    add("non-finite", format!("{name}: {count} non-finite value(s), first {val} at box {bx} column {col}"));
                }
            }
            for (name, v) in [
                ("timestamps", b.timestamps[f]),
                ("frame_times", b.frame_times[f]),
            ] {
                if !v.is_finite() {
                    add("non-finite", format!("{name} = {v}"));
                }
            }
            // Valid boxes: inside the image, locations consistent with them.
            let (mut outside, mut bad_loc) = (Vec::new(), Vec::new());
            for j in 0..m {
                let bx: [f32; 4] = boxes[j * 4..j * 4 + 4].try_into().expect("4");
                let inside = bx[0] >= -BOX_EPS
                    && bx[1] >= -BOX_EPS
                    && bx[2] <= w as f32 + BOX_EPS
                    && bx[3] <= h as f32 + BOX_EPS
                    && bx[0] <= bx[2]
                    && bx[1] <= bx[3];
                if !inside && bx.iter().all(|v| v.is_finite()) {
                    outside.push(format!("box {j} {bx:?}"));
                }
                let want = location(&bx, w, h);
                let have = &locs[j * 7..j * 7 + 7];
                if have
                    .iter()
                    .zip(want)
                    .any(|(a, b)| (a - b).abs() > 1e-5 + 1e-4 * b.abs())
                {
                    bad_loc.push(format!("box {j}: {have:?} vs {want:?} from the box"));
                }
            }
            if !outside.is_empty() {
                add(
                    "box-outside-image",
                    format!(
                        "{} box(es) outside the {w}x{h} image: {}",
                        outside.len(),
                        outside[0]
                    ),
                );
            }
            if !bad_loc.is_empty() {
                add(
                    "locations",
                    format!(
                        "{} location(s) disagree with their boxes: {}",
                        bad_loc.len(),
                        bad_loc[0]
                    ),
                );
            }
            if let Some(j) = (1..m).find(|&j| scores[j] > scores[j - 1]) {
                add(
                    "scores-order",
                    format!(
                        "score of box {j} ({}) > box {} ({})",
                        scores[j],
                        j - 1,
                        scores[j - 1]
                    ),
                );
            }
            // Padding past num_boxes must be all zero.
            let mut dirty = Vec::new();
            for (name, v, width) in [
                ("boxes", &boxes, 4),
                ("locations", &locs, 7),
                ("scores", &scores, 1),
                ("attr_scores", &attr_scores, 1),
                ("features", &feats, d),
            ] {
                if let Some(p) = v[m * width..].iter().position(|&x| x != 0.0) {
                    dirty.push(format!("{name} (box {})", m + p / width));
                }
            }
            for (name, v) in [("classes", classes), ("attributes", attributes)] {
                if let Some(p) = v[m..].iter().position(|&x| x != 0) {
                    dirty.push(format!("{name} (box {})", m + p));
                }
            }
            if !dirty.is_empty() {
                add(
                    "padding",
                    format!(
                        "num_boxes {nb} but rows past it are not zero: {}",
                        dirty.join(", ")
                    ),
                );
            }
        }
        start += count;
    }
    Ok(())
}
