//! FFmpeg decoding: probe a media file, sample N frames at uniformly spaced timestamps by
//! seeking, convert them to RGB (optionally resized for the detector) and apply rotation
//! metadata. Images are 1-frame items through the same path (FFmpeg's image demuxers).
//!
//! Which frame is taken (see also `schemas/shard-v1.md`):
//! - the sample times are the segment midpoints `t_i = (i + 0.5) * D / N`, `i = 0..N`, seconds
//!   from the stream's start, where `D` is the stream duration (container duration if the
//!   stream has none) checked against the packets near its end (the packets win when they
//!   disagree by more than 1 s); a packet scan if neither is known or trustworthy;
//! - for each `t_i` the frame **on screen** at that instant is taken: the last decoded frame
//!   whose presentation time is `<= t_i` (the first frame if none is). This is well defined for
//!   variable frame rate, and a clip with fewer than N frames simply repeats frames;
//! - a seek happens only when the keyframe before `t_i` (from the container index) lies past
//!   the last decoded frame; otherwise decoding continues, so a GOP is never decoded twice.
//!   Without an index, a seek happens when `t_i` is more than 2 s ahead. Every seek is verified:
//!   the first keyframe decoded after it must not be past `t_i` (see `video.rs`).
//! - video or image is what FFmpeg finds in the file (a still-image demuxer, a one-frame GIF),
//!   not the file name.

mod ffi;
mod os_path;
mod rotate;
mod sampling;
mod video;

pub use sampling::{frame_for_target, sample_times};
pub use video::decode_media;

use crate::manifest::ItemKind;

/// Rule for resizing frames while converting them to RGB (the detector's preprocessing size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizeRule {
    /// Target length of the shorter side.
    pub shorter_side: u32,
    /// Upper bound for the longer side.
    pub max_side: u32,
}

impl ResizeRule {
    /// Output `(width, height)` for an input of `(width, height)`: the shorter side becomes
    /// `shorter_side` unless the longer side would exceed `max_side` (bottom-up-attention rule).
    pub fn apply(&self, width: u32, height: u32) -> (u32, u32) {
        let scale = self.scale(width, height);
        let w = ((width as f64 * scale).round() as u32).max(1);
        let h = ((height as f64 * scale).round() as u32).max(1);
        (w, h)
    }

    /// The resize factor for an input of `(width, height)`: `shorter_side / shorter`, or
    /// `max_side / longer` when that would make the longer side exceed `max_side`
    /// (py-faster-rcnn's `im_scale`; output sizes are the input times this, rounded).
    pub fn scale(&self, width: u32, height: u32) -> f64 {
        let (short, long) = (width.min(height) as f64, width.max(height) as f64);
        let scale = self.shorter_side as f64 / short;
        if (long * scale).round() > self.max_side as f64 {
            self.max_side as f64 / long
        } else {
            scale
        }
    }
}

/// Decoding options.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Frames per video (images always give 1).
    pub num_frames: usize,
    /// Resize rule for the RGB output; `None` keeps the original size.
    pub resize: Option<ResizeRule>,
    /// FFmpeg decoder threads per video (1 = parallelism comes from decoding videos in parallel).
    pub threads: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            num_frames: 8,
            resize: None,
            threads: 1,
        }
    }
}

/// One sampled frame as packed RGB24 rows (no padding), already rotated upright.
#[derive(Debug, Clone)]
pub struct RgbFrame {
    /// The requested sample time `t_i`, seconds from the stream start.
    pub time: f64,
    /// Presentation time of the frame actually taken, seconds from the stream start.
    pub frame_time: f64,
    /// Width of `rgb` in pixels.
    pub width: u32,
    /// Height of `rgb` in pixels.
    pub height: u32,
    /// The resize factor from the decoded frame to `rgb` (1 when not resized); the detector's
    /// `image_scales` input.
    pub scale: f32,
    /// `height * width * 3` bytes.
    pub rgb: Vec<u8>,
}

/// The frames of one media item.
#[derive(Debug, Clone)]
pub struct DecodedMedia {
    /// Sampled frames in time order.
    pub frames: Vec<RgbFrame>,
    /// Width of the upright original frame (after rotation metadata), before any resize.
    pub width: u32,
    /// Height of the upright original frame.
    pub height: u32,
    /// Duration used for sampling, seconds (0 for images).
    pub duration: f64,
    /// Clockwise rotation applied from the display matrix (0, 90, 180, 270).
    pub rotation: u32,
    /// Frames the decoder produced to get these samples (shows what seeking saved).
    pub decoded_frames: u64,
    /// Video or image, as FFmpeg found the file (not from its name).
    pub kind: ItemKind,
    /// Things about the file the frames do not show (metadata that disagreed with the
    /// packets, ...); they go to the item's done-record.
    pub warnings: Vec<String>,
}

/// Why a file could not be decoded. Goes to `errors.jsonl` as the reason, so each variant says
/// what is wrong with the file in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file does not exist or cannot be read.
    #[error("cannot open: {0}")]
    Open(String),
    /// The path is not a regular file (FIFO, directory, device, socket): opening it could block
    /// or read something that is not a media file.
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    /// The file is empty.
    #[error("empty file")]
    Empty,
    /// FFmpeg found no video stream (audio-only, text, ...).
    #[error("no video stream")]
    NoVideoStream,
    /// The only video streams are attached pictures (cover art of an audio file).
    #[error("attached picture only (cover art), no video stream")]
    AttachedPictureOnly,
    /// The decoder could not be set up; the message names the codec or tag.
    #[error("{0}")]
    Codec(String),
    /// No frame could be decoded at all (truncated or corrupt data).
    #[error("no decodable frame: {0}")]
    NoFrames(String),
    /// The stream ends well before a sample time inside its declared duration.
    #[error("truncated: the last decodable frame is at {last:.2}s but the duration says {duration:.2}s (no frame near the sample at {target:.2}s)")]
    Truncated {
        /// Time of the last decodable frame.
        last: f64,
        /// Declared duration.
        duration: f64,
        /// The sample time that could not be reached.
        target: f64,
    },
    /// Frame timestamps contradict the stream's own start (damaged or spliced stream).
    #[error("damaged timestamps: a frame is stamped {0:.2}s before the stream's start")]
    Timestamps(f64),
    /// Consecutive frames further apart than any real video holds a picture, around a sample
    /// time: the timestamps are broken (spliced segments, a PTS jump), not the picture still.
    #[error("damaged timestamps: they jump from {from:.2}s to {to:.2}s (spliced or damaged stream), no frame near the sample at {target:.2}s")]
    TimestampJump {
        /// Time of the frame before the jump.
        from: f64,
        /// Time of the frame after it.
        to: f64,
        /// The sample time inside the jump.
        target: f64,
    },
    /// Pixel conversion failed.
    #[error("pixel conversion failed: {0}")]
    Convert(String),
}

/// FFmpeg's error in words about the file (its own texts, such as "Generic error in an
/// external library", say nothing about what is wrong).
pub(crate) fn describe_ffmpeg_error(e: &ffmpeg_next::Error) -> String {
    use ffmpeg_next::Error as E;
    match e {
        E::InvalidData => "invalid data: damaged, or not a media file FFmpeg can read".into(),
        E::External => "the decoder library rejected the data as damaged".into(),
        E::DecoderNotFound => "no decoder for this codec".into(),
        E::DemuxerNotFound => "not a container format FFmpeg knows".into(),
        E::Eof => "the file ends unexpectedly".into(),
        E::PatchWelcome | E::Bug | E::Bug2 => {
            format!("a feature of the file FFmpeg does not support ({e})")
        }
        other => other.to_string(),
    }
}

/// Initialises FFmpeg once (idempotent) and silences its logging: problems are reported per
/// item through [`DecodeError`], not on stderr.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_rule_matches_bottom_up() {
        let r = ResizeRule {
            shorter_side: 600,
            max_side: 1000,
        };
        assert_eq!(r.apply(1280, 720), (1000, 563));
        assert_eq!(r.apply(640, 480), (800, 600));
        assert_eq!(r.apply(480, 640), (600, 800));
        assert_eq!(r.apply(176, 144), (733, 600));
        // im_scale: the shorter side's factor unless the longer side caps it
        assert_eq!(r.scale(500, 375), 1.6);
        assert_eq!(r.scale(1280, 720), 1000.0 / 1280.0);
        assert_eq!(r.scale(720, 1280), 1000.0 / 1280.0);
    }
}
