//! The FFmpeg side of sampling: open, probe the duration, seek, decode, convert.

use std::path::Path;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::frame::Video as AvFrame;
use ffmpeg::{codec, format, media, Packet, Rational};
use ffmpeg_next as ffmpeg;

use super::{ffi, rotate, sampling, DecodeError, DecodeOptions, DecodedMedia, RgbFrame};
use crate::manifest::ItemKind;

/// A sample time further than this past the last decodable frame means the file is cut short
/// (a real frame is on screen for far less than this).
const TRUNCATION_GAP_S: f64 = 1.0;

/// Without a container index, a target this far ahead of the decoder is reached by seeking.
const SEEK_WITHOUT_INDEX_S: f64 = 2.0;

/// Decodes the frames of one item: N sampled frames for a video, the first frame of an image.
pub fn decode_media(
    path: &Path,
    kind: ItemKind,
    opts: &DecodeOptions,
) -> Result<DecodedMedia, DecodeError> {
    super::init();
    match std::fs::metadata(path) {
        Err(e) => return Err(DecodeError::Open(e.to_string())),
        Ok(m) if m.len() == 0 => return Err(DecodeError::Empty),
        Ok(_) => {}
    }
    let ictx = super::os_path::input(path).map_err(|e| DecodeError::Open(e.to_string()))?;
    let mut sampler = Sampler::open(ictx, opts)?;
    let n = if kind == ItemKind::Image {
        1
    } else {
        opts.num_frames.max(1)
    };
    sampler.sample(n, kind == ItemKind::Image)
}

struct Sampler<'o> {
    ictx: format::context::Input,
    decoder: codec::decoder::Video,
    stream_index: usize,
    time_base: Rational,
    start_pts: i64,
    rotation: u32,
    opts: &'o DecodeOptions,
    scaler: Option<(scaling::Context, (Pixel, u32, u32))>,
    eof: bool,
    sent_eof: bool,
    read_error: Option<String>,
    decoded_frames: u64,
    /// pts of the packets read since the last seek (stream time base).
    seen_pts: std::collections::BTreeSet<i64>,
    /// pts of the current sample time; frames strictly before a known later packet that is
    /// itself before this can never be on screen at it.
    target_pts: i64,
    skipping: bool,
}

fn to_secs(ts: i64, tb: Rational) -> f64 {
    ts as f64 * f64::from(tb)
}

impl<'o> Sampler<'o> {
    fn open(ictx: format::context::Input, opts: &'o DecodeOptions) -> Result<Self, DecodeError> {
        let stream = ictx
            .streams()
            .best(media::Type::Video)
            .ok_or(DecodeError::NoVideoStream)?;
        let stream_index = stream.index();
        let time_base = stream.time_base();
        let start_pts = match stream.start_time() {
            t if t == ffmpeg::ffi::AV_NOPTS_VALUE => 0,
            t => t,
        };
        let rotation = stream
            .side_data()
            .find(|sd| sd.kind() == codec::packet::side_data::Type::DisplayMatrix)
            .and_then(|sd| ffi::display_rotation(sd.data()))
            .map(rotate::clockwise_from_display)
            .unwrap_or(0);
        let mut ctx = codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| DecodeError::Codec(e.to_string()))?;
        if opts.threads > 1 {
            ctx.set_threading(codec::threading::Config {
                kind: codec::threading::Type::Frame,
                count: opts.threads,
                ..Default::default()
            });
        }
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| DecodeError::Codec(e.to_string()))?;
        Ok(Self {
            ictx,
            decoder,
            stream_index,
            time_base,
            start_pts,
            rotation,
            opts,
            scaler: None,
            eof: false,
            sent_eof: false,
            read_error: None,
            decoded_frames: 0,
            seen_pts: Default::default(),
            target_pts: i64::MIN,
            skipping: false,
        })
    }

    /// Duration in seconds: stream, then container, then a packet scan (cheap: no decoding).
    fn duration(&mut self) -> f64 {
        let stream = self.ictx.stream(self.stream_index).expect("stream exists");
        let d = stream.duration();
        if d > 0 && d != ffmpeg::ffi::AV_NOPTS_VALUE {
            return to_secs(d, self.time_base);
        }
        let container = self.ictx.duration();
        if container > 0 && container != ffmpeg::ffi::AV_NOPTS_VALUE {
            return container as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE);
        }
        let mut end = None::<i64>;
        let mut packet = Packet::empty();
        while packet.read(&mut self.ictx).is_ok() {
            if packet.stream() == self.stream_index {
                if let Some(pts) = packet.pts().or(packet.dts()) {
                    let e = pts + packet.duration().max(0);
                    end = Some(end.map_or(e, |x: i64| x.max(e)));
                }
            }
        }
        let _ = self.ictx.seek(0, ..);
        end.map_or(0.0, |e| to_secs(e - self.start_pts, self.time_base))
    }

    /// Next decoded frame in presentation order, with its time in seconds from the start.
    fn next_frame(&mut self) -> Option<(f64, AvFrame)> {
        loop {
            let mut frame = AvFrame::empty();
            if self.decoder.receive_frame(&mut frame).is_ok() {
                let ts = frame.timestamp().or(frame.pts()).unwrap_or(self.start_pts);
                self.decoded_frames += 1;
                return Some((to_secs(ts - self.start_pts, self.time_base), frame));
            }
            if self.sent_eof {
                return None;
            }
            if self.eof {
                let _ = self.decoder.send_eof();
                self.sent_eof = true;
                continue;
            }
            let mut packet = Packet::empty();
            match packet.read(&mut self.ictx) {
                Ok(()) => {
                    if packet.stream() == self.stream_index {
                        self.choose_skip(packet.pts());
                        // A corrupt packet is skipped; if nothing decodes at all the item fails.
                        if let Err(e) = self.decoder.send_packet(&packet) {
                            self.read_error = Some(e.to_string());
                        }
                    }
                }
                Err(ffmpeg::Error::Eof) => self.eof = true,
                Err(e) => {
                    self.read_error = Some(e.to_string());
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
            ffi::set_skip_nonref(&mut self.decoder, skip);
            self.skipping = skip;
        }
    }

    fn seek(&mut self, secs: f64) {
        let us = ((secs + to_secs(self.start_pts, self.time_base)) * 1e6) as i64;
        if self.ictx.seek(us, ..us).is_ok() {
            self.seen_pts.clear();
            self.decoder.flush();
            self.eof = false;
            self.sent_eof = false;
        }
    }

    /// Whether reaching `target` is cheaper by seeking than by decoding on from `decoded_up_to`.
    fn should_seek(&self, target: f64, decoded_up_to: Option<f64>) -> bool {
        let Some(pos) = decoded_up_to else {
            return target > 0.0;
        };
        if target <= pos {
            return false;
        }
        let stream = self.ictx.stream(self.stream_index).expect("stream exists");
        let target_ts = (target / f64::from(self.time_base)) as i64 + self.start_pts;
        match ffi::keyframe_at_or_before(&stream, target_ts) {
            Some(kf) => to_secs(kf - self.start_pts, self.time_base) > pos,
            None => target - pos > SEEK_WITHOUT_INDEX_S,
        }
    }

    fn sample(&mut self, n: usize, is_image: bool) -> Result<DecodedMedia, DecodeError> {
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
            if !is_image && self.should_seek(target, decoded_up_to) {
                self.seek(target);
                ahead = None;
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
            let chosen = current.as_ref().or(ahead.as_ref()).ok_or_else(|| {
                DecodeError::NoFrames(
                    self.read_error
                        .clone()
                        .unwrap_or_else(|| "stream ended before any frame".into()),
                )
            })?;
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
        let (mut out_w, mut out_h) = match self.opts.resize {
            Some(rule) => rule.apply(up_w, up_h),
            None => (up_w, up_h),
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
            rgb: packed,
        })
    }
}
