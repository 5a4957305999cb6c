//! Cluster-scale jobs: kill -9 and resume, worker splits (flags, SLURM, Kubernetes), several
//! detector sessions, verify, index, write errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use regionfeat::job::index;
use regionfeat::shard::{FrameBlock, ShardReader};

use crate::util::{examples, path_str, regionfeat, repo, stderr, tempdir, test_detector};

fn spawn_extract(out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let det = test_detector();
    let manifest = examples().join("samples.jsonl");
    let mut c = Command::new(env!("CARGO_BIN_EXE_regionfeat"));
    c.args([
        "extract",
        "--quiet",
        "--manifest",
        path_str(&manifest),
        "--detector",
        path_str(&det),
        "--out",
        path_str(out),
    ])
    .args(extra)
    .current_dir(repo())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().expect("spawn regionfeat")
}

fn run_extract(out: &Path, extra: &[&str]) {
    let o = spawn_extract(out, extra, &[]).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Every item's arrays, keyed by id, read through index.jsonl.
fn items_by_id(out: &Path) -> BTreeMap<String, (String, FrameBlock)> {
    let mut m = BTreeMap::new();
    for e in index::read(out).expect("index.jsonl") {
        let r = ShardReader::open(&out.join(&e.shard)).unwrap();
        let block = r.read_frames(e.frame_start, e.num_frames as usize).unwrap();
        assert!(
            m.insert(e.id.clone(), (e.caption, block)).is_none(),
            "duplicate {}",
            e.id
        );
    }
    m
}

fn verify_code(out: &Path) -> i32 {
    let o = regionfeat(&[
        "verify",
        "--manifest",
        path_str(&examples().join("samples.jsonl")),
        "--out",
        path_str(out),
    ]);
    o.status.code().unwrap()
}

/// A small deterministic generator for kill times (no rand dependency).
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn kill_9_at_random_moments_then_resume_equals_uninterrupted() {
    let (a, b) = (tempdir(), tempdir());
    run_extract(a.path(), &["--shard-size", "2"]);
    let reference = items_by_id(a.path());
    assert_eq!(reference.len(), 10);
    let mut rng = 7u64;
    for round in 0..5 {
        let mut child = spawn_extract(
            b.path(),
            &["--shard-size", "2", "--decode-threads", "1"],
            &[],
        );
        std::thread::sleep(Duration::from_millis(30 + lcg(&mut rng) % 400));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Whatever is visible must already be complete and readable.
        for entry in std::fs::read_dir(b.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".h5") {
                ShardReader::open(&entry.path())
                    .unwrap_or_else(|e| panic!("round {round}: visible shard unreadable: {e}"));
            }
        }
    }
    // A temporary file of a process that no longer exists (as a kill during an atomic write
    // leaves) is cleaned up by the next run.
    std::fs::write(b.path().join("plan.json.4000000.tmp"), b"{").unwrap();
    run_extract(b.path(), &["--shard-size", "2", "--decode-threads", "1"]);
    assert_eq!(verify_code(b.path()), 0);
    assert_eq!(items_by_id(b.path()), reference);
    let leftovers: Vec<_> = std::fs::read_dir(b.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn four_workers_one_killed_and_restarted_cover_the_manifest_once() {
    let (a, b) = (tempdir(), tempdir());
    run_extract(a.path(), &["--shard-size", "1"]);
    let reference = items_by_id(a.path());
    let mut workers: Vec<Child> = (0..4)
        .map(|i| {
            spawn_extract(
                b.path(),
                &["--shard-size", "1", "--decode-threads", "1"],
                &[
                    ("JOB_COMPLETION_INDEX", &i.to_string()),
                    ("REGIONFEAT_NUM_WORKERS", "4"),
                ],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let _ = workers[2].kill();
    let _ = workers[2].wait();
    for (i, w) in workers.into_iter().enumerate() {
        if i != 2 {
            let o = w.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "worker {i}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let restarted = spawn_extract(
        b.path(),
        &[
            "--shard-size",
            "1",
            "--worker-index",
            "2",
            "--num-workers",
            "4",
        ],
        &[],
    );
    let o = restarted.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Worker 2 owns shards 2 and 6.
    assert!(b.path().join("shard-000006.done.json").exists());
    let o = regionfeat(&["index", path_str(b.path())]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(verify_code(b.path()), 0);
    assert_eq!(items_by_id(b.path()), reference);
}

#[test]
fn slurm_array_share_and_plan_changes() {
    let out = tempdir();
    let env = [
        ("SLURM_ARRAY_TASK_ID", "5"),
        ("SLURM_ARRAY_TASK_MIN", "4"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
    ];
    let o = spawn_extract(out.path(), &["--shard-size", "3"], &env)
        .wait_with_output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let done: Vec<bool> = (0..4)
        .map(|i| {
            out.path()
                .join(format!("shard-00000{i}.done.json"))
                .exists()
        })
        .collect();
    assert_eq!(
        done,
        vec![false, true, false, true],
        "worker 1 of 2 owns the odd shards"
    );
    assert_eq!(verify_code(out.path()), 2, "half the shards are missing");
    assert!(!out.path().join("index.jsonl").exists());
    // Another shard size would change item → shard: refused.
    let o = spawn_extract(out.path(), &["--shard-size", "4"], &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--shard-size was 3"));
    // Another worker count keeps the plan: allowed, and completes the directory.
    let o = spawn_extract(
        out.path(),
        &[
            "--shard-size",
            "3",
            "--worker-index",
            "0",
            "--num-workers",
            "1",
        ],
        &[],
    )
    .wait_with_output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(verify_code(out.path()), 0);
    assert_eq!(index::read(out.path()).unwrap().len(), 10);
}

#[test]
fn two_detector_sessions_give_the_same_shards() {
    let (a, b) = (tempdir(), tempdir());
    run_extract(a.path(), &["--batch-size", "2"]);
    run_extract(b.path(), &["--batch-size", "2", "--device", "cpu,cpu"]);
    assert_eq!(items_by_id(a.path()), items_by_id(b.path()));
}

#[test]
fn verify_reports_missing_and_corrupt() {
    let out = tempdir();
    run_extract(out.path(), &["--shard-size", "4"]);
    assert_eq!(verify_code(out.path()), 0);
    std::fs::write(out.path().join("shard-000001.h5"), b"garbage").unwrap();
    std::fs::remove_file(out.path().join("shard-000002.done.json")).unwrap();
    let o = regionfeat(&[
        "verify",
        "--json",
        "--manifest",
        path_str(&examples().join("samples.jsonl")),
        "--out",
        path_str(out.path()),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["missing_shards"], serde_json::json!([2]));
    assert!(rep["corrupt_shards"][0]
        .as_str()
        .unwrap()
        .starts_with("shard-000001.h5"));
    // A rerun redoes the shard without a done-record; the corrupt one has one and stays reported.
    run_extract(out.path(), &["--shard-size", "4"]);
    assert!(out.path().join("shard-000002.done.json").exists());
}

#[test]
fn a_write_error_ends_the_run_clearly_and_leaves_no_shard() {
    let out = tempdir();
    // The temporary shard name is taken by a directory: creating the shard must fail.
    std::fs::create_dir_all(out.path().join("shard-000000.h5.tmp/blocker")).unwrap();
    let o = spawn_extract(out.path(), &[], &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("shard-000000.h5.tmp"), "{err}");
    assert!(!out.path().join("shard-000000.h5").exists());
    assert!(!out.path().join("shard-000000.done.json").exists());
}

#[test]
fn a_full_disk_ends_the_run_clearly_and_leaves_no_shard() {
    let dir = tempdir();
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96k", "tmpfs", path_str(&mnt)])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root); the write-error test covers the path");
        return;
    }
    let o = spawn_extract(
        &mnt,
        &["--feature-dtype", "f32", "--compression", "none"],
        &[],
    )
    .wait_with_output();
    let visible: Vec<String> = std::fs::read_dir(&mnt)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let _ = Command::new("umount").arg(&mnt).status();
    let o = o.unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !visible
            .iter()
            .any(|n| n.ends_with(".h5") || n.ends_with(".done.json")),
        "{visible:?}"
    );
}

#[test]
fn the_slurm_example_script_runs_a_4_way_split() {
    let out = tempdir();
    let root = examples();
    for task in 0..4 {
        let o = Command::new("bash")
            .arg(repo().join("examples/slurm_extract.sh"))
            .env("SLURM_ARRAY_TASK_ID", task.to_string())
            .env("SLURM_ARRAY_TASK_COUNT", "4")
            .env("MANIFEST", root.join("samples.jsonl"))
            .env("ROOT", &root)
            .env("DETECTOR", test_detector())
            .env("OUT", out.path())
            .env("DEVICE", "cpu")
            .env("REGIONFEAT", env!("CARGO_BIN_EXE_regionfeat"))
            .env("REGIONFEAT_ARGS", "--shard-size 2")
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "task {task}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(verify_code(out.path()), 0);
    assert_eq!(index::read(out.path()).unwrap().len(), 10);
}
