//! Media and model reliability (issue 13): the frame on screen in every container FFmpeg
//! reads, durations that disagree with the packets, video vs image by content, and reasons a
//! user can act on for files and models that cannot be used.

use std::path::{Path, PathBuf};
use std::process::Command;

use regionfeat::decode::{decode_media, frame_for_target, DecodeOptions, DecodedMedia};
use regionfeat::manifest::ItemKind;
use regionfeat::shard::ShardReader;

use crate::util::{
    examples, ffmpeg, path_str, regionfeat, repo, run_python, stderr, tempdir, test_detector,
};

fn decode(path: &Path, n: usize) -> DecodedMedia {
    let opts = DecodeOptions {
        num_frames: n,
        ..Default::default()
    };
    decode_media(path, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every frame of a full decode by the ffmpeg CLI: presentation times (from `showinfo`, in the
/// CLI's own timeline, which starts at the file's start) and RGB24 pixels.
fn cli_full_decode(path: &Path, frame_bytes: usize) -> (Vec<f64>, Vec<u8>) {
    let raw = path.with_extension("cli.rgb");
    let out = Command::new("ffmpeg")
        .args(["-y", "-nostdin", "-hide_banner", "-i"])
        .arg(path)
        .args([
            "-vf",
            "showinfo",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
        ])
        .arg(&raw)
        .output()
        .expect("ffmpeg CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times: Vec<f64> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.split("pts_time:").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    let pixels = std::fs::read(&raw).unwrap();
    assert_eq!(
        pixels.len(),
        times.len() * frame_bytes,
        "{}",
        path.display()
    );
    (times, pixels)
}

/// Asserts that every sampled frame is the one a full CLI decode has on screen at its sample
/// time (time and pixels), and that the samples span the whole stream.
fn assert_frames_like_the_cli(path: &Path, n: usize, duration: f64) {
    let (w, h) = (160, 120);
    let frame_bytes = w * h * 3;
    let (times, pixels) = cli_full_decode(path, frame_bytes);
    let m = decode(path, n);
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(
        (m.duration - duration).abs() < 0.2,
        "{name}: duration {} want {duration}",
        m.duration
    );
    assert_eq!(m.frames.len(), n, "{name}");
    for f in &m.frames {
        let idx = frame_for_target(&times, f.time).unwrap();
        assert!(
            (f.frame_time - times[idx]).abs() < 1e-3,
            "{name}: sample at {:.3}s took the frame at {:.3}s, the CLI has {:.3}s on screen",
            f.time,
            f.frame_time,
            times[idx]
        );
        let want = &pixels[idx * frame_bytes..(idx + 1) * frame_bytes];
        let mad = want
            .iter()
            .zip(&f.rgb)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / frame_bytes as f64;
        assert!(
            mad < 1.0,
            "{name}: sample at {:.3}s differs from the CLI's frame {idx} (mean abs diff {mad})",
            f.time
        );
    }
}

#[test]
fn every_container_takes_the_frame_on_screen_like_a_full_cli_decode() {
    let dir = tempdir();
    let src = "testsrc=s=160x120:r=25:d=20";
    let long_gop = ["-g", "250", "-sc_threshold", "0"];
    let cases: Vec<(&str, Vec<&str>)> = vec![
        // No seek index: the timestamp search lands mid-GOP.
        (
            "g.ts",
            [&["-c:v", "libx264"][..], &long_gop, &["-f", "mpegts"]].concat(),
        ),
        (
            "g.mpg",
            [&["-c:v", "mpeg2video"][..], &long_gop, &["-f", "vob"]].concat(),
        ),
        ("g.mkv", [&["-c:v", "libx264"][..], &long_gop].concat()),
        (
            "frag.mp4",
            [
                &["-c:v", "libx264"][..],
                &long_gop,
                &["-movflags", "frag_keyframe+empty_moov"],
            ]
            .concat(),
        ),
        ("g.avi", [&["-c:v", "mpeg4"][..], &long_gop].concat()),
        // No timestamps at all: frames are counted at the frame rate, as the CLI does.
        (
            "raw.h264",
            [&["-c:v", "libx264"][..], &long_gop, &["-f", "h264"]].concat(),
        ),
    ];
    for (name, codec) in &cases {
        let path = dir.path().join(name);
        let mut args = vec!["-f", "lavfi", "-i", src];
        args.extend(codec.iter().copied());
        args.push(path_str(&path));
        ffmpeg(&args);
        assert_frames_like_the_cli(&path, 8, 20.0);
    }
    // Default x264 settings (one keyframe in 10 s) into MPEG-TS is a valid file.
    let ts = dir.path().join("default.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=160x120:r=25:d=10",
        "-c:v",
        "libx264",
        path_str(&ts),
    ]);
    assert_frames_like_the_cli(&ts, 8, 10.0);
}

/// A 10 s Matroska file, and a copy whose Segment Duration says 4 s.
fn mkv_with_short_duration_metadata(dir: &Path) -> (PathBuf, PathBuf) {
    let honest = dir.join("honest.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=64x48:r=25:d=10",
        "-c:v",
        "libx264",
        "-g",
        "25",
        path_str(&honest),
    ]);
    let mut bytes = std::fs::read(&honest).unwrap();
    let at = bytes
        .windows(3)
        .position(|w| w == [0x44, 0x89, 0x88])
        .expect("Duration element (8-byte float)");
    assert_eq!(
        f64::from_be_bytes(bytes[at + 3..at + 11].try_into().unwrap()),
        10000.0
    );
    bytes[at + 3..at + 11].copy_from_slice(&4000f64.to_be_bytes());
    let lying = dir.join("lying.mkv");
    std::fs::write(&lying, &bytes).unwrap();
    (honest, lying)
}

#[test]
fn late_timestamps_and_short_duration_metadata_sample_the_real_stream() {
    let dir = tempdir();
    let late = dir.path().join("late.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=64x48:r=25:d=10",
        "-vf",
        "setpts=PTS+7/TB",
        "-c:v",
        "libx264",
        path_str(&late),
    ]);
    let m = decode(&late, 8);
    assert!((m.duration - 10.0).abs() < 0.1, "{}", m.duration);
    assert!(m.frames.last().unwrap().frame_time > 9.0);
    assert!(
        m.warnings.iter().any(|w| w.contains("starts at 7.00s")),
        "{:?}",
        m.warnings
    );

    let (honest, lying) = mkv_with_short_duration_metadata(dir.path());
    let m = decode(&lying, 8);
    assert!((m.duration - 10.0).abs() < 0.1, "{}", m.duration);
    assert!(m.frames.last().unwrap().frame_time > 9.0);
    assert!(
        m.warnings.iter().any(|w| w.contains("metadata says 4.00s")),
        "{:?}",
        m.warnings
    );
    // An honest file has nothing to say.
    assert!(decode(&honest, 8).warnings.is_empty());
}

#[test]
fn video_or_image_is_decided_by_the_content_not_the_name() {
    let dir = tempdir();
    let png_as_mp4 = dir.path().join("picture.mp4");
    std::fs::copy(examples().join("cc3m/images/000000002.png"), &png_as_mp4).unwrap();
    let m = decode(&png_as_mp4, 8);
    assert_eq!((m.kind, m.frames.len()), (ItemKind::Image, 1));

    let mp4_as_jpg = dir.path().join("clip.jpg");
    std::fs::copy(
        examples().join("webvid/videos/002/1000003.mp4"),
        &mp4_as_jpg,
    )
    .unwrap();
    let m = decode(&mp4_as_jpg, 8);
    assert_eq!((m.kind, m.frames.len()), (ItemKind::Video, 8));

    let still_gif = dir.path().join("still.gif");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=64x48",
        "-frames:v",
        "1",
        path_str(&still_gif),
    ]);
    assert_eq!(decode(&still_gif, 8).kind, ItemKind::Image);
    let anim = dir.path().join("anim.gif");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=64x48:r=10:d=2",
        path_str(&anim),
    ]);
    let m = decode(&anim, 8);
    assert_eq!((m.kind, m.frames.len()), (ItemKind::Video, 8));
}

/// Writes a JSONL manifest of `(id, file)` rows.
fn manifest(dir: &Path, rows: &[(&str, &str)]) -> std::path::PathBuf {
    let text: String = rows
        .iter()
        .map(|(id, p)| format!("{{\"id\": \"{id}\", \"path\": \"{p}\", \"caption\": \"\"}}\n"))
        .collect();
    let path = dir.join("m.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn errors(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("errors.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn each_bad_file_gets_a_reason_a_user_can_act_on() {
    let dir = tempdir();
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let good = examples().join("webvid/videos/002/1000003.mp4");
    // A damaged codec tag: 'avc1' overwritten.
    let bytes = std::fs::read(&good).unwrap();
    let mut tagged = bytes.clone();
    for i in 0..tagged.len() - 4 {
        if &tagged[i..i + 4] == b"avc1" {
            tagged[i..i + 4].copy_from_slice(b"xxxx");
        }
    }
    std::fs::write(media.join("tag.mp4"), tagged).unwrap();
    // Cover art only: an audio file with an attached picture.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=2",
        "-i",
        path_str(&examples().join("cc3m/images/000000002.png")),
        "-map",
        "0",
        "-map",
        "1",
        "-c:a",
        "aac",
        "-c:v",
        "png",
        "-disposition:v",
        "attached_pic",
        path_str(&media.join("cover.m4a")),
    ]);
    // A FIFO (opening it would block forever) and a directory with a video's name.
    let fifo = media.join("pipe.mp4");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::create_dir_all(media.join("dir.mp4")).unwrap();
    // AV1 (decoded by the external libdav1d) in IVF with every frame's data overwritten after
    // its first OBU bytes: the demuxer reads it, the decoder refuses it.
    let av1 = media.join("av1.ivf");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=128x96:r=25:d=1",
        "-c:v",
        "libsvtav1",
        path_str(&av1),
    ]);
    let mut bytes = std::fs::read(&av1).unwrap();
    let mut at = 32; // IVF file header, then per frame: u32 size, u64 pts, payload
    while at + 12 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        for i in 8..size.min(bytes.len() - at - 12) {
            bytes[at + 12 + i] = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        at += 12 + size;
    }
    std::fs::write(&av1, bytes).unwrap();
    // Duration metadata that says less than the file holds: extracted, with a warning.
    let (_, lying) = mkv_with_short_duration_metadata(&media);
    assert!(lying.ends_with("lying.mkv"));
    // A picture named like a video is extracted as an image.
    std::fs::copy(
        examples().join("cc3m/images/000000002.png"),
        media.join("cat.mp4"),
    )
    .unwrap();
    let rows = [
        ("tag", "tag.mp4"),
        ("cover", "cover.m4a"),
        ("fifo", "pipe.mp4"),
        ("dir", "dir.mp4"),
        ("av1", "av1.ivf"),
        ("cat", "cat.mp4"),
        ("lying", "lying.mkv"),
    ];
    let out = dir.path().join("out");
    let o = regionfeat(&[
        "extract",
        "--manifest",
        path_str(&manifest(dir.path(), &rows)),
        "--root",
        path_str(&media),
        "--detector",
        path_str(&test_detector()),
        "--out",
        path_str(&out),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let errors = errors(&out);
    let reason = |id: &str| -> String {
        errors
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {errors:?}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        reason("tag"),
        "unsupported or damaged codec tag 'xxxx': no decoder"
    );
    assert_eq!(
        reason("cover"),
        "attached picture only (cover art), no video stream"
    );
    assert_eq!(reason("fifo"), "not a regular file (FIFO)");
    assert_eq!(reason("dir"), "not a regular file (a directory)");
    let av1 = reason("av1");
    assert!(
        av1.starts_with("no decodable frame: the av1 decoder rejected the stream: damaged"),
        "{av1}"
    );
    assert_eq!(errors.len(), 5, "{errors:?}");
    let r = ShardReader::open(&out.join("shard-000000.h5")).unwrap();
    assert_eq!(r.item_ids().unwrap(), vec!["cat", "lying"]);
    assert_eq!(r.kinds().unwrap(), vec![1, 0]);
    assert_eq!(r.frame_ranges().unwrap(), vec![(0, 1), (1, 8)]);
    assert!((r.durations().unwrap()[1] - 10.0).abs() < 0.1);
    let done: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("shard-000000.done.json")).unwrap())
            .unwrap();
    let warnings = done["warnings"]
        .as_array()
        .expect("warnings in the done-record");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["id"], "lying");
    assert!(
        warnings[0]["reason"]
            .as_str()
            .unwrap()
            .contains("metadata says 4.00s"),
        "{warnings:?}"
    );
}

#[test]
fn a_model_with_absurd_sizes_is_refused_and_nan_outputs_fail_items() {
    let dir = tempdir();
    let script = repo().join("detector/make_test_detector.py");
    let huge = dir.path().join("huge.onnx");
    run_python(&[
        path_str(&script),
        path_str(&huge),
        "--shorter-side",
        "100000",
        "--max-side",
        "100000",
    ]);
    let out = dir.path().join("out");
    let o = regionfeat(&[
        "extract",
        "--detector",
        path_str(&huge),
        "--out",
        path_str(&out),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("shorter_side 100000 (valid 1..=4096)"),
        "{}",
        stderr(&o)
    );

    let nan = dir.path().join("nan.onnx");
    run_python(&[path_str(&script), path_str(&nan), "--nan-boxes"]);
    let out = dir.path().join("out-nan");
    let o = regionfeat(&[
        "extract",
        "--detector",
        path_str(&nan),
        "--out",
        path_str(&out),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let errors = errors(&out);
    assert_eq!(errors.len(), 10, "every bundled sample fails");
    for e in &errors {
        assert_eq!(e["stage"], "detect");
        assert!(
            e["reason"].as_str().unwrap().contains("NaN/Inf boxes"),
            "{e}"
        );
    }
    let r = ShardReader::open(&out.join("shard-000000.h5")).unwrap();
    assert!(r.item_ids().unwrap().is_empty());
}

#[test]
fn spliced_streams_whose_timestamps_jump_are_refused_not_frozen() {
    let dir = tempdir();
    let segment = |name: &str, offset: &str| {
        let p = dir.path().join(name);
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=s=64x48:r=25:d=5",
            "-c:v",
            "libx264",
            "-g",
            "50",
            "-output_ts_offset",
            offset,
            "-f",
            "mpegts",
            path_str(&p),
        ]);
        std::fs::read(p).unwrap()
    };
    let (early, late) = (segment("early.ts", "0"), segment("late.ts", "600"));
    // Forward jump (0-5 s, then 600-605 s) and backward jump (read as a PTS wrap).
    for (name, parts) in [("fwd.ts", [&early, &late]), ("back.ts", [&late, &early])] {
        let path = dir.path().join(name);
        std::fs::write(&path, [parts[0].as_slice(), parts[1].as_slice()].concat()).unwrap();
        let opts = DecodeOptions::default();
        let err = decode_media(&path, &opts)
            .map(|m| m.frames.iter().map(|f| f.frame_time).collect::<Vec<_>>())
            .expect_err(name)
            .to_string();
        assert!(err.contains("damaged timestamps"), "{name}: {err}");
    }
}
