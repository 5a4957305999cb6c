//! The DemoVLP trainer (feature `train`, tch + libtorch 2.13).
//!
//! Modules, in data-flow order: [`config`] (TOML) → [`data`] / [`shards`] (items, frame rows,
//! seeded batches read ahead by threads) → [`text`] (BERT / DistilBERT from HF files, tokenizer)
//! and [`video`] (region tokens + ViT) joined in [`model`] → [`loss`] (global InfoNCE + RWA,
//! retrieval metrics) → [`optim`] (AdamW, schedule, clipping) → [`trainer`] (the loop) with
//! [`checkpoint`] and [`eval`], data-parallel over several processes with [`dist`] (c10d);
//! [`epoch`] decides each epoch's items (dataset mixing, fixed-size epochs) and [`shard_cache`]
//! bounds the shard files held open; metrics in [`runlog`] (JSONL + [`tfevents`]), the memory
//! check in [`memory`] (with [`cudart`]) and device warnings in [`device_notes`]; [`import`]
//! checks a run against the weights it starts from (released DemoVLP weights, converted);
//! [`cli`] holds the `train`/`eval` entry points and [`synth`] / [`synth_index`] generate
//! planted-structure data and pre-training-scale indexes for tests, demos and benchmarks.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod cudart;
pub mod data;
pub mod device_notes;
pub mod dist;
pub mod epoch;
pub mod eval;
pub mod import;
pub mod layers;
pub mod loss;
pub mod masks;
pub mod memory;
pub mod model;
pub mod optim;
pub mod region_learner;
pub mod retrieval;
pub mod runlog;
pub mod scale_bench;
pub mod search;
pub mod shard_cache;
pub mod shards;
pub mod synth;
pub mod synth_index;
pub mod text;
pub mod tfevents;
pub mod trainer;
pub mod video;

pub use trainer::device_from_str;

#[cfg(test)]
mod caption_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_import;
#[cfg(test)]
mod tests_region_learner;
#[cfg(test)]
mod tests_run;
#[cfg(test)]
mod tests_scale;
