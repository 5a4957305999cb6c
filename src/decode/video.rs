//! The FFmpeg side of sampling: open, probe the duration, seek, decode, convert.
//!
//! Seeking is never trusted blindly: containers without a seek index (MPEG-TS, MPEG-PS, AVI
//! without idx1, ...) land wherever their timestamp search ends, often after the keyframe the
//! sample needs, and the decoder then starts at a later keyframe. After every seek the first
//! keyframe decoded must not be past the sample time; when it is, the seek backs off (1, 2, 4 ...
//! seconds earlier) and finally decodes from the start of the file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::frame::Video as AvFrame;
use ffmpeg::{codec, format, media, Packet, Rational};
use ffmpeg_next as ffmpeg;

use super::{
    describe_ffmpeg_error, ffi, rotate, sampling, DecodeError, DecodeOptions, DecodedMedia,
    RgbFrame,
};
use crate::manifest::ItemKind;

/// A sample time further than this past the last decodable frame means the file is cut short
/// (a real frame is on screen for far less than this).
const TRUNCATION_GAP_S: f64 = 1.0;

/// Without a container index, a target this far ahead of the decoder is reached by seeking.
const SEEK_WITHOUT_INDEX_S: f64 = 2.0;

/// Duration metadata and the packets' real extent disagreeing by more than this: the packets
/// win (and the item's record says so).
const EXTENT_TOLERANCE_S: f64 = 1.0;

/// Two consecutive frames further apart than this, and than a quarter of the duration, mean
/// broken timestamps rather than a still picture.
const TIMESTAMP_JUMP_S: f64 = 60.0;

/// Frame duration assumed when a stream declares no frame rate (FFmpeg's raw-stream default).
const DEFAULT_FRAME_RATE: f64 = 25.0;

/// Demuxers that read one still picture: the item is an image whatever its file name says.
fn is_still_image_demuxer(name: &str) -> bool {
    name == "image2" || name.ends_with("_pipe")
}

/// Demuxers of animated-image formats: one frame makes an image, more make a video.
fn is_animated_image_demuxer(name: &str) -> bool {
    matches!(name, "gif" | "apng")
}

/// Decodes the frames of one item: N sampled frames for a video, the first frame of an image.
/// Whether the file is a video or an image is decided by what FFmpeg finds in it, not by its
/// name.
pub fn decode_media(path: &Path, opts: &DecodeOptions) -> Result<DecodedMedia, DecodeError> {
    super::init();
    check_regular_file(path)?;
    let mut sampler = Sampler::open(path, opts)?;
    let n = if sampler.is_image {
        1
    } else {
        opts.num_frames.max(1)
    };
    sampler.sample(n)
}

/// Refuses what FFmpeg must not open: a FIFO would block the decode thread forever, a directory
/// or device is not a media file.
fn check_regular_file(path: &Path) -> Result<(), DecodeError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).map_err(|e| DecodeError::Open(e.to_string()))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(DecodeError::NotRegular(if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_block_device() {
            "block device"
        } else {
            "special file"
        }));
    }
    if meta.len() == 0 {
        return Err(DecodeError::Empty);
    }
    Ok(())
}

/// An open demuxer and decoder for the chosen stream (re-created to rewind).
struct Source {
    ictx: format::context::Input,
    decoder: codec::decoder::Video,
}

/// The video stream to decode: the best one that is not an attached picture.
fn pick_stream(ictx: &format::context::Input) -> Result<usize, DecodeError> {
    let is_video = |s: &format::stream::Stream| s.parameters().medium() == media::Type::Video;
    let is_cover = |s: &format::stream::Stream| {
        s.disposition()
            .contains(format::stream::Disposition::ATTACHED_PIC)
    };
    if let Some(best) = ictx.streams().best(media::Type::Video) {
        if !is_cover(&best) {
            return Ok(best.index());
        }
    }
    match ictx.streams().find(|s| is_video(s) && !is_cover(s)) {
        Some(s) => Ok(s.index()),
        None if ictx.streams().any(|s| is_video(&s)) => Err(DecodeError::AttachedPictureOnly),
        None => Err(DecodeError::NoVideoStream),
    }
}

fn open_source(
    path: &Path,
    stream_index: Option<usize>,
    opts: &DecodeOptions,
) -> Result<(Source, usize), DecodeError> {
    let ictx =
        super::os_path::input(path).map_err(|e| DecodeError::Open(describe_ffmpeg_error(&e)))?;
    let stream_index = match stream_index {
        Some(i) => i,
        None => pick_stream(&ictx)?,
    };
    let stream = ictx.stream(stream_index).expect("stream exists");
    let params = stream.parameters();
    let id = params.id();
    if id == codec::Id::None || codec::decoder::find(id).is_none() {
        return Err(DecodeError::Codec(match ffi::codec_tag(&params) {
            Some(tag) => format!("unsupported or damaged codec tag '{tag}': no decoder"),
            None => format!("no decoder for codec {id:?} in this FFmpeg build"),
        }));
    }
    let mut ctx = codec::context::Context::from_parameters(params).map_err(|e| {
        DecodeError::Codec(format!(
            "cannot set up the {id:?} decoder: {}",
            describe_ffmpeg_error(&e)
        ))
    })?;
    if opts.threads > 1 {
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            count: opts.threads,
            ..Default::default()
        });
    }
    let decoder = ctx.decoder().video().map_err(|e| {
        DecodeError::Codec(format!(
            "cannot open the {id:?} decoder (damaged stream parameters?): {}",
            describe_ffmpeg_error(&e)
        ))
    })?;
    Ok((Source { ictx, decoder }, stream_index))
}

struct Sampler<'o> {
    path: PathBuf,
    src: Source,
    stream_index: usize,
    time_base: Rational,
    start_pts: i64,
    rotation: u32,
    is_image: bool,
    /// Seconds per frame, for frames that carry no timestamp (raw streams).
    frame_duration: f64,
    /// Seeking gives meaningful frame times (false for raw streams without timestamps).
    seekable: bool,
    /// The demuxer was moved (duration probe) since the last seek or rewind.
    moved: bool,
    /// How far before a sample time seeks have had to aim to land before it (learned).
    seek_margin: f64,
    opts: &'o DecodeOptions,
    scaler: Option<(scaling::Context, (Pixel, u32, u32))>,
    eof: bool,
    sent_eof: bool,
    /// Why the decoder refused packets.
    decode_error: Option<String>,
    /// Why reading the file stopped early.
    read_error: Option<String>,
    decoded_frames: u64,
    /// Time of the last frame returned since the last seek (for frames without timestamps).
    last_time: Option<f64>,
    /// pts of the packets read since the last seek (stream time base).
    seen_pts: BTreeSet<i64>,
    /// pts of the current sample time; frames strictly before a known later packet that is
    /// itself before this can never be on screen at it.
    target_pts: i64,
    skipping: bool,
    warnings: Vec<String>,
}

fn to_secs(ts: i64, tb: Rational) -> f64 {
    ts as f64 * f64::from(tb)
}

fn valid_ts(ts: i64) -> Option<i64> {
    (ts != ffmpeg::ffi::AV_NOPTS_VALUE).then_some(ts)
}

impl<'o> Sampler<'o> {
    fn open(path: &Path, opts: &'o DecodeOptions) -> Result<Self, DecodeError> {
        let (src, stream_index) = open_source(path, None, opts)?;
        let stream = src.ictx.stream(stream_index).expect("stream exists");
        let time_base = stream.time_base();
        let start_pts = valid_ts(stream.start_time()).unwrap_or(0);
        let rotation = stream
            .side_data()
            .find(|sd| sd.kind() == codec::packet::side_data::Type::DisplayMatrix)
            .and_then(|sd| ffi::display_rotation(sd.data()))
            .map(rotate::clockwise_from_display)
            .unwrap_or(0);
        let rate = [stream.avg_frame_rate(), stream.rate()]
            .into_iter()
            .map(f64::from)
            .find(|r| r.is_finite() && *r > 0.0 && *r < 1000.0)
            .unwrap_or(DEFAULT_FRAME_RATE);
        let demuxer = src.ictx.format().name().to_string();
        let facts = ffi::demuxer_facts(&src.ictx);
        let mut sampler = Self {
            path: path.to_path_buf(),
            src,
            stream_index,
            time_base,
            start_pts,
            rotation,
            is_image: is_still_image_demuxer(&demuxer),
            frame_duration: 1.0 / rate,
            seekable: !facts.no_timestamps,
            moved: false,
            seek_margin: 0.0,
            opts,
            scaler: None,
            eof: false,
            sent_eof: false,
            decode_error: None,
            read_error: None,
            decoded_frames: 0,
            last_time: None,
            seen_pts: Default::default(),
            target_pts: i64::MIN,
            skipping: false,
            warnings: Vec::new(),
        };
        if is_animated_image_demuxer(&demuxer) {
            // A GIF with one frame is a picture, with more an animation (a video).
            let (packets, _, _) = sampler.scan_packets(Some(2));
            sampler.is_image = packets <= 1;
            sampler.rewind()?;
        }
        Ok(sampler)
    }

    /// Reads packets of the stream (no decoding) from the current position to the end, or
    /// until `limit` packets: how many, and the extent `(first pts, end of last packet)` in
    /// stream time base when they carry timestamps.
    fn scan_packets(&mut self, limit: Option<u64>) -> (u64, Option<i64>, Option<i64>) {
        self.moved = true;
        let (mut count, mut first, mut end) = (0u64, None::<i64>, None::<i64>);
        let mut packet = Packet::empty();
        while packet.read(&mut self.src.ictx).is_ok() {
            if packet.stream() != self.stream_index {
                continue;
            }
            count += 1;
            if let Some(pts) = packet.pts().or(packet.dts()) {
                let e = pts + packet.duration().max(0);
                end = Some(end.map_or(e, |x| x.max(e)));
                first = Some(first.map_or(pts, |x| x.min(pts)));
            }
            if limit.is_some_and(|l| count >= l) {
                break;
            }
        }
        (count, first, end)
    }

    /// Duration in seconds from the stream's first frame. Metadata (stream, else container) is
    /// checked against the packets near its end; when they disagree the packets win: a file
    /// whose metadata says less than it holds is sampled over all of it (with a warning), and
    /// a stream whose timestamps start late is not mistaken for a truncated one.
    fn duration(&mut self) -> f64 {
        let stream = self
            .src
            .ictx
            .stream(self.stream_index)
            .expect("stream exists");
        let stream_d = valid_ts(stream.duration()).filter(|d| *d > 0);
        let container_d = valid_ts(self.src.ictx.duration()).filter(|d| *d > 0);
        let facts = ffi::demuxer_facts(&self.src.ictx);
        let metadata = match (stream_d, container_d) {
            (Some(d), _) => Some(to_secs(d, self.time_base)),
            (None, Some(d)) if !facts.duration_from_bitrate => {
                Some(d as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE))
            }
            _ => None,
        };
        let Some(metadata) = metadata.filter(|_| self.seekable) else {
            // No trustworthy metadata (or a raw stream): read every packet.
            let (count, _, end) = self.scan_packets(None);
            return match end {
                Some(e) if self.seekable => to_secs(e - self.start_pts, self.time_base),
                _ => count as f64 * self.frame_duration,
            };
        };
        // The packets from the last keyframe before the declared end onwards.
        let start_secs = to_secs(self.start_pts, self.time_base);
        let us = ((metadata + start_secs) * 1e6) as i64;
        self.moved = true;
        if self.src.ictx.seek(us, ..us).is_err() {
            return metadata;
        }
        let (_, _, end) = self.scan_packets(None);
        let Some(end) = end else {
            return metadata;
        };
        let real = to_secs(end - self.start_pts, self.time_base);
        if real > metadata + EXTENT_TOLERANCE_S {
            self.warnings.push(format!(
                "duration metadata says {metadata:.2}s but the video stream runs {real:.2}s: sampled over {real:.2}s"
            ));
            real
        } else if real < metadata - EXTENT_TOLERANCE_S
            && (real + start_secs - metadata).abs() <= EXTENT_TOLERANCE_S
        {
            // The metadata counts from time 0 while the stream starts later.
            self.warnings.push(format!(
                "the video stream starts at {start_secs:.2}s: sampled over its {real:.2}s"
            ));
            real
        } else {
            // Agreeing, or cut short: sampling then reports the file as truncated.
            metadata
        }
    }

    /// Re-opens the file: the only reliable way back to its first frame in every container.
    fn rewind(&mut self) -> Result<(), DecodeError> {
        let (src, _) = open_source(&self.path, Some(self.stream_index), self.opts)?;
        self.src = src;
        self.after_reposition();
        Ok(())
    }

    /// Forgets the decoding position (a fresh or flushed decoder decodes every frame).
    fn after_reposition(&mut self) {
        self.seen_pts.clear();
        self.eof = false;
        self.sent_eof = false;
        self.last_time = None;
        self.moved = false;
        self.skipping = false;
    }

    /// Next decoded frame in presentation order, with its time in seconds from the start.
    fn next_frame(&mut self) -> Option<(f64, AvFrame)> {
        loop {
            let mut frame = AvFrame::empty();
            if self.src.decoder.receive_frame(&mut frame).is_ok() {
                self.decoded_frames += 1;
                let t = match frame.timestamp().or(frame.pts()) {
                    Some(ts) => to_secs(ts - self.start_pts, self.time_base),
                    // No timestamp (raw streams): frames follow each other at the frame rate,
                    // as the ffmpeg CLI counts them.
                    None => self.last_time.map_or(0.0, |l| l + self.frame_duration),
                };
                self.last_time = Some(t);
                return Some((t, frame));
            }
            if self.sent_eof {
                return None;
            }
            if self.eof {
                let _ = self.src.decoder.send_eof();
                self.sent_eof = true;
                continue;
            }
            let mut packet = Packet::empty();
            match packet.read(&mut self.src.ictx) {
                Ok(()) => {
                    if packet.stream() == self.stream_index {
                        self.choose_skip(packet.pts());
                        // A corrupt packet is skipped; if nothing decodes at all the item fails.
                        if let Err(e) = self.src.decoder.send_packet(&packet) {
                            self.decode_error = Some(match e {
                                // Also what libdav1d & co. report as "Generic error in an
                                // external library".
                                ffmpeg::Error::InvalidData | ffmpeg::Error::External => {
                                    "damaged (or unsupported) coded data".into()
                                }
                                other => describe_ffmpeg_error(&other),
                            });
                        }
                    }
                }
                Err(ffmpeg::Error::Eof) => self.eof = true,
                Err(e) => {
                    self.read_error = Some(describe_ffmpeg_error(&e));
                    self.eof = true;
                }
            }
        }
    }

    /// Lets the decoder drop a non-reference frame that cannot be sampled: a packet already
    /// read shows a later frame that is still before the sample time, so this one is never on
    /// screen at it (nor at any later sample time). Reference frames are always decoded, so the
    /// result is exactly the same frames as decoding everything.
    fn choose_skip(&mut self, pts: Option<i64>) {
        let skip = match pts {
            Some(p) if p.saturating_add(1) < self.target_pts => {
                let seen_later = self
                    .seen_pts
                    .range((
                        std::ops::Bound::Excluded(p),
                        std::ops::Bound::Excluded(self.target_pts),
                    ))
                    .next()
                    .is_some();
                self.seen_pts.insert(p);
                seen_later
            }
            Some(p) => {
                self.seen_pts.insert(p);
                false
            }
            None => false,
        };
        if skip != self.skipping {
            ffi::set_skip_nonref(&mut self.src.decoder, skip);
            self.skipping = skip;
        }
    }

    /// Seeks the demuxer to the last point at or before `secs`; false when the container
    /// refuses.
    fn seek(&mut self, secs: f64) -> bool {
        let us = ((secs + to_secs(self.start_pts, self.time_base)) * 1e6) as i64;
        let ok = self.src.ictx.seek(us, ..us).is_ok();
        // Even a refused seek may have moved the demuxer: start decoding afresh either way.
        self.src.decoder.flush();
        self.after_reposition();
        ffi::set_skip_nonref(&mut self.src.decoder, false);
        ok
    }

    /// Positions the decoder so that the frame on screen at `target` is the next decoded or
    /// later: returns the first frame to consider. A seek must land on a keyframe at or before
    /// `target`; when the container's timestamp search lands after it, aim earlier, and in the
    /// end decode from the start.
    fn seek_verified(&mut self, target: f64) -> Result<Option<(f64, AvFrame)>, DecodeError> {
        let mut back = self.seek_margin;
        while self.seekable && target - back > 0.0 {
            if !self.seek(target - back) {
                break;
            }
            loop {
                match self.next_frame() {
                    // An intra picture cannot have borrowed from garbage: streams whose I
                    // frames are not flagged as keyframes (non-IDR) still seek.
                    Some((t, f))
                        if t <= target && (f.is_key() || f.kind() == ffmpeg::picture::Type::I) =>
                    {
                        self.seek_margin = self.seek_margin.max(back);
                        return Ok(Some((t, f)));
                    }
                    // Frames before the first keyframe (damaged references) are not trusted.
                    Some((t, _)) if t <= target => continue,
                    _ => break,
                }
            }
            back = (back * 2.0).max(1.0);
        }
        self.seek_margin = self.seek_margin.max(target);
        self.rewind()?;
        Ok(self.next_frame())
    }

    /// Whether `target` must be reached by seeking rather than by decoding on from
    /// `decoded_up_to` (`None`: nothing decoded yet, the demuxer at the start).
    fn should_seek(&self, target: f64, decoded_up_to: Option<f64>) -> bool {
        if self.moved {
            return true;
        }
        if !self.seekable {
            return false;
        }
        let pos = decoded_up_to.unwrap_or(0.0);
        if target <= pos {
            return false;
        }
        let stream = self
            .src
            .ictx
            .stream(self.stream_index)
            .expect("stream exists");
        let target_ts = (target / f64::from(self.time_base)) as i64 + self.start_pts;
        match ffi::keyframe_at_or_before(&stream, target_ts) {
            Some(kf) => to_secs(kf - self.start_pts, self.time_base) > pos,
            None => target - pos > SEEK_WITHOUT_INDEX_S.max(self.seek_margin),
        }
    }

    fn no_frames(&self) -> DecodeError {
        DecodeError::NoFrames(match (&self.decode_error, &self.read_error) {
            (Some(why), _) => {
                let codec = format!("{:?}", self.src.decoder.id()).to_lowercase();
                format!("the {codec} decoder rejected the stream: {why}")
            }
            (None, Some(why)) => format!("reading the file failed: {why}"),
            (None, None) => "the video stream holds no frames".into(),
        })
    }

    fn sample(&mut self, n: usize) -> Result<DecodedMedia, DecodeError> {
        let is_image = self.is_image;
        let duration = if is_image { 0.0 } else { self.duration() };
        let targets = if is_image {
            vec![0.0]
        } else {
            sampling::sample_times(duration, n)
        };
        let mut current: Option<(f64, AvFrame)> = None;
        let mut ahead: Option<(f64, AvFrame)> = None;
        let mut frames = Vec::with_capacity(n);
        let mut size = (0, 0);
        for &target in &targets {
            // One tick of margin: a packet exactly at the sample time never lets another go.
            self.target_pts = if is_image {
                i64::MIN
            } else {
                (target / f64::from(self.time_base)).floor() as i64 + self.start_pts
            };
            let decoded_up_to = ahead.as_ref().or(current.as_ref()).map(|(t, _)| *t);
            if self.moved && is_image {
                self.rewind()?;
            } else if !is_image && self.should_seek(target, decoded_up_to) {
                current = None;
                ahead = self.seek_verified(target)?;
            }
            loop {
                if let Some((t, f)) = ahead.take() {
                    if t <= target || (current.is_none() && is_image) {
                        current = Some((t, f));
                    } else {
                        ahead = Some((t, f));
                        break;
                    }
                    if is_image {
                        break;
                    }
                }
                match self.next_frame() {
                    Some(tf) => ahead = Some(tf),
                    None => break,
                }
            }
            let chosen = current
                .as_ref()
                .or(ahead.as_ref())
                .ok_or_else(|| self.no_frames())?;
            if chosen.0 < -EXTENT_TOLERANCE_S {
                return Err(DecodeError::Timestamps(-chosen.0));
            }
            if let Some((next, _)) = ahead.as_ref().filter(|_| !is_image) {
                let gap = next - chosen.0;
                if gap > TIMESTAMP_JUMP_S && gap > duration / 4.0 && target > chosen.0 {
                    return Err(DecodeError::TimestampJump {
                        from: chosen.0,
                        to: *next,
                        target,
                    });
                }
            }
            if !is_image && self.sent_eof && ahead.is_none() && target - chosen.0 > TRUNCATION_GAP_S
            {
                return Err(DecodeError::Truncated {
                    last: chosen.0,
                    duration,
                    target,
                });
            }
            let frame = self.convert(chosen.0, target, &chosen.1)?;
            size = (chosen.1.width(), chosen.1.height());
            frames.push(frame);
        }
        let (mut w, mut h) = size;
        if self.rotation % 180 == 90 {
            std::mem::swap(&mut w, &mut h);
        }
        Ok(DecodedMedia {
            frames,
            width: w,
            height: h,
            duration,
            rotation: self.rotation,
            decoded_frames: self.decoded_frames,
            kind: if is_image {
                ItemKind::Image
            } else {
                ItemKind::Video
            },
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// Converts one decoded frame to packed RGB24 at the output size, then rotates it upright.
    fn convert(
        &mut self,
        frame_time: f64,
        time: f64,
        frame: &AvFrame,
    ) -> Result<RgbFrame, DecodeError> {
        let (src_w, src_h) = (frame.width(), frame.height());
        if src_w == 0 || src_h == 0 {
            return Err(DecodeError::Convert("frame has zero size".into()));
        }
        // The resize rule is about the upright picture; scale before rotating.
        let (mut up_w, mut up_h) = (src_w, src_h);
        if self.rotation % 180 == 90 {
            std::mem::swap(&mut up_w, &mut up_h);
        }
        let ((mut out_w, mut out_h), scale) = match self.opts.resize {
            Some(rule) => (rule.apply(up_w, up_h), rule.scale(up_w, up_h) as f32),
            None => ((up_w, up_h), 1.0),
        };
        if self.rotation % 180 == 90 {
            std::mem::swap(&mut out_w, &mut out_h);
        }
        let key = (frame.format(), src_w, src_h);
        if self.scaler.as_ref().map(|(_, k)| *k) != Some(key)
            || self
                .scaler
                .as_ref()
                .map(|(s, _)| (s.output().width, s.output().height))
                != Some((out_w, out_h))
        {
            let ctx = scaling::Context::get(
                frame.format(),
                src_w,
                src_h,
                Pixel::RGB24,
                out_w,
                out_h,
                scaling::Flags::BILINEAR,
            )
            .map_err(|e| {
                DecodeError::Convert(format!("{:?} {src_w}x{src_h}: {e}", frame.format()))
            })?;
            self.scaler = Some((ctx, key));
        }
        let (scaler, _) = self.scaler.as_mut().expect("scaler set above");
        let mut rgb = AvFrame::empty();
        scaler
            .run(frame, &mut rgb)
            .map_err(|e| DecodeError::Convert(e.to_string()))?;
        let stride = rgb.stride(0);
        let row = out_w as usize * 3;
        let data = rgb.data(0);
        let mut packed = Vec::with_capacity(row * out_h as usize);
        for y in 0..out_h as usize {
            packed.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        let (packed, width, height) = if self.rotation == 0 {
            (packed, out_w, out_h)
        } else {
            rotate::rotate_rgb(&packed, out_w, out_h, self.rotation)
        };
        Ok(RgbFrame {
            time,
            frame_time,
            width,
            height,
            scale,
            rgb: packed,
        })
    }
}
