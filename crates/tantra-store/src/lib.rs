//! tantra-store: the weights root (`Model/`): WeightManager, ConfigManager, registry.
