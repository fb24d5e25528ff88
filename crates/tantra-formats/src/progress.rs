//! How long work reports progress without printing: libraries call a [`Progress`], the CLI
//! draws it as a bar.

/// Progress of long work, drawn by the caller (the CLI draws a bar; libraries never print).
pub trait Progress: Sync {
    /// Work named `label` of `total` units (bytes, unless said otherwise) starts.
    fn begin(&self, _label: &str, _total: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// The work ended.
    fn end(&self) {}
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}
