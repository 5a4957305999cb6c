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
