//! Grid models (`schemas/grid-contract.md`): `images [B,3,H,W]` in, one feature map
//! `grid_features [B,Hg,Wg,D]` out (e.g. a ViT's final-normed patch tokens). The kind of a
//! model is read from its outputs, so `extract` runs either kind through the same pipeline.

use std::collections::HashMap;

use half::f16;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};
use serde::Deserialize;

use super::contract::{keys, names, ContractError, DetectorInfo, Preprocess};
use super::preprocess::Batch;
use super::session::{Candidates, DetectError, Detector};
use crate::shard::ModelKind;

/// Output name of a grid model.
pub const GRID_FEATURES: &str = "grid_features";
/// Metadata key naming the kind (`"grid"`; optional for region detectors).
pub const KIND_KEY: &str = "regionfeat.kind";
/// The one resize rule of grid models (`regionfeat.preprocess.resize`).
pub const SHORTER_THEN_CENTER_CROP: &str = "shorter_then_center_crop";
/// A frame whose aspect ratio exceeds this is not resized past `size * MAX_ASPECT` on its
/// longer side: its shorter side ends below `size` and the crop is zero-padded (mean colour).
/// Bounds the memory an absurd panorama can take.
pub const MAX_ASPECT: u32 = 4;

/// What one frame gives, whatever the model kind.
#[derive(Debug, Clone)]
pub enum FrameOutput {
    /// Candidate regions (region detector).
    Regions(Candidates),
    /// `Hg × Wg × D` values, rows over (y, x) (grid model).
    Grid(Vec<f32>),
}

impl FrameOutput {
    /// Names the first output holding NaN or infinity: such a frame fails its item.
    pub fn non_finite(&self) -> Option<&'static str> {
        match self {
            Self::Regions(c) => c.non_finite(),
            Self::Grid(g) => g
                .iter()
                .any(|x| !x.is_finite())
                .then_some("NaN/Inf grid_features"),
        }
    }
}

/// Regions or grid, from the outputs; the optional `regionfeat.kind` metadata must agree.
pub fn kind_of(
    session: &Session,
    meta: &HashMap<String, String>,
) -> Result<ModelKind, ContractError> {
    let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    let kind = if outputs.contains(&GRID_FEATURES) {
        ModelKind::Grid
    } else {
        ModelKind::Regions
    };
    if let Some(declared) = meta.get(KIND_KEY) {
        let declared: ModelKind = declared
            .parse()
            .map_err(|e| ContractError(format!("{KIND_KEY}: {e}")))?;
        if declared != kind {
            return Err(ContractError(format!(
                "{KIND_KEY} says {declared:?} but the outputs {outputs:?} make it a {kind} model \
                 (a grid model has the output {GRID_FEATURES:?}; a region detector has boxes, \
                 class_scores, attr_scores and features)"
            )));
        }
    }
    Ok(kind)
}

/// `regionfeat.preprocess` of a grid model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridPreprocess {
    channel_order: String,
    pixel_mean: [f32; 3],
    pixel_std: [f32; 3],
    resize: String,
    size: u32,
}

/// Parses and checks a grid model's metadata (`schemas/grid-contract.md`).
pub fn info_from_metadata(
    meta: &HashMap<String, String>,
    sha256: String,
) -> Result<DetectorInfo, ContractError> {
    let get = |k: &str| super::contract::metadata_value(meta, k);
    super::contract::check_contract_version(meta)?;
    let pre: GridPreprocess = serde_json::from_str(get(keys::PREPROCESS)?).map_err(|e| {
        ContractError(format!(
            "{} of a grid model must be {{\"channel_order\", \"pixel_mean\", \"pixel_std\", \
             \"resize\": \"{SHORTER_THEN_CENTER_CROP}\", \"size\"}}: {e}",
            keys::PREPROCESS
        ))
    })?;
    if !matches!(
        pre.channel_order.to_ascii_uppercase().as_str(),
        "BGR" | "RGB"
    ) {
        return Err(ContractError(format!(
            "preprocess.channel_order must be \"BGR\" or \"RGB\", not {:?}",
            pre.channel_order
        )));
    }
    if pre.resize != SHORTER_THEN_CENTER_CROP {
        return Err(ContractError(format!(
            "preprocess.resize is {:?}; grid models use {SHORTER_THEN_CENTER_CROP:?}",
            pre.resize
        )));
    }
    if pre.size == 0 || pre.size > 4096 {
        return Err(ContractError(format!(
            "preprocess.size must be 1..=4096, not {}",
            pre.size
        )));
    }
    if pre.pixel_std.iter().any(|s| *s <= 0.0) {
        return Err(ContractError(
            "preprocess.pixel_std must be positive".into(),
        ));
    }
    let feature_dim: usize = get(keys::FEATURE_DIM)?
        .trim()
        .parse()
        .ok()
        .filter(|d| *d > 0)
        .ok_or_else(|| {
            ContractError(format!("{} must be a positive integer", keys::FEATURE_DIM))
        })?;
    Ok(DetectorInfo {
        name: get(keys::NAME)?.clone(),
        sha256,
        preprocess: Preprocess {
            channel_order: pre.channel_order,
            pixel_mean: pre.pixel_mean,
            pixel_std: pre.pixel_std,
            shorter_side: pre.size,
            max_side: pre.size * MAX_ASPECT,
            size_divisibility: 0,
            center_crop: pre.size,
        },
        classes: Vec::new(),
        attributes: Vec::new(),
        feature_dim,
        kind: ModelKind::Grid,
        grid_hw: (0, 0),
    })
}

/// Inputs and outputs of a grid model: `images` float32 in, `grid_features` float32/16 out.
pub fn check_io(session: &Session) -> Result<(), ContractError> {
    let inputs: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    if inputs != [names::IMAGES] {
        return Err(ContractError(format!(
            "a grid model has exactly one input {:?} (model inputs: {inputs:?})",
            names::IMAGES
        )));
    }
    if session.inputs()[0].dtype().tensor_type() != Some(TensorElementType::Float32) {
        return Err(ContractError(format!(
            "input {:?} must be float32",
            names::IMAGES
        )));
    }
    for o in session.outputs() {
        if o.name() == GRID_FEATURES
            && !matches!(
                o.dtype().tensor_type(),
                Some(TensorElementType::Float32 | TensorElementType::Float16)
            )
        {
            return Err(ContractError(format!(
                "output {GRID_FEATURES:?} has type {:?}, must be float32 or float16",
                o.dtype().tensor_type()
            )));
        }
    }
    Ok(())
}

/// One batch of a grid model: `Hg × Wg × D` values per frame, and `(Hg, Wg)`.
type GridBatch = (Vec<Vec<f32>>, (usize, usize));

impl Detector {
    /// Runs a grid model on one batch: `Hg × Wg × D` values per frame, and `(Hg, Wg)`.
    pub(super) fn run_grid(&mut self, batch: &Batch) -> Result<GridBatch, DetectError> {
        let run_err = |e: ort::Error| DetectError::Run(e.to_string());
        let images = TensorRef::from_array_view((
            [batch.len, 3, batch.height, batch.width],
            &batch.images[..],
        ))
        .map_err(run_err)?;
        let outputs = self
            .session
            .run(ort::inputs! { names::IMAGES => images })
            .map_err(run_err)?;
        let value = &outputs[GRID_FEATURES];
        let (shape, values): (Vec<i64>, Vec<f32>) = match value.try_extract_tensor::<f32>() {
            Ok((s, v)) => (s.to_vec(), v.to_vec()),
            Err(_) => {
                let (s, v) = value.try_extract_tensor::<f16>().map_err(run_err)?;
                (s.to_vec(), v.iter().map(|x| x.to_f32()).collect())
            }
        };
        let d = self.info.feature_dim as i64;
        let ok = shape.len() == 4
            && shape[0] == batch.len as i64
            && shape[1] > 0
            && shape[2] > 0
            && shape[3] == d;
        if !ok {
            return Err(DetectError::Run(format!(
                "output {GRID_FEATURES:?} has shape {shape:?}, expected [{}, Hg, Wg, {d}] \
                 ({} from the metadata)",
                batch.len,
                keys::FEATURE_DIM
            )));
        }
        let hw = (shape[1] as usize, shape[2] as usize);
        let per = hw.0 * hw.1 * d as usize;
        Ok((values.chunks_exact(per).map(<[f32]>::to_vec).collect(), hw))
    }

    /// The dry run of a grid model also learns `(Hg, Wg)`.
    pub(super) fn grid_dry_run(&mut self, batch: &Batch) -> Result<(), DetectError> {
        let (_, hw) = self.run_grid(batch)?;
        self.info.grid_hw = hw;
        Ok(())
    }

    /// Runs one batch through either kind of model.
    pub fn infer(&mut self, batch: &Batch) -> Result<Vec<FrameOutput>, DetectError> {
        match self.info.kind {
            ModelKind::Regions => Ok(self
                .run(batch)?
                .into_iter()
                .map(FrameOutput::Regions)
                .collect()),
            ModelKind::Grid => {
                let (grids, hw) = self.run_grid(batch)?;
                if hw != self.info.grid_hw {
                    return Err(DetectError::Run(format!(
                        "grid is {hw:?}, the dry run gave {:?}",
                        self.info.grid_hw
                    )));
                }
                Ok(grids.into_iter().map(FrameOutput::Grid).collect())
            }
        }
    }
}

/// Adaptive average pooling of an `h × w × d` grid (rows over (y, x)) to `oh × ow`, like
/// PyTorch's `adaptive_avg_pool2d`: output cell `i` averages input rows
/// `floor(i·h/oh) .. ceil((i+1)·h/oh)` (exact 2×2 means for 14 → 7).
pub fn pool_grid(
    grid: &[f32],
    (h, w): (usize, usize),
    d: usize,
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    assert_eq!(grid.len(), h * w * d, "grid size");
    if (oh, ow) == (h, w) {
        return grid.to_vec();
    }
    let mut out = vec![0f32; oh * ow * d];
    for oy in 0..oh {
        let (y0, y1) = (oy * h / oh, ((oy + 1) * h).div_ceil(oh));
        for ox in 0..ow {
            let (x0, x1) = (ox * w / ow, ((ox + 1) * w).div_ceil(ow));
            let cell = &mut out[(oy * ow + ox) * d..(oy * ow + ox + 1) * d];
            for y in y0..y1 {
                for x in x0..x1 {
                    for (o, v) in cell
                        .iter_mut()
                        .zip(&grid[(y * w + x) * d..(y * w + x + 1) * d])
                    {
                        *o += v;
                    }
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as f32;
            cell.iter_mut().for_each(|o| *o /= n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> HashMap<String, String> {
        [
            (keys::VERSION, "1"),
            (keys::NAME, "vit"),
            (KIND_KEY, "grid"),
            (keys::PREPROCESS, r#"{"channel_order":"RGB","pixel_mean":[127.5,127.5,127.5],"pixel_std":[127.5,127.5,127.5],"resize":"shorter_then_center_crop","size":224}"#),
            (keys::FEATURE_DIM, "768"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn grid_metadata_parses_and_names_what_is_wrong() {
        let info = info_from_metadata(&meta(), "s".into()).unwrap();
        assert_eq!(info.kind, ModelKind::Grid);
        assert_eq!(info.feature_dim, 768);
        assert_eq!(info.preprocess.center_crop, 224);
        assert_eq!(info.preprocess.resize_rule().shorter_side, 224);
        let mut m = meta();
        m.insert(
            keys::PREPROCESS.into(),
            r#"{"channel_order":"RGB","pixel_mean":[0,0,0],"pixel_std":[1,1,1],"resize":"stretch","size":224}"#.into(),
        );
        let e = info_from_metadata(&m, "s".into()).unwrap_err().to_string();
        assert!(e.contains("shorter_then_center_crop"), "{e}");
        let mut m = meta();
        m.remove(keys::FEATURE_DIM);
        let e = info_from_metadata(&m, "s".into()).unwrap_err().to_string();
        assert!(e.contains("regionfeat.feature_dim"), "{e}");
    }

    #[test]
    fn pooling_averages_blocks() {
        // 4x4 grid, d = 2: channel 0 = cell index, channel 1 = constant 1.
        let grid: Vec<f32> = (0..16).flat_map(|i| [i as f32, 1.0]).collect();
        let p = pool_grid(&grid, (4, 4), 2, (2, 2));
        // Top-left block: cells 0, 1, 4, 5.
        assert_eq!(&p[0..2], &[2.5, 1.0]);
        assert_eq!(&p[2..4], &[4.5, 1.0]);
        assert_eq!(&p[4..6], &[10.5, 1.0]);
        assert_eq!(&p[6..8], &[12.5, 1.0]);
        assert_eq!(pool_grid(&grid, (4, 4), 2, (4, 4)), grid);
        // Uneven: 3 -> 2 overlaps the middle row (PyTorch adaptive pooling).
        let g3: Vec<f32> = (0..9).map(|i| i as f32).collect();
        assert_eq!(pool_grid(&g3, (3, 3), 1, (2, 2)), vec![2.0, 3.0, 5.0, 6.0]);
        assert_eq!(pool_grid(&g3, (3, 3), 1, (1, 1)), vec![4.0]);
    }
}
