//! Integration tests: one binary (ripgrep style) driving the real FFmpeg, ONNX Runtime and
//! HDF5 on the bundled samples and on files made by the tests.

mod util;

#[cfg(feature = "train")]
mod benchmarks;
mod decode;
mod extract;
mod grid;
mod input;
mod inspect;
mod jobs;
mod media;
mod shard_rows;
#[cfg(feature = "train")]
mod train_cli;
#[cfg(feature = "train")]
mod train_dist;
