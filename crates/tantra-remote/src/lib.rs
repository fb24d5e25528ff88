//! tantra-remote: push and pull versions of a weights root to an S3-compatible object store,
//! each distinct tensor stored once, every byte verified.
//!
//! Other tools move whole files, so a second format of the same weights, or a fine-tune that
//! changed a few tensors, goes up again in full. tantra knows each tensor's digest and has
//! deterministic writers, so a remote here holds tensor blobs named by their sha256 and small
//! manifests that say how to rebuild each file byte for byte ([`manifest`] has the layout,
//! `docs/remote.md` the whole design). A file tantra's writer does not reproduce (a `.pt`
//! written by torch) also goes up whole, so a pull always gives back the identical bytes.
//!
//! - [`config`]: remote definitions (`remotes.json` in the root) and credentials (environment,
//!   `~/.aws/credentials`).
//! - [`client`]: the `object_store` connection and error wrapping.
//! - [`push`], [`pull`], [`listing`], [`gc`]: the operations; [`claims`]: binding a version
//!   name on a store without conditional writes.
//!
//! ```no_run
//! use tantra_remote::{config::Remotes, client::Client, push::{push, PushOptions}};
//! use tantra_store::WeightManager;
//! let wm = WeightManager::open("Model")?;
//! let (name, def) = Remotes::load(wm.root())?.get(Some("team"))?;
//! let client = Client::connect(&name, &def)?;
//! let r = push(&client, &wm, "mamba", Some("full"), &PushOptions::default(), &tantra_formats::NoProgress)?;
//! println!("sent {} of {} bytes", r.bytes_uploaded, r.bytes_referenced);
//! # Ok::<(), tantra_remote::RemoteError>(())
//! ```

pub mod claims;
pub mod client;
pub mod config;
pub mod error;
pub mod gc;
pub mod listing;
pub mod manifest;
pub mod pull;
pub mod push;
mod source;
mod transfer;

pub use error::{RemoteError, Result};
