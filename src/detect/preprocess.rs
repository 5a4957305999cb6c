//! Frames → model input: channel order, mean/std, CHW layout, batch padding. Runs on the
//! decode workers so the detector thread only copies rows into the batch.

use super::contract::Preprocess;
use crate::decode::RgbFrame;

/// A frame ready for the model: normalised CHW floats at the resized size.
#[derive(Debug, Clone)]
pub struct PreparedFrame {
    /// `3 * height * width` values, channel-major, in the model's channel order.
    pub chw: Vec<f32>,
    /// Resized height.
    pub height: u32,
    /// Resized width.
    pub width: u32,
}

/// Normalises an RGB frame (already at the model's size) into CHW floats.
pub fn prepare(frame: &RgbFrame, pre: &Preprocess) -> PreparedFrame {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let plane = w * h;
    let mut chw = vec![0f32; 3 * plane];
    // Output channel k reads RGB channel src[k].
    let src = if pre.is_bgr() { [2, 1, 0] } else { [0, 1, 2] };
    let inv_std = pre.pixel_std.map(|s| 1.0 / s);
    for (k, &s) in src.iter().enumerate() {
        let out = &mut chw[k * plane..(k + 1) * plane];
        let (mean, istd) = (pre.pixel_mean[k], inv_std[k]);
        for (o, px) in out.iter_mut().zip(frame.rgb.chunks_exact(3)) {
            *o = (px[s] as f32 - mean) * istd;
        }
    }
    PreparedFrame {
        chw,
        height: frame.height,
        width: frame.width,
    }
}

/// A padded batch: `[B,3,H,W]` values and `[B,2]` valid sizes.
#[derive(Debug)]
pub struct Batch {
    /// Padded pixel data.
    pub images: Vec<f32>,
    /// `(h, w)` pairs.
    pub image_sizes: Vec<f32>,
    /// Batch size.
    pub len: usize,
    /// Padded height.
    pub height: usize,
    /// Padded width.
    pub width: usize,
}

/// Zero-pads frames (bottom/right) to the largest size in the batch.
pub fn make_batch(frames: &[&PreparedFrame], size_divisibility: u32) -> Batch {
    let round = |v: usize| match size_divisibility as usize {
        0 | 1 => v,
        d => v.div_ceil(d) * d,
    };
    let height = round(frames.iter().map(|f| f.height as usize).max().unwrap_or(1));
    let width = round(frames.iter().map(|f| f.width as usize).max().unwrap_or(1));
    let plane = height * width;
    let mut images = vec![0f32; frames.len() * 3 * plane];
    let mut image_sizes = Vec::with_capacity(frames.len() * 2);
    for (b, f) in frames.iter().enumerate() {
        let (fh, fw) = (f.height as usize, f.width as usize);
        for c in 0..3 {
            let src = &f.chw[c * fh * fw..(c + 1) * fh * fw];
            let dst = &mut images[(b * 3 + c) * plane..(b * 3 + c + 1) * plane];
            for y in 0..fh {
                dst[y * width..y * width + fw].copy_from_slice(&src[y * fw..(y + 1) * fw]);
            }
        }
        image_sizes.extend([fh as f32, fw as f32]);
    }
    Batch {
        images,
        image_sizes,
        len: frames.len(),
        height,
        width,
    }
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

    #[test]
    fn channel_order_mean_std() {
        let f = RgbFrame {
            time: 0.0,
            frame_time: 0.0,
            width: 1,
            height: 1,
            rgb: vec![100, 50, 200],
        };
        assert_eq!(prepare(&f, &pre("BGR")).chw, vec![190.0, 15.0, 70.0]);
        assert_eq!(prepare(&f, &pre("RGB")).chw, vec![90.0, 15.0, 170.0]);
    }

    #[test]
    fn fused_batch_equals_prepare_then_pad() {
        let mk = |w: u32, h: u32, seed: u8| RgbFrame {
            time: 0.0,
            frame_time: 0.0,
            width: w,
            height: h,
            rgb: (0..w * h * 3)
                .map(|i| (i as u8).wrapping_mul(seed))
                .collect(),
        };
        let (a, b) = (mk(3, 2, 7), mk(2, 4, 13));
        let p = Preprocess {
            size_divisibility: 4,
            ..pre("BGR")
        };
        let fused = batch_from_rgb(&[&a, &b], &p);
        let (pa, pb) = (prepare(&a, &p), prepare(&b, &p));
        let two_step = make_batch(&[&pa, &pb], 4);
        assert_eq!(fused.images, two_step.images);
        assert_eq!(fused.image_sizes, two_step.image_sizes);
        assert_eq!((fused.height, fused.width), (4, 4));
    }

    #[test]
    fn padding_bottom_right() {
        let a = PreparedFrame {
            chw: vec![1.0; 3 * 2],
            height: 1,
            width: 2,
        };
        let b = PreparedFrame {
            chw: vec![2.0; 3 * 2],
            height: 2,
            width: 1,
        };
        let batch = make_batch(&[&a, &b], 4);
        assert_eq!((batch.height, batch.width), (4, 4));
        assert_eq!(&batch.images[0..4], &[1.0, 1.0, 0.0, 0.0]);
        let b0 = 3 * 16;
        assert_eq!(
            &batch.images[b0..b0 + 8],
            &[2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(batch.image_sizes, vec![1.0, 2.0, 2.0, 1.0]);
    }
}
