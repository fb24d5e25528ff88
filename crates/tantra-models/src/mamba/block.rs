//! The stack of Mamba blocks that all three families share, described apart from any vocabulary.
//!
//! [`MambaConfig`](super::MambaConfig) (the language model) views itself as a
//! `MambaBlockConfig` through [`MambaConfig::blocks`](super::MambaConfig::blocks); the OCR model
//! embeds one directly (it has no token embeddings). Runtimes build their layers from this one
//! type, and the parameter list of a layer is written once, here, from the names in
//! [`super::names`] (which the runtimes read the weights by).
//!
//! # Parameters of layer `i` (scope `backbone.layers.{i}`)
//! d = `hidden_size`, E = `expand * hidden_size`, N = `state_size`, K = `conv_kernel`,
//! R = [`MambaBlockConfig::dt_rank`]. Shapes are torch `[out, in]`.
//!
//! | name | shape | init |
//! | --- | --- | --- |
//! | `norm.weight` | `[d]` | ones |
//! | `mixer.in_proj.weight` | `[2E, d]` | `N(0, initializer_range)` |
//! | `mixer.in_proj.bias` (only if `use_bias`) | `[2E]` | zeros |
//! | `mixer.conv1d.weight` | `[E, 1, K]` | Kaiming-uniform, fan_in `K` |
//! | `mixer.conv1d.bias` (only if `use_conv_bias`) | `[E]` | zeros |
//! | `mixer.x_proj.weight` | `[R + 2N, E]` | `N(0, initializer_range)` |
//! | `mixer.dt_proj.weight` | `[E, R]` | `U(±R^-0.5 time_step_scale)` ("random") or that constant ("constant") |
//! | `mixer.dt_proj.bias` | `[E]` | inverse softplus of `dt` in `[time_step_min, time_step_max]`, log-uniform |
//! | `mixer.A_log` | `[E, N]` | `ln(n + 1)` |
//! | `mixer.D` | `[E]` | ones |
//! | `mixer.out_proj.weight` | `[d, E]` | Kaiming-uniform, fan_in `E` |
//! | `mixer.out_proj.bias` (only if `use_bias`) | `[d]` | zeros |
//!
//! The initialization is transformers' `MambaPreTrainedModel._init_weights` (`nn.Linear`
//! weights normal with `initializer_range`, then the mixer's own rules), drawn from tantra's
//! generator ([`crate::rng`]) instead of torch's.

use serde::{Deserialize, Serialize};

use super::config::{AutoTag, TimeStepRank};
use super::names;
use crate::error::{check_positive, check_range, ConfigError};
use crate::names::Scope;
use crate::params::{shape, Init, ParamSpec};

/// Upper bounds that keep every size product far inside `u64` (and refuse configs that are
/// typos rather than models).
pub(crate) const MAX_WIDTH: u64 = 1 << 20;
pub(crate) const MAX_LAYERS: u64 = 4096;
pub(crate) const MAX_STATE: u64 = 1 << 16;
pub(crate) const MAX_EXPAND: u64 = 64;
pub(crate) const MAX_KERNEL: u64 = 1024;

/// The hyper-parameters of a stack of Mamba blocks, with transformers' names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MambaBlockConfig {
    /// d: the residual stream width.
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    /// N: the SSM state per channel.
    #[serde(default = "d_state_size")]
    pub state_size: usize,
    /// E = expand * d.
    #[serde(default = "d_expand")]
    pub expand: usize,
    /// K: the causal depthwise convolution's width.
    #[serde(default = "d_conv_kernel")]
    pub conv_kernel: usize,
    #[serde(default)]
    pub use_bias: bool,
    #[serde(default = "d_true")]
    pub use_conv_bias: bool,
    /// R: a number or `"auto"` (= ceil(d / 16)).
    #[serde(default = "d_rank")]
    pub time_step_rank: TimeStepRank,
    #[serde(default = "d_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_true")]
    pub residual_in_fp32: bool,
    #[serde(default = "d_init_range")]
    pub initializer_range: f64,
    #[serde(default = "d_one")]
    pub time_step_scale: f64,
    #[serde(default = "d_dt_min")]
    pub time_step_min: f64,
    #[serde(default = "d_dt_max")]
    pub time_step_max: f64,
    #[serde(default = "d_init_scheme")]
    pub time_step_init_scheme: String,
    #[serde(default = "d_dt_floor")]
    pub time_step_floor: f64,
}

pub(crate) fn d_state_size() -> usize {
    16
}
pub(crate) fn d_expand() -> usize {
    2
}
pub(crate) fn d_conv_kernel() -> usize {
    4
}
pub(crate) fn d_true() -> bool {
    true
}
pub(crate) fn d_rank() -> TimeStepRank {
    TimeStepRank::Auto(AutoTag::Auto)
}
pub(crate) fn d_eps() -> f64 {
    1e-5
}
pub(crate) fn d_act() -> String {
    "silu".into()
}
pub(crate) fn d_init_range() -> f64 {
    0.1
}
pub(crate) fn d_one() -> f64 {
    1.0
}
pub(crate) fn d_dt_min() -> f64 {
    0.001
}
pub(crate) fn d_dt_max() -> f64 {
    0.1
}
pub(crate) fn d_init_scheme() -> String {
    "random".into()
}
pub(crate) fn d_dt_floor() -> f64 {
    1e-4
}

impl MambaBlockConfig {
    /// `num_hidden_layers` blocks of width `hidden_size`, transformers' defaults otherwise.
    pub fn new(hidden_size: usize, num_hidden_layers: usize) -> Self {
        MambaBlockConfig {
            hidden_size,
            num_hidden_layers,
            state_size: d_state_size(),
            expand: d_expand(),
            conv_kernel: d_conv_kernel(),
            use_bias: false,
            use_conv_bias: true,
            time_step_rank: d_rank(),
            layer_norm_epsilon: d_eps(),
            hidden_act: d_act(),
            residual_in_fp32: true,
            initializer_range: d_init_range(),
            time_step_scale: d_one(),
            time_step_min: d_dt_min(),
            time_step_max: d_dt_max(),
            time_step_init_scheme: d_init_scheme(),
            time_step_floor: d_dt_floor(),
        }
    }

    /// E = `expand * hidden_size` (saturating; [`Self::validate`] bounds both).
    pub fn intermediate(&self) -> usize {
        self.expand.saturating_mul(self.hidden_size)
    }

    /// R: `time_step_rank`, with `"auto"` resolved to `ceil(hidden_size / 16)`.
    pub fn dt_rank(&self) -> usize {
        match self.time_step_rank {
            TimeStepRank::Fixed(r) => r,
            TimeStepRank::Auto(_) => self.hidden_size.div_ceil(16),
        }
    }

    /// Checks every field; `prefix` is prepended to field names in errors
    /// (`"text_config."`, `"mamba."`).
    ///
    /// # Errors
    /// The first broken rule: a size of 0 or beyond tantra's bounds, an activation other than
    /// `silu`, a time-step scheme other than `random`/`constant`, a non-positive epsilon or
    /// time-step bound, `time_step_min > time_step_max`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let f = |name: &str| format!("{prefix}{name}");
        check_range(&f("hidden_size"), self.hidden_size, 1, MAX_WIDTH)?;
        check_range(
            &f("num_hidden_layers"),
            self.num_hidden_layers,
            1,
            MAX_LAYERS,
        )?;
        check_range(&f("state_size"), self.state_size, 1, MAX_STATE)?;
        check_range(&f("expand"), self.expand, 1, MAX_EXPAND)?;
        check_range(&f("conv_kernel"), self.conv_kernel, 1, MAX_KERNEL)?;
        check_range(&f("time_step_rank"), self.dt_rank(), 1, MAX_WIDTH)?;
        if self.hidden_act != "silu" {
            return Err(ConfigError::Unsupported {
                field: f("hidden_act"),
                value: self.hidden_act.clone(),
                expected: "\"silu\"",
            });
        }
        if self.time_step_init_scheme != "random" && self.time_step_init_scheme != "constant" {
            return Err(ConfigError::Unsupported {
                field: f("time_step_init_scheme"),
                value: self.time_step_init_scheme.clone(),
                expected: "\"random\" or \"constant\"",
            });
        }
        check_positive(&f("layer_norm_epsilon"), self.layer_norm_epsilon, true)?;
        check_positive(&f("initializer_range"), self.initializer_range, false)?;
        check_positive(&f("time_step_scale"), self.time_step_scale, false)?;
        check_positive(&f("time_step_min"), self.time_step_min, true)?;
        check_positive(&f("time_step_max"), self.time_step_max, true)?;
        check_positive(&f("time_step_floor"), self.time_step_floor, false)?;
        if self.time_step_min > self.time_step_max {
            return Err(ConfigError::TimeStepRange {
                field: f("time_step_min"),
                min: self.time_step_min,
                max: self.time_step_max,
            });
        }
        Ok(())
    }

    /// The parameters of the block at `layer` (`backbone.layers.{i}` in every family), named
    /// from the table in [`super::names`] (see the module docs for the list). Call on a
    /// validated config.
    pub fn layer_params(&self, layer: &Scope) -> Vec<ParamSpec> {
        let d = self.hidden_size;
        let e = self.intermediate();
        let n = self.state_size;
        let k = self.conv_kernel;
        let r = self.dt_rank();
        let std = self.initializer_range;
        let dt_init = r as f64;
        // R^-0.5 * scale, computed with sqrt (exact in IEEE 754).
        let dt_std = self.time_step_scale / dt_init.sqrt();
        let m = names::mixer(layer);
        let (in_proj, conv1d) = (m.pp(names::IN_PROJ), m.pp(names::CONV1D));
        let (dt_proj, out_proj) = (m.pp(names::DT_PROJ), m.pp(names::OUT_PROJ));
        let mut v = vec![ParamSpec::new(
            names::norm(layer).weight(),
            shape(&[d]),
            Init::Ones,
        )];
        v.push(ParamSpec::new(
            in_proj.weight(),
            shape(&[2 * e, d]),
            Init::Normal { std },
        ));
        if self.use_bias {
            v.push(ParamSpec::new(in_proj.bias(), shape(&[2 * e]), Init::Zeros));
        }
        v.push(ParamSpec::new(
            conv1d.weight(),
            shape(&[e, 1, k]),
            Init::KaimingUniform { fan_in: k as u64 },
        ));
        if self.use_conv_bias {
            v.push(ParamSpec::new(conv1d.bias(), shape(&[e]), Init::Zeros));
        }
        v.push(ParamSpec::new(
            m.pp(names::X_PROJ).weight(),
            shape(&[r + 2 * n, e]),
            Init::Normal { std },
        ));
        let dt_w = if self.time_step_init_scheme == "constant" {
            Init::Constant(dt_std)
        } else {
            Init::Uniform { bound: dt_std }
        };
        v.push(ParamSpec::new(dt_proj.weight(), shape(&[e, r]), dt_w));
        v.push(ParamSpec::new(
            dt_proj.bias(),
            shape(&[e]),
            Init::InverseSoftplusDt {
                min: self.time_step_min,
                max: self.time_step_max,
                floor: self.time_step_floor,
            },
        ));
        v.push(ParamSpec::new(
            m.name(names::A_LOG),
            shape(&[e, n]),
            Init::S4dRealLog,
        ));
        v.push(ParamSpec::new(m.name(names::D), shape(&[e]), Init::Ones));
        v.push(ParamSpec::new(
            out_proj.weight(),
            shape(&[d, e]),
            Init::KaimingUniform { fan_in: e as u64 },
        ));
        if self.use_bias {
            v.push(ParamSpec::new(out_proj.bias(), shape(&[d]), Init::Zeros));
        }
        v
    }

    /// The parameters of all blocks, `{layers}.0` to `{layers}.{L-1}` (`layers` =
    /// [`names::layers`] of the model's root in every family).
    pub fn all_layer_params(&self, layers: &Scope) -> Vec<ParamSpec> {
        (0..self.num_hidden_layers)
            .flat_map(|i| self.layer_params(&layers.pp(i)))
            .collect()
    }

    /// Parameters of one layer, by the formula (no list built):
    /// `2Ed + E(K+1) + E(R+2N) + (R+1)E + EN + E + Ed + d`, plus `2E + d` with `use_bias`,
    /// less `E` without `use_conv_bias`.
    pub fn params_per_layer(&self) -> u64 {
        let d = self.hidden_size as u64;
        let e = self.intermediate() as u64;
        let n = self.state_size as u64;
        let k = self.conv_kernel as u64;
        let r = self.dt_rank() as u64;
        let mut terms = vec![
            mul(&[2, e, d]),
            mul(&[e, k]),
            mul(&[e, r.saturating_add(n.saturating_mul(2))]),
            mul(&[r.saturating_add(1), e]),
            mul(&[e, n]),
            e,
            mul(&[e, d]),
            d,
        ];
        if self.use_conv_bias {
            terms.push(e);
        }
        if self.use_bias {
            terms.push(mul(&[2, e]));
            terms.push(d);
        }
        sum(&terms)
    }
}

/// Saturating product (counts of configs that fail validation saturate instead of wrapping).
pub(crate) fn mul(xs: &[u64]) -> u64 {
    xs.iter().fold(1u64, |a, &b| a.saturating_mul(b))
}

/// Saturating sum, for parameter counts (see [`mul`]).
pub(crate) fn sum(xs: &[u64]) -> u64 {
    xs.iter().fold(0u64, |a, &b| a.saturating_add(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::count;

    #[test]
    fn formula_matches_list() {
        let mut b = MambaBlockConfig::new(40, 2);
        for (bias, conv_bias) in [(false, true), (true, true), (false, false), (true, false)] {
            b.use_bias = bias;
            b.use_conv_bias = conv_bias;
            b.validate("").unwrap();
            let l = b.layer_params(&names::layers(&Scope::root()).pp(0));
            assert_eq!(count(&l).unwrap(), b.params_per_layer());
        }
    }

    #[test]
    fn reference_shapes() {
        let b = MambaBlockConfig {
            state_size: 8,
            time_step_rank: TimeStepRank::Fixed(2),
            ..MambaBlockConfig::new(32, 1)
        };
        let l = b.layer_params(&names::layers(&Scope::root()).pp(0));
        let find = |n: &str| {
            l.iter()
                .find(|p| p.name == format!("backbone.layers.0.{n}"))
                .unwrap()
                .shape
                .clone()
        };
        assert_eq!(find("mixer.in_proj.weight"), vec![128, 32]);
        assert_eq!(find("mixer.conv1d.weight"), vec![64, 1, 4]);
        assert_eq!(find("mixer.x_proj.weight"), vec![18, 64]);
        assert_eq!(find("mixer.dt_proj.weight"), vec![64, 2]);
        assert_eq!(find("mixer.A_log"), vec![64, 8]);
        assert_eq!(find("mixer.out_proj.weight"), vec![32, 64]);
    }

    #[test]
    fn validation_errors_name_the_field() {
        let mut b = MambaBlockConfig::new(0, 1);
        let e = b.validate("mamba.").unwrap_err();
        assert!(
            matches!(&e, ConfigError::OutOfRange { field, .. } if field == "mamba.hidden_size")
        );
        b.hidden_size = 8;
        b.hidden_act = "gelu".into();
        assert!(matches!(
            b.validate(""),
            Err(ConfigError::Unsupported { .. })
        ));
        b.hidden_act = "silu".into();
        b.time_step_min = 0.5;
        assert!(matches!(
            b.validate(""),
            Err(ConfigError::TimeStepRange { .. })
        ));
        b.time_step_min = f64::NAN;
        assert!(matches!(b.validate(""), Err(ConfigError::BadNumber { .. })));
        b.time_step_min = 0.001;
        b.time_step_init_scheme = "xavier".into();
        assert!(matches!(
            b.validate(""),
            Err(ConfigError::Unsupported { .. })
        ));
    }
}
