//! The trainer's chunk reader (`shard::ChunkReader`: raw chunks inflated outside the HDF5
//! lock) against h5py on shards written by our `ShardWriter`: region shards with a partial last
//! chunk, f32 features, grid shards (schema v2) and an LZF shard read through HDF5.

use regionfeat::shard::synthetic::SyntheticShard;
use regionfeat::shard::{Access, ChunkReader, Compression, FeatureDtype};
use serde_json::Value;

use crate::util::{path_str, repo, run_python, tempdir};

fn check(spec: SyntheticShard, want: Access) {
    let dir = tempdir();
    let path = spec.write(dir.path()).unwrap();
    let r = ChunkReader::open(&path).unwrap();
    assert!(
        r.accesses().iter().all(|(_, a)| *a == want),
        "{:?}",
        r.accesses()
    );
    let t = r.num_frame_rows() as u64;
    // Every other row, descending, and the first, last (partial chunk) and middle rows.
    let rows: Vec<u64> = (0..t).rev().step_by(2).chain([0, t - 1, t / 2]).collect();
    let got = r.read_rows(&rows).unwrap();
    let list = rows
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let script = repo().join("tests/py/read_rows.py");
    let want: Value =
        serde_json::from_str(run_python(&[path_str(&script), path_str(&path), &list]).trim())
            .unwrap();
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    // Values pass through JSON text, whose float parsing is not bit-exact: compare to 1e-12.
    let same = |ours: Vec<f64>, want: Vec<f64>, what: &str| {
        assert_eq!(ours.len(), want.len(), "{what}: lengths");
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                "{what}[{i}]: {a} vs h5py {b}"
            );
        }
    };
    let ours: Vec<f64> = got.features.to_f32().iter().map(|&x| x as f64).collect();
    same(ours, floats(&want["features"]), "features");
    let ours: Vec<f64> = got.locations.iter().map(|&x| x as f64).collect();
    same(ours, floats(&want["locations"]), "locations");
    let nb: Vec<u64> = want["num_boxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(
        got.num_boxes.iter().map(|&x| x as u64).collect::<Vec<_>>(),
        nb
    );
}

fn base(seed: u64) -> SyntheticShard {
    SyntheticShard {
        items: 60,
        frames: (1, 3),
        max_boxes: 7,
        feature_dim: 20,
        seed,
        ..Default::default()
    }
}

const GZIP: Access = Access::Chunked {
    shuffle: Some(0),
    deflate: Some(1),
};

#[test]
fn f16_gzip_region_rows_match_h5py() {
    check(base(1), GZIP);
}

#[test]
fn f32_gzip_region_rows_match_h5py() {
    check(
        SyntheticShard {
            dtype: FeatureDtype::F32,
            ..base(2)
        },
        GZIP,
    );
}

#[test]
fn grid_rows_match_h5py() {
    check(
        SyntheticShard {
            grid_hw: Some((2, 3)),
            ..base(3)
        },
        GZIP,
    );
}

#[test]
fn lzf_rows_read_through_hdf5_match_h5py() {
    check(
        SyntheticShard {
            compression: Compression::Lzf,
            ..base(4)
        },
        Access::Hdf5,
    );
}
