//! Rotating packed RGB24 frames by multiples of 90° (display-matrix autorotation).

/// Normalises FFmpeg's counter-clockwise display rotation to a clockwise 0/90/180/270
/// (the same rule as the ffmpeg CLI's autorotate).
pub fn clockwise_from_display(ccw_degrees: f64) -> u32 {
    let cw = (-ccw_degrees).round() as i64;
    let cw = cw.rem_euclid(360);
    // Snap to the nearest quarter turn.
    (((cw + 45) / 90 % 4) * 90) as u32
}

/// Rotates `rgb` (w×h) clockwise by `degrees`; returns the new buffer, width and height.
pub fn rotate_rgb(rgb: &[u8], w: u32, h: u32, degrees: u32) -> (Vec<u8>, u32, u32) {
    let (w, h) = (w as usize, h as usize);
    match degrees {
        90 | 270 => {
            let mut out = vec![0u8; rgb.len()];
            // Output is h wide and w tall.
            for y in 0..h {
                for x in 0..w {
                    let (nx, ny) = if degrees == 90 {
                        (h - 1 - y, x)
                    } else {
                        (y, w - 1 - x)
                    };
                    let src = (y * w + x) * 3;
                    let dst = (ny * h + nx) * 3;
                    out[dst..dst + 3].copy_from_slice(&rgb[src..src + 3]);
                }
            }
            (out, h as u32, w as u32)
        }
        180 => {
            let mut out = Vec::with_capacity(rgb.len());
            for px in rgb.chunks_exact(3).rev() {
                out.extend_from_slice(px);
            }
            (out, w as u32, h as u32)
        }
        _ => (rgb.to_vec(), w as u32, h as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarter_turns() {
        assert_eq!(clockwise_from_display(-90.0), 90);
        assert_eq!(clockwise_from_display(90.0), 270);
        assert_eq!(clockwise_from_display(180.0), 180);
        assert_eq!(clockwise_from_display(-180.0), 180);
        assert_eq!(clockwise_from_display(0.0), 0);
    }

    #[test]
    fn rotate_2x1() {
        // Pixels A (left) and B (right), 2 wide, 1 tall.
        let rgb = [1, 1, 1, 2, 2, 2];
        let (r90, w, h) = rotate_rgb(&rgb, 2, 1, 90);
        assert_eq!((w, h), (1, 2));
        assert_eq!(r90, vec![1, 1, 1, 2, 2, 2]); // A on top after clockwise turn
        let (r270, _, _) = rotate_rgb(&rgb, 2, 1, 270);
        assert_eq!(r270, vec![2, 2, 2, 1, 1, 1]);
        let (r180, _, _) = rotate_rgb(&rgb, 2, 1, 180);
        assert_eq!(r180, vec![2, 2, 2, 1, 1, 1]);
    }
}
