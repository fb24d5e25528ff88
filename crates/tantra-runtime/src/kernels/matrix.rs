//! [`Matrix`]: a weight matrix at any [`Precision`], behind one set of products.

use crate::join::Joiner;
use crate::precision::Precision;

use super::packed::{Bf16, Packed, PackedBuilder};
use super::q8::{Q8Builder, Q8Input, Q8Matrix};

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
    #[cfg(test)]
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

    /// `xs` (row-major vectors of `cols` values) made ready for [`Matrix::matmul_rows`].
    pub(crate) fn prepare<'a>(&self, xs: &'a [f32]) -> Prepared<'a> {
        match self {
            Matrix::Q8(m) => Prepared::Q8(Q8Input::new(xs, m.cols())),
            _ => Prepared::Plain(xs),
        }
    }

    /// Rows `r0..r1` of `Y = X W^T` for the prepared vectors, on the calling thread, into
    /// `out` laid out `[t][r - r0]`, each value bit-identical to [`Matrix::matvec`]'s for
    /// that row and vector. Input prepared for another precision writes nothing.
    pub(crate) fn matmul_rows(&self, r0: usize, r1: usize, xs: &Prepared<'_>, out: &mut [f32]) {
        match (self, xs) {
            (Matrix::F32(m), Prepared::Plain(x)) => m.matmul_rows(r0, r1, x, out),
            (Matrix::Bf16(m), Prepared::Plain(x)) => m.matmul_rows(r0, r1, x, out),
            (Matrix::Q8(m), Prepared::Q8(x)) => m.matmul_rows(r0, r1, x, out),
            _ => {}
        }
    }

    /// `Y = X W^T` for `n` row-major input vectors, each output bit-identical to
    /// [`Matrix::matvec`] of its vector.
    pub(crate) fn matmul(&self, xs: &[f32], ys: &mut [f32]) {
        each!(self, m => m.matmul(xs, ys))
    }
}

/// Input vectors made ready once for several row ranges of one matrix (quantized for an
/// 8-bit one), so that threads splitting a product by rows do not each redo it per range.
pub(crate) enum Prepared<'a> {
    Plain(&'a [f32]),
    Q8(Q8Input),
}

/// Builds a [`Matrix`] at a precision from row-major values that arrive in pieces of any
/// length (as a file streams them), holding one row (four for the packed layouts) besides the
/// result: the loader's way to convert a tensor without a full f32 or row-major copy of it.
/// The result is bit-identical to [`Matrix::from_f32`] (or [`Matrix::from_bf16_bits`]) of all
/// the values.
#[derive(Debug)]
pub(crate) struct MatrixBuilder {
    kind: Kind,
    rows: usize,
    cols: usize,
    /// Values pushed so far (also those past the end, which make [`Self::finish`] fail).
    values: usize,
}

/// The builder of each precision, and the rows of values it is fed in.
#[derive(Debug)]
enum Kind {
    F32(PackedBuilder<f32>, Joiner<f32>),
    Bf16(PackedBuilder<Bf16>, Joiner<Bf16>),
    Q8(Q8Builder, Joiner<f32>),
}

impl MatrixBuilder {
    pub(crate) fn new(rows: usize, cols: usize, precision: Precision) -> Self {
        let kind = match precision {
            Precision::F32 => Kind::F32(PackedBuilder::new(rows, cols), Joiner::new(cols)),
            Precision::Bf16 => Kind::Bf16(PackedBuilder::new(rows, cols), Joiner::new(cols)),
            Precision::Q8 => Kind::Q8(Q8Builder::new(rows, cols), Joiner::new(cols)),
        };
        MatrixBuilder {
            kind,
            rows,
            cols,
            values: 0,
        }
    }

    /// Appends the next row-major values, rounded or quantized as the precision asks.
    pub(crate) fn push_f32(&mut self, values: &[f32]) {
        let cols = self.cols;
        self.values = self.values.saturating_add(values.len());
        if cols == 0 {
            return;
        }
        match &mut self.kind {
            Kind::F32(b, rows) => rows.push(values, &mut |run| {
                run.chunks_exact(cols).for_each(|r| b.push_row(r));
            }),
            Kind::Q8(b, rows) => rows.push(values, &mut |run| {
                run.chunks_exact(cols).for_each(|r| b.push_row(r));
            }),
            Kind::Bf16(b, rows) => {
                for chunk in values.chunks(256) {
                    let mut conv = [Bf16(0); 256];
                    for (c, &v) in conv.iter_mut().zip(chunk) {
                        *c = Bf16::from_f32(v);
                    }
                    rows.push(&conv[..chunk.len()], &mut |run| {
                        run.chunks_exact(cols).for_each(|r| b.push_row(r));
                    });
                }
            }
        }
    }

    /// Appends the next row-major values given as bfloat16 bits: kept as they are at bf16,
    /// widened (exactly) to f32 otherwise.
    pub(crate) fn push_bf16_bits(&mut self, bits: &[u16]) {
        let cols = self.cols;
        if cols == 0 {
            self.values = self.values.saturating_add(bits.len());
            return;
        }
        if let Kind::Bf16(b, rows) = &mut self.kind {
            self.values = self.values.saturating_add(bits.len());
            for chunk in bits.chunks(256) {
                let mut conv = [Bf16(0); 256];
                for (c, &v) in conv.iter_mut().zip(chunk) {
                    *c = Bf16(v);
                }
                rows.push(&conv[..chunk.len()], &mut |run| {
                    run.chunks_exact(cols).for_each(|r| b.push_row(r));
                });
            }
            return;
        }
        for chunk in bits.chunks(256) {
            let mut conv = [0.0f32; 256];
            for (c, &v) in conv.iter_mut().zip(chunk) {
                *c = f32::from_bits(u32::from(v) << 16);
            }
            self.push_f32(&conv[..chunk.len()]);
        }
    }

    /// The matrix; `None` unless exactly `rows * cols` values were pushed.
    pub(crate) fn finish(self) -> Option<Matrix> {
        if self.values != self.rows * self.cols {
            return None;
        }
        match self.kind {
            Kind::F32(b, rows) => rows.is_empty().then(|| b.finish().map(Matrix::F32))?,
            Kind::Bf16(b, rows) => rows.is_empty().then(|| b.finish().map(Matrix::Bf16))?,
            Kind::Q8(b, rows) => rows.is_empty().then(|| b.finish().map(Matrix::Q8))?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any range of rows, cut anywhere (inside a packed group of four or not), over several
    /// prepared inputs, gives the bits of the matrix-vector product of each input.
    #[test]
    fn row_ranges_of_prepared_inputs_are_bitwise_matvec() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (rows, cols, n) in [(70, 257, 5), (45, 1408, 3), (9, 40, 7)] {
            let w = super::super::test_data(rows * cols, 11);
            let xs = super::super::test_data(cols * n, 12);
            for p in Precision::ALL {
                let m = Matrix::from_f32(&w, rows, cols, p);
                let input = m.prepare(&xs);
                for (r0, r1) in [(0, rows), (0, 4), (3, 9), (4, rows), (5, rows - 1), (8, 8)] {
                    let width = r1 - r0;
                    let mut out = vec![f32::NAN; n * width];
                    m.matmul_rows(r0, r1, &input, &mut out);
                    for t in 0..n {
                        let mut y = vec![0.0; rows];
                        m.matvec(&xs[t * cols..(t + 1) * cols], &mut y);
                        assert_eq!(
                            bits(&out[t * width..(t + 1) * width]),
                            bits(&y[r0..r1]),
                            "{p}: {rows}x{cols}, rows {r0}..{r1}, input {t}"
                        );
                    }
                }
            }
        }
    }

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

    #[test]
    fn building_from_pieces_equals_building_from_the_whole() {
        // Rows not a multiple of 4, columns not a multiple of 16 or 32.
        for (rows, cols) in [(37, 70), (8, 32), (3, 5), (1, 1)] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 60.0)
                .collect();
            for p in Precision::ALL {
                for piece in [1, 7, 64, 10_000] {
                    let mut b = MatrixBuilder::new(rows, cols, p);
                    for c in w.chunks(piece) {
                        b.push_f32(c);
                    }
                    assert_eq!(
                        b.finish(),
                        Some(Matrix::from_f32(&w, rows, cols, p)),
                        "{p} {rows}x{cols} in pieces of {piece}"
                    );
                }
                // One value short, one too many.
                let mut b = MatrixBuilder::new(rows, cols, p);
                b.push_f32(&w[1..]);
                assert_eq!(b.finish(), None);
                let mut b = MatrixBuilder::new(rows, cols, p);
                b.push_f32(&w);
                b.push_f32(&w[..cols]);
                assert_eq!(b.finish(), None);
            }
            let bits: Vec<u16> = w
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_bits())
                .collect();
            let widened: Vec<f32> = bits
                .iter()
                .map(|&b| half::bf16::from_bits(b).to_f32())
                .collect();
            for p in Precision::ALL {
                let mut b = MatrixBuilder::new(rows, cols, p);
                for c in bits.chunks(5) {
                    b.push_bf16_bits(c);
                }
                let want = if p == Precision::Bf16 {
                    Matrix::from_bf16_bits(&bits, rows, cols)
                } else {
                    Matrix::from_f32(&widened, rows, cols, p)
                };
                assert_eq!(b.finish(), Some(want), "bf16 bits at {p}");
            }
        }
    }
}
