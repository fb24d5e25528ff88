//! [`Matrix`]: a weight matrix at any [`Precision`], behind one set of products.

use crate::precision::Precision;

use super::packed::{Bf16, Packed};
use super::q8::Q8Matrix;

/// A `[rows, cols]` weight matrix (torch's `[out, in]`) stored at f32, bf16 or 8 bits. Every
/// product gives, for one row and one input vector, the same bits whatever the batch size,
/// row range or thread count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Matrix {
    F32(Packed<f32>),
    Bf16(Packed<Bf16>),
    Q8(Q8Matrix),
}

macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            Matrix::F32($m) => $e,
            Matrix::Bf16($m) => $e,
            Matrix::Q8($m) => $e,
        }
    };
}

impl Matrix {
    /// A row-major f32 matrix stored at `precision` (rounded or quantized as needed).
    pub(crate) fn from_f32(w: &[f32], rows: usize, cols: usize, precision: Precision) -> Self {
        match precision {
            Precision::F32 => Matrix::F32(Packed::from_row_major(w, rows, cols)),
            Precision::Bf16 => {
                let b: Vec<Bf16> = w.iter().map(|&v| Bf16::from_f32(v)).collect();
                Matrix::Bf16(Packed::from_row_major(&b, rows, cols))
            }
            Precision::Q8 => Matrix::Q8(Q8Matrix::from_row_major(w, rows, cols)),
        }
    }

    /// A row-major matrix of bfloat16 bits, kept as they are.
    pub(crate) fn from_bf16_bits(bits: &[u16], rows: usize, cols: usize) -> Self {
        let b: Vec<Bf16> = bits.iter().map(|&v| Bf16(v)).collect();
        Matrix::Bf16(Packed::from_row_major(&b, rows, cols))
    }

    pub(crate) fn precision(&self) -> Precision {
        match self {
            Matrix::F32(_) => Precision::F32,
            Matrix::Bf16(_) => Precision::Bf16,
            Matrix::Q8(_) => Precision::Q8,
        }
    }

    /// Bytes of the stored weights.
    pub(crate) fn bytes(&self) -> usize {
        each!(self, m => m.bytes())
    }

    /// Row `r` as f32 into `out[..cols]` (an embedding lookup); nothing past the end.
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
        each!(self, m => m.row_into(r, out))
    }

    #[cfg(test)]
    /// `y = W x`; `x.len() == cols`, `y.len() == rows` (the callers own the shapes).
    pub(crate) fn matvec(&self, x: &[f32], y: &mut [f32]) {
        each!(self, m => m.matvec(x, y))
    }

    /// Rows `r0..r1` of `W x` on the calling thread into `out[..r1 - r0]`, bit-identical to
    /// those rows of [`Matrix::matvec`].
    pub(crate) fn matvec_rows(&self, r0: usize, r1: usize, x: &[f32], out: &mut [f32]) {
        each!(self, m => m.matvec_rows(r0, r1, x, out))
    }

    /// `Y = X W^T` for `n` row-major input vectors, each output bit-identical to
    /// [`Matrix::matvec`] of its vector.
    pub(crate) fn matmul(&self, xs: &[f32], ys: &mut [f32]) {
        each!(self, m => m.matmul(xs, ys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_precision_is_close_to_f32_and_reports_its_size() {
        let (rows, cols) = (37, 70);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 60.0)
            .collect();
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let mut exact = vec![0.0; rows];
        Matrix::from_f32(&w, rows, cols, Precision::F32).matvec(&x, &mut exact);
        for (p, bytes, tol) in [
            (Precision::F32, rows * cols * 4, 0.0),
            (Precision::Bf16, rows * cols * 2, 0.05),
            (Precision::Q8, rows * 3 * 36, 0.1),
        ] {
            let m = Matrix::from_f32(&w, rows, cols, p);
            assert_eq!(m.precision(), p);
            assert_eq!(m.bytes(), bytes);
            let mut y = vec![0.0; rows];
            m.matvec(&x, &mut y);
            for (a, b) in y.iter().zip(&exact) {
                assert!((a - b).abs() <= tol, "{p}: {a} vs {b}");
            }
        }
        let bits: Vec<u16> = w
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect();
        assert_eq!(
            Matrix::from_bf16_bits(&bits, rows, cols),
            Matrix::from_f32(&w, rows, cols, Precision::Bf16)
        );
    }
}
