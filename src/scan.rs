//! Exact top-k inner-product search over f16 rows (the `regionfeat search` gallery): rows are
//! widened to f32 a block at a time and scored against the query on all cores; per-block
//! top-k lists are merged. Results are ordered by score, then row, so equal scores come back
//! in a fixed order.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Rows scored per task: big enough to amortise scheduling, small enough to stay in L2.
const BLOCK_ROWS: usize = 2048;

/// One hit: row number and inner product.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Row in the gallery.
    pub row: usize,
    /// Inner product with the query.
    pub score: f32,
}

fn better(a: &Hit, b: &Hit) -> bool {
    a.score > b.score || (a.score == b.score && a.row < b.row)
}

/// Keeps the best `k` of what it is offered, sorted best first.
fn push_top(top: &mut Vec<Hit>, k: usize, h: Hit) {
    if top.len() == k {
        if !better(&h, top.last().expect("k > 0")) {
            return;
        }
        top.pop();
    }
    let at = top.partition_point(|x| better(x, &h));
    top.insert(at, h);
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators so the compiler vectorises the loop.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// The `k` rows of `rows` (`n × dim`, row-major f16) with the largest inner product with
/// `query` (`dim` f32), best first.
pub fn top_k(rows: &[f16], dim: usize, query: &[f32], k: usize) -> Vec<Hit> {
    assert_eq!(
        query.len(),
        dim,
        "query has {} dims, rows {dim}",
        query.len()
    );
    assert_eq!(rows.len() % dim.max(1), 0, "rows are not a multiple of dim");
    if k == 0 || dim == 0 {
        return vec![];
    }
    let parts: Vec<Vec<Hit>> = rows
        .par_chunks(BLOCK_ROWS * dim)
        .enumerate()
        .map(|(b, block)| {
            let mut buf = vec![0f32; block.len()];
            block.convert_to_f32_slice(&mut buf);
            let mut top = Vec::with_capacity(k + 1);
            for (i, row) in buf.chunks_exact(dim).enumerate() {
                push_top(
                    &mut top,
                    k,
                    Hit {
                        row: b * BLOCK_ROWS + i,
                        score: dot(row, query),
                    },
                );
            }
            top
        })
        .collect();
    let mut top = Vec::with_capacity(k + 1);
    for h in parts.into_iter().flatten() {
        push_top(&mut top, k, h);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_full_sort_including_ties() {
        let (n, dim) = (5000, 12);
        let mut x = 1u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % 7) as f32 / 7.0 - 0.5
        };
        let rows: Vec<f16> = (0..n * dim).map(|_| f16::from_f32(next())).collect();
        let q: Vec<f32> = (0..dim).map(|_| next()).collect();
        let got = top_k(&rows, dim, &q, 25);
        let mut all: Vec<Hit> = rows
            .chunks(dim)
            .enumerate()
            .map(|(row, r)| Hit {
                row,
                score: dot(&r.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), &q),
            })
            .collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        assert_eq!(got, all[..25].to_vec());
        assert_eq!(top_k(&rows[..3 * dim], dim, &q, 10).len(), 3);
        assert!(top_k(&rows, dim, &q, 0).is_empty());
    }
}
