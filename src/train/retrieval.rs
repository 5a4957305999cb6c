//! Benchmark retrieval metrics as Frozen-in-Time and DemoVLP report them (`t2v_metrics` /
//! `v2t_metrics` of their `model/metric.py`), for any number of captions per video:
//! - text→video: every caption is a query, its video the one target; 0-based rank = number of
//!   videos scoring strictly higher (ties broken optimistically, as theirs);
//! - video→text: every video is a query; each of its captions is ranked among all captions,
//!   ties averaged (mean position of the tied block, as theirs), and the best one counts.
//!
//! Recalls are percentages; MedR/MeanR are 1-based. Checked against a numpy transcription of
//! their code in `tests/train/frozen_metrics.py`.

use serde::Serialize;

/// One direction of the benchmark metrics.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[allow(non_snake_case)]
pub struct ProtocolRecall {
    /// % of queries with the target first.
    pub R1: f64,
    /// % within the top 5.
    pub R5: f64,
    /// % within the top 10.
    pub R10: f64,
    /// % within the top 50.
    pub R50: f64,
    /// Median rank (1-based).
    pub MedR: f64,
    /// Mean rank (1-based).
    pub MeanR: f64,
    /// Geometric mean of R1, R5, R10.
    #[serde(rename = "geometric_mean_R1-R5-R10")]
    pub geometric_mean: f64,
    /// Queries.
    pub queries: usize,
}

/// Both directions.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ProtocolMetrics {
    /// Text→video.
    pub t2v: ProtocolRecall,
    /// Video→text.
    pub v2t: ProtocolRecall,
}

fn from_ranks(ranks: &[f64]) -> ProtocolRecall {
    let n = ranks.len().max(1) as f64;
    let pct = |k: f64| 100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / n;
    let mut s = ranks.to_vec();
    s.sort_by(f64::total_cmp);
    let median = match s.len() {
        0 => 0.0,
        m if m % 2 == 1 => s[m / 2],
        m => (s[m / 2 - 1] + s[m / 2]) / 2.0,
    };
    let (r1, r5, r10) = (pct(1.0), pct(5.0), pct(10.0));
    ProtocolRecall {
        R1: r1,
        R5: r5,
        R10: r10,
        R50: pct(50.0),
        MedR: median + 1.0,
        MeanR: ranks.iter().sum::<f64>() / n + 1.0,
        geometric_mean: (r1 * r5 * r10).cbrt(),
        queries: ranks.len(),
    }
}

/// Metrics of a `[nv, nt]` row-major similarity where text `j` describes video
/// `text_video[j]`. Videos without a caption are skipped as video→text queries.
pub fn protocol_metrics(
    sim: &[f32],
    nv: usize,
    nt: usize,
    text_video: &[usize],
) -> ProtocolMetrics {
    assert_eq!(sim.len(), nv * nt);
    assert_eq!(text_video.len(), nt);
    let t2v: Vec<f64> = (0..nt)
        .map(|j| {
            let pos = sim[text_video[j] * nt + j];
            (0..nv).filter(|&i| sim[i * nt + j] > pos).count() as f64
        })
        .collect();
    let mut texts_of = vec![vec![]; nv];
    for (j, &v) in text_video.iter().enumerate() {
        texts_of[v].push(j);
    }
    let v2t: Vec<f64> = (0..nv)
        .filter(|&i| !texts_of[i].is_empty())
        .map(|i| {
            let row = &sim[i * nt..(i + 1) * nt];
            texts_of[i]
                .iter()
                .map(|&j| {
                    let higher = row.iter().filter(|&&s| s > row[j]).count() as f64;
                    let tied = row.iter().filter(|&&s| s == row[j]).count() as f64;
                    higher + (tied - 1.0) / 2.0
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    ProtocolMetrics {
        t2v: from_ranks(&t2v),
        v2t: from_ranks(&v2t),
    }
}

/// What an evaluation measured: the set and how queries and gallery were formed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Protocol {
    /// Where the evaluation items came from.
    pub shards: String,
    /// Videos in the gallery (text→video) = video queries (video→text).
    pub videos: usize,
    /// Caption queries (text→video) = caption gallery (video→text).
    pub captions: usize,
    /// Fewest / most captions of a video.
    pub captions_per_video: [usize; 2],
    /// Frames per video and how they were chosen.
    pub frames: usize,
    /// `global` or `global+local`.
    pub score: String,
    /// The metric definition.
    pub metric: &'static str,
}

impl Protocol {
    /// Describes a set with `text_video` (owning video of each caption) over `videos` videos.
    pub fn new(
        shards: String,
        videos: usize,
        text_video: &[usize],
        frames: usize,
        score: &str,
    ) -> Self {
        let mut per = vec![0usize; videos];
        for &v in text_video {
            per[v] += 1;
        }
        Self {
            shards,
            videos,
            captions: text_video.len(),
            captions_per_video: [
                per.iter().copied().min().unwrap_or(0),
                per.iter().copied().max().unwrap_or(0),
            ],
            frames,
            score: score.to_string(),
            metric: "Frozen-in-Time t2v_metrics/v2t_metrics: every caption a t2v query \
                     (optimistic ties); v2t counts a video's best caption (averaged ties)",
        }
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        format!(
            "protocol: {} videos (gallery / v2t queries), {} captions (t2v queries), {}–{} captions per video, {} frames uniform, {} score, from {}",
            self.videos,
            self.captions,
            self.captions_per_video[0],
            self.captions_per_video[1],
            self.frames,
            self.score,
            self.shards
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_follow_frozen_in_time() {
        // 2 videos, 3 captions (video 0 has two). All scores tied.
        let sim = vec![0.5f32; 6];
        let m = protocol_metrics(&sim, 2, 3, &[0, 0, 1]);
        // t2v: optimistic → every query rank 0.
        assert_eq!(m.t2v.R1, 100.0);
        // v2t: averaged → (3-1)/2 = 1 for every caption.
        assert_eq!(m.v2t.R1, 0.0);
        assert_eq!(m.v2t.MedR, 2.0);
        assert_eq!(m.v2t.queries, 2);
    }

    /// Against the numpy transcription of Frozen-in-Time's metric code: ragged captions
    /// (1–4 per video, interleaved), coarse scores so that ties are common.
    #[test]
    fn matches_frozen_in_time_numpy_transcription() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = crate::train::data::Rng::new(11, &[]);
        for case in 0..4 {
            let nv = 7 + 13 * case;
            let mut text_video: Vec<usize> = vec![];
            for v in 0..nv {
                for _ in 0..1 + rng.below(4) {
                    text_video.push(v);
                }
            }
            // Interleave: captions of a video need not be adjacent.
            for i in (1..text_video.len()).rev() {
                text_video.swap(i, rng.below(i + 1));
            }
            let nt = text_video.len();
            let levels = [3, 6, 50, 1000][case];
            let sim: Vec<f32> = (0..nv * nt)
                .map(|_| rng.below(levels) as f32 / levels as f32)
                .collect();
            let ip = dir.path().join(format!("in{case}.json"));
            let op = dir.path().join(format!("out{case}.json"));
            let rows: Vec<Vec<f32>> = sim.chunks(nt).map(|r| r.to_vec()).collect();
            std::fs::write(
                &ip,
                serde_json::json!({"sim": rows, "text_video": text_video}).to_string(),
            )
            .unwrap();
            crate::train::tests::run_py("frozen_metrics.py", &[&ip, &op]);
            let want: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&op).unwrap()).unwrap();
            let got = serde_json::to_value(protocol_metrics(&sim, nv, nt, &text_video)).unwrap();
            for dir_name in ["t2v", "v2t"] {
                for k in [
                    "R1",
                    "R5",
                    "R10",
                    "R50",
                    "MedR",
                    "MeanR",
                    "geometric_mean_R1-R5-R10",
                ] {
                    let (g, w) = (
                        got[dir_name][k].as_f64().unwrap(),
                        want[dir_name][k].as_f64().unwrap(),
                    );
                    assert!(
                        (g - w).abs() < 1e-9,
                        "case {case} {dir_name} {k}: regionfeat {g} vs Frozen-in-Time {w}"
                    );
                }
            }
        }
    }
}
