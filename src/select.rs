//! Region selection on plain data (no tensors): per-class NMS, confidence threshold, top-K,
//! and the 7-d location vector. The rule is written down in `schemas/detector-contract.md`.

use crate::detect::Candidates;

/// Selection parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SelectConfig {
    /// Keep regions whose confidence is at least this (bottom-up: 0.2).
    pub conf_threshold: f32,
    /// Per-class NMS IoU threshold (bottom-up: 0.3).
    pub nms_iou: f32,
    /// K: at most this many regions per frame (DemoVLP: 30).
    pub max_boxes: usize,
    /// If fewer survive the threshold, keep this many by confidence anyway (bottom-up: 10).
    pub min_boxes: usize,
}

impl Default for SelectConfig {
    fn default() -> Self {
        Self {
            conf_threshold: 0.2,
            nms_iou: 0.3,
            max_boxes: 30,
            min_boxes: 10,
        }
    }
}

impl SelectConfig {
    /// Checks the ranges; the message names the flag and its valid range.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_boxes == 0 {
            return Err(
                "--max-boxes must be at least 1 (it is K, the regions kept per frame)".into(),
            );
        }
        if self.min_boxes > self.max_boxes {
            return Err(format!(
                "--min-boxes ({}) must not exceed --max-boxes ({}): valid range 0..={}",
                self.min_boxes, self.max_boxes, self.max_boxes
            ));
        }
        for (flag, v) in [
            ("--conf-threshold", self.conf_threshold),
            ("--nms-iou", self.nms_iou),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{flag} must be in [0, 1], got {v}"));
            }
        }
        Ok(())
    }
}

/// One selected region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Index of the candidate it came from.
    pub candidate: usize,
    /// `x1, y1, x2, y2` in original-frame pixels.
    pub bbox: [f32; 4],
    /// Confidence (max class score for which it survived NMS).
    pub score: f32,
    /// Object class index, 0-based, background excluded.
    pub class: u32,
    /// Attribute index, 0-based, "none" excluded.
    pub attribute: u32,
    /// Probability of that attribute.
    pub attr_score: f32,
}

/// Intersection over union of two `x1,y1,x2,y2` boxes (pixel-inclusive like Caffe's NMS is
/// not used: plain continuous areas).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// The 7-d location `[x1/W, y1/H, x2/W, y2/H, w/W, h/H, (w/W)*(h/H)]`.
pub fn location(b: &[f32; 4], width: u32, height: u32) -> [f32; 7] {
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    let (x1, y1, x2, y2) = (b[0] / w, b[1] / h, b[2] / w, b[3] / h);
    let (bw, bh) = ((b[2] - b[0]) / w, (b[3] - b[1]) / h);
    [x1, y1, x2, y2, bw, bh, bw * bh]
}

/// Greedy NMS over `order` (indices sorted by descending score); returns the kept indices.
fn nms(order: &[usize], boxes: &[[f32; 4]], iou_threshold: f32) -> Vec<usize> {
    let mut kept: Vec<usize> = Vec::new();
    for &i in order {
        if kept
            .iter()
            .all(|&k| iou(&boxes[k], &boxes[i]) <= iou_threshold)
        {
            kept.push(i);
        }
    }
    kept
}

/// Per-candidate confidence: the max over classes of the scores for which the candidate
/// survived that class's NMS. Only scores `>= floor` take part (see [`select`] for why this
/// is exact above the floor).
fn confidences(
    boxes: &[[f32; 4]],
    class_scores: &[f32],
    c1: usize,
    iou_t: f32,
    floor: f32,
) -> Vec<f32> {
    let r = boxes.len();
    let mut conf = vec![0f32; r];
    let mut order = Vec::with_capacity(r);
    for c in 1..c1 {
        order.clear();
        order.extend((0..r).filter(|&i| class_scores[i * c1 + c] >= floor));
        if order.is_empty() {
            continue;
        }
        order.sort_by(|&a, &b| {
            class_scores[b * c1 + c]
                .total_cmp(&class_scores[a * c1 + c])
                .then(a.cmp(&b))
        });
        for i in nms(&order, boxes, iou_t) {
            conf[i] = conf[i].max(class_scores[i * c1 + c]);
        }
    }
    conf
}

fn argmax_from_1(row: &[f32]) -> (u32, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (j, &v) in row.iter().enumerate().skip(1) {
        if v > best.1 {
            best = (j, v);
        }
    }
    ((best.0.saturating_sub(1)) as u32, best.1.max(0.0))
}

/// Selects the regions of one frame. `boxes` must already be in original-frame pixels.
///
/// A candidate's confidence needs NMS per class. A score below the threshold can only
/// suppress even lower scores of its class, so running NMS on scores `>= conf_threshold`
/// gives the exact confidences above the threshold; the full pass (all scores) runs only when
/// fewer than `min_boxes` pass and the fallback needs the confidences below it.
pub fn select(
    c: &Candidates,
    boxes: &[[f32; 4]],
    num_classes: usize,
    cfg: &SelectConfig,
) -> Vec<Region> {
    let r = boxes.len();
    let c1 = num_classes + 1;
    let a1 = c.attr_scores.len().checked_div(r).unwrap_or(1);
    let mut conf = confidences(boxes, &c.class_scores, c1, cfg.nms_iou, cfg.conf_threshold);
    let passing = conf
        .iter()
        .filter(|&&s| s >= cfg.conf_threshold && s > 0.0)
        .count();
    let want_min = cfg.min_boxes.min(cfg.max_boxes);
    if passing < want_min {
        conf = confidences(boxes, &c.class_scores, c1, cfg.nms_iou, f32::MIN_POSITIVE);
    }
    let mut order: Vec<usize> = (0..r).filter(|&i| conf[i] > 0.0).collect();
    order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]).then(a.cmp(&b)));
    let keep = if passing >= want_min {
        passing.min(cfg.max_boxes)
    } else {
        want_min.min(order.len())
    };
    order.truncate(keep);
    order
        .into_iter()
        .map(|i| {
            let (class, _) = argmax_from_1(&c.class_scores[i * c1..(i + 1) * c1]);
            let (attribute, attr_score) = argmax_from_1(&c.attr_scores[i * a1..(i + 1) * a1]);
            Region {
                candidate: i,
                bbox: boxes[i],
                score: conf[i],
                class,
                attribute,
                attr_score,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(boxes: Vec<[f32; 4]>, cls: Vec<f32>) -> Candidates {
        let r = boxes.len();
        Candidates {
            boxes,
            class_scores: cls,
            attr_scores: vec![0.5; r * 2],
            features: vec![0.0; r],
        }
    }

    #[test]
    fn iou_and_location() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        let l = location(&[10.0, 20.0, 30.0, 60.0], 100, 200);
        let want = [0.1, 0.1, 0.3, 0.3, 0.2, 0.2, 0.04];
        assert!(
            l.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{l:?}"
        );
    }

    #[test]
    fn per_class_nms_threshold_topk() {
        // Boxes 0 and 1 overlap heavily; 2 is apart; 3 is weak.
        let boxes = vec![
            [0.0, 0.0, 10.0, 10.0],
            [0.5, 0.5, 10.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
            [40.0, 40.0, 50.0, 50.0],
        ];
        // Columns: background, class A, class B.
        let cls = vec![
            0.1, 0.9, 0.0, // box 0: A
            0.1, 0.8, 0.1, // box 1: A (suppressed by box 0 in A), B 0.1 < threshold
            0.3, 0.0, 0.7, // box 2: B
            0.9, 0.05, 0.05, // box 3: below threshold
        ];
        let c = cands(boxes.clone(), cls);
        let cfg = SelectConfig {
            min_boxes: 0,
            ..Default::default()
        };
        let sel = select(&c, &boxes, 2, &cfg);
        assert_eq!(
            sel.iter().map(|r| r.candidate).collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert_eq!(sel[0].class, 0);
        assert_eq!(sel[1].class, 1);
        assert!((sel[1].score - 0.7).abs() < 1e-6);
        let k1 = select(
            &c,
            &boxes,
            2,
            &SelectConfig {
                max_boxes: 1,
                min_boxes: 0,
                ..Default::default()
            },
        );
        assert_eq!(k1.len(), 1);
        // min_boxes keeps sub-threshold regions by confidence.
        let m = select(
            &c,
            &boxes,
            2,
            &SelectConfig {
                min_boxes: 3,
                ..Default::default()
            },
        );
        assert_eq!(
            m.iter().map(|r| r.candidate).collect::<Vec<_>>(),
            vec![0, 2, 1]
        );
        assert!(m.windows(2).all(|w| w[0].score >= w[1].score));
    }
}
