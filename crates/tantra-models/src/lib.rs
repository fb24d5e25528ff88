//! tantra-models: the Tantra model families.
