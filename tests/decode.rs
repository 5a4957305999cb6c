//! Decoding on real files made with the ffmpeg CLI: rotation, VFR, short clips, images of odd
//! pixel formats, GIF, WebM without stream duration, and seeking on long videos.

use std::path::Path;
use std::process::Command;

use regionfeat::decode::{decode_media, frame_for_target, DecodeOptions};
use regionfeat::manifest::{kind_for_path, ItemKind};

use crate::util::{examples, ffmpeg, path_str, tempdir};

fn decode(path: &Path, n: usize) -> regionfeat::decode::DecodedMedia {
    let opts = DecodeOptions {
        num_frames: n,
        ..Default::default()
    };
    decode_media(path, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Presentation times of all frames, from ffprobe (an independent reader).
fn ffprobe_frame_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

#[test]
fn rotation_metadata_is_applied_like_the_ffmpeg_cli() {
    let dir = tempdir();
    let plain = dir.path().join("plain.mp4");
    let rotated = dir.path().join("rotated.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=black:s=64x32:r=25:d=2,drawbox=x=0:y=0:w=16:h=16:color=red:t=fill",
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libx264",
        path_str(&plain),
    ]);
    ffmpeg(&[
        "-i",
        path_str(&plain),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        path_str(&rotated),
    ]);
    let m = decode(&rotated, 1);
    assert_eq!((m.width, m.height), (32, 64));
    assert_eq!(m.frames[0].width, 32);
    // The ffmpeg CLI autorotates: its first frame is the reference picture.
    let reference = dir.path().join("cli.rgb");
    ffmpeg(&[
        "-i",
        path_str(&rotated),
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        path_str(&reference),
    ]);
    let cli = std::fs::read(&reference).unwrap();
    let ours = &m.frames[0].rgb;
    assert_eq!(cli.len(), ours.len());
    let mad: f64 = cli
        .iter()
        .zip(ours)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / cli.len() as f64;
    assert!(
        mad < 4.0,
        "mean abs diff to the CLI's autorotated frame: {mad}"
    );
    // Red box ends up bottom-left (90° counter-clockwise display rotation).
    let px = |x: usize, y: usize| &ours[(y * 32 + x) * 3..(y * 32 + x) * 3 + 3];
    assert!(px(4, 60)[0] > 150 && px(4, 60)[1] < 100, "{:?}", px(4, 60));
    assert!(px(28, 4)[0] < 60, "{:?}", px(28, 4));
}

#[test]
fn variable_frame_rate_takes_the_frame_on_screen() {
    let dir = tempdir();
    let vfr = dir.path().join("vfr.mkv");
    // 10 frames 40 ms apart, then frames 300 ms apart.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=64x48:r=25:d=3",
        "-vf",
        "setpts='if(lt(N,10),N*0.04,0.4+(N-10)*0.3)/TB'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-g",
        "5",
        path_str(&vfr),
    ]);
    let times = ffprobe_frame_times(&vfr);
    assert!(times.len() > 20, "{times:?}");
    let m = decode(&vfr, 8);
    for f in &m.frames {
        let want = times[frame_for_target(&times, f.time).unwrap()];
        assert!(
            (f.frame_time - want).abs() < 1e-3,
            "t={} took {} want {}",
            f.time,
            f.frame_time,
            want
        );
        assert!(f.frame_time <= f.time + 1e-6);
    }
}

#[test]
fn short_clip_repeats_frames_and_long_clip_is_not_decoded_whole() {
    let dir = tempdir();
    let short = dir.path().join("short.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=64x48:r=25",
        "-frames:v",
        "3",
        "-c:v",
        "libx264",
        path_str(&short),
    ]);
    let m = decode(&short, 8);
    assert_eq!(m.frames.len(), 8);
    assert!(m
        .frames
        .iter()
        .all(|f| f.time < m.duration + 1e-9 && f.time > 0.0));
    let distinct: std::collections::BTreeSet<u64> = m
        .frames
        .iter()
        .map(|f| (f.frame_time * 1000.0) as u64)
        .collect();
    assert!(distinct.len() <= 3);

    let long = dir.path().join("long.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=64x48:r=25:d=60",
        "-c:v",
        "libx264",
        "-g",
        "25",
        path_str(&long),
    ]);
    let m = decode(&long, 8);
    assert!((m.duration - 60.0).abs() < 0.1, "{}", m.duration);
    // 1500 frames in the file; seeking to keyframes needs at most a GOP per sample.
    assert!(
        m.decoded_frames <= 8 * 26 + 8,
        "decoded {} frames",
        m.decoded_frames
    );
}

#[test]
fn images_of_odd_pixel_formats() {
    let dir = tempdir();
    let cc3m = examples().join("cc3m/images");
    // Grayscale (camera man) gives R = G = B.
    let gray = decode(&cc3m.join("000000007.png"), 8);
    assert_eq!(gray.frames.len(), 1);
    assert!(gray.frames[0]
        .rgb
        .chunks_exact(3)
        .all(|p| p[0] == p[1] && p[1] == p[2]));
    // RGBA (horse) and JPEG.
    let rgba = decode(&cc3m.join("000000006.png"), 8);
    assert_eq!((rgba.width, rgba.height), (400, 328));
    let jpg = decode(&cc3m.join("000000004.jpg"), 8);
    assert_eq!(
        jpg.frames[0].rgb.len(),
        (jpg.width * jpg.height * 3) as usize
    );
    // 16-bit PNG.
    let png16 = dir.path().join("deep.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=40x30",
        "-frames:v",
        "1",
        "-pix_fmt",
        "rgb48be",
        path_str(&png16),
    ]);
    let deep = decode(&png16, 8);
    assert_eq!((deep.width, deep.height, deep.frames.len()), (40, 30, 1));
    assert!(deep.frames[0].rgb.iter().any(|&v| v > 200));
}

#[test]
fn gif_is_a_video_and_webm_without_stream_duration_samples() {
    let dir = tempdir();
    let gif = dir.path().join("anim.gif");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=64x48:r=10:d=2",
        path_str(&gif),
    ]);
    assert_eq!(kind_for_path(&gif), ItemKind::Video);
    let m = decode(&gif, 8);
    assert_eq!(m.frames.len(), 8);
    assert!(m
        .frames
        .windows(2)
        .all(|w| w[1].frame_time >= w[0].frame_time));
    assert!(m.frames.last().unwrap().frame_time > 1.0);

    let webm = dir.path().join("clip.webm");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=64x48:r=25:d=3",
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        path_str(&webm),
    ]);
    let m = decode(&webm, 4);
    assert!((m.duration - 3.0).abs() < 0.2, "{}", m.duration);
    assert_eq!(m.frames.len(), 4);
}

#[test]
fn resize_rule_is_applied_to_the_upright_frame() {
    let opts = DecodeOptions {
        num_frames: 2,
        resize: Some(regionfeat::decode::ResizeRule {
            shorter_side: 100,
            max_side: 200,
        }),
        threads: 1,
    };
    let m = decode_media(&examples().join("webvid/videos/001/1000001.mp4"), &opts).unwrap();
    assert_eq!((m.width, m.height), (1280, 720));
    assert_eq!((m.frames[0].width, m.frames[0].height), (178, 100));
}

#[test]
fn skipping_unsampled_b_frames_gives_exactly_the_frames_a_full_decode_gives() {
    let dir = tempdir();
    let clip = dir.path().join("bframes.mp4");
    // libx264 defaults use B-frames; a long GOP makes most samples decode forward.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=64x48:r=25:d=6",
        "-c:v",
        "libx264",
        "-g",
        "150",
        "-bf",
        "3",
        path_str(&clip),
    ]);
    let times = ffprobe_frame_times(&clip);
    // Every frame, in presentation order, decoded by the ffmpeg CLI: the reference pixels.
    let all = dir.path().join("all.rgb");
    ffmpeg(&[
        "-i",
        path_str(&clip),
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        path_str(&all),
    ]);
    let all = std::fs::read(&all).unwrap();
    let frame_bytes = 64 * 48 * 3;
    assert_eq!(all.len(), times.len() * frame_bytes);
    let m = decode(&clip, 8);
    assert!(
        m.decoded_frames < times.len() as u64,
        "decoded {} of {} frames",
        m.decoded_frames,
        times.len()
    );
    for f in &m.frames {
        let idx = frame_for_target(&times, f.time).unwrap();
        assert!(
            (f.frame_time - times[idx]).abs() < 1e-3,
            "t={} took {} want {}",
            f.time,
            f.frame_time,
            times[idx]
        );
        let want = &all[idx * frame_bytes..(idx + 1) * frame_bytes];
        let mad: f64 = want
            .iter()
            .zip(&f.rgb)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / frame_bytes as f64;
        assert!(
            mad < 1.0,
            "t={}: mean abs diff {mad} to the CLI's frame {idx}",
            f.time
        );
    }
}
