//! Opening a file whose name is not UTF-8: ffmpeg-next turns paths into C strings through
//! `&str` (and panics on other bytes), so such a file is opened here by its OS path and handed
//! to FFmpeg as `/proc/self/fd/N`, a UTF-8 name for the very same file. FFmpeg then identifies
//! the format by content rather than by the (unusable) extension.

use std::path::Path;

use ffmpeg::format;
use ffmpeg_next as ffmpeg;

/// `format::input` for any OS path.
pub(super) fn input(path: &Path) -> Result<format::context::Input, ffmpeg::Error> {
    if path.to_str().is_some() {
        return format::input(path);
    }
    use std::os::fd::AsRawFd;
    const EIO: i32 = 5;
    let file = std::fs::File::open(path).map_err(|e| ffmpeg::Error::Other {
        errno: e.raw_os_error().unwrap_or(EIO),
    })?;
    // FFmpeg's file protocol opens its own descriptor from this name; ours may close after.
    format::input(&format!("/proc/self/fd/{}", file.as_raw_fd()))
}
