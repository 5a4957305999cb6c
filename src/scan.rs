//! Exact top-k inner-product search over f16 rows (the `regionfeat search` gallery).
//!
//! The scan is bandwidth-bound (1M × 256 f16 = 512 MiB read per query), so rows are never
//! widened into a buffer: on x86-64 with AVX2 + FMA + F16C (checked at run time) each row is
//! loaded 8 halves at a time, widened in registers (`vcvtph2ps`) and multiplied into four
//! independent FMA accumulators; elsewhere a portable loop widens one row at a time into a
//! small reused buffer. Blocks of rows are scored on all cores (rayon), each block keeps its own
//! top-k, and the per-block lists (k each) are merged at the end. Results are ordered by score,
//! then row, so equal scores come back in a fixed order.

use half::f16;
use rayon::prelude::*;

/// Rows scored per task: a few hundred KiB of f16, so a task is long enough to amortise
/// scheduling and the final merge (blocks × k hits) stays small.
const BLOCK_ROWS: usize = 4096;

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

/// Keeps the best `k` of what it is offered, sorted best first. Rejecting a hit that does not
/// beat the current k-th (the common case after the first rows) is one comparison.
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

/// How rows are scored on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX2 + FMA + F16C: f16 widened in registers, fused multiply-add.
    F16c,
    /// Portable: each row widened into a buffer, then an 8-accumulator loop.
    Portable,
}

/// The kernel [`top_k`] uses on this machine.
pub fn kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return Kernel::F16c;
        }
    }
    Kernel::Portable
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
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

fn scan_block_portable(
    block: &[f16],
    dim: usize,
    query: &[f32],
    first: usize,
    k: usize,
) -> Vec<Hit> {
    use half::slice::HalfFloatSliceExt;
    let mut buf = vec![0f32; dim];
    let mut top = Vec::with_capacity(k + 1);
    for (i, row) in block.chunks_exact(dim).enumerate() {
        row.convert_to_f32_slice(&mut buf);
        push_top(
            &mut top,
            k,
            Hit {
                row: first + i,
                score: dot_f32(&buf, query),
            },
        );
    }
    top
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{push_top, Hit};
    use half::f16;
    use std::arch::x86_64::*;

    /// `row · query` with the f16 row widened in registers.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `row.len() == query.len()`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot(row: &[f16], query: &[f32]) -> f32 {
        let n = row.len();
        let (r, q) = (row.as_ptr() as *const u16, query.as_ptr());
        macro_rules! load {
            ($i:expr) => {
                _mm256_cvtph_ps(_mm_loadu_si128(r.add($i) as *const __m128i))
            };
        }
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut i = 0;
        while i + 32 <= n {
            a0 = _mm256_fmadd_ps(load!(i), _mm256_loadu_ps(q.add(i)), a0);
            a1 = _mm256_fmadd_ps(load!(i + 8), _mm256_loadu_ps(q.add(i + 8)), a1);
            a2 = _mm256_fmadd_ps(load!(i + 16), _mm256_loadu_ps(q.add(i + 16)), a2);
            a3 = _mm256_fmadd_ps(load!(i + 24), _mm256_loadu_ps(q.add(i + 24)), a3);
            i += 32;
        }
        while i + 8 <= n {
            a0 = _mm256_fmadd_ps(load!(i), _mm256_loadu_ps(q.add(i)), a0);
            i += 8;
        }
        let acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
        let mut s = _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)));
        while i < n {
            s += row[i].to_f32() * query[i];
            i += 1;
        }
        s
    }

    /// Top-k of one block.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scan_block(
        block: &[f16],
        dim: usize,
        query: &[f32],
        first: usize,
        k: usize,
    ) -> Vec<Hit> {
        let mut top: Vec<Hit> = Vec::with_capacity(k + 1);
        let mut worst = f32::NEG_INFINITY;
        for (i, row) in block.chunks_exact(dim).enumerate() {
            let score = dot(row, query);
            // Cheap reject before the ordered insert; ties with the k-th still go through
            // push_top (which orders them by row).
            if top.len() == k && score < worst {
                continue;
            }
            push_top(
                &mut top,
                k,
                Hit {
                    row: first + i,
                    score,
                },
            );
            if top.len() == k {
                worst = top[k - 1].score;
            }
        }
        top
    }
}

/// The `k` rows of `rows` (`n × dim`, row-major f16) with the largest inner product with
/// `query` (`dim` f32), best first.
pub fn top_k(rows: &[f16], dim: usize, query: &[f32], k: usize) -> Vec<Hit> {
    top_k_with(kernel(), rows, dim, query, k)
}

/// [`top_k`] with a chosen kernel ([`Kernel::F16c`] falls back to portable where the CPU
/// lacks it).
pub fn top_k_with(kernel: Kernel, rows: &[f16], dim: usize, query: &[f32], k: usize) -> Vec<Hit> {
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
    let kernel = if kernel == Kernel::F16c && self::kernel() != Kernel::F16c {
        Kernel::Portable
    } else {
        kernel
    };
    let parts: Vec<Vec<Hit>> = rows
        .par_chunks(BLOCK_ROWS * dim)
        .enumerate()
        .map(|(b, block)| {
            let first = b * BLOCK_ROWS;
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `kernel()` checked AVX2, FMA and F16C at run time.
                Kernel::F16c => unsafe { x86::scan_block(block, dim, query, first, k) },
                _ => scan_block_portable(block, dim, query, first, k),
            }
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

    /// Rows and query on a 1/8 grid: every product and partial sum is exact in f32, so any
    /// summation order gives the same score and ties are real ties.
    fn grid_data(n: usize, dim: usize) -> (Vec<f16>, Vec<f32>) {
        let mut x = 1u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % 7) as f32 / 8.0 - 0.375
        };
        let rows: Vec<f16> = (0..n * dim).map(|_| f16::from_f32(next())).collect();
        let q: Vec<f32> = (0..dim).map(|_| next()).collect();
        (rows, q)
    }

    fn full_sort(rows: &[f16], dim: usize, q: &[f32]) -> Vec<Hit> {
        let mut all: Vec<Hit> = rows
            .chunks(dim)
            .enumerate()
            .map(|(row, r)| Hit {
                row,
                score: r
                    .iter()
                    .zip(q)
                    .map(|(a, b)| a.to_f64() * *b as f64)
                    .sum::<f64>() as f32,
            })
            .collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        all
    }

    #[test]
    fn matches_a_full_sort_including_ties() {
        // dim 44: four 8-wide steps plus a 4-element tail in the F16C kernel. 9000 rows: three
        // blocks, the last one partial.
        for dim in [44, 256] {
            let n = 9000;
            let (rows, q) = grid_data(n, dim);
            let all = full_sort(&rows, dim, &q);
            assert!(
                all[..25].windows(2).any(|w| w[0].score == w[1].score),
                "the data should have ties"
            );
            for kernel in [Kernel::F16c, Kernel::Portable] {
                let got = top_k_with(kernel, &rows, dim, &q, 25);
                assert_eq!(got, all[..25].to_vec(), "{kernel:?} dim {dim}");
            }
            assert_eq!(top_k(&rows[..3 * dim], dim, &q, 10).len(), 3);
            assert!(top_k(&rows, dim, &q, 0).is_empty());
        }
    }

    #[test]
    fn kernels_agree_on_real_valued_rows() {
        let (n, dim) = (3000, 256);
        let mut x = 7u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let rows: Vec<f16> = (0..n * dim).map(|_| f16::from_f32(next())).collect();
        let q: Vec<f32> = (0..dim).map(|_| next()).collect();
        let a = top_k_with(Kernel::F16c, &rows, dim, &q, 50);
        let b = top_k_with(Kernel::Portable, &rows, dim, &q, 50);
        let want = full_sort(&rows, dim, &q);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x.score - want[i].score).abs() < 1e-4);
            assert!((y.score - want[i].score).abs() < 1e-4);
        }
        let rows_of = |h: &[Hit]| h.iter().map(|h| h.row).collect::<Vec<_>>();
        assert_eq!(rows_of(&a), rows_of(&want[..50]));
    }
}
