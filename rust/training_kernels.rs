//! The training step's memory-bound CPU kernels: one pass over their data where torch's ops
//! take several. Python keeps the model and the loop; this replaces the inner loop of
//! `jtm_rs.training.LazyAdam` on the CPU (other devices use torch's ops). At 10^6 items the
//! torch version (two gathers, two scatters and a scaled scatter-add over the touched rows) was
//! ~16 % of a training step; this one pass trains 9 % (one thread) and 7 % (two) more
//! examples per second (docs/scale.md).
//!
//! A one-pass shared-slope PReLU backward was tried too and dropped: 4 % faster on one thread,
//! 7 % slower on two, where its rayon workers competed with torch's.

use crate::error::{JtmError, Result};

/// One lazy Adam step's constants: the moments' decay rates, the denominator's epsilon and
/// the bias-corrected step size `lr * sqrt(1 - beta2^t) / (1 - beta1^t)`. In f64, as Python
/// gives them: `1 - beta2` rounded from f32's `beta2` would be 1.3e-5 off torch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub step_size: f64,
}

/// Rows handled on one thread before a split is worth it.
const ADAM_ROWS_PER_TASK: usize = 4096;

/// Lazy Adam (torch's `SparseAdam` update) on the rows `rows` of a `[n, dim]` table, in place:
/// for each touched row `r` with gradient `g`,
/// `m = m + (1 - beta1) (g - m)`, `v = beta2 v + (1 - beta2) g²`,
/// `p -= step_size * m / (sqrt(v) + eps)`. Untouched rows do not move. `rows` must be strictly
/// increasing (a coalesced sparse gradient), so that rows split cleanly across threads.
pub fn lazy_adam_rows(
    param: &mut [f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    dim: usize,
    rows: &[i64],
    grad: &[f32],
    step: AdamStep,
) -> Result<()> {
    if dim == 0 || !param.len().is_multiple_of(dim) {
        return Err(JtmError::InvalidArgument(format!(
            "the table's {} values are not rows of {dim}",
            param.len()
        )));
    }
    if exp_avg.len() != param.len() || exp_avg_sq.len() != param.len() {
        return Err(JtmError::InvalidArgument(
            "Adam's moments must have the table's shape".into(),
        ));
    }
    if grad.len() != rows.len() * dim {
        return Err(JtmError::InvalidArgument(format!(
            "{} gradient values for {} rows of {dim}",
            grad.len(),
            rows.len()
        )));
    }
    let n_rows = (param.len() / dim) as i64;
    if let Some(&first) = rows.first() {
        if first < 0 || rows[rows.len() - 1] >= n_rows {
            return Err(JtmError::InvalidArgument(format!(
                "gradient rows must be in 0..{n_rows}"
            )));
        }
    }
    if rows.windows(2).any(|w| w[0] >= w[1]) {
        return Err(JtmError::InvalidArgument(
            "gradient rows must be strictly increasing (coalesce the gradient)".into(),
        ));
    }
    adam_split(
        RowsMut {
            param,
            exp_avg,
            exp_avg_sq,
            first_row: 0,
        },
        dim,
        rows,
        grad,
        step,
    );
    Ok(())
}

/// The table (and its moments) from row `first_row` on.
struct RowsMut<'a> {
    param: &'a mut [f32],
    exp_avg: &'a mut [f32],
    exp_avg_sq: &'a mut [f32],
    first_row: usize,
}

impl<'a> RowsMut<'a> {
    /// Splits at table row `row` (>= `first_row`).
    fn split_at(self, row: usize, dim: usize) -> (RowsMut<'a>, RowsMut<'a>) {
        let at = (row - self.first_row) * dim;
        let (p0, p1) = self.param.split_at_mut(at);
        let (m0, m1) = self.exp_avg.split_at_mut(at);
        let (v0, v1) = self.exp_avg_sq.split_at_mut(at);
        (
            RowsMut {
                param: p0,
                exp_avg: m0,
                exp_avg_sq: v0,
                first_row: self.first_row,
            },
            RowsMut {
                param: p1,
                exp_avg: m1,
                exp_avg_sq: v1,
                first_row: row,
            },
        )
    }
}

/// Halves the (sorted) rows until a half is small, splitting the table at the middle row: the
/// halves touch disjoint parts of it.
fn adam_split(table: RowsMut<'_>, dim: usize, rows: &[i64], grad: &[f32], step: AdamStep) {
    if rows.len() <= ADAM_ROWS_PER_TASK {
        adam_serial(table, dim, rows, grad, step);
        return;
    }
    let mid = rows.len() / 2;
    let (left, right) = table.split_at(rows[mid] as usize, dim);
    let (g0, g1) = grad.split_at(mid * dim);
    rayon::join(
        || adam_split(left, dim, &rows[..mid], g0, step),
        || adam_split(right, dim, &rows[mid..], g1, step),
    );
}

fn adam_serial(table: RowsMut<'_>, dim: usize, rows: &[i64], grad: &[f32], s: AdamStep) {
    let (a1, b2, a2) = (
        (1.0 - s.beta1) as f32,
        s.beta2 as f32,
        (1.0 - s.beta2) as f32,
    );
    let (eps, step_size) = (s.eps as f32, s.step_size as f32);
    for (&r, g) in rows.iter().zip(grad.chunks_exact(dim)) {
        let o = (r as usize - table.first_row) * dim;
        let p = &mut table.param[o..o + dim];
        let m = &mut table.exp_avg[o..o + dim];
        let v = &mut table.exp_avg_sq[o..o + dim];
        for j in 0..dim {
            let mj = m[j] + a1 * (g[j] - m[j]);
            let vj = b2 * v[j] + a2 * g[j] * g[j];
            m[j] = mj;
            v[j] = vj;
            p[j] -= step_size * (mj / (vj.sqrt() + eps));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: AdamStep = AdamStep {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        step_size: 0.01,
    };

    /// Adam's textbook update, row by row, in f64.
    fn reference(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], s: AdamStep) {
        for j in 0..p.len() {
            m[j] = s.beta1 * m[j] + (1.0 - s.beta1) * g[j];
            v[j] = s.beta2 * v[j] + (1.0 - s.beta2) * g[j] * g[j];
            p[j] -= s.step_size * m[j] / (v[j].sqrt() + s.eps);
        }
    }

    #[test]
    fn lazy_adam_moves_touched_rows_only_as_adam_does() {
        let (n, dim) = (20_000usize, 3usize);
        let init = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 100.0;
        let mut p: Vec<f32> = (0..n * dim).map(init).collect();
        let mut m: Vec<f32> = (0..n * dim).map(|i| init(i + 7) / 10.0).collect();
        let mut v: Vec<f32> = (0..n * dim).map(|i| init(i + 3).abs() / 10.0).collect();
        let (p0, m0, v0) = (p.clone(), m.clone(), v.clone());
        // Enough rows for several parallel halves.
        let rows: Vec<i64> = (0..n as i64).filter(|r| r % 3 != 1).collect();
        let grad: Vec<f32> = (0..rows.len() * dim).map(|i| init(i + 11)).collect();
        lazy_adam_rows(&mut p, &mut m, &mut v, dim, &rows, &grad, STEP).unwrap();
        let touched: std::collections::HashMap<usize, usize> = rows
            .iter()
            .enumerate()
            .map(|(i, &r)| (r as usize, i))
            .collect();
        for r in 0..n {
            let at = r * dim..(r + 1) * dim;
            match touched.get(&r) {
                None => {
                    assert_eq!(&p[at.clone()], &p0[at.clone()]);
                    assert_eq!(&m[at.clone()], &m0[at.clone()]);
                    assert_eq!(&v[at.clone()], &v0[at]);
                }
                Some(&i) => {
                    let f = |s: &[f32]| s.iter().map(|&x| x as f64).collect::<Vec<_>>();
                    let (mut ep, mut em, mut ev) =
                        (f(&p0[at.clone()]), f(&m0[at.clone()]), f(&v0[at.clone()]));
                    reference(
                        &mut ep,
                        &mut em,
                        &mut ev,
                        &f(&grad[i * dim..(i + 1) * dim]),
                        STEP,
                    );
                    for j in 0..dim {
                        assert!((p[r * dim + j] as f64 - ep[j]).abs() < 1e-5, "row {r}");
                        assert!((m[r * dim + j] as f64 - em[j]).abs() < 1e-6);
                        assert!((v[r * dim + j] as f64 - ev[j]).abs() < 1e-6);
                    }
                }
            }
        }
    }

    #[test]
    fn lazy_adam_refuses_unsorted_or_foreign_rows() {
        let (mut p, mut m, mut v) = (vec![0.0f32; 8], vec![0.0f32; 8], vec![0.0f32; 8]);
        let g = vec![1.0f32; 4];
        for rows in [[1i64, 0], [2, 2], [0, 4], [-1, 0]] {
            assert!(matches!(
                lazy_adam_rows(&mut p, &mut m, &mut v, 2, &rows, &g, STEP),
                Err(JtmError::InvalidArgument(_))
            ));
        }
        assert!(lazy_adam_rows(&mut p, &mut m, &mut v, 3, &[0], &g[..3], STEP).is_err());
        assert!(lazy_adam_rows(&mut p, &mut m, &mut v, 2, &[0, 1], &g[..3], STEP).is_err());
        assert!(p.iter().all(|&x| x == 0.0));
    }
}
