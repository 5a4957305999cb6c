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
    let crop = pre.center_crop as usize;
    let (height, width) = if crop > 0 {
        (crop, crop)
    } else {
        (
            round(frames.iter().map(|f| f.height as usize).max().unwrap_or(1)),
            round(frames.iter().map(|f| f.width as usize).max().unwrap_or(1)),
        )
    };
    let plane = height * width;
    let mut images = vec![0f32; frames.len() * 3 * plane];
    let mut image_sizes = Vec::with_capacity(frames.len() * 2);
    let src = if pre.is_bgr() { [2, 1, 0] } else { [0, 1, 2] };
    let inv_std = pre.pixel_std.map(|s| 1.0 / s);
    for (b, f) in frames.iter().enumerate() {
        let (full_h, full_w) = (f.height as usize, f.width as usize);
        // The window taken: the whole frame, or its centre `crop × crop` (offsets rounded
        // down); a frame smaller than the crop is padded like any other.
        let (fh, fw) = match crop {
            0 => (full_h, full_w),
            c => (full_h.min(c), full_w.min(c)),
        };
        let (y0, x0) = ((full_h - fh) / 2, (full_w - fw) / 2);
        for (k, &c) in src.iter().enumerate() {
            let dst = &mut images[(b * 3 + k) * plane..(b * 3 + k + 1) * plane];
            let (mean, istd) = (pre.pixel_mean[k], inv_std[k]);
            for y in 0..fh {
                let row = &f.rgb[((y0 + y) * full_w + x0) * 3..((y0 + y) * full_w + x0 + fw) * 3];
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
            center_crop: 0,
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

    #[test]
    fn center_crop_takes_the_middle() {
        // 4 wide x 2 tall, pixel value = 10 * x + y; crop 2 keeps x = 1, 2.
        let rgb: Vec<u8> = (0..2u8)
            .flat_map(|y| (0..4u8).flat_map(move |x| [10 * x + y; 3]))
            .collect();
        let f = frame(4, 2, rgb);
        let p = Preprocess {
            pixel_mean: [0.0; 3],
            pixel_std: [1.0; 3],
            center_crop: 2,
            ..pre("RGB")
        };
        let batch = batch_from_rgb(&[&f], &p);
        assert_eq!((batch.height, batch.width), (2, 2));
        assert_eq!(&batch.images[0..4], &[10.0, 20.0, 11.0, 21.0]);
        // 2 wide x 5 tall, crop 3: rows 1..4, both columns, zero-padded on the right.
        let rgb: Vec<u8> = (0..5u8)
            .flat_map(|y| (0..2u8).flat_map(move |x| [10 * x + y; 3]))
            .collect();
        let p3 = Preprocess {
            center_crop: 3,
            ..p
        };
        let batch = batch_from_rgb(&[&frame(2, 5, rgb)], &p3);
        assert_eq!(
            &batch.images[0..9],
            &[1.0, 11.0, 0.0, 2.0, 12.0, 0.0, 3.0, 13.0, 0.0]
        );
        assert_eq!(batch.image_sizes, vec![3.0, 2.0]);
    }
}
