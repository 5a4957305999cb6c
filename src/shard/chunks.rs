//! Frame rows for training, read without holding the HDF5 library lock while inflating.
//!
//! The `hdf5` crate serializes every HDF5 call behind one process-wide mutex, so reading
//! through it inflates on one thread at a time whatever the number of reader threads. A
//! [`ChunkReader`] asks HDF5 only where each chunk lies in the file (once per chunk, cached),
//! then reads the compressed bytes itself (`pread` on the file descriptor HDF5 already holds)
//! and undoes the filters (deflate with libdeflate, then shuffle) on the calling thread,
//! outside any lock. It opens only the datasets training needs (`features` or
//! `grid_features`, `locations`, `num_boxes`) and keeps features in their stored type (f16
//! stays f16).
//!
//! Chunks of `locations` and `num_boxes`, shared by dozens of random reads, stay decoded in a
//! process-wide store with a byte budget ([`super::kept`]).
//!
//! A dataset whose storage it does not understand (a filter other than shuffle + deflate,
//! compact layout, a non-native type, a user block) is read through HDF5 as before; the
//! chosen [`Access`] is reported per dataset.

use std::cell::RefCell;
use std::ffi::{c_int, c_uint, c_void};
use std::fs::File as StdFile;
use std::mem::ManuallyDrop;
use std::ops::Range;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use half::f16;
use hdf5::dataset::Layout;
use hdf5::datatype::ByteOrder;
use hdf5::filters::Filter;
use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::{Dataset, File, H5Type};
use hdf5_sys::h5::{haddr_t, hsize_t, HADDR_UNDEF};
use hdf5_sys::h5d::H5Dget_chunk_info_by_coord;
use hdf5_sys::h5f::H5Fget_vfd_handle;
use hdf5_sys::h5p::H5P_DEFAULT;
use ndarray::s;

use super::chunk_index;
use super::kept::{Kept, Slots, KEPT};
use super::schema::{self, attr, frame};
use super::{ModelKind, ShardError};

/// Feature rows in their stored type.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureRows {
    /// Half precision (the default shard type).
    F16(Vec<f16>),
    /// Single precision.
    F32(Vec<f32>),
}

impl Default for FeatureRows {
    fn default() -> Self {
        Self::F32(vec![])
    }
}

impl From<Vec<f32>> for FeatureRows {
    fn from(v: Vec<f32>) -> Self {
        Self::F32(v)
    }
}

impl From<Vec<f16>> for FeatureRows {
    fn from(v: Vec<f16>) -> Self {
        Self::F16(v)
    }
}

impl FeatureRows {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Self::F16(v) => v.len(),
            Self::F32(v) => v.len(),
        }
    }

    /// No values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the values are f16.
    pub fn is_f16(&self) -> bool {
        matches!(self, Self::F16(_))
    }

    /// Zeros of the given type.
    pub fn zeros(n: usize, f16: bool) -> Self {
        if f16 {
            Self::F16(vec![half::f16::ZERO; n])
        } else {
            Self::F32(vec![0.0; n])
        }
    }

    /// The values as f32 (a copy; exact for f16).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Self::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Self::F32(v) => v.clone(),
        }
    }

    /// The f32 values, mutable (`None` for f16 rows).
    pub fn as_f32_mut(&mut self) -> Option<&mut Vec<f32>> {
        match self {
            Self::F32(v) => Some(v),
            Self::F16(_) => None,
        }
    }

    /// Appends `src[range]`, converting f16 to f32 when `self` holds f32 (f32 into f16 rows
    /// is rounded).
    pub fn extend_from(&mut self, src: &FeatureRows, range: Range<usize>) {
        match (self, src) {
            (Self::F16(d), Self::F16(s)) => d.extend_from_slice(&s[range]),
            (Self::F32(d), Self::F32(s)) => d.extend_from_slice(&s[range]),
            (Self::F32(d), Self::F16(s)) => d.extend(s[range].iter().map(|x| x.to_f32())),
            (Self::F16(d), Self::F32(s)) => d.extend(s[range].iter().map(|&x| f16::from_f32(x))),
        }
    }

    /// Copies `src[range]` to `self[at..]` (same conversions as [`FeatureRows::extend_from`]).
    pub fn copy_from(&mut self, at: usize, src: &FeatureRows, range: Range<usize>) {
        let n = range.len();
        match (self, src) {
            (Self::F16(d), Self::F16(s)) => d[at..at + n].copy_from_slice(&s[range]),
            (Self::F32(d), Self::F32(s)) => d[at..at + n].copy_from_slice(&s[range]),
            (Self::F32(d), Self::F16(s)) => {
                for (o, x) in d[at..at + n].iter_mut().zip(&s[range]) {
                    *o = x.to_f32();
                }
            }
            (Self::F16(d), Self::F32(s)) => {
                for (o, &x) in d[at..at + n].iter_mut().zip(&s[range]) {
                    *o = f16::from_f32(x);
                }
            }
        }
    }
}

/// The rows training needs from some frame rows of a shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameRows {
    /// `[n, K, D]` (grid shards: `[n, Hg*Wg, D]`).
    pub features: FeatureRows,
    /// `[n, K, 7]` (empty for grid shards).
    pub locations: Vec<f32>,
    /// `[n]` valid rows per frame (grid shards: `Hg*Wg`).
    pub num_boxes: Vec<u32>,
}

/// How a dataset's rows are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Chunks read with `pread` and decoded on the calling thread.
    Chunked {
        /// Position of the shuffle filter in the pipeline, if any.
        shuffle: Option<u8>,
        /// Position of the deflate filter in the pipeline, if any.
        deflate: Option<u8>,
    },
    /// One unfiltered block read with `pread`.
    Contiguous,
    /// Through the HDF5 library (under its lock): layouts and filters not handled here.
    Hdf5,
}

/// Element types read directly: plain little-endian values, every bit pattern valid.
trait Plain: H5Type + Copy + Default {
    fn descriptor() -> TypeDescriptor;
}

impl Plain for f16 {
    fn descriptor() -> TypeDescriptor {
        TypeDescriptor::Float(FloatSize::U2)
    }
}

impl Plain for f32 {
    fn descriptor() -> TypeDescriptor {
        TypeDescriptor::Float(FloatSize::U4)
    }
}

impl Plain for u32 {
    fn descriptor() -> TypeDescriptor {
        TypeDescriptor::Unsigned(IntSize::U4)
    }
}

fn bytes_mut<T: Plain>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: `Plain` types are plain old data (f16, f32, u32): any byte pattern is a value
    // and the slice covers exactly the vector's initialized elements.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// One dataset of frame rows.
struct Column {
    name: &'static str,
    ds: Dataset,
    access: Access,
    /// Values per frame row.
    row_elems: usize,
    /// Bytes per value.
    elem: usize,
    /// Frame rows per chunk (chunked) .
    chunk_rows: usize,
    /// File offset of the data (contiguous).
    offset: u64,
    /// Per chunk: `[address, size | mask << 32 | KNOWN]`, filled on first use.
    table: Vec<AtomicU64>,
    /// Per chunk, its values unfiltered (value-major) while kept; `None` for columns never
    /// kept (features).
    decoded: Option<Arc<Slots>>,
}

const KNOWN: u64 = 1 << 63;

/// The descriptor HDF5 holds for the file, or one of our own.
struct RawFile {
    file: ManuallyDrop<StdFile>,
    owned: bool,
}

impl Drop for RawFile {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: dropped once, here; a borrowed descriptor belongs to HDF5 and is left.
            unsafe { ManuallyDrop::drop(&mut self.file) }
        }
    }
}

impl RawFile {
    /// HDF5's own descriptor when it is the file at `path` (the default sec2 driver), so a
    /// reader costs one descriptor; else a second one.
    fn open(h5: &File, path: &Path) -> std::io::Result<Self> {
        let mut handle: *mut c_void = std::ptr::null_mut();
        let ok =
            hdf5::sync::sync(|| unsafe { H5Fget_vfd_handle(h5.id(), H5P_DEFAULT, &mut handle) })
                >= 0;
        let want = std::fs::metadata(path)?;
        if ok && !handle.is_null() {
            // SAFETY: with the sec2 driver the handle points to its `int` descriptor; the
            // inode check below rejects anything else.
            let fd = unsafe { *handle.cast::<c_int>() };
            if fd >= 0 {
                let f = ManuallyDrop::new(unsafe { StdFile::from_raw_fd(fd) });
                if f.metadata()
                    .is_ok_and(|m| m.ino() == want.ino() && m.dev() == want.dev())
                {
                    return Ok(Self {
                        file: f,
                        owned: false,
                    });
                }
            }
        }
        Ok(Self {
            file: ManuallyDrop::new(StdFile::open(path)?),
            owned: true,
        })
    }
}

/// The per-shard state of the training reader: the file, its three (grid: one) datasets of
/// frame rows and their chunk addresses. `Send + Sync`: threads share one reader without a
/// lock of their own; HDF5's is taken only to look up a chunk the first time.
pub struct ChunkReader {
    path: PathBuf,
    raw: RawFile,
    kind: ModelKind,
    rows: usize,
    per_frame: usize,
    dim: usize,
    f16: bool,
    features: Column,
    locations: Option<Column>,
    num_boxes: Option<Column>,
    kept: &'static Kept,
    // Declared last: HDF5 handles (and the borrowed descriptor) close after the columns.
    _file: File,
}

/// Per-thread buffers: compressed bytes, inflated bytes, the inflater.
struct Scratch {
    packed: Vec<u8>,
    plain: Vec<u8>,
    inflater: libdeflater::Decompressor,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        packed: vec![],
        plain: vec![],
        inflater: libdeflater::Decompressor::new(),
    });
}

/// Where reading time goes (for the loader benchmark), summed over threads while enabled.
pub mod stats {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    pub(super) static ON: AtomicBool = AtomicBool::new(false);
    pub(super) static LOOKUP_NS: AtomicU64 = AtomicU64::new(0);
    pub(super) static LOOKUPS: AtomicU64 = AtomicU64::new(0);
    pub(super) static READ_NS: AtomicU64 = AtomicU64::new(0);
    pub(super) static INFLATE_NS: AtomicU64 = AtomicU64::new(0);
    pub(super) static UNSHUFFLE_NS: AtomicU64 = AtomicU64::new(0);
    pub(super) static CHUNKS: AtomicU64 = AtomicU64::new(0);
    pub(super) static PACKED_BYTES: AtomicU64 = AtomicU64::new(0);
    pub(super) static PLAIN_BYTES: AtomicU64 = AtomicU64::new(0);
    pub(super) static KEPT_HITS: AtomicU64 = AtomicU64::new(0);

    /// Counters since [`reset`].
    #[derive(Debug, Clone, Copy, Default, serde::Serialize)]
    pub struct Snapshot {
        /// Time looking chunks up in HDF5 (under its lock).
        pub lookup_ns: u64,
        /// Chunk look-ups (first use of a chunk).
        pub lookups: u64,
        /// Time in `pread`.
        pub read_ns: u64,
        /// Time inflating.
        pub inflate_ns: u64,
        /// Time undoing the shuffle (or copying unshuffled rows out).
        pub unshuffle_ns: u64,
        /// Chunks decoded.
        pub chunks: u64,
        /// Compressed bytes read.
        pub packed_bytes: u64,
        /// Bytes inflated.
        pub plain_bytes: u64,
        /// Reads served from a chunk kept decoded (`locations`, `num_boxes`).
        pub kept_hits: u64,
    }

    /// Starts (or stops) counting.
    pub fn enable(on: bool) {
        ON.store(on, Ordering::Relaxed);
    }

    /// Zeroes the counters.
    pub fn reset() {
        for c in [
            &LOOKUP_NS,
            &LOOKUPS,
            &READ_NS,
            &INFLATE_NS,
            &UNSHUFFLE_NS,
            &CHUNKS,
            &PACKED_BYTES,
            &PLAIN_BYTES,
            &KEPT_HITS,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The counters now.
    pub fn snapshot() -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            lookup_ns: g(&LOOKUP_NS),
            lookups: g(&LOOKUPS),
            read_ns: g(&READ_NS),
            inflate_ns: g(&INFLATE_NS),
            unshuffle_ns: g(&UNSHUFFLE_NS),
            chunks: g(&CHUNKS),
            packed_bytes: g(&PACKED_BYTES),
            plain_bytes: g(&PLAIN_BYTES),
            kept_hits: g(&KEPT_HITS),
        }
    }

    pub(super) fn add(c: &AtomicU64, v: u64) {
        c.fetch_add(v, Ordering::Relaxed);
    }
}

fn elapsed_ns(t: Option<Instant>) -> u64 {
    t.map_or(0, |t| t.elapsed().as_nanos() as u64)
}

impl ChunkReader {
    /// Opens a shard's frame-row datasets (checking the schema name and version, the model
    /// kind and that the datasets agree on T, K and D) and chooses how each is read.
    pub fn open(path: &Path) -> Result<Self, ShardError> {
        Self::open_with(path, &KEPT)
    }

    /// [`Self::open`] keeping decoded chunks in `kept`.
    fn open_with(path: &Path, kept: &'static Kept) -> Result<Self, ShardError> {
        let err = |e: String| ShardError::at(path, e);
        let file = File::open(path).map_err(|e| err(format!("cannot open as HDF5: {e}")))?;
        let text = |name: &str| -> Result<String, ShardError> {
            file.attr(name)
                .and_then(|a| a.read_scalar::<hdf5::types::VarLenUnicode>())
                .map(|v| v.as_str().to_string())
                .map_err(|e| err(format!("attribute {name}: {e}")))
        };
        let name = text(attr::SCHEMA)?;
        let version = file
            .attr(attr::SCHEMA_VERSION)
            .and_then(|a| a.read_scalar::<u32>())
            .map_err(|e| err(format!("attribute {}: {e}", attr::SCHEMA_VERSION)))?;
        if name != schema::SCHEMA_NAME || !schema::READABLE_VERSIONS.contains(&version) {
            return Err(err(format!(
                "schema {name:?} v{version}, this regionfeat reads {:?} v{:?}",
                schema::SCHEMA_NAME,
                schema::READABLE_VERSIONS
            )));
        }
        let kind = if version == 1 && file.attr(attr::MODEL_KIND).is_err() {
            ModelKind::Regions
        } else {
            text(attr::MODEL_KIND)?
                .parse()
                .map_err(|e: String| err(format!("attribute {}: {e}", attr::MODEL_KIND)))?
        };
        // A user block shifts every address: leave such files to HDF5.
        let direct = file
            .create_plist()
            .map(|p| p.userblock() == 0)
            .unwrap_or(false);
        let feat_name = match kind {
            ModelKind::Regions => frame::FEATURES,
            ModelKind::Grid => frame::GRID_FEATURES,
        };
        let feat_ds = file
            .dataset(feat_name)
            .map_err(|e| err(format!("dataset {feat_name}: {e}")))?;
        let shape = feat_ds.shape();
        let [rows, per_frame, dim] = shape[..] else {
            return Err(err(format!(
                "dataset {feat_name} has shape {shape:?}, expected [T, rows per frame, D]"
            )));
        };
        let f16 = match feat_ds.dtype().map(|t| t.size()) {
            Ok(2) => true,
            Ok(4) => false,
            Ok(n) => {
                return Err(err(format!(
                    "dataset {feat_name}: {n}-byte values, expected f16 or f32"
                )))
            }
            Err(e) => return Err(err(format!("dataset {feat_name}: {e}"))),
        };
        let features = if f16 {
            Column::open::<f16>(feat_name, feat_ds, rows, per_frame * dim, direct, false)
        } else {
            Column::open::<f32>(feat_name, feat_ds, rows, per_frame * dim, direct, false)
        }
        .map_err(err)?;
        let (locations, num_boxes) = match kind {
            ModelKind::Grid => (None, None),
            ModelKind::Regions => {
                let open = |name: &'static str| {
                    file.dataset(name)
                        .map_err(|e| err(format!("dataset {name}: {e}")))
                };
                (
                    Some(
                        Column::open::<f32>(
                            frame::LOCATIONS,
                            open(frame::LOCATIONS)?,
                            rows,
                            per_frame * 7,
                            direct,
                            true,
                        )
                        .map_err(err)?,
                    ),
                    Some(
                        Column::open::<u32>(
                            frame::NUM_BOXES,
                            open(frame::NUM_BOXES)?,
                            rows,
                            1,
                            direct,
                            true,
                        )
                        .map_err(err)?,
                    ),
                )
            }
        };
        let raw = RawFile::open(&file, path).map_err(|e| err(e.to_string()))?;
        for col in [Some(&features), locations.as_ref(), num_boxes.as_ref()]
            .into_iter()
            .flatten()
        {
            col.fill_from_index(&raw.file, rows);
        }
        Ok(Self {
            path: path.to_path_buf(),
            raw,
            kind,
            rows,
            per_frame,
            dim,
            f16,
            features,
            locations,
            num_boxes,
            kept,
            _file: file,
        })
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Regions or grid.
    pub fn model_kind(&self) -> ModelKind {
        self.kind
    }

    /// Frame rows T.
    pub fn num_frame_rows(&self) -> usize {
        self.rows
    }

    /// Feature rows per frame: K (regions) or `Hg*Wg` (grid).
    pub fn rows_per_frame(&self) -> usize {
        self.per_frame
    }

    /// D.
    pub fn feature_dim(&self) -> usize {
        self.dim
    }

    /// Whether features are stored (and returned) as f16.
    pub fn is_f16(&self) -> bool {
        self.f16
    }

    /// How each dataset is read, by name.
    pub fn accesses(&self) -> Vec<(&'static str, Access)> {
        [
            Some(&self.features),
            self.locations.as_ref(),
            self.num_boxes.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|c| (c.name, c.access))
        .collect()
    }

    fn err(&self, e: impl std::fmt::Display) -> ShardError {
        ShardError::at(&self.path, e)
    }

    /// Reads frame rows `rows` (absolute, any order, repeats allowed); output row `i` is
    /// `rows[i]`. Refused when a row is past T or a `num_boxes` exceeds K.
    pub fn read_rows(&self, rows: &[u64]) -> Result<FrameRows, ShardError> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.rows as u64) {
            return Err(self.err(format!(
                "frame row {bad} requested, the shard has {}",
                self.rows
            )));
        }
        let rows: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
        let n = rows.len();
        let features = if self.f16 {
            let mut v = vec![f16::ZERO; n * self.per_frame * self.dim];
            self.read_column(&self.features, &rows, &mut v)?;
            FeatureRows::F16(v)
        } else {
            let mut v = vec![0f32; n * self.per_frame * self.dim];
            self.read_column(&self.features, &rows, &mut v)?;
            FeatureRows::F32(v)
        };
        let (Some(loc), Some(nb)) = (&self.locations, &self.num_boxes) else {
            return Ok(FrameRows {
                features,
                locations: vec![],
                num_boxes: vec![self.per_frame as u32; n],
            });
        };
        let mut locations = vec![0f32; n * self.per_frame * 7];
        self.read_column(loc, &rows, &mut locations)?;
        let mut num_boxes = vec![0u32; n];
        self.read_column(nb, &rows, &mut num_boxes)?;
        if let Some((i, &b)) = num_boxes
            .iter()
            .enumerate()
            .find(|(_, &b)| b as usize > self.per_frame)
        {
            return Err(self.err(format!(
                "frame row {}: num_boxes {b} exceeds max_boxes {}",
                rows[i], self.per_frame
            )));
        }
        Ok(FrameRows {
            features,
            locations,
            num_boxes,
        })
    }

    fn read_column<T: Plain>(
        &self,
        col: &Column,
        rows: &[usize],
        out: &mut [T],
    ) -> Result<(), ShardError> {
        let re = col.row_elems;
        match col.access {
            Access::Hdf5 => {
                // One read of the rows' span, as the HDF5 path always did.
                let (Some(&lo), Some(&hi)) = (rows.iter().min(), rows.iter().max()) else {
                    return Ok(());
                };
                let span: Vec<T> = match col.ds.ndim() {
                    1 => col
                        .ds
                        .read_slice::<T, _, ndarray::Ix1>(s![lo..hi + 1])
                        .map(|a| a.into_raw_vec_and_offset().0),
                    2 => col
                        .ds
                        .read_slice::<T, _, ndarray::Ix2>(s![lo..hi + 1, ..])
                        .map(|a| a.into_raw_vec_and_offset().0),
                    _ => col
                        .ds
                        .read_slice::<T, _, ndarray::Ix3>(s![lo..hi + 1, .., ..])
                        .map(|a| a.into_raw_vec_and_offset().0),
                }
                .map_err(|e| {
                    self.err(format!("dataset {} rows {lo}..{}: {e}", col.name, hi + 1))
                })?;
                for (i, &r) in rows.iter().enumerate() {
                    out[i * re..(i + 1) * re]
                        .copy_from_slice(&span[(r - lo) * re..(r - lo + 1) * re]);
                }
                Ok(())
            }
            Access::Contiguous => {
                let rb = re * col.elem;
                for (i, &r) in rows.iter().enumerate() {
                    let dst = bytes_mut(&mut out[i * re..(i + 1) * re]);
                    self.raw
                        .file
                        .read_exact_at(dst, col.offset + (r * rb) as u64)
                        .map_err(|e| self.err(format!("dataset {} row {r}: {e}", col.name)))?;
                }
                Ok(())
            }
            Access::Chunked { shuffle, deflate } => {
                // Rows falling in the same chunk one after the other decode it once.
                let mut i = 0;
                while i < rows.len() {
                    let c = rows[i] / col.chunk_rows;
                    let mut j = i + 1;
                    while j < rows.len() && rows[j] / col.chunk_rows == c {
                        j += 1;
                    }
                    self.decode_chunk(
                        col,
                        c,
                        shuffle,
                        deflate,
                        &rows[i..j],
                        &mut out[i * re..j * re],
                    )?;
                    i = j;
                }
                Ok(())
            }
        }
    }

    /// Address, size and filter mask of chunk `c` (looked up in HDF5 the first time).
    fn locate(&self, col: &Column, c: usize) -> Result<(u64, usize, u32), ShardError> {
        let meta = col.table[2 * c + 1].load(Ordering::Acquire);
        if meta & KNOWN != 0 {
            let addr = col.table[2 * c].load(Ordering::Relaxed);
            return Ok((
                addr,
                (meta & 0xFFFF_FFFF) as usize,
                ((meta >> 32) & 0x7FFF_FFFF) as u32,
            ));
        }
        let (addr, size, mask) = self.lookup_in_hdf5(col, c)?;
        col.remember(c, addr, size as u64, mask);
        Ok((addr, size, mask))
    }

    /// Address, size and filter mask of chunk `c` as HDF5 reports them (under its lock).
    fn lookup_in_hdf5(&self, col: &Column, c: usize) -> Result<(u64, usize, u32), ShardError> {
        let t = stats::ON.load(Ordering::Relaxed).then(Instant::now);
        let coord: Vec<hsize_t> = std::iter::once((c * col.chunk_rows) as hsize_t)
            .chain(std::iter::repeat_n(0, col.ds.ndim() - 1))
            .collect();
        let (mut mask, mut addr, mut size): (c_uint, haddr_t, hsize_t) = (0, 0, 0);
        let rc = hdf5::sync::sync(|| unsafe {
            H5Dget_chunk_info_by_coord(col.ds.id(), coord.as_ptr(), &mut mask, &mut addr, &mut size)
        });
        stats::add(&stats::LOOKUP_NS, elapsed_ns(t));
        stats::add(&stats::LOOKUPS, 1);
        if rc < 0 {
            return Err(self.err(format!("dataset {}: cannot locate chunk {c}", col.name)));
        }
        if addr == HADDR_UNDEF || size == 0 {
            return Err(self.err(format!(
                "dataset {}: chunk {c} (rows {}..) was never written; the shard is incomplete",
                col.name,
                c * col.chunk_rows
            )));
        }
        if size >= 1 << 32 || mask >= 1 << 31 {
            return Err(self.err(format!("dataset {}: chunk {c} has size {size}", col.name)));
        }
        Ok((addr, size as usize, mask))
    }

    /// Decodes chunk `c` into the output rows `rows` (all inside it) at `out`.
    fn decode_chunk<T: Plain>(
        &self,
        col: &Column,
        c: usize,
        shuffle: Option<u8>,
        deflate: Option<u8>,
        rows: &[usize],
        out: &mut [T],
    ) -> Result<(), ShardError> {
        let (re, es) = (col.row_elems, col.elem);
        // Values in the (full-size, also at the dataset's end) chunk.
        let n = col.chunk_rows * re;
        let first = c * col.chunk_rows;
        if let Some(slots) = &col.decoded {
            let kept = match Kept::get(slots, c) {
                Some(kept) => {
                    stats::add(&stats::KEPT_HITS, 1);
                    kept
                }
                None => {
                    let values = SCRATCH.with(|s| -> Result<Arc<[u8]>, ShardError> {
                        let s = &mut *s.borrow_mut();
                        let shuffled = self.fetch_chunk(col, c, shuffle, deflate, s)?;
                        let t = stats::ON.load(Ordering::Relaxed).then(Instant::now);
                        let mut values = vec![0u8; n * es];
                        copy_values(&s.plain, shuffled, n, es, 0, &mut values);
                        stats::add(&stats::UNSHUFFLE_NS, elapsed_ns(t));
                        Ok(values.into())
                    })?;
                    // Another thread may keep the same chunk meanwhile: same bytes either way.
                    self.kept.put(slots, c, values.clone());
                    values
                }
            };
            for (i, &r) in rows.iter().enumerate() {
                let v0 = (r - first) * re;
                bytes_mut(&mut out[i * re..(i + 1) * re])
                    .copy_from_slice(&kept[v0 * es..(v0 + re) * es]);
            }
            return Ok(());
        }
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            let shuffled = self.fetch_chunk(col, c, shuffle, deflate, s)?;
            let t = stats::ON.load(Ordering::Relaxed).then(Instant::now);
            for (i, &r) in rows.iter().enumerate() {
                let dst = bytes_mut(&mut out[i * re..(i + 1) * re]);
                copy_values(&s.plain, shuffled, n, es, (r - first) * re, dst);
            }
            stats::add(&stats::UNSHUFFLE_NS, elapsed_ns(t));
            Ok(())
        })
    }

    /// Reads chunk `c` and undoes deflate, leaving its `chunk_rows * row_elems` values in
    /// `s.plain`; returns whether they are still shuffled.
    fn fetch_chunk(
        &self,
        col: &Column,
        c: usize,
        shuffle: Option<u8>,
        deflate: Option<u8>,
        s: &mut Scratch,
    ) -> Result<bool, ShardError> {
        let (addr, size, mask) = self.locate(col, c)?;
        let on = stats::ON.load(Ordering::Relaxed);
        let now = || on.then(Instant::now);
        let skipped = |pos: Option<u8>| pos.is_none_or(|p| mask & (1 << p) != 0);
        let (shuffled, deflated) = (!skipped(shuffle), !skipped(deflate));
        let full = col.chunk_rows * col.row_elems * col.elem;
        let t = now();
        s.packed.resize(size, 0);
        self.raw
            .file
            .read_exact_at(&mut s.packed, addr)
            .map_err(|e| self.err(format!("dataset {} chunk {c}: {e}", col.name)))?;
        stats::add(&stats::READ_NS, elapsed_ns(t));
        if deflated {
            let t = now();
            // libdeflate inflates whole buffers: the chunk's exact size is known.
            s.plain.resize(full, 0);
            let got = s
                .inflater
                .zlib_decompress(&s.packed, &mut s.plain)
                .map_err(|e| {
                    self.err(format!(
                        "dataset {} chunk {c}: inflate ({size} bytes, expected {full} out): {e}",
                        col.name
                    ))
                })?;
            if got != full {
                return Err(self.err(format!(
                    "dataset {} chunk {c}: inflates to {got} bytes, expected {full}",
                    col.name
                )));
            }
            stats::add(&stats::INFLATE_NS, elapsed_ns(t));
            stats::add(&stats::PLAIN_BYTES, full as u64);
        } else {
            std::mem::swap(&mut s.packed, &mut s.plain);
            if s.plain.len() < full {
                return Err(self.err(format!(
                    "dataset {} chunk {c}: {} bytes stored, expected {full}",
                    col.name,
                    s.plain.len()
                )));
            }
        }
        stats::add(&stats::CHUNKS, 1);
        stats::add(&stats::PACKED_BYTES, size as u64);
        Ok(shuffled)
    }
}

/// Values `v0 .. v0 + dst.len()/es` of a chunk of `n` values of `es` bytes into `dst`,
/// value-major, from its bytes as stored (`shuffled`) or plain.
fn copy_values(chunk: &[u8], shuffled: bool, n: usize, es: usize, v0: usize, dst: &mut [u8]) {
    if shuffled {
        unshuffle(chunk, n, es, v0, dst);
    } else {
        dst.copy_from_slice(&chunk[v0 * es..v0 * es + dst.len()]);
    }
}

/// Values `v0 .. v0 + dst.len()/es` of a shuffled block of `n` values of `es` bytes
/// (byte j of value i at `j*n + i`, HDF5's shuffle filter) into `dst`, value-major.
fn unshuffle(src: &[u8], n: usize, es: usize, v0: usize, dst: &mut [u8]) {
    let m = dst.len() / es;
    match es {
        2 => {
            let (p0, p1) = (&src[v0..v0 + m], &src[n + v0..n + v0 + m]);
            for ((d, &a), &b) in dst.chunks_exact_mut(2).zip(p0).zip(p1) {
                d[0] = a;
                d[1] = b;
            }
        }
        4 => {
            let p = |j: usize| &src[j * n + v0..j * n + v0 + m];
            let (p0, p1, p2, p3) = (p(0), p(1), p(2), p(3));
            for (i, d) in dst.chunks_exact_mut(4).enumerate() {
                d.copy_from_slice(&[p0[i], p1[i], p2[i], p3[i]]);
            }
        }
        _ => {
            for (i, d) in dst.chunks_exact_mut(es).enumerate() {
                for (j, b) in d.iter_mut().enumerate() {
                    *b = src[j * n + v0 + i];
                }
            }
        }
    }
}

impl Column {
    /// Records chunk `c`'s address, stored size and filter mask in the table.
    fn remember(&self, c: usize, addr: u64, size: u64, mask: u32) {
        self.table[2 * c].store(addr, Ordering::Relaxed);
        self.table[2 * c + 1].store(KNOWN | size | (u64::from(mask) << 32), Ordering::Release);
    }

    /// Fills the chunk table from the file's chunk index in one walk, outside the HDF5 lock
    /// (see [`chunk_index`]). Chunks it leaves out (or all, for an index it cannot read) are
    /// looked up in HDF5 on first use.
    fn fill_from_index(&self, file: &StdFile, rows: usize) {
        if !matches!(self.access, Access::Chunked { .. }) {
            return;
        }
        let Some(header) = chunk_index::header_address(&self.ds) else {
            return;
        };
        let Some(index) = chunk_index::read(
            file,
            header,
            self.ds.ndim(),
            self.chunk_rows as u64,
            rows as u64,
        ) else {
            return;
        };
        for e in index.entries {
            // A mask using the top bit would collide with KNOWN: leave that chunk to HDF5.
            if e.mask < 1 << 31 {
                self.remember(
                    (e.row / self.chunk_rows as u64) as usize,
                    e.addr,
                    u64::from(e.size),
                    e.mask,
                );
            }
        }
    }

    /// Checks the shape (`[rows, ...]` with `row_elems` values per row) and picks the access.
    fn open<T: Plain>(
        name: &'static str,
        ds: Dataset,
        rows: usize,
        row_elems: usize,
        direct: bool,
        keep_decoded: bool,
    ) -> Result<Self, String> {
        let shape = ds.shape();
        if shape.first() != Some(&rows) || shape[1..].iter().product::<usize>() != row_elems {
            return Err(format!(
                "dataset {name} has shape {shape:?}, expected {rows} rows of {row_elems} values"
            ));
        }
        let elem = std::mem::size_of::<T>();
        let native = cfg!(target_endian = "little")
            && ds.dtype().is_ok_and(|t| {
                t.to_descriptor().is_ok_and(|d| d == T::descriptor())
                    && t.byte_order() == ByteOrder::LittleEndian
            });
        let mut col = Column {
            name,
            ds,
            access: Access::Hdf5,
            row_elems,
            elem,
            chunk_rows: 1,
            offset: 0,
            table: vec![],
            decoded: None,
        };
        if !direct || !native {
            return Ok(col);
        }
        let filters = col.ds.filters();
        match col.ds.layout() {
            Layout::Contiguous if filters.is_empty() => {
                // No storage yet (T = 0) reads as HDF5 does: nothing to read anyway.
                if let Some(off) = col.ds.offset() {
                    col.offset = off;
                    col.access = Access::Contiguous;
                }
            }
            Layout::Chunked => {
                let chunk = col.ds.chunk().unwrap_or_default();
                // Chunks must split only the row axis.
                if chunk.len() != shape.len() || chunk[1..] != shape[1..] || chunk[0] == 0 {
                    return Ok(col);
                }
                let (mut shuffle, mut deflate) = (None, None);
                for (pos, f) in filters.iter().enumerate() {
                    match f {
                        Filter::Shuffle if shuffle.is_none() && deflate.is_none() => {
                            shuffle = Some(pos as u8)
                        }
                        Filter::Deflate(_) if deflate.is_none() => deflate = Some(pos as u8),
                        _ => return Ok(col),
                    }
                }
                col.chunk_rows = chunk[0];
                let n_chunks = rows.div_ceil(chunk[0]);
                col.table = (0..2 * n_chunks).map(|_| AtomicU64::new(0)).collect();
                if keep_decoded {
                    col.decoded = Some(Kept::slots(n_chunks));
                }
                col.access = Access::Chunked { shuffle, deflate };
            }
            _ => {}
        }
        Ok(col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::synthetic::SyntheticShard;
    use crate::shard::{Compression, FeatureDtype, ShardReader};

    /// Every row, one at a time and as a scattered list, equals what `ShardReader` (the HDF5
    /// path) returns; returns the reader for further checks.
    fn same_as_hdf5(spec: &SyntheticShard) -> ChunkReader {
        let dir = tempfile::tempdir().unwrap();
        let path = spec.write(dir.path()).unwrap();
        let old = ShardReader::open(&path).unwrap();
        let new = ChunkReader::open(&path).unwrap();
        let t = old.num_frame_rows().unwrap();
        assert_eq!(new.num_frame_rows(), t);
        let grid = spec.grid_hw.is_some();
        let expect = |rows: &[u64]| -> (Vec<f32>, Vec<f32>, Vec<u32>) {
            let (mut f, mut l, mut n) = (vec![], vec![], vec![]);
            for &r in rows {
                if grid {
                    f.extend(old.read_grid_rows(r as usize..r as usize + 1).unwrap());
                    n.push(new.rows_per_frame() as u32);
                } else {
                    let b = old.read_frames(r, 1).unwrap();
                    f.extend(b.features);
                    l.extend(b.locations);
                    n.extend(b.num_boxes);
                }
            }
            (f, l, n)
        };
        let check = |rows: &[u64]| {
            let got = new.read_rows(rows).unwrap();
            assert_eq!(got.features.is_f16(), spec.dtype == FeatureDtype::F16);
            let (f, l, n) = expect(rows);
            assert_eq!(got.features.to_f32(), f, "features of rows {rows:?}");
            assert_eq!(got.locations, l, "locations of rows {rows:?}");
            assert_eq!(got.num_boxes, n, "num_boxes of rows {rows:?}");
        };
        for r in 0..t as u64 {
            check(&[r]);
        }
        // Scattered, repeated, descending, and a run crossing chunk boundaries.
        let all: Vec<u64> = (0..t as u64).collect();
        check(&all);
        check(&[t as u64 - 1, 0, 3, 3, t as u64 / 2]);
        check(&all.iter().rev().step_by(3).copied().collect::<Vec<_>>());
        check(&[]);
        let err = new.read_rows(&[t as u64]).unwrap_err().to_string();
        assert!(err.contains(&format!("frame row {t} requested")), "{err}");
        // Threads share one reader.
        std::thread::scope(|sc| {
            for _ in 0..3 {
                sc.spawn(|| check(&all));
            }
        });
        new
    }

    fn spec(seed: u64) -> SyntheticShard {
        // 70 items of 1-3 frames: T is not a multiple of the 64-row chunks (a partial last
        // chunk) and spans several chunks.
        SyntheticShard {
            items: 70,
            frames: (1, 3),
            max_boxes: 6,
            feature_dim: 24,
            seed,
            ..Default::default()
        }
    }

    #[test]
    fn gzip_shuffle_rows_match_hdf5_and_are_read_directly() {
        let r = same_as_hdf5(&spec(1));
        assert!(!r.num_frame_rows().is_multiple_of(64) && r.num_frame_rows() > 64);
        for (name, a) in r.accesses() {
            assert_eq!(
                a,
                Access::Chunked {
                    shuffle: Some(0),
                    deflate: Some(1)
                },
                "{name}"
            );
        }
    }

    #[test]
    fn small_columns_stay_decoded_within_the_budget_and_features_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = spec(4).write(dir.path()).unwrap();
        let kept = |c: &Column| {
            let slots = c.decoded.as_ref().unwrap();
            (0..slots.len())
                .filter(|&i| Kept::get(slots, i).is_some())
                .count()
        };
        let all: Vec<u64> = {
            let r = ChunkReader::open(&path).unwrap();
            (0..r.num_frame_rows() as u64).collect()
        };
        // A budget for everything: every chunk of the small columns stays, whole.
        let r = ChunkReader::open_with(&path, Box::leak(Box::new(Kept::new(1 << 30)))).unwrap();
        let first = r.read_rows(&all).unwrap();
        let (loc, nb) = (r.locations.as_ref().unwrap(), r.num_boxes.as_ref().unwrap());
        assert_eq!(kept(loc), r.num_frame_rows().div_ceil(loc.chunk_rows));
        assert_eq!(kept(nb), r.num_frame_rows().div_ceil(nb.chunk_rows));
        assert_eq!(
            Kept::get(loc.decoded.as_ref().unwrap(), 0).unwrap().len(),
            loc.chunk_rows * loc.row_elems * 4
        );
        assert!(r.features.decoded.is_none());
        // Read again from what is kept: the same rows.
        assert_eq!(r.read_rows(&all).unwrap(), first);
        // A budget of one locations chunk: at most one stays, reads stay right.
        let one = loc.chunk_rows * loc.row_elems * 4;
        let small = ChunkReader::open_with(&path, Box::leak(Box::new(Kept::new(one)))).unwrap();
        assert_eq!(small.read_rows(&all).unwrap(), first);
        let (loc, nb) = (
            small.locations.as_ref().unwrap(),
            small.num_boxes.as_ref().unwrap(),
        );
        let bytes = kept(loc) * one + kept(nb) * nb.chunk_rows * 4;
        assert!(
            bytes <= one && kept(loc) <= 1,
            "{} + {}",
            kept(loc),
            kept(nb)
        );
        assert!(kept(nb) > 0);
    }

    #[test]
    fn a_corrupt_chunk_is_an_error_naming_dataset_and_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = spec(5).write(dir.path()).unwrap();
        let (addr, size) = {
            let r = ChunkReader::open(&path).unwrap();
            let (a, s, _) = r.locate(&r.features, 3).unwrap();
            (a, s)
        };
        // Garbage over the middle of frame row 3's deflate stream.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&vec![0xA5; size / 2], addr + 2).unwrap();
        drop(f);
        let r = ChunkReader::open(&path).unwrap();
        let e = r.read_rows(&[2, 3]).unwrap_err().to_string();
        assert!(
            e.contains("dataset features chunk 3") && e.contains("inflate"),
            "{e}"
        );
        // Other rows still read.
        assert_eq!(r.read_rows(&[2, 4]).unwrap().num_boxes.len(), 2);
    }

    #[test]
    fn chunk_addresses_come_from_the_index_at_open_and_match_hdf5() {
        let dir = tempfile::tempdir().unwrap();
        let path = spec(6).write(dir.path()).unwrap();
        let r = ChunkReader::open(&path).unwrap();
        for col in [
            &r.features,
            r.locations.as_ref().unwrap(),
            r.num_boxes.as_ref().unwrap(),
        ] {
            let chunks = col.table.len() / 2;
            assert!(chunks > 1);
            for c in 0..chunks {
                // Known before any read: filled from the index, not looked up lazily.
                let meta = col.table[2 * c + 1].load(Ordering::Acquire);
                assert_ne!(meta & KNOWN, 0, "{} chunk {c} not filled at open", col.name);
                let from_index = r.locate(col, c).unwrap();
                assert_eq!(
                    from_index,
                    r.lookup_in_hdf5(col, c).unwrap(),
                    "{} chunk {c}",
                    col.name
                );
            }
        }
    }

    #[test]
    fn f32_features_match_hdf5() {
        let r = same_as_hdf5(&SyntheticShard {
            dtype: FeatureDtype::F32,
            ..spec(2)
        });
        assert!(!r.is_f16());
    }

    #[test]
    fn unfiltered_chunks_match_hdf5() {
        let r = same_as_hdf5(&SyntheticShard {
            compression: Compression::None,
            ..spec(3)
        });
        assert!(r.accesses().iter().all(|(_, a)| *a
            == Access::Chunked {
                shuffle: None,
                deflate: None
            }));
    }

    #[test]
    fn grid_shard_rows_match_hdf5() {
        let r = same_as_hdf5(&SyntheticShard {
            grid_hw: Some((3, 2)),
            ..spec(4)
        });
        assert_eq!(r.model_kind(), ModelKind::Grid);
        assert_eq!(r.rows_per_frame(), 6);
        assert_eq!(r.accesses().len(), 1);
    }

    #[test]
    fn lzf_falls_back_to_hdf5() {
        let r = same_as_hdf5(&SyntheticShard {
            compression: Compression::Lzf,
            ..spec(5)
        });
        assert!(r.accesses().iter().all(|(_, a)| *a == Access::Hdf5));
    }

    #[test]
    fn not_a_shard_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.h5");
        std::fs::write(&p, b"not hdf5").unwrap();
        let e = ChunkReader::open(&p).err().unwrap().to_string();
        assert!(
            e.contains("x.h5") && e.contains("cannot open as HDF5"),
            "{e}"
        );
    }

    #[test]
    fn reader_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ChunkReader>();
    }

    #[test]
    fn unshuffle_inverts_hdf5_shuffle() {
        for es in [1usize, 2, 3, 4, 8] {
            let n = 37;
            let plain: Vec<u8> = (0..n * es).map(|i| (i * 7 + 3) as u8).collect();
            let mut shuffled = vec![0u8; n * es];
            for i in 0..n {
                for j in 0..es {
                    shuffled[j * n + i] = plain[i * es + j];
                }
            }
            for (v0, m) in [(0, n), (5, 9), (n - 1, 1)] {
                let mut dst = vec![0u8; m * es];
                unshuffle(&shuffled, n, es, v0, &mut dst);
                assert_eq!(dst, plain[v0 * es..(v0 + m) * es], "es {es} v0 {v0}");
            }
        }
    }
}
