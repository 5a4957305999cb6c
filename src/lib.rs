//! regionfeat: region-feature extraction for video-language pre-training.
//!
//! Stages, one module each: [`manifest`] (what to extract) → [`decode`] (FFmpeg, uniform
//! frame sampling) → [`detect`] (ONNX Runtime detector under the contract in
//! `schemas/detector-contract.md`) → [`select`] (threshold, per-class NMS, top-K, 7-d
//! locations) → [`shard`] (HDF5 per `schemas/shard-v1.md`), joined by [`pipeline`].

pub mod decode;
pub mod detect;
pub mod inspect;
pub mod job;
pub mod manifest;
pub mod pipeline;
pub mod scan;
pub mod select;
pub mod shard;
#[cfg(feature = "train")]
pub mod train;
