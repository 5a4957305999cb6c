//! The few FFmpeg calls that ffmpeg-next does not wrap. All `unsafe` of `decode/` lives here.

use ffmpeg_next::ffi;
use ffmpeg_next::format::stream::Stream;

/// Presentation time (stream time base) of the last keyframe at or before `ts`, from the
/// demuxer's index; `None` when the container has no index for this stream.
pub fn keyframe_at_or_before(stream: &Stream, ts: i64) -> Option<i64> {
    // SAFETY: the stream pointer is valid for the lifetime of `stream`; the index functions
    // only read the stream's index entries, and the returned entry is copied immediately.
    unsafe {
        let st = stream.as_ptr() as *mut ffi::AVStream;
        if ffi::avformat_index_get_entries_count(st) <= 0 {
            return None;
        }
        let entry = ffi::avformat_index_get_entry_from_timestamp(st, ts, ffi::AVSEEK_FLAG_BACKWARD);
        if entry.is_null() {
            None
        } else {
            Some((*entry).timestamp)
        }
    }
}

/// Counter-clockwise rotation in degrees encoded in a display matrix side-data blob.
pub fn display_rotation(matrix: &[u8]) -> Option<f64> {
    if matrix.len() < 36 {
        return None;
    }
    let mut m = [0i32; 9];
    for (i, v) in m.iter_mut().enumerate() {
        *v = i32::from_ne_bytes(matrix[i * 4..i * 4 + 4].try_into().ok()?);
    }
    // SAFETY: `m` holds the 9 int32 the function reads.
    let deg = unsafe { ffi::av_display_rotation_get(m.as_ptr()) };
    deg.is_finite().then_some(deg)
}

/// Makes the decoder drop non-reference frames (`skip_frame = AVDISCARD_NONREF`) or decode
/// everything again (`AVDISCARD_DEFAULT`). Takes effect from the next packet sent.
pub fn set_skip_nonref(decoder: &mut ffmpeg_next::codec::decoder::Video, skip: bool) {
    // SAFETY: the codec context is owned by `decoder` and alive; `skip_frame` is a plain field
    // the decoder reads when it receives the next packet.
    unsafe {
        (*decoder.as_mut_ptr()).skip_frame = if skip {
            ffi::AVDiscard::AVDISCARD_NONREF
        } else {
            ffi::AVDiscard::AVDISCARD_DEFAULT
        };
    }
}

/// Facts about the demuxer FFmpeg chose that ffmpeg-next does not expose.
pub struct DemuxerFacts {
    /// The demuxer has no timestamps of its own (raw elementary streams such as `.h264`):
    /// frame times only make sense counted from the first frame, so such files are never seeked.
    pub no_timestamps: bool,
    /// The container duration is a guess from the file size and bit rate.
    pub duration_from_bitrate: bool,
}

/// Reads [`DemuxerFacts`] from an open input.
pub fn demuxer_facts(ictx: &ffmpeg_next::format::context::Input) -> DemuxerFacts {
    // SAFETY: the format context is open for the lifetime of `ictx`; `iformat` is set by
    // avformat_open_input and both fields are plain values.
    unsafe {
        let ctx = ictx.as_ptr();
        let iformat = (*ctx).iformat;
        DemuxerFacts {
            no_timestamps: !iformat.is_null() && (*iformat).flags & ffi::AVFMT_NOTIMESTAMPS != 0,
            duration_from_bitrate: (*ctx).duration_estimation_method
                == ffi::AVDurationEstimationMethod::AVFMT_DURATION_FROM_BITRATE,
        }
    }
}

/// The container's codec tag (fourcc) of a stream, as text (`'avc1'`, or hex when unprintable);
/// `None` when the container stores no tag.
pub fn codec_tag(params: &ffmpeg_next::codec::Parameters) -> Option<String> {
    // SAFETY: the parameters pointer is valid for the lifetime of `params`; codec_tag is a u32.
    let tag = unsafe { (*params.as_ptr()).codec_tag };
    if tag == 0 {
        return None;
    }
    let bytes = tag.to_le_bytes();
    Some(
        if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            format!("0x{tag:08x}")
        },
    )
}
