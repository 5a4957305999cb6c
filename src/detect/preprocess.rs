//! Frames → model input: channel order, mean/std, CHW layout and zero padding to the batch's
//! largest frame, in one pass over the pixels.

use super::contract::Preprocess;
use crate::decode::RgbFrame;

/// A padded batch: `[B,3,H,W]` values, `[B,2]` valid sizes and `[B]` resize factors.
#[derive(Debug)]
pub struct Batch {
    /// Padded pixel data.
    pub images: Vec<f32>,
    /// `(h, w)` pairs.
    pub image_sizes: Vec<f32>,
    /// Resize factor of each frame from its decoded size (fed as `image_scales` to models that
    /// declare that input).
    pub image_scales: Vec<f32>,
    /// Batch size.
    pub len: usize,
    /// Padded height.
    pub height: usize,
    /// Padded width.
    pub width: usize,
}

/// Normalises and pads RGB frames (already at the model's size) straight into a batch: one
/// pass over the pixels, no intermediate float frame. The pipeline runs this on its batcher
/// thread, so it overlaps with inference.
pub fn batch_from_rgb(frames: &[&RgbFrame], pre: &Preprocess) -> Batch {
    let round = |v: usize| match pre.size_divisibility as usize {
        0 | 1 => v,
        d => v.div_ceil(d) * d,
    };
    let height = round(frames.iter().map(|f| f.height as usize).max().unwrap_or(1));
    let width = round(frames.iter().map(|f| f.width as usize).max().unwrap_or(1));
    let plane = height * width;
    let mut images = vec![0f32; frames.len() * 3 * plane];
    let mut image_sizes = Vec::with_capacity(frames.len() * 2);
    let src = if pre.is_bgr() { [2, 1, 0] } else { [0, 1, 2] };
    let inv_std = pre.pixel_std.map(|s| 1.0 / s);
    for (b, f) in frames.iter().enumerate() {
        let (fh, fw) = (f.height as usize, f.width as usize);
        for (k, &c) in src.iter().enumerate() {
            let dst = &mut images[(b * 3 + k) * plane..(b * 3 + k + 1) * plane];
            let (mean, istd) = (pre.pixel_mean[k], inv_std[k]);
            for y in 0..fh {
                let row = &f.rgb[y * fw * 3..(y + 1) * fw * 3];
                for (o, px) in dst[y * width..y * width + fw]
                    .iter_mut()
                    .zip(row.chunks_exact(3))
                {
                    *o = (px[c] as f32 - mean) * istd;
                }
            }
        }
        image_sizes.extend([fh as f32, fw as f32]);
    }
    Batch {
        images,
        image_sizes,
        image_scales: frames.iter().map(|f| f.scale).collect(),
        len: frames.len(),
        height,
        width,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(order: &str) -> Preprocess {
        Preprocess {
            channel_order: order.into(),
            pixel_mean: [10.0, 20.0, 30.0],
            pixel_std: [1.0, 2.0, 1.0],
            shorter_side: 1,
            max_side: 1,
            size_divisibility: 0,
        }
    }

    fn frame(w: u32, h: u32, rgb: Vec<u8>) -> RgbFrame {
        RgbFrame {
            time: 0.0,
            frame_time: 0.0,
            width: w,
            height: h,
            scale: 1.0,
            rgb,
        }
    }

    #[test]
    fn channel_order_mean_std() {
        let f = frame(1, 1, vec![100, 50, 200]);
        assert_eq!(
            batch_from_rgb(&[&f], &pre("BGR")).images,
            vec![190.0, 15.0, 70.0]
        );
        assert_eq!(
            batch_from_rgb(&[&f], &pre("RGB")).images,
            vec![90.0, 15.0, 170.0]
        );
    }

    #[test]
    fn padding_bottom_right() {
        // 2 wide x 1 tall, and 1 wide x 2 tall; all channels equal so only layout is tested.
        let a = frame(2, 1, vec![11; 6]);
        let b = RgbFrame {
            scale: 0.5,
            ..frame(1, 2, vec![12; 6])
        };
        let p = Preprocess {
            pixel_mean: [10.0; 3],
            pixel_std: [1.0; 3],
            size_divisibility: 4,
            ..pre("BGR")
        };
        let batch = batch_from_rgb(&[&a, &b], &p);
        assert_eq!((batch.len, batch.height, batch.width), (2, 4, 4));
        assert_eq!(&batch.images[0..4], &[1.0, 1.0, 0.0, 0.0]);
        assert!(batch.images[4..16].iter().all(|&v| v == 0.0));
        let b0 = 3 * 16;
        assert_eq!(
            &batch.images[b0..b0 + 8],
            &[2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(batch.image_sizes, vec![1.0, 2.0, 2.0, 1.0]);
        assert_eq!(batch.image_scales, vec![1.0, 0.5]);
    }
}
