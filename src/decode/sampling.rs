//! Pure timestamp arithmetic for uniform sampling (no FFmpeg here, unit-tested).

/// The N sample times: midpoints of N equal segments of `[0, duration)`.
pub fn sample_times(duration: f64, n: usize) -> Vec<f64> {
    let d = if duration.is_finite() && duration > 0.0 {
        duration
    } else {
        0.0
    };
    (0..n).map(|i| (i as f64 + 0.5) * d / n as f64).collect()
}

/// Index of the frame on screen at `target` among frames with sorted presentation times:
/// the last one with time `<= target`, or the first frame if all are later.
pub fn frame_for_target(times: &[f64], target: f64) -> Option<usize> {
    if times.is_empty() {
        return None;
    }
    let after = times.partition_point(|&t| t <= target);
    Some(after.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midpoints_are_uniform_and_inside() {
        let t = sample_times(10.0, 8);
        assert_eq!(t.len(), 8);
        assert!((t[0] - 0.625).abs() < 1e-12);
        assert!((t[7] - 9.375).abs() < 1e-12);
        for w in t.windows(2) {
            assert!((w[1] - w[0] - 1.25).abs() < 1e-12);
        }
        assert_eq!(sample_times(0.0, 2), vec![0.0, 0.0]);
    }

    #[test]
    fn frame_on_screen() {
        let times = [0.0, 0.04, 0.08, 0.5];
        assert_eq!(frame_for_target(&times, 0.05), Some(1));
        assert_eq!(frame_for_target(&times, 0.04), Some(1));
        assert_eq!(frame_for_target(&times, 0.3), Some(2));
        assert_eq!(frame_for_target(&times, 9.0), Some(3));
        assert_eq!(frame_for_target(&[0.1], 0.0), Some(0));
        assert_eq!(frame_for_target(&[], 0.0), None);
    }
}
