//! The detector stage: ONNX Runtime sessions running any model that honours
//! `schemas/detector-contract.md` (see [`contract`]) or, for grid models,
//! `schemas/grid-contract.md` (see [`grid`]), fed by [`preprocess`]ed frames.

pub mod contract;
pub mod grid;
pub mod preprocess;
mod session;

pub use crate::shard::ModelKind;
pub use contract::{ContractError, DetectorInfo, Preprocess};
pub use grid::{pool_grid, FrameOutput};
pub use preprocess::{batch_from_rgb, Batch};
pub use session::{find_runtime_library, sha256_file, Candidates, DetectError, Detector, Device};
