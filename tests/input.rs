//! Reliability of the inputs: directory scans (loops, unreadable folders, odd names, skipped
//! files), ids and captions that must round-trip, settings a resume must not change, stale
//! locks, and option ranges.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use regionfeat::job::index;

use crate::util::{examples, ffmpeg, path_str, regionfeat, repo, stderr, tempdir, test_detector};

/// Runs `regionfeat extract --quiet --json` with the test detector, killing it after `limit`
/// (a scan that never ends must fail the test, not hang it). `prefix` runs it through another
/// program (e.g. `setpriv` to drop root).
fn extract_within(limit: Duration, prefix: &[&str], args: &[&str]) -> Output {
    let det = test_detector();
    let bin = env!("CARGO_BIN_EXE_regionfeat");
    let mut c = match prefix.split_first() {
        Some((p, rest)) => {
            let mut c = Command::new(p);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.args(["extract", "--quiet", "--json", "--detector", path_str(&det)])
        .args(args)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn regionfeat");
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "extract did not end within {limit:?}:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn summary(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(o)))
}

fn make_image(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48",
        "-frames:v",
        "1",
        path_str(p),
    ]);
}

fn indexed_ids(out: &Path) -> Vec<String> {
    index::read(out)
        .expect("index.jsonl")
        .into_iter()
        .map(|e| e.id)
        .collect()
}

fn skipped(out: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(out.join("skipped.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_string(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_directory_scan_ends_takes_each_file_once_and_lists_what_it_skips() {
    let tmp = tempdir();
    let media = tmp.path().join("media");
    make_image(&media.join("a/one.png"));
    make_image(&media.join("b/two.jpg"));
    // A name that is not UTF-8: opened by its OS path.
    std::fs::copy(
        media.join("a/one.png"),
        media.join(std::ffi::OsStr::from_bytes(b"caf\xE9.png")),
    )
    .unwrap();
    // Two links back to the parent made the scan run forever; one gave 41 copies of a file.
    symlink("..", media.join("up")).unwrap();
    symlink("..", media.join("a/up")).unwrap();
    symlink(media.join("b"), media.join("c-same-as-b")).unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=0.2",
        path_str(&media.join("song.m4a")),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=0.2",
        path_str(&media.join("voice.wav")),
    ]);
    std::fs::write(media.join("NOTES"), b"no extension").unwrap();
    let out = tmp.path().join("out");
    let o = extract_within(
        Duration::from_secs(120),
        &[],
        &["--manifest", path_str(&media), "--out", path_str(&out)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(indexed_ids(&out), ["a/one", "b/two", "caf\\xE9"]);
    let s = summary(&o);
    assert_eq!(
        (s["done"].as_u64(), s["failed"].as_u64()),
        (Some(3), Some(0))
    );
    let skipped = skipped(&out);
    let paths: Vec<&str> = skipped.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "NOTES",
            "a/up",
            "c-same-as-b",
            "song.m4a",
            "up",
            "voice.wav"
        ]
    );
    assert_eq!(s["skipped_files"].as_u64(), Some(6));
    for (p, reason) in &skipped {
        let want = match p.as_str() {
            "up" | "a/up" => "loop",
            "c-same-as-b" => "already scanned",
            "NOTES" => "no file extension",
            _ => "not a video or image",
        };
        assert!(reason.contains(want), "{p}: {reason}");
    }
    assert!(stderr(&o).contains("skipped files: 6"), "{}", stderr(&o));
}

/// Runs as `nobody` when the test runs as root (root reads every folder).
fn unprivileged() -> Vec<&'static str> {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        vec![]
    }
}

#[test]
fn an_unreadable_sub_folder_is_recorded_and_the_scan_goes_on() {
    let tmp = tempdir();
    let top = tmp.path();
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let media = top.join("media");
    make_image(&media.join("ok/one.png"));
    make_image(&media.join("locked/two.png"));
    for d in [&media, &media.join("ok")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        media.join("ok/one.png"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(media.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = top.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = extract_within(
        Duration::from_secs(120),
        &unprivileged(),
        &["--manifest", path_str(&media), "--out", path_str(&out)],
    );
    std::fs::set_permissions(media.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(indexed_ids(&out), ["ok/one"]);
    let skipped = skipped(&out);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].0, "locked");
    assert!(
        skipped[0].1.contains("cannot read this folder"),
        "{skipped:?}"
    );
}

/// Writes a JSONL manifest of `(id, caption)` rows, all pointing at one generated image.
fn nul_manifest(dir: &Path, rows: &[(&str, &str)]) -> PathBuf {
    make_image(&dir.join("img.png"));
    let text: String = rows
        .iter()
        .map(|(id, cap)| {
            serde_json::json!({"id": id, "path": "img.png", "caption": cap}).to_string() + "\n"
        })
        .collect();
    let m = dir.join("m.jsonl");
    std::fs::write(&m, text).unwrap();
    m
}

#[test]
fn ids_and_captions_round_trip_exactly_or_the_item_is_refused() {
    let tmp = tempdir();
    // Two ids that differ only by a NUL ended up as one id twice in a shard.
    let m = nul_manifest(
        tmp.path(),
        &[
            ("a", "a cat"),
            ("a\0", "a dog"),
            ("b", "x\0y"),
            ("c", "naïve ✓"),
        ],
    );
    let out = tmp.path().join("out");
    let o = extract_within(
        Duration::from_secs(120),
        &[],
        &["--manifest", path_str(&m), "--out", path_str(&out)],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let entries = index::read(&out).unwrap();
    let got: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.id.as_str(), e.caption.as_str()))
        .collect();
    assert_eq!(got, [("a", "a cat"), ("c", "naïve ✓")]);
    let errors: Vec<serde_json::Value> = std::fs::read_to_string(out.join("errors.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["id"], "a\0");
    for e in &errors {
        assert_eq!(e["stage"], "manifest");
        assert!(e["reason"].as_str().unwrap().contains("NUL"), "{e}");
    }
    let v = regionfeat(&[
        "verify",
        "--manifest",
        path_str(&m),
        "--out",
        path_str(&out),
    ]);
    assert_eq!(
        v.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}

#[test]
fn a_csv_with_an_unclosed_quote_is_refused_naming_the_line() {
    let tmp = tempdir();
    let m = tmp.path().join("m.csv");
    std::fs::write(
        &m,
        "videoid,contentUrl,duration,page_dir,name\n1,,PT5S,a,\"A cat\n2,,PT5S,b,dog\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = extract_within(
        Duration::from_secs(60),
        &[],
        &["--manifest", path_str(&m), "--out", path_str(&out)],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("m.csv:2:") && err.contains("never closed"),
        "{err}"
    );
}

fn samples_run(out: &Path, manifest: &Path, extra: &[&str]) -> Output {
    let root = examples();
    let mut args = vec![
        "--manifest",
        path_str(manifest),
        "--root",
        path_str(&root),
        "--out",
        path_str(out),
        "--shard-size",
        "5",
    ];
    args.extend_from_slice(extra);
    extract_within(Duration::from_secs(300), &[], &args)
}

#[test]
fn a_resume_with_other_content_settings_is_refused_naming_them() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let samples = examples().join("samples.jsonl");
    // Half the plan, as a killed run would leave it: shard 0 of 2.
    let o = samples_run(
        &out,
        &samples,
        &["--worker-index", "0", "--num-workers", "2"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let changes: [(&[&str], &str); 5] = [
        (&["--max-boxes", "10"], "--max-boxes was 30, now 10"),
        (
            &["--feature-dtype", "f32"],
            "--feature-dtype was \"f16\", now \"f32\"",
        ),
        (
            &["--conf-threshold", "0.5"],
            "--conf-threshold was 0.2, now 0.5",
        ),
        (
            &["--compression", "none"],
            "--compression was \"gzip:4\", now \"none\"",
        ),
        (&["--min-boxes", "3"], "--min-boxes was 10, now 3"),
    ];
    for (flags, want) in changes {
        let o = samples_run(&out, &samples, flags);
        assert_eq!(o.status.code(), Some(2), "{flags:?} accepted");
        assert!(stderr(&o).contains(want), "{flags:?}: {}", stderr(&o));
    }
    // Same ids, another caption.
    let text = std::fs::read_to_string(&samples)
        .unwrap()
        .replacen("rabbit", "hare", 1);
    let edited = tmp.path().join("samples.jsonl");
    std::fs::write(&edited, text).unwrap();
    let o = samples_run(&out, &edited, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("captions differ"), "{}", stderr(&o));
    assert!(
        !out.join("shard-000001.h5").exists(),
        "nothing made the other way"
    );
    // The original settings resume and complete the plan.
    let o = samples_run(&out, &samples, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(summary(&o)["shards_written"].as_u64(), Some(1));
    // --force-replan says what differs and redoes every shard the new way.
    let o = samples_run(&out, &samples, &["--max-boxes", "12", "--force-replan"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--max-boxes was 30, now 12") && err.contains("removed 2 committed shard(s)"),
        "{err}"
    );
    assert_eq!(summary(&o)["shards_written"].as_u64(), Some(2));
    for shard in ["shard-000000.h5", "shard-000001.h5"] {
        let r = regionfeat::shard::ShardReader::open(&out.join(shard)).unwrap();
        assert_eq!(r.max_boxes().unwrap(), 12, "{shard}");
    }
}

#[test]
fn leftover_locks_of_dead_processes_never_skip_a_shard() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    // A holder that existed and is gone.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    for shard in 0..5 {
        let lock = out.join(format!("shard-{shard:06}.lock"));
        if shard % 2 == 0 {
            // Killed (or out of disk) between creating the lock and writing it.
            std::fs::write(&lock, b"").unwrap();
        } else {
            let owner = serde_json::json!({"host": host.trim(), "pid": dead});
            std::fs::write(&lock, owner.to_string()).unwrap();
        }
    }
    let samples = examples().join("samples.jsonl");
    let o = extract_within(
        Duration::from_secs(300),
        &[],
        &[
            "--manifest",
            path_str(&samples),
            "--out",
            path_str(&out),
            "--shard-size",
            "2",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["shards_written"].as_u64(), Some(5), "{s}");
    assert_eq!(indexed_ids(&out).len(), 10);
    let locks: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".lock"))
        .collect();
    assert!(locks.is_empty(), "{locks:?}");
}

/// Free blocks and block size of the filesystem holding `p`.
fn free_blocks(p: &Path) -> (u64, u64) {
    let o = Command::new("stat")
        .args(["-f", "-c", "%a %S", path_str(p)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

#[test]
fn a_retry_right_after_a_full_disk_does_every_shard() {
    let dir = tempdir();
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs", path_str(&mnt)])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root); the lock test covers the stale locks");
        return;
    }
    // Room for plan.json and nothing else: the disk fills up as the shard locks are made.
    let (free, block) = free_blocks(&mnt);
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![1u8; ((free - 1) * block) as usize]).unwrap();
    let out = mnt.join("out");
    let (samples, root) = (examples().join("samples.jsonl"), examples());
    let args = [
        "--manifest",
        path_str(&samples),
        "--root",
        path_str(&root),
        "--out",
        path_str(&out),
        "--shard-size",
        "1",
    ];
    let full = extract_within(Duration::from_secs(300), &[], &args);
    // The operator frees space and retries at once.
    std::fs::remove_file(&filler).unwrap();
    let retry = extract_within(Duration::from_secs(300), &[], &args);
    let ids = index::read(&out).map(|e| e.len());
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(full.status.code(), Some(2), "{}", stderr(&full));
    assert!(stderr(&full).contains("lock"), "{}", stderr(&full));
    assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
    let s = summary(&retry);
    assert_eq!(s["shards_written"].as_u64(), Some(10), "{s}");
    assert_eq!(ids.unwrap(), 10);
}

#[test]
fn out_of_range_options_are_refused_at_start_with_the_range() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let (samples, det) = (examples().join("samples.jsonl"), test_detector());
    let cases: [(&[&str], &str); 8] = [
        (&["--max-boxes", "0"], "--max-boxes must be at least 1"),
        (&["--max-boxes", "-1"], "must be ≥ 0"),
        (&["--min-boxes", "-3"], "must be ≥ 0"),
        (
            &["--conf-threshold", "1.5"],
            "--conf-threshold must be in [0, 1]",
        ),
        (
            &["--conf-threshold", "-0.1"],
            "--conf-threshold must be in [0, 1]",
        ),
        (&["--nms-iou", "NaN"], "--nms-iou must be in [0, 1]"),
        (
            &["--min-boxes", "40", "--max-boxes", "30"],
            "--min-boxes (40) must not exceed --max-boxes (30)",
        ),
        (&["--frames", "0"], "--frames must be at least 1"),
    ];
    for (flags, want) in cases {
        let mut args = vec![
            "extract",
            "--manifest",
            path_str(&samples),
            "--detector",
            path_str(&det),
            "--out",
            path_str(&out),
        ];
        args.extend_from_slice(flags);
        let o = regionfeat(&args);
        assert_eq!(o.status.code(), Some(2), "{flags:?}");
        assert!(stderr(&o).contains(want), "{flags:?}: {}", stderr(&o));
        assert!(
            !out.exists(),
            "{flags:?}: refused before anything is written"
        );
    }
}
