//! Reading the zip container of PyTorch archives, over a byte slice (a memory map).
//!
//! Why not the `zip` crate: torch writes archives that strict zip readers refuse (zero CRCs,
//! zero sizes in local headers with a data descriptor after the data), and a general reader
//! does far more than we want (compression, streaming, extraction to paths). A PyTorch archive
//! needs a small subset: stored entries under one top-level folder. This reader accepts exactly
//! that and refuses anything ambiguous, because an archive that two readers see differently is
//! how polyglot and smuggling attacks work:
//!
//! - the end records (EOCD, and the ZIP64 locator and record that torch always writes) must end
//!   the file, and the central directory must end where they begin;
//! - every count, offset and length is checked against the file size before anything is
//!   allocated or sliced;
//! - an entry's data starts after its LOCAL header's own name and extra field (torch pads with
//!   an `FB` extra field there only), and the local name must equal the central name;
//! - the first local header is at offset 0 and entries do not overlap;
//! - names are relative, `/`-separated, free of `..`, backslashes and NUL, unique, and all under
//!   one top-level prefix; they are never used as file system paths;
//! - stored entries only; encrypted entries are refused.
//!
//! CRCs are not checked: torch writes zero CRCs (`compute_crc32=False`) and ignores them on
//! load, and checking them would mean reading every byte of a multi-gigabyte file at open.
//!
//! [`records`] holds the record layouts (shared by [`read`](mod@read), [`write`](mod@write) and the tests' archives),
//! [`read`](mod@read) the parser, [`write`](mod@write) the writer of torch's layout.

mod error;
pub mod read;
pub mod records;
pub mod write;

pub use error::ZipError;
pub use read::{ZipArchive, ZipEntry};
