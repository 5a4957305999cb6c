//! The detector stage: ONNX Runtime sessions running any model that honours
//! `schemas/detector-contract.md` (see [`contract`]), fed by [`preprocess`]ed frames.

pub mod contract;
pub mod preprocess;
mod session;

pub use contract::{ContractError, DetectorInfo, Preprocess};
pub use preprocess::{batch_from_rgb, Batch};
pub use session::{find_runtime_library, sha256_file, Candidates, DetectError, Detector, Device};
