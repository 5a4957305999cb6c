//! The detector contract (`schemas/detector-contract.md`): what a model must declare and
//! expose. Checked once when a session opens, so a wrong model fails at start.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::decode::ResizeRule;
use crate::shard::ModelKind;

/// The contract version this build understands.
pub const CONTRACT_VERSION: &str = "1";

/// Largest `preprocess.shorter_side` accepted (detectors use 600-1333).
pub const MAX_SHORTER_SIDE: u32 = 4096;
/// Largest `preprocess.max_side` accepted.
pub const MAX_LONGER_SIDE: u32 = 8192;
/// Largest `preprocess.size_divisibility` accepted.
pub const MAX_SIZE_DIVISIBILITY: u32 = 1024;

/// Metadata keys.
pub mod keys {
    /// Contract version.
    pub const VERSION: &str = "regionfeat.contract_version";
    /// Model name.
    pub const NAME: &str = "regionfeat.name";
    /// Preprocessing JSON.
    pub const PREPROCESS: &str = "regionfeat.preprocess";
    /// Class names JSON.
    pub const CLASSES: &str = "regionfeat.classes";
    /// Attribute names JSON.
    pub const ATTRIBUTES: &str = "regionfeat.attributes";
    /// Feature dimension.
    pub const FEATURE_DIM: &str = "regionfeat.feature_dim";
}

/// Input and output names.
pub mod names {
    /// Preprocessed batch `[B,3,H,W]`.
    pub const IMAGES: &str = "images";
    /// Valid `(h, w)` per image `[B,2]`.
    pub const IMAGE_SIZES: &str = "image_sizes";
    /// Optional: resize factor per image `[B]` (fed only to models that declare it).
    pub const IMAGE_SCALES: &str = "image_scales";
    /// Candidate boxes `[B,R,4]`.
    pub const BOXES: &str = "boxes";
    /// Class probabilities `[B,R,C+1]`.
    pub const CLASS_SCORES: &str = "class_scores";
    /// Attribute probabilities `[B,R,A+1]`.
    pub const ATTR_SCORES: &str = "attr_scores";
    /// Pooled features `[B,R,D]`.
    pub const FEATURES: &str = "features";
}

/// How frames are prepared for the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// `"BGR"` or `"RGB"`.
    pub channel_order: String,
    /// Per-channel mean, in `channel_order`, on 0..255 values.
    pub pixel_mean: [f32; 3],
    /// Per-channel std, in `channel_order`.
    pub pixel_std: [f32; 3],
    /// Shorter side after resize.
    pub shorter_side: u32,
    /// Maximum longer side after resize.
    pub max_side: u32,
    /// Padded batch sizes are rounded up to a multiple of this (0 = no rounding).
    #[serde(default)]
    pub size_divisibility: u32,
    /// Grid models: every frame is center-cropped to this square after the resize (0 = none;
    /// not part of a region detector's metadata, see `schemas/grid-contract.md`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub center_crop: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Preprocess {
    /// The resize rule the decoder applies while converting to RGB.
    pub fn resize_rule(&self) -> ResizeRule {
        ResizeRule {
            shorter_side: self.shorter_side,
            max_side: self.max_side,
        }
    }

    /// Whether channels are fed blue first.
    pub fn is_bgr(&self) -> bool {
        self.channel_order.eq_ignore_ascii_case("BGR")
    }
}

/// Everything the contract tells about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorInfo {
    /// `regionfeat.name`.
    pub name: String,
    /// sha256 of the ONNX file, hex.
    pub sha256: String,
    /// Preprocessing.
    pub preprocess: Preprocess,
    /// Object class names without background.
    pub classes: Vec<String>,
    /// Attribute names without the "no attribute" slot.
    pub attributes: Vec<String>,
    /// Feature dimension D.
    pub feature_dim: usize,
    /// Region detector or grid model (from the outputs).
    #[serde(default)]
    pub kind: ModelKind,
    /// Grid models: `(Hg, Wg)` of the output, learnt from the dry run at open.
    #[serde(default)]
    pub grid_hw: (usize, usize),
}

/// A broken contract: the message says what the model lacks.
#[derive(Debug, thiserror::Error)]
#[error("detector model does not honour contract v{CONTRACT_VERSION} (schemas/detector-contract.md): {0}")]
pub struct ContractError(pub String);

/// A metadata value, or the error naming the missing key.
pub(super) fn metadata_value<'a>(
    meta: &'a HashMap<String, String>,
    k: &str,
) -> Result<&'a String, ContractError> {
    meta.get(k)
        .ok_or_else(|| ContractError(format!("metadata key {k:?} is missing")))
}

/// Refuses a model written for another contract version (region and grid models share it).
pub(super) fn check_contract_version(meta: &HashMap<String, String>) -> Result<(), ContractError> {
    let version = metadata_value(meta, keys::VERSION)?;
    if version != CONTRACT_VERSION {
        return Err(ContractError(format!(
            "{} is {version:?}, this regionfeat reads {CONTRACT_VERSION:?}",
            keys::VERSION
        )));
    }
    Ok(())
}

impl DetectorInfo {
    /// Parses and checks the metadata map.
    pub fn from_metadata(
        meta: &HashMap<String, String>,
        sha256: String,
    ) -> Result<Self, ContractError> {
        let get = |k: &str| metadata_value(meta, k);
        check_contract_version(meta)?;
        let json = |k: &str| -> Result<serde_json::Value, ContractError> {
            serde_json::from_str(get(k)?)
                .map_err(|e| ContractError(format!("{k} is not valid JSON: {e}")))
        };
        let preprocess: Preprocess = serde_json::from_value(json(keys::PREPROCESS)?)
            .map_err(|e| ContractError(format!("{}: {e}", keys::PREPROCESS)))?;
        if !matches!(
            preprocess.channel_order.to_ascii_uppercase().as_str(),
            "BGR" | "RGB"
        ) {
            return Err(ContractError(format!(
                "preprocess.channel_order must be \"BGR\" or \"RGB\", not {:?}",
                preprocess.channel_order
            )));
        }
        // Past these a frame batch needs gigabytes before the model even runs.
        if !(1..=MAX_SHORTER_SIDE).contains(&preprocess.shorter_side)
            || !(1..=MAX_LONGER_SIDE).contains(&preprocess.max_side)
            || preprocess.size_divisibility > MAX_SIZE_DIVISIBILITY
        {
            return Err(ContractError(format!(
                "preprocess sizes out of range: shorter_side {} (valid 1..={MAX_SHORTER_SIDE}), max_side {} (valid 1..={MAX_LONGER_SIDE}), size_divisibility {} (valid 0..={MAX_SIZE_DIVISIBILITY})",
                preprocess.shorter_side, preprocess.max_side, preprocess.size_divisibility
            )));
        }
        if preprocess.max_side < preprocess.shorter_side {
            return Err(ContractError(format!(
                "preprocess sizes are inconsistent: shorter_side {} max_side {}",
                preprocess.shorter_side, preprocess.max_side
            )));
        }
        if preprocess.pixel_std.iter().any(|s| *s <= 0.0) {
            return Err(ContractError(
                "preprocess.pixel_std must be positive".into(),
            ));
        }
        let classes: Vec<String> = serde_json::from_value(json(keys::CLASSES)?).map_err(|e| {
            ContractError(format!("{} must be a list of strings: {e}", keys::CLASSES))
        })?;
        if classes.is_empty() {
            return Err(ContractError(format!("{} is empty", keys::CLASSES)));
        }
        let attributes: Vec<String> =
            serde_json::from_value(json(keys::ATTRIBUTES)?).map_err(|e| {
                ContractError(format!(
                    "{} must be a list of strings: {e}",
                    keys::ATTRIBUTES
                ))
            })?;
        let feature_dim: usize = get(keys::FEATURE_DIM)?
            .trim()
            .parse()
            .ok()
            .filter(|d| *d > 0)
            .ok_or_else(|| {
                ContractError(format!("{} must be a positive integer", keys::FEATURE_DIM))
            })?;
        Ok(Self {
            name: get(keys::NAME)?.clone(),
            sha256,
            preprocess,
            classes,
            attributes,
            feature_dim,
            kind: ModelKind::Regions,
            grid_hw: (0, 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> HashMap<String, String> {
        [
            (keys::VERSION, "1"),
            (keys::NAME, "m"),
            (keys::PREPROCESS, r#"{"channel_order":"BGR","pixel_mean":[1,2,3],"pixel_std":[1,1,1],"shorter_side":600,"max_side":1000}"#),
            (keys::CLASSES, r#"["a","b"]"#),
            (keys::ATTRIBUTES, "[]"),
            (keys::FEATURE_DIM, "2048"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn accepts_valid_and_names_what_is_wrong() {
        let info = DetectorInfo::from_metadata(&meta(), "x".into()).unwrap();
        assert_eq!(info.feature_dim, 2048);
        assert_eq!(info.preprocess.size_divisibility, 0);
        let mut m = meta();
        m.remove(keys::CLASSES);
        let e = DetectorInfo::from_metadata(&m, "x".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("regionfeat.classes"), "{e}");
        let mut m = meta();
        m.insert(keys::VERSION.into(), "9".into());
        assert!(DetectorInfo::from_metadata(&m, "x".into())
            .unwrap_err()
            .to_string()
            .contains("\"9\""));
        let mut m = meta();
        m.insert(keys::PREPROCESS.into(), r#"{"channel_order":"BGR","pixel_mean":[1,2,3],"pixel_std":[1,1,1],"shorter_side":100000,"max_side":100000}"#.into());
        let e = DetectorInfo::from_metadata(&m, "x".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("shorter_side 100000 (valid 1..=4096)"), "{e}");
        let mut m = meta();
        m.insert(keys::FEATURE_DIM.into(), "zero".into());
        assert!(DetectorInfo::from_metadata(&m, "x".into()).is_err());
    }
}
