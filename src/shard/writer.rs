//! Writing one shard: resizable chunked datasets appended item by item (memory stays at one
//! item whatever the shard size), committed atomically by rename.

use std::path::{Path, PathBuf};

use half::f16;
use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File, H5Type};
use ndarray::{s, ArrayView, IxDyn};

use super::schema::{self, attr, frame, item};
use super::{Compression, FeatureDtype, ModelKind, ShardError, ShardMeta};
use crate::manifest::Item;
use crate::select::{location, Region};

/// One extracted frame, ready to be written.
#[derive(Debug, Clone)]
pub struct ExtractedFrame {
    /// Sample time `t_i`, seconds.
    pub timestamp: f64,
    /// Presentation time of the frame taken, seconds.
    pub frame_time: f64,
    /// Selected regions, best first (at most K); empty for grid models.
    pub regions: Vec<Region>,
    /// Region shards: `regions.len() × D` features. Grid shards: the `Hg × Wg × D` grid,
    /// rows over (y, x).
    pub features: Vec<f32>,
}

/// One extracted item.
#[derive(Debug, Clone)]
pub struct ExtractedItem {
    /// The manifest item.
    pub item: Item,
    /// Upright original width.
    pub width: u32,
    /// Upright original height.
    pub height: u32,
    /// Sampling duration, seconds.
    pub duration: f64,
    /// Frames in time order.
    pub frames: Vec<ExtractedFrame>,
}

/// An open shard being written to its temporary name.
pub struct ShardWriter {
    file: File,
    tmp_path: PathBuf,
    final_path: PathBuf,
    kind: ModelKind,
    k: usize,
    /// `Hg * Wg` (grid shards).
    cells: usize,
    d: usize,
    feature_dtype: FeatureDtype,
    items: u64,
    frames: u64,
}

fn to_vlen(s: &str) -> VarLenUnicode {
    // HDF5 strings are NUL-terminated: drop interior NULs rather than fail on a caption.
    s.replace('\0', "").parse().expect("no NUL left")
}

impl ShardWriter {
    /// Creates `dir/shard-NNNNNN.h5.tmp` with empty datasets and the root attributes.
    pub fn create(dir: &Path, meta: &ShardMeta) -> Result<Self, ShardError> {
        let final_path = dir.join(schema::shard_file_name(meta.shard_id));
        let tmp_path = final_path.with_extension("h5.tmp");
        let _ = std::fs::remove_file(&tmp_path);
        let file = File::create(&tmp_path).map_err(|e| ShardError::at(&tmp_path, e))?;
        let mut w = Self {
            file,
            tmp_path,
            final_path,
            kind: meta.model_kind,
            k: match meta.model_kind {
                ModelKind::Regions => meta.max_boxes,
                ModelKind::Grid => 0,
            },
            cells: meta.grid_hw.0 * meta.grid_hw.1,
            d: meta.feature_dim,
            feature_dtype: meta.feature_dtype,
            items: 0,
            frames: 0,
        };
        w.init(meta).map_err(|e| ShardError::at(&w.tmp_path, e))?;
        Ok(w)
    }

    fn dataset<T: H5Type>(
        &self,
        name: &str,
        row: &[usize],
        chunk_rows: usize,
        compression: Compression,
    ) -> hdf5::Result<Dataset> {
        let shape: Vec<hdf5::Extent> = std::iter::once(hdf5::Extent::resizable(0))
            .chain(row.iter().map(|&n| hdf5::Extent::fixed(n)))
            .collect();
        let chunk: Vec<usize> = std::iter::once(chunk_rows)
            .chain(row.iter().copied())
            .collect();
        let b = self.file.new_dataset::<T>().chunk(chunk);
        let b = match compression {
            Compression::Gzip(level) => b.shuffle().deflate(level),
            Compression::Lzf => b.lzf(),
            Compression::None => b,
        };
        b.shape(shape).create(name)
    }

    fn init(&mut self, meta: &ShardMeta) -> hdf5::Result<()> {
        let (k, d, c) = (self.k, self.d, meta.compression);
        let n = schema::SMALL_CHUNK_ROWS;
        for name in [item::ID, item::CAPTION, item::CAPTIONS, item::SOURCE] {
            self.dataset::<VarLenUnicode>(name, &[], n, Compression::None)?;
        }
        self.dataset::<u8>(item::KIND, &[], n, c)?;
        self.dataset::<u64>(item::MANIFEST_INDEX, &[], n, c)?;
        self.dataset::<u64>(item::FRAME_START, &[], n, c)?;
        self.dataset::<u32>(item::NUM_FRAMES, &[], n, c)?;
        self.dataset::<u32>(item::IMAGE_HW, &[2], n, c)?;
        self.dataset::<f32>(item::DURATION, &[], n, c)?;
        self.dataset::<u32>(frame::ITEM, &[], n, c)?;
        self.dataset::<f32>(frame::TIMESTAMPS, &[], n, c)?;
        self.dataset::<f32>(frame::FRAME_TIMES, &[], n, c)?;
        // The frame rows' payload: selected regions (the v1 datasets) or the grid.
        let (features, row) = match self.kind {
            ModelKind::Regions => {
                self.dataset::<u32>(frame::NUM_BOXES, &[], n, c)?;
                self.dataset::<f32>(frame::BOXES, &[k, 4], n, c)?;
                self.dataset::<f32>(frame::LOCATIONS, &[k, 7], n, c)?;
                self.dataset::<f32>(frame::SCORES, &[k], n, c)?;
                self.dataset::<u32>(frame::CLASSES, &[k], n, c)?;
                self.dataset::<u32>(frame::ATTRIBUTES, &[k], n, c)?;
                self.dataset::<f32>(frame::ATTR_SCORES, &[k], n, c)?;
                (frame::FEATURES, [k, d])
            }
            ModelKind::Grid => (frame::GRID_FEATURES, [self.cells, d]),
        };
        match self.feature_dtype {
            FeatureDtype::F16 => self.dataset::<f16>(features, &row, 1, c)?,
            FeatureDtype::F32 => self.dataset::<f32>(features, &row, 1, c)?,
        };
        let f = &self.file;
        let put_str = |name: &str, v: &str| -> hdf5::Result<()> {
            f.new_attr::<VarLenUnicode>()
                .shape(())
                .create(name)?
                .write_scalar(&to_vlen(v))
        };
        put_str(attr::SCHEMA, schema::SCHEMA_NAME)?;
        put_str(attr::TOOL_VERSION, env!("CARGO_PKG_VERSION"))?;
        put_str(attr::DETECTOR_NAME, &meta.detector.name)?;
        put_str(attr::DETECTOR_SHA256, &meta.detector.sha256)?;
        put_str(
            attr::CLASS_NAMES,
            &serde_json::to_string(&meta.detector.classes).expect("json"),
        )?;
        put_str(
            attr::ATTRIBUTE_NAMES,
            &serde_json::to_string(&meta.detector.attributes).expect("json"),
        )?;
        put_str(attr::CONFIG, &meta.config_json)?;
        put_str(attr::MODEL_KIND, self.kind.as_str())?;
        if self.kind == ModelKind::Grid {
            let hw = [meta.grid_hw.0 as u32, meta.grid_hw.1 as u32];
            f.new_attr::<u32>()
                .shape([2])
                .create(attr::GRID_HW)?
                .write_raw(&hw[..])?;
        }
        f.new_attr::<u32>()
            .shape(())
            .create(attr::SCHEMA_VERSION)?
            .write_scalar(&schema::SCHEMA_VERSION)?;
        f.new_attr::<u64>()
            .shape(())
            .create(attr::SHARD_ID)?
            .write_scalar(&meta.shard_id)?;
        f.new_attr::<u32>()
            .shape(())
            .create(attr::FEATURE_DIM)?
            .write_scalar(&(self.d as u32))?;
        f.new_attr::<u32>()
            .shape(())
            .create(attr::MAX_BOXES)?
            .write_scalar(&(self.k as u32))?;
        Ok(())
    }

    /// Appends `rows` rows of shape `row` to a dataset.
    fn append<T: H5Type>(
        &self,
        name: &str,
        start: usize,
        rows: usize,
        row: &[usize],
        data: &[T],
    ) -> hdf5::Result<()> {
        let ds = self.file.dataset(name)?;
        let mut shape = vec![start + rows];
        shape.extend_from_slice(row);
        ds.resize(shape)?;
        let view = ArrayView::from_shape(IxDyn(&[&[rows][..], row].concat()), data)
            .map_err(|e| hdf5::Error::from(e.to_string()))?;
        match row.len() {
            0 => ds.write_slice(
                view.into_dimensionality::<ndarray::Ix1>().expect("rank"),
                s![start..start + rows],
            ),
            1 => ds.write_slice(
                view.into_dimensionality::<ndarray::Ix2>().expect("rank"),
                s![start..start + rows, ..],
            ),
            _ => ds.write_slice(
                view.into_dimensionality::<ndarray::Ix3>().expect("rank"),
                s![start..start + rows, .., ..],
            ),
        }
    }

    /// Appends one item and its frames.
    pub fn append_item(&mut self, x: &ExtractedItem) -> Result<(), ShardError> {
        self.append_inner(x)
            .map_err(|e| ShardError::at(&self.tmp_path, e))
    }

    fn append_inner(&mut self, x: &ExtractedItem) -> hdf5::Result<()> {
        let (n0, t0) = (self.items as usize, self.frames as usize);
        let t = x.frames.len();
        self.append(item::ID, n0, 1, &[], &[to_vlen(&x.item.id)])?;
        self.append(item::CAPTION, n0, 1, &[], &[to_vlen(&x.item.caption)])?;
        let all = serde_json::to_string(&x.item.all_captions()).expect("json of strings");
        self.append(item::CAPTIONS, n0, 1, &[], &[to_vlen(&all)])?;
        self.append(
            item::SOURCE,
            n0,
            1,
            &[],
            &[to_vlen(&x.item.path.to_string_lossy())],
        )?;
        self.append(item::KIND, n0, 1, &[], &[x.item.kind as u8])?;
        self.append(item::MANIFEST_INDEX, n0, 1, &[], &[x.item.index])?;
        self.append(item::FRAME_START, n0, 1, &[], &[t0 as u64])?;
        self.append(item::NUM_FRAMES, n0, 1, &[], &[t as u32])?;
        self.append(item::IMAGE_HW, n0, 1, &[2], &[x.height, x.width])?;
        self.append(item::DURATION, n0, 1, &[], &[x.duration as f32])?;
        let frame_item = vec![n0 as u32; t];
        let ts: Vec<f32> = x.frames.iter().map(|f| f.timestamp as f32).collect();
        let fts: Vec<f32> = x.frames.iter().map(|f| f.frame_time as f32).collect();
        self.append(frame::ITEM, t0, t, &[], &frame_item)?;
        self.append(frame::TIMESTAMPS, t0, t, &[], &ts)?;
        self.append(frame::FRAME_TIMES, t0, t, &[], &fts)?;
        match self.kind {
            ModelKind::Regions => self.append_regions(x, t0)?,
            ModelKind::Grid => self.append_grid(x, t0)?,
        }
        self.items += 1;
        self.frames += t as u64;
        Ok(())
    }

    fn append_features(
        &self,
        name: &str,
        t0: usize,
        t: usize,
        row: [usize; 2],
        feats: &[f32],
    ) -> hdf5::Result<()> {
        match self.feature_dtype {
            FeatureDtype::F16 => {
                let h: Vec<f16> = feats.iter().map(|&v| f16::from_f32(v)).collect();
                self.append(name, t0, t, &row, &h)
            }
            FeatureDtype::F32 => self.append(name, t0, t, &row, feats),
        }
    }

    fn append_grid(&self, x: &ExtractedItem, t0: usize) -> hdf5::Result<()> {
        let (cells, d) = (self.cells, self.d);
        let mut feats = Vec::with_capacity(x.frames.len() * cells * d);
        for (i, f) in x.frames.iter().enumerate() {
            if f.features.len() != cells * d {
                return Err(hdf5::Error::from(format!(
                    "item {}: frame {i} has {} grid values, the shard holds {cells} x {d}",
                    x.item.id,
                    f.features.len()
                )));
            }
            feats.extend_from_slice(&f.features);
        }
        self.append_features(frame::GRID_FEATURES, t0, x.frames.len(), [cells, d], &feats)
    }

    fn append_regions(&self, x: &ExtractedItem, t0: usize) -> hdf5::Result<()> {
        let (k, d) = (self.k, self.d);
        let t = x.frames.len();

        let mut boxes = vec![0f32; t * k * 4];
        let mut locs = vec![0f32; t * k * 7];
        let mut scores = vec![0f32; t * k];
        let mut classes = vec![0u32; t * k];
        let mut attrs = vec![0u32; t * k];
        let mut attr_scores = vec![0f32; t * k];
        let mut feats = vec![0f32; t * k * d];
        let mut num_boxes = Vec::with_capacity(t);
        for (fi, f) in x.frames.iter().enumerate() {
            let n = f.regions.len().min(k);
            num_boxes.push(n as u32);
            for (j, r) in f.regions.iter().take(n).enumerate() {
                let o = fi * k + j;
                boxes[o * 4..o * 4 + 4].copy_from_slice(&r.bbox);
                locs[o * 7..o * 7 + 7].copy_from_slice(&location(&r.bbox, x.width, x.height));
                scores[o] = r.score;
                classes[o] = r.class;
                attrs[o] = r.attribute;
                attr_scores[o] = r.attr_score;
            }
            feats[fi * k * d..(fi * k + n) * d].copy_from_slice(&f.features[..n * d]);
        }
        self.append(frame::NUM_BOXES, t0, t, &[], &num_boxes)?;
        self.append(frame::BOXES, t0, t, &[k, 4], &boxes)?;
        self.append(frame::LOCATIONS, t0, t, &[k, 7], &locs)?;
        self.append(frame::SCORES, t0, t, &[k], &scores)?;
        self.append(frame::CLASSES, t0, t, &[k], &classes)?;
        self.append(frame::ATTRIBUTES, t0, t, &[k], &attrs)?;
        self.append(frame::ATTR_SCORES, t0, t, &[k], &attr_scores)?;
        self.append_features(frame::FEATURES, t0, t, [k, d], &feats)
    }

    /// Items written so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Closes, fsyncs and renames the file to its final name; returns the final path.
    pub fn commit(self) -> Result<PathBuf, ShardError> {
        let Self {
            file,
            tmp_path,
            final_path,
            ..
        } = self;
        file.flush().map_err(|e| ShardError::at(&tmp_path, e))?;
        drop(file);
        super::commit_file(&tmp_path, &final_path)?;
        Ok(final_path)
    }
}
