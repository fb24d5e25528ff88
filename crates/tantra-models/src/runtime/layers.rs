//! Building blocks shared by the runtimes: a linear layer loaded by name and checked against
//! the shape its config implies.

use super::error::Result;
use super::kernels;
use super::weights::Weights;

/// `y = W x + b` with `W` row-major `[out, in]`, as torch stores `nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    out_features: usize,
    in_features: usize,
}

impl Linear {
    /// Reads `{prefix}.weight` (`[out, in]`) and, when `bias`, `{prefix}.bias` (`[out]`).
    ///
    /// # Errors
    /// A missing tensor or one of another shape, named.
    pub fn load(
        weights: &Weights<'_>,
        prefix: &str,
        out_features: usize,
        in_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = weights.get(&format!("{prefix}.weight"), &[out_features, in_features])?;
        let bias = if bias {
            Some(weights.get(&format!("{prefix}.bias"), &[out_features])?)
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

    /// A layer from values already in memory (`weight.len() == out * in`).
    pub fn from_parts(
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        out_features: usize,
        in_features: usize,
    ) -> Self {
        Linear {
            weight,
            bias,
            out_features,
            in_features,
        }
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// The weight, row-major `[out, in]`.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// Applies the layer to `n` row-major input vectors (`xs.len() == n * in`), writing
    /// `n * out` values to `ys`.
    pub fn forward(&self, xs: &[f32], ys: &mut [f32]) {
        kernels::matmul(&self.weight, self.in_features, xs, self.out_features, ys);
        if let Some(b) = &self.bias {
            kernels::add_bias(ys, b);
        }
    }

    /// [`Linear::forward`] into a new vector.
    pub fn apply(&self, xs: &[f32]) -> Vec<f32> {
        let n = xs.len() / self.in_features.max(1);
        let mut ys = vec![0.0; n * self.out_features];
        self.forward(xs, &mut ys);
        ys
    }

    /// Number of weight bytes (f32) one application reads.
    pub fn bytes(&self) -> usize {
        (self.weight.len() + self.bias.as_ref().map_or(0, Vec::len)) * 4
    }
}
