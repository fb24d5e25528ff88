//! Seeded initialization as a lazily generating [`TensorSource`].
//!
//! Why lazy: writing a 241M-parameter model in three formats should not hold three copies, nor
//! even one. Each tensor's values depend only on `(seed, tensor name)` (see [`crate::rng`]), so
//! [`InitSource`] keeps nothing but the parameter list and regenerates a tensor whenever a
//! writer asks for it, in bounded chunks when the writer streams. Every format written from it
//! therefore holds the same bytes, and memory stays at one chunk, not one model.
//!
//! # The arithmetic of each [`Init`] rule
//! Each tensor draws from its own generator `Rng::for_tensor(seed, name)`, element by element
//! in row-major order; values are computed in `f64` and rounded once to `f32`.
//! - `Zeros`, `Ones`, `Constant(c)`: no draws.
//! - `Normal { std }`: `std * normal()` (polar method, both values of a pair in order).
//! - `Uniform { bound }`: `-bound + 2 * bound * uniform()`.
//! - `KaimingUniform { fan_in }`: `Uniform` with `bound = 1 / sqrt(fan_in)`.
//! - `S4dRealLog`: `ln(n + 1)` with `n` the index in the last dimension; no draws.
//! - `InverseSoftplusDt { min, max, floor }`: `dt = exp(uniform() * (ln max - ln min) + ln min)`,
//!   `dt = max(dt, floor)`, value `dt + ln(-expm1(-dt))`.
//!
//! `ln`, `exp` and `expm1` are [`crate::rng`]'s, not the platform's.

use std::borrow::Cow;
use std::collections::BTreeMap;

use tantra_formats::{DType, Format, FormatError, MemorySource, TensorInfo, TensorSource, Value};

use crate::error::ConfigError;
use crate::params::{Init, ParamSpec};
use crate::rng::{exp, expm1, ln, Rng};

/// Elements generated per chunk when a writer streams (1 MiB of `f32`).
const CHUNK_ELEMENTS: usize = 1 << 18;

/// The metadata key naming the seed, in safetensors files written from an [`InitSource`].
pub const SEED_METADATA_KEY: &str = "tantra.seed";

/// One tensor's generator: the rule, the stream, and how far it has got.
struct TensorGen {
    init: Init,
    rng: Rng,
    /// Size of the last dimension (for `S4dRealLog`).
    last_dim: u64,
    /// Elements produced so far.
    pos: u64,
    /// Derived constants of the rule.
    bound: f64,
    ln_min: f64,
    ln_span: f64,
}

impl TensorGen {
    fn new(spec: &ParamSpec, seed: u64) -> Self {
        let (bound, ln_min, ln_span) = match spec.init {
            Init::Uniform { bound } => (bound, 0.0, 0.0),
            Init::KaimingUniform { fan_in } => (1.0 / (fan_in.max(1) as f64).sqrt(), 0.0, 0.0),
            Init::InverseSoftplusDt { min, max, .. } => {
                let lo = ln(min);
                (0.0, lo, ln(max) - lo)
            }
            _ => (0.0, 0.0, 0.0),
        };
        TensorGen {
            init: spec.init,
            rng: Rng::for_tensor(seed, &spec.name),
            last_dim: spec.shape.last().copied().unwrap_or(1).max(1),
            pos: 0,
            bound,
            ln_min,
            ln_span,
        }
    }

    fn next(&mut self) -> f32 {
        let v = match self.init {
            Init::Zeros => 0.0,
            Init::Ones => 1.0,
            Init::Constant(c) => c,
            Init::Normal { std } => std * self.rng.normal(),
            Init::Uniform { .. } | Init::KaimingUniform { .. } => {
                -self.bound + 2.0 * self.bound * self.rng.uniform()
            }
            Init::S4dRealLog => ln((self.pos % self.last_dim) as f64 + 1.0),
            Init::InverseSoftplusDt { floor, .. } => {
                let dt = exp(self.rng.uniform() * self.ln_span + self.ln_min);
                let dt = if dt < floor { floor } else { dt };
                dt + ln(-expm1(-dt))
            }
        };
        self.pos += 1;
        v as f32
    }

    /// Appends the little-endian bytes of the next `n` values to `out`.
    fn fill_bytes(&mut self, n: usize, out: &mut Vec<u8>) {
        out.reserve(n * 4);
        for _ in 0..n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
    }
}

/// The initialized weights of a model, generated on demand (see the module docs).
#[derive(Debug, Clone)]
pub struct InitSource {
    specs: Vec<ParamSpec>,
    infos: Vec<TensorInfo>,
    seed: u64,
    metadata: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
}

impl InitSource {
    /// The source for `specs` under `seed`. Safetensors files written from it carry the
    /// metadata `{"format": "pt", "tantra.seed": "<seed>"}`: `format` is what transformers
    /// requires of a safetensors checkpoint.
    ///
    /// # Errors
    /// [`ConfigError::Overflow`] when a tensor's byte size does not fit `usize`.
    pub fn new(specs: Vec<ParamSpec>, seed: u64) -> Result<Self, ConfigError> {
        let mut infos = Vec::with_capacity(specs.len());
        for s in &specs {
            let info = TensorInfo::new(s.name.clone(), DType::F32, s.shape.clone());
            match info.byte_len() {
                Some(b) if usize::try_from(b).is_ok() => {}
                _ => {
                    return Err(ConfigError::Overflow {
                        field: s.name.clone(),
                    })
                }
            }
            infos.push(info);
        }
        let mut metadata = BTreeMap::new();
        metadata.insert("format".to_string(), "pt".to_string());
        metadata.insert(SEED_METADATA_KEY.to_string(), seed.to_string());
        Ok(InitSource {
            specs,
            infos,
            seed,
            metadata,
            values: BTreeMap::new(),
        })
    }

    /// The seed the values derive from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The parameter list, in file order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The values of tensor `index`.
    ///
    /// # Errors
    /// An index past the end.
    pub fn values_f32(&self, index: usize) -> Result<Vec<f32>, FormatError> {
        let (spec, n) = self.spec(index)?;
        let mut g = TensorGen::new(spec, self.seed);
        Ok((0..n).map(|_| g.next()).collect())
    }

    /// Generates every tensor into memory (for tests and small models).
    ///
    /// # Errors
    /// As [`MemorySource::push`]; none in practice.
    pub fn materialize(&self) -> Result<MemorySource, FormatError> {
        MemorySource::copy_from(self)
    }

    fn spec(&self, index: usize) -> Result<(&ParamSpec, usize), FormatError> {
        let spec = self
            .specs
            .get(index)
            .ok_or_else(|| FormatError::memory(format!("no tensor at index {index}")))?;
        let n = spec
            .numel()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| FormatError::memory(format!("tensor {:?} is too large", spec.name)))?;
        Ok((spec, n))
    }
}

impl TensorSource for InitSource {
    fn format(&self) -> Format {
        Format::Memory
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        let (spec, n) = self.spec(index)?;
        let mut g = TensorGen::new(spec, self.seed);
        let mut out = Vec::new();
        g.fill_bytes(n, &mut out);
        Ok(Cow::Owned(out))
    }

    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let (spec, n) = self.spec(index)?;
        let mut g = TensorGen::new(spec, self.seed);
        let mut buf = Vec::with_capacity(CHUNK_ELEMENTS.min(n) * 4);
        let mut left = n;
        while left > 0 {
            let k = left.min(CHUNK_ELEMENTS);
            buf.clear();
            g.fill_bytes(k, &mut buf);
            sink(&buf)?;
            left -= k;
        }
        Ok(())
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantra_formats::digest::tensor_digest;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("a", vec![3, 300_000], Init::Normal { std: 0.1 }),
            ParamSpec::new("A_log", vec![4, 5], Init::S4dRealLog),
            ParamSpec::new(
                "dt",
                vec![64],
                Init::InverseSoftplusDt {
                    min: 0.001,
                    max: 0.1,
                    floor: 1e-4,
                },
            ),
            ParamSpec::new("k", vec![10, 1, 4], Init::KaimingUniform { fan_in: 4 }),
        ]
    }

    #[test]
    fn streamed_equals_whole_and_is_seeded() {
        let s = InitSource::new(specs(), 42).unwrap();
        let whole = s.tensor_bytes(0).unwrap().into_owned();
        let mut streamed = Vec::new();
        let mut chunks = 0;
        s.stream_tensor(0, &mut |c| {
            chunks += 1;
            streamed.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert!(chunks > 1);
        assert_eq!(whole, streamed);
        let other = InitSource::new(specs(), 43).unwrap();
        assert_ne!(
            tensor_digest(&s, 0).unwrap(),
            tensor_digest(&other, 0).unwrap()
        );
        assert_eq!(
            tensor_digest(&s, 0).unwrap(),
            tensor_digest(&InitSource::new(specs(), 42).unwrap(), 0).unwrap()
        );
    }

    #[test]
    fn rules() {
        let s = InitSource::new(specs(), 1).unwrap();
        let a = s.values_f32(1).unwrap();
        assert_eq!(a[0], 0.0);
        assert_eq!(a[1], 2f32.ln());
        assert_eq!(a[5], 0.0);
        assert_eq!(a[9], 5f32.ln());
        // softplus(bias) recovers dt within [min, max].
        for b in s.values_f32(2).unwrap() {
            let dt = (b as f64).exp().ln_1p();
            assert!((0.00099..=0.1001).contains(&dt), "{dt}");
        }
        for k in s.values_f32(3).unwrap() {
            assert!(k.abs() <= 0.5);
        }
        let n = s.values_f32(0).unwrap();
        let var = n.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n.len() as f64;
        assert!((var.sqrt() - 0.1).abs() < 0.002, "{}", var.sqrt());
    }
}
