//! What a shard must satisfy before anything reads it (`schemas/shard-v1.md`): the layout (root
//! attributes, every dataset with its dtype and its shape in N, T, K, D) and the values that
//! index something (frame ranges within T, `frame_item`, `kind`, `num_boxes` ≤ K, class and
//! attribute indices within their name lists). [`super::ShardReader`] applies these on open and
//! on every read, `inspect --validate` and `verify` list every violation. Messages name the
//! dataset or attribute first (`dataset boxes: shape ...`) so that, prefixed with the shard,
//! they say where and what.

use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenUnicode};
use hdf5::File;

use super::schema::{attr, frame, item};
use super::ModelKind;

/// The dimensions a conforming shard declares, checked against every dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    /// Items.
    pub n: usize,
    /// Frame rows.
    pub t: usize,
    /// `max_boxes`.
    pub k: usize,
    /// `feature_dim`.
    pub d: usize,
    /// Whether `features` is f16 (else f32).
    pub f16: bool,
    /// Length of `class_names`.
    pub n_classes: usize,
    /// Length of `attribute_names`.
    pub n_attributes: usize,
    /// Regions or grid (`model_kind`; v1 shards hold regions).
    pub kind: ModelKind,
    /// `grid_hw` of a grid shard (`(0, 0)` for regions).
    pub grid_hw: (usize, usize),
}

/// One value that points outside what it indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// Which check failed (`frame-ranges`, `kind`, `num-boxes`, `class-index`).
    pub check: &'static str,
    /// The dataset holding the value.
    pub dataset: &'static str,
    /// Where the value is.
    pub at: Row,
    /// What is wrong.
    pub message: String,
}

/// A row of an item dataset or of a frame dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// Item row.
    Item(usize),
    /// Frame row.
    Frame(usize),
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, row) = match self.at {
            Row::Item(i) => ("item", i),
            Row::Frame(r) => ("frame", r),
        };
        write!(
            f,
            "dataset {}: {what} row {row}: {}",
            self.dataset, self.message
        )
    }
}

/// A dimension of an expected shape: a fixed size, or a named one (N, T, K, D) that is `None`
/// when it could not be determined (its source is missing itself).
#[derive(Clone, Copy)]
enum Dim {
    Fixed(usize),
    Named(&'static str, Option<usize>),
}

impl Dim {
    fn matches(self, have: usize) -> bool {
        match self {
            Dim::Fixed(n) | Dim::Named(_, Some(n)) => n == have,
            Dim::Named(_, None) => true,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Named(name, Some(n)) => write!(f, "{name}={n}"),
            Dim::Named(name, None) => write!(f, "{name}"),
        }
    }
}

/// One dataset the layout requires.
struct Spec {
    name: &'static str,
    /// Accepted dtypes, the first one named in messages.
    dtypes: Vec<TypeDescriptor>,
    shape: Vec<Dim>,
}

fn spec(name: &'static str, dtypes: Vec<TypeDescriptor>, shape: Vec<Dim>) -> Spec {
    Spec {
        name,
        dtypes,
        shape,
    }
}

const U8: TypeDescriptor = TypeDescriptor::Unsigned(IntSize::U1);
const U32: TypeDescriptor = TypeDescriptor::Unsigned(IntSize::U4);
const U64: TypeDescriptor = TypeDescriptor::Unsigned(IntSize::U8);
const F16: TypeDescriptor = TypeDescriptor::Float(FloatSize::U2);
const F32: TypeDescriptor = TypeDescriptor::Float(FloatSize::U4);

/// Item datasets (length N), common to every kind of shard.
fn item_specs(n: Dim) -> Vec<Spec> {
    let s = TypeDescriptor::VarLenUnicode;
    vec![
        spec(item::ID, vec![s.clone()], vec![n]),
        spec(item::CAPTION, vec![s.clone()], vec![n]),
        spec(item::SOURCE, vec![s], vec![n]),
        spec(item::KIND, vec![U8], vec![n]),
        spec(item::MANIFEST_INDEX, vec![U64], vec![n]),
        spec(item::FRAME_START, vec![U64], vec![n]),
        spec(item::NUM_FRAMES, vec![U32], vec![n]),
        spec(item::IMAGE_HW, vec![U32], vec![n, Dim::Fixed(2)]),
        spec(item::DURATION, vec![F32], vec![n]),
    ]
}

/// Per-frame datasets (length T) that do not depend on what the detector produces.
fn frame_specs(t: Dim) -> Vec<Spec> {
    vec![
        spec(frame::ITEM, vec![U32], vec![t]),
        spec(frame::TIMESTAMPS, vec![F32], vec![t]),
        spec(frame::FRAME_TIMES, vec![F32], vec![t]),
    ]
}

/// The region datasets: K boxes per frame with D-dim features.
fn region_specs(t: Dim, k: Dim, d: Dim) -> Vec<Spec> {
    vec![
        spec(frame::NUM_BOXES, vec![U32], vec![t]),
        spec(frame::BOXES, vec![F32], vec![t, k, Dim::Fixed(4)]),
        spec(frame::LOCATIONS, vec![F32], vec![t, k, Dim::Fixed(7)]),
        spec(frame::SCORES, vec![F32], vec![t, k]),
        spec(frame::CLASSES, vec![U32], vec![t, k]),
        spec(frame::ATTRIBUTES, vec![U32], vec![t, k]),
        spec(frame::ATTR_SCORES, vec![F32], vec![t, k]),
        spec(frame::FEATURES, vec![F16, F32], vec![t, k, d]),
    ]
}

fn attr_str(file: &File, name: &str) -> Result<String, String> {
    file.attr(name)
        .map_err(|_| format!("attribute {name}: missing"))?
        .read_scalar::<VarLenUnicode>()
        .map(|v| v.as_str().to_string())
        .map_err(|e| format!("attribute {name}: not a string: {e}"))
}

fn attr_u32(file: &File, name: &str) -> Result<u32, String> {
    file.attr(name)
        .map_err(|_| format!("attribute {name}: missing"))?
        .read_scalar::<u32>()
        .map_err(|e| format!("attribute {name}: not an unsigned integer: {e}"))
}

fn shape_of(file: &File, name: &str) -> Option<Vec<usize>> {
    file.dataset(name).ok().map(|d| d.shape())
}

/// The first size of the first of `names` present: how N or T is known even when one dataset
/// is missing.
fn length_from(file: &File, names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|n| shape_of(file, n).and_then(|s| s.first().copied()))
}

/// `model_kind` (absent in v1 = regions) and, for a grid shard, `grid_hw`.
fn kind_and_grid(file: &File, problems: &mut Vec<String>) -> (ModelKind, (usize, usize)) {
    let version = attr_u32(file, attr::SCHEMA_VERSION).unwrap_or(1);
    let kind = match attr_str(file, attr::MODEL_KIND) {
        Ok(text) => text.parse().unwrap_or_else(|e: String| {
            problems.push(format!("attribute {}: {e}", attr::MODEL_KIND));
            ModelKind::Regions
        }),
        Err(_) if version < 2 => ModelKind::Regions,
        Err(e) => {
            problems.push(e);
            ModelKind::Regions
        }
    };
    if kind == ModelKind::Regions {
        return (kind, (0, 0));
    }
    let hw: Result<Vec<u32>, String> = file
        .attr(attr::GRID_HW)
        .map_err(|_| format!("attribute {}: missing", attr::GRID_HW))
        .and_then(|a| {
            a.read_raw()
                .map_err(|e| format!("attribute {}: {e}", attr::GRID_HW))
        });
    match hw.as_deref() {
        Ok([h, w]) if *h > 0 && *w > 0 => (kind, (*h as usize, *w as usize)),
        Ok(other) => {
            problems.push(format!(
                "attribute {}: {other:?}, expected two positive sizes",
                attr::GRID_HW
            ));
            (kind, (0, 0))
        }
        Err(e) => {
            problems.push(e.clone());
            (kind, (0, 0))
        }
    }
}

/// Checks the root attributes and every dataset; returns the layout, or every violation.
pub(super) fn layout(file: &File) -> Result<Layout, Vec<String>> {
    let mut problems = Vec::new();
    let mut note = |r: Result<(), String>| {
        if let Err(e) = r {
            problems.push(e);
        }
    };
    for name in [
        attr::TOOL_VERSION,
        attr::DETECTOR_NAME,
        attr::DETECTOR_SHA256,
    ] {
        note(attr_str(file, name).map(drop));
    }
    note(
        file.attr(attr::SHARD_ID)
            .map_err(|_| format!("attribute {}: missing", attr::SHARD_ID))
            .and_then(|a| {
                a.read_scalar::<u64>()
                    .map(drop)
                    .map_err(|e| format!("attribute {}: not an integer: {e}", attr::SHARD_ID))
            }),
    );
    let names = |name: &str| {
        attr_str(file, name).and_then(|text| {
            serde_json::from_str::<Vec<String>>(&text)
                .map_err(|e| format!("attribute {name}: not a JSON list of names: {e}"))
        })
    };
    let (classes, attributes) = (names(attr::CLASS_NAMES), names(attr::ATTRIBUTE_NAMES));
    note(attr_str(file, attr::CONFIG).and_then(|text| {
        serde_json::from_str::<serde_json::Value>(&text)
            .map(drop)
            .map_err(|e| format!("attribute {}: not JSON: {e}", attr::CONFIG))
    }));
    let (k, d) = (
        attr_u32(file, attr::MAX_BOXES),
        attr_u32(file, attr::FEATURE_DIM),
    );
    let (kind, grid_hw) = kind_and_grid(file, &mut problems);
    let n = length_from(file, &[item::ID, item::FRAME_START, item::NUM_FRAMES]);
    let t = length_from(file, &[frame::NUM_BOXES, frame::ITEM, frame::TIMESTAMPS]);
    let mut specs = item_specs(Dim::Named("N", n));
    specs.extend(frame_specs(Dim::Named("T", t)));
    let d_dim = Dim::Named("D", d.as_ref().ok().map(|&d| d as usize));
    match kind {
        ModelKind::Regions => specs.extend(region_specs(
            Dim::Named("T", t),
            Dim::Named("K", k.as_ref().ok().map(|&k| k as usize)),
            d_dim,
        )),
        ModelKind::Grid => {
            specs.push(spec(
                frame::GRID_FEATURES,
                vec![F16, F32],
                vec![
                    Dim::Named("T", t),
                    Dim::Named("Hg*Wg", Some(grid_hw.0 * grid_hw.1)),
                    d_dim,
                ],
            ));
            for name in frame::REGION_ONLY {
                if file.dataset(name).is_ok() {
                    problems.push(format!("dataset {name}: present in a grid shard"));
                }
            }
        }
    }
    for r in [&classes, &attributes] {
        if let Err(e) = r {
            problems.push(e.clone());
        }
    }
    for (name, r) in [(attr::MAX_BOXES, &k), (attr::FEATURE_DIM, &d)] {
        match r {
            Err(e) => problems.push(e.clone()),
            // A grid shard has no boxes: max_boxes is 0 there.
            Ok(0) if !(kind == ModelKind::Grid && name == attr::MAX_BOXES) => {
                problems.push(format!("attribute {name}: 0"))
            }
            Ok(_) => {}
        }
    }
    let mut f16 = false;
    for s in specs {
        let ds = match file.dataset(s.name) {
            Ok(ds) => ds,
            Err(_) => {
                problems.push(format!("dataset {}: missing", s.name));
                continue;
            }
        };
        let shape = ds.shape();
        if shape.len() != s.shape.len() || !s.shape.iter().zip(&shape).all(|(w, &h)| w.matches(h)) {
            let want: Vec<String> = s.shape.iter().map(|d| d.to_string()).collect();
            problems.push(format!(
                "dataset {}: shape {shape:?}, expected [{}]",
                s.name,
                want.join(", ")
            ));
        }
        match ds.dtype().and_then(|t| t.to_descriptor()) {
            Ok(desc) if s.dtypes.contains(&desc) => {
                f16 |= (s.name == frame::FEATURES || s.name == frame::GRID_FEATURES) && desc == F16
            }
            Ok(desc) => problems.push(format!(
                "dataset {}: dtype {desc}, expected {}",
                s.name, s.dtypes[0]
            )),
            Err(e) => problems.push(format!("dataset {}: unreadable dtype: {e}", s.name)),
        }
    }
    match (problems.is_empty(), n, t, k, d, classes, attributes) {
        (true, Some(n), Some(t), Ok(k), Ok(d), Ok(c), Ok(a)) => Ok(Layout {
            n,
            t,
            k: k as usize,
            d: d as usize,
            f16,
            n_classes: c.len(),
            n_attributes: a.len(),
            kind,
            grid_hw,
        }),
        _ => Err(problems),
    }
}

/// Checks the item → frame-row mapping: item `i` owns rows `starts[i] .. starts[i] +
/// counts[i]`, items in order, contiguous, at least one row each, covering exactly the `t` rows;
/// with `frame_item` given, every row names its owner.
pub fn frame_ranges(
    starts: &[u64],
    counts: &[u32],
    frame_items: Option<&[u32]>,
    t: usize,
) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut next = 0u64;
    for (i, (&start, &n)) in starts.iter().zip(counts).enumerate() {
        if start != next {
            out.push(Issue {
                check: "frame-ranges",
                dataset: item::FRAME_START,
                at: Row::Item(i),
                message: format!("{start}, expected {next} (items own contiguous frame rows)"),
            });
        }
        if n == 0 {
            out.push(Issue {
                check: "frame-ranges",
                dataset: item::NUM_FRAMES,
                at: Row::Item(i),
                message: "0 frames".into(),
            });
        }
        let end = start.saturating_add(n as u64);
        if end > t as u64 {
            out.push(Issue {
                check: "frame-ranges",
                dataset: item::NUM_FRAMES,
                at: Row::Item(i),
                message: format!(
                    "frame rows {start}..{end} run past the {t} frame rows of the shard"
                ),
            });
            return out;
        }
        if let Some(owners) = frame_items {
            let owner = |r: u64| owners.get(r as usize).copied();
            if let Some(row) = (start..end).find(|&r| owner(r) != Some(i as u32)) {
                out.push(Issue {
                    check: "frame-ranges",
                    dataset: frame::ITEM,
                    at: Row::Frame(row as usize),
                    message: format!(
                        "{}, expected {i}",
                        owner(row).map_or("none".into(), |o| o.to_string())
                    ),
                });
            }
        }
        next = end;
    }
    if next != t as u64 && out.is_empty() {
        out.push(Issue {
            check: "frame-ranges",
            dataset: item::NUM_FRAMES,
            at: Row::Item(starts.len().saturating_sub(1)),
            message: format!("items cover {next} frame rows, the shard has {t}"),
        });
    }
    out
}

/// Checks `kind` (0 video, 1 image).
pub fn kinds(kinds: &[u8]) -> Vec<Issue> {
    kinds
        .iter()
        .enumerate()
        .filter(|(_, &k)| k > 1)
        .map(|(i, k)| Issue {
            check: "kind",
            dataset: item::KIND,
            at: Row::Item(i),
            message: format!("{k}, expected 0 (video) or 1 (image)"),
        })
        .collect()
}

/// Checks the indices of frame row `f` of a block (`row` its row in the shard): `num_boxes` ≤
/// K, and the class and attribute of each valid box within the name lists.
#[allow(clippy::too_many_arguments)]
pub fn frame_row(
    row: usize,
    num_boxes: u32,
    classes: &[u32],
    attributes: &[u32],
    k: usize,
    n_classes: usize,
    n_attributes: usize,
) -> Vec<Issue> {
    let mut out = Vec::new();
    if num_boxes as usize > k {
        out.push(Issue {
            check: "num-boxes",
            dataset: frame::NUM_BOXES,
            at: Row::Frame(row),
            message: format!("{num_boxes} > max_boxes {k}"),
        });
    }
    let m = (num_boxes as usize).min(k);
    for (dataset, v, len, what) in [
        (frame::CLASSES, classes, n_classes, "class_names"),
        (
            frame::ATTRIBUTES,
            attributes,
            n_attributes,
            "attribute_names",
        ),
    ] {
        if let Some(j) = v[..m].iter().position(|&c| c as usize >= len) {
            out.push(Issue {
                check: "class-index",
                dataset,
                at: Row::Frame(row),
                message: format!("box {j}: index {} but {what} has {len} entries", v[j]),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ranges_accept_a_contiguous_cover() {
        let wrong_owner = frame_ranges(&[0, 2], &[2, 1], Some(&[0, 0, 0]), 3);
        assert_eq!(
            (wrong_owner[0].dataset, wrong_owner[0].at),
            (frame::ITEM, Row::Frame(2))
        );
        let owners = [0, 0, 1, 2, 2];
        assert!(frame_ranges(&[0, 2, 3], &[2, 1, 2], Some(&owners), 5).is_empty());
    }

    #[test]
    fn frame_ranges_name_the_broken_item() {
        let huge = frame_ranges(&[0, u64::MAX], &[2, 2], None, 4);
        assert_eq!(
            (huge[0].dataset, huge[0].at),
            (item::FRAME_START, Row::Item(1))
        );
        let past = frame_ranges(&[0, 2], &[2, 3], None, 4);
        assert_eq!(
            (past[0].dataset, past[0].at),
            (item::NUM_FRAMES, Row::Item(1))
        );
        let short = frame_ranges(&[0], &[2], None, 4);
        assert!(short[0].message.contains("cover 2"), "{short:?}");
    }

    #[test]
    fn frame_rows_check_indices_of_valid_boxes_only() {
        assert!(frame_row(3, 2, &[1, 0, 99], &[0, 0, 99], 3, 2, 1).is_empty());
        let bad = frame_row(3, 2, &[1, 7, 0], &[0, 0, 0], 3, 2, 1);
        assert_eq!((bad[0].dataset, bad[0].at), (frame::CLASSES, Row::Frame(3)));
        assert!(bad[0].message.contains("box 1: index 7"));
        let over = frame_row(3, u32::MAX, &[0; 3], &[0; 3], 3, 2, 1);
        assert_eq!(over[0].dataset, frame::NUM_BOXES);
        assert_eq!(kinds(&[0, 1, 9])[0].at, Row::Item(2));
    }
}
