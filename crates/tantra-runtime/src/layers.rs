//! Building blocks shared by the runtimes: a linear layer loaded from its scope (the names
//! `weight` and `bias` below it) and checked against the shape its config implies.

use tantra_models::names::{BIAS, WEIGHT};

use super::error::Result;
use super::kernels::{self, Matrix, Prepared};
use super::precision::Precision;
use super::weights::Vars;

/// `y = W x + b` with `W` row-major `[out, in]`, as torch stores `nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Matrix,
    bias: Option<Vec<f32>>,
    out_features: usize,
    in_features: usize,
}

impl Linear {
    /// Reads `{scope}.weight` (`[out, in]`, at the weights' precision) and, when `bias`,
    /// `{scope}.bias` (`[out]`, f32), `scope` being the layer's (`vars.pp("in_proj")`).
    ///
    /// # Errors
    /// A missing tensor or one of another shape, under its full name.
    pub fn load(
        vars: &Vars<'_>,
        out_features: usize,
        in_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = vars.matrix(WEIGHT, out_features, in_features)?;
        let bias = if bias {
            Some(vars.get(BIAS, &[out_features])?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            out_features,
            in_features,
        })
    }

    /// A layer from values already in memory (`weight.len() == out * in`), stored at
    /// `precision`.
    pub fn from_parts(
        weight: &[f32],
        bias: Option<Vec<f32>>,
        out_features: usize,
        in_features: usize,
        precision: Precision,
    ) -> Self {
        Linear {
            weight: Matrix::from_f32(weight, out_features, in_features, precision),
            bias,
            out_features,
            in_features,
        }
    }

    /// The precision the weight is stored at.
    pub fn precision(&self) -> Precision {
        self.weight.precision()
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Applies the layer to `n` row-major input vectors (`xs.len() == n * in`), writing
    /// `n * out` values to `ys`.
    pub fn forward(&self, xs: &[f32], ys: &mut [f32]) {
        self.weight.matmul(xs, ys);
        if let Some(b) = &self.bias {
            kernels::add_bias(ys, b);
        }
    }

    /// Outputs `r0..r1` of the layer for one input vector, on the calling thread, into
    /// `out[..r1 - r0]`: bit-identical to those outputs of [`Linear::forward`].
    pub fn forward_rows(&self, r0: usize, r1: usize, x: &[f32], out: &mut [f32]) {
        self.weight.matvec_rows(r0, r1, x, out);
        if let Some(b) = &self.bias {
            for (o, bv) in out.iter_mut().zip(b.get(r0..r1).unwrap_or_default()) {
                *o += bv;
            }
        }
    }

    /// `xs` made ready for [`Linear::forward_rows_batch`] (quantized once for an 8-bit
    /// layer).
    pub(crate) fn prepare<'a>(&self, xs: &'a [f32]) -> Prepared<'a> {
        self.weight.prepare(xs)
    }

    /// Outputs `r0..r1` of the layer for every prepared input vector, on the calling thread,
    /// into `out` laid out `[t][r - r0]`: bit-identical to those outputs of
    /// [`Linear::forward`].
    pub(crate) fn forward_rows_batch(
        &self,
        r0: usize,
        r1: usize,
        xs: &Prepared<'_>,
        out: &mut [f32],
    ) {
        self.weight.matmul_rows(r0, r1, xs, out);
        if let (Some(b), Some(w)) = (&self.bias, r1.checked_sub(r0).filter(|&w| w > 0)) {
            let b = b.get(r0..r1).unwrap_or_default();
            for row in out.chunks_exact_mut(w) {
                for (o, bv) in row.iter_mut().zip(b) {
                    *o += bv;
                }
            }
        }
    }

    /// [`Linear::forward`] into a new vector.
    pub fn apply(&self, xs: &[f32]) -> Vec<f32> {
        let n = xs.len() / self.in_features.max(1);
        let mut ys = vec![0.0; n * self.out_features];
        self.forward(xs, &mut ys);
        ys
    }

    /// Number of weight bytes one application reads (the matrix at its precision, the bias).
    pub fn bytes(&self) -> usize {
        self.weight.bytes() + self.bias.as_ref().map_or(0, Vec::len) * 4
    }
}
