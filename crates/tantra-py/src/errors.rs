//! The Python exceptions, and the one place each Rust error becomes one.
//!
//! Python users catch by kind, so the crates' error enums map onto a small hierarchy under
//! `tantra.TantraError`: a pickle that would run code ([`UnsafePickleError`]), a file that breaks
//! its format's rules or is no weights at all ([`BadFileError`]), the weights root refusing or
//! failing ([`StoreError`]), a model configuration that is missing or invalid ([`ConfigError`]),
//! a remote refusing or failing ([`RemoteError`]).
//! The message is the error with its causes, each once ([`tantra_formats::chain`]): the same
//! text the CLI prints after `error:`, so that `str(e)` says why (`...: I/O error: No such file
//! or directory`), not only what failed. Failed reads and writes of the operating system stay
//! `TantraError` itself.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;
use tantra_formats::error::ErrorKind;
use tantra_formats::pickle::PickleError;
use tantra_formats::pytorch::PytorchError;
use tantra_formats::{chain, FormatError};
use tantra_remote::RemoteError as RemoteFailure;
use tantra_runtime::RuntimeError;
use tantra_store::StoreError as RootError;

create_exception!(
    tantra,
    TantraError,
    PyException,
    "Base of every error tantra raises; the message names the file and what is wrong."
);
create_exception!(
    tantra,
    UnsafePickleError,
    TantraError,
    "A pickle that names something able to run code (os.system, eval, a whole module, a TorchScript program); nothing was executed."
);
create_exception!(
    tantra,
    BadFileError,
    TantraError,
    "A file that is not weights, breaks a rule of its format, or holds a tensor kind tantra does not read."
);
create_exception!(
    tantra,
    StoreError,
    TantraError,
    "The weights root refused or failed: unknown model or version, a file changed since it was registered, a held lock."
);
create_exception!(
    tantra,
    RemoteError,
    TantraError,
    "A remote refused or failed: unknown remote, bad credentials, a missing bucket or version, an unreachable endpoint, a damaged object (never used)."
);
create_exception!(
    tantra,
    ConfigError,
    TantraError,
    "A model configuration that is missing, invalid, or does not match the weights."
);

/// Whether a pickle error is a refusal on safety grounds (rather than a malformed pickle).
fn unsafe_pickle(e: &PickleError) -> bool {
    matches!(
        e,
        PickleError::ForbiddenGlobal { .. }
            | PickleError::WholeModule { .. }
            | PickleError::DottedName { .. }
            | PickleError::ExtensionRegistry { .. }
            | PickleError::InstObj { .. }
            | PickleError::NotCallable { .. }
    )
}

/// An exception's message: the error and each of its causes once.
fn message(e: &dyn std::error::Error) -> String {
    chain(e).to_string()
}

/// The exception for an error from reading or writing a weight file.
pub fn format_err(e: FormatError) -> PyErr {
    let msg = message(&e);
    match &e.kind {
        ErrorKind::Pickle(p) if unsafe_pickle(p) => UnsafePickleError::new_err(msg),
        ErrorKind::Pytorch(PytorchError::Pickle { error, .. }) if unsafe_pickle(error) => {
            UnsafePickleError::new_err(msg)
        }
        ErrorKind::Pytorch(PytorchError::TorchScript | PytorchError::TorchPackage) => {
            UnsafePickleError::new_err(msg)
        }
        ErrorKind::Io(_) | ErrorKind::Exists => TantraError::new_err(msg),
        _ => BadFileError::new_err(msg),
    }
}

/// The exception for an error from the weights root.
pub fn store_err(e: RootError) -> PyErr {
    match e {
        RootError::Format(f) => format_err(f),
        RootError::UnknownConfig { .. }
        | RootError::ConfigExists { .. }
        | RootError::ConfigInvalid { .. }
        | RootError::NoSchema { .. }
        | RootError::NoConfig { .. } => ConfigError::new_err(message(&e)),
        other => StoreError::new_err(message(&other)),
    }
}

/// The exception for an error from loading or running a model.
pub fn runtime_err(e: RuntimeError) -> PyErr {
    match e {
        RuntimeError::Format(f) => format_err(f),
        RuntimeError::Store(s) => store_err(s),
        other => TantraError::new_err(message(&other)),
    }
}

/// The exception for an error from a remote: the weights root's and the files' own errors keep
/// their kinds.
pub fn remote_err(e: RemoteFailure) -> PyErr {
    match e {
        RemoteFailure::Local(s) => store_err(s),
        RemoteFailure::Format(f) => format_err(f),
        other => RemoteError::new_err(message(&other)),
    }
}
