//! PyTorch `torch.save` files: zip archives (torch >= 1.6) and legacy files.
//!
//! Both are a pickle plus raw storages. The pickle is read by [`crate::pickle`], which executes
//! nothing and yields tensors as strided views of named storages; this module finds those
//! storages (zip records `data/<key>`, or the raw storages after the legacy pickles), checks
//! every view against the bytes that exist, and hands tensors out row-major: borrowed straight
//! from the memory map when a view is contiguous, materialized into an owned buffer when it is
//! not (transposes, slices, expanded stride-0 views). Nested checkpoints are flattened to
//! dotted names; non-tensor leaves become [`crate::Value`]s; the nesting itself is kept as a
//! [`crate::Structure`] so that writers can rebuild it.
//!
//! Files that hold something other than a state dict are refused with what they are:
//! TorchScript programs, torch.package archives, whole pickled modules.
//!
//! One job per file: [`read`](mod@read) opens files as tensor sources (with `legacy` for the old format),
//! [`scan`] reports on them for `tantra scan`, and writing is split into the `plan` of an archive
//! (pickle and sizes, every refusal up front), [`write`](mod@write) (streaming it out through
//! [`crate::zip`]'s writer) and [`WriteError`] for what a write refuses.

mod error;
mod legacy;
mod plan;
pub mod read;
pub mod scan;
pub mod write;
pub(crate) mod write_error;

pub use error::PytorchError;
pub use read::PytorchFile;
pub use scan::{scan_bytes, scan_file};
pub use write::write_pytorch;
pub use write_error::WriteError;
