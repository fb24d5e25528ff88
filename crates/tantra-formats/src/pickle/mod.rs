//! A pickle reader that executes nothing.
//!
//! A `.pt` file is a Python pickle, and unpickling with Python runs whatever callables the file
//! names. Blocklists (picklescan, fickling, modelscan) have been bypassed again and again, and
//! so has torch's own `weights_only` loader; so this module does not resolve anything at all.
//! It runs the pickle machine over an inert object model: a global is a token from a short
//! ALLOWLIST (`collections.OrderedDict`, torch's tensor rebuild functions, storage classes,
//! dtypes, a few data-only builtins and numpy reconstructors), and a call (`REDUCE`) is
//! interpreted only for those tokens, by code in this file. Every other global is refused at
//! the opcode that names it, before anything else happens.
//!
//! Nodes live in an arena ([`Pickle`]) and refer to each other by index: a memo `GET` shares a
//! node instead of copying it (no "billion laughs"), dropping the tree is flat (no recursive
//! `Drop` on deep nesting), and cycles are caught when the tree is walked. Every length field
//! is checked against the bytes that remain, and the node count, stack, marks, walk depth and
//! walk size are capped by [`Limits`].
//!
//! [`scan`] walks the opcodes of a pickle without building anything and reports its globals
//! and opcodes, for `tantra scan`.
//!
//! One idea per file: [`op`] decodes opcodes, `vm` runs them and `reduce` interprets calls,
//! `allowlist` says which globals exist, `object` is the inert tree they build, `flatten` turns
//! it into names and nesting, `scan` reports on a pickle without building it, and `write`
//! pickles what tantra writes into `.pt` files.

mod allowlist;
mod error;
mod flatten;
mod limits;
mod memo;
mod object;
pub mod op;
mod pyeq;
mod reduce;
mod scan;
mod vm;
pub(crate) mod write;

pub use allowlist::{classify_global, torch_dtype_name, Global, GlobalRefusal};
pub use error::PickleError;
pub use limits::{Limits, ParseOptions, PersistentIds};
pub use object::{
    BigInt, ElementType, Flat, Leaf, NdArray, NdData, NodeId, NumpyDtype, Object, Pickle,
    StorageKind, StorageRef, TensorRef,
};
pub use op::{opcode_name, OpCode};
pub use scan::{scan, scan_prefix, ScanReport, Verdict};
