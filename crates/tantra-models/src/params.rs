//! The parameters a config implies: names, shapes and how each is initialized.
//!
//! One list serves three users: the ConfigManager's check (names and shapes of a weight file
//! against its config), initialization (which draws each tensor by its [`Init`] rule), and the
//! parameter counts of the presets, which are computed from it without allocating anything.

use crate::error::ConfigError;

/// How a parameter's values are drawn (see [`crate::init`] for the exact arithmetic).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All `0`.
    Zeros,
    /// All `1`.
    Ones,
    /// All the same value.
    Constant(f64),
    /// `N(0, std^2)`.
    Normal { std: f64 },
    /// `U(-bound, bound)`.
    Uniform { bound: f64 },
    /// torch's `kaiming_uniform_(a = sqrt(5))`, i.e. `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`: the
    /// default of `nn.Linear` / `nn.Conv1d` weights.
    KaimingUniform { fan_in: u64 },
    /// Mamba's S4D-real `A_log[e, n] = ln(n + 1)` over the last dimension.
    S4dRealLog,
    /// Mamba's `dt_proj.bias`: `dt = exp(u (ln max - ln min) + ln min)`, `u ~ U(0, 1)`, clamped
    /// below at `floor`, stored as the inverse softplus `dt + ln(-expm1(-dt))`.
    InverseSoftplusDt { min: f64, max: f64, floor: f64 },
}

/// One parameter: its name as it appears in weight files, its shape (outermost first) and its
/// initialization. All parameters are `F32`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<u64>,
    pub init: Init,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>, shape: Vec<u64>, init: Init) -> Self {
        ParamSpec {
            name: name.into(),
            shape,
            init,
        }
    }

    /// Number of elements, `None` on overflow.
    pub fn numel(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }
}

/// Total element count of a parameter list.
///
/// # Errors
/// [`ConfigError::Overflow`] when the count does not fit `u64`.
pub fn count(params: &[ParamSpec]) -> Result<u64, ConfigError> {
    params.iter().try_fold(0u64, |acc, p| {
        p.numel()
            .and_then(|n| acc.checked_add(n))
            .ok_or_else(|| ConfigError::Overflow {
                field: p.name.clone(),
            })
    })
}

/// `[a, b]` as `u64`s. Sizes are validated to be far below `u64::MAX` before lists are built,
/// so these conversions are lossless.
pub(crate) fn shape(dims: &[usize]) -> Vec<u64> {
    dims.iter().map(|&d| d as u64).collect()
}
