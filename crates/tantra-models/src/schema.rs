//! The architectures as [`ConfigSchema`]s, so that the store's [`ConfigManager`] validates
//! configs and checks weights against them without knowing any model.
//!
//! ```no_run
//! use tantra_store::{ConfigManager, WeightManager};
//! let wm = WeightManager::open("Model")?;
//! let cm = ConfigManager::new(wm, tantra_models::schema::schemas());
//! let problems = cm.validate("mamba", "sample_small")?;
//! # Ok::<(), tantra_store::StoreError>(())
//! ```
//!
//! [`ConfigManager`]: tantra_store::ConfigManager

use std::sync::Arc;

use serde_json::Value;
use tantra_store::{ConfigProblem, ConfigSchema, ExpectedTensor, Schemas};

use crate::arch::{Architecture, ModelConfig};

/// The schema of one architecture: a config is valid when
/// [`Architecture::config_from_json`] accepts it; the expected tensors are its parameters.
#[derive(Debug, Clone, Copy)]
pub struct ArchSchema(pub Architecture);

impl ConfigSchema for ArchSchema {
    fn model_type(&self) -> &str {
        self.0.name()
    }

    fn validate(&self, config: &Value) -> Vec<ConfigProblem> {
        match self.0.config_from_json(config) {
            Ok(_) => Vec::new(),
            Err(e) => vec![ConfigProblem::new(
                e.field().unwrap_or("(config)"),
                e.to_string(),
            )],
        }
    }

    fn expected_tensors(&self, config: &Value) -> Result<Vec<ExpectedTensor>, String> {
        let c = self.0.config_from_json(config).map_err(|e| e.to_string())?;
        let params = c.parameters().map_err(|e| e.to_string())?;
        Ok(params
            .into_iter()
            .map(|p| ExpectedTensor::new(p.name, p.shape))
            .collect())
    }

    /// The top-level fields of the architecture's config (those of [`Self::template`]).
    fn field_names(&self) -> Vec<String> {
        match self.template() {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The full preset with its optional fields filled in, so that every field appears at
    /// every level (`text_config.state_size`, `vision_config.patch_size`, `mamba.expand`).
    fn template(&self) -> Value {
        let mut c = self.0.preset(crate::Preset::Full);
        let fill = |m: &mut crate::mamba::MambaConfig| {
            m.bos_token_id.get_or_insert(0);
            m.eos_token_id.get_or_insert(0);
            m.pad_token_id.get_or_insert(0);
            let i = m.intermediate();
            m.intermediate_size.get_or_insert(i);
        };
        match &mut c {
            ModelConfig::Mamba(m) => fill(m),
            ModelConfig::MambaMultimodal(m) => fill(&mut m.text_config),
            ModelConfig::OcrNative(_) => {}
        }
        c.to_json()
    }
}

/// The schemas of all three architectures, for [`tantra_store::ConfigManager::new`].
pub fn schemas() -> Schemas {
    let mut s = Schemas::new();
    for a in Architecture::ALL {
        s.register(Arc::new(ArchSchema(a)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Preset;

    #[test]
    fn schemas_validate_and_list_tensors() {
        let s = schemas();
        assert_eq!(s.names(), vec!["mamba", "mamba_multimodal", "ocr_native"]);
        for a in Architecture::ALL {
            let schema = s.get(a.name()).unwrap();
            let cfg = a.preset(Preset::SampleSmall);
            let json = cfg.to_json();
            assert!(schema.validate(&json).is_empty());
            let t = schema.expected_tensors(&json).unwrap();
            let n: u64 = t.iter().map(|t| t.shape.iter().product::<u64>()).sum();
            assert_eq!(n, cfg.parameter_count());
        }
        let mut bad = Architecture::OcrNative
            .preset(Preset::SampleSmall)
            .to_json();
        bad["patch_width"] = 0.into();
        let p = s.get("ocr_native").unwrap().validate(&bad);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].what, "patch_width");
    }
}
