//! The errors of remote operations. Each names the remote, the object key (or local file) and
//! what to do, because a failed push or pull is usually fixed by the user (credentials, a
//! bucket, an endpoint), not by tantra.

use std::path::PathBuf;

use tantra_formats::FormatError;
use tantra_store::StoreError;

/// A result with a [`RemoteError`].
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// What went wrong talking to a remote.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// `remotes.json` in the weights root does not parse or breaks a rule.
    #[error("{path}: {detail}; fix or remove the file (`tantra remote remove NAME` rewrites it)")]
    Config { path: PathBuf, detail: String },

    /// No remote of that name is defined.
    #[error("no remote named {name:?} (defined: {known}); add one with `tantra remote add {name} s3://BUCKET`")]
    UnknownRemote { name: String, known: String },

    /// A remote of that name is defined already.
    #[error(
        "a remote named {name:?} exists already; remove it first (`tantra remote remove {name}`)"
    )]
    RemoteExists { name: String },

    /// An argument that is not what it should be (a URL, a name).
    #[error("{what} {value:?}: {detail}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        detail: String,
    },

    /// No credentials were found, or a profile could not be read.
    #[error("remote {remote:?}: {detail}")]
    Credentials { remote: String, detail: String },

    /// The object store refused or failed a request. `error` is displayed, not a source:
    /// object_store's errors print their own cause in their text (and return it as their
    /// source too), so walking its chain would print that cause twice; the hint comes last.
    /// The innermost cause is added when that text does not print it (reqwest stops at
    /// "error sending request"; the operating system's "Connection refused" lies below).
    #[error("remote {remote:?}, {op} {key}: {error}{}; {hint}", root_note(error))]
    Store {
        remote: String,
        key: String,
        op: &'static str,
        hint: String,
        error: Box<object_store::Error>,
    },

    /// A downloaded object is not what its name or the manifest says: it is never used.
    #[error("remote {remote:?}, {key}: the bytes have sha256 {actual} (and {bytes} bytes), not {expected}; the object is damaged and was not used: delete it on the remote and push the version again from a root that holds it")]
    DigestMismatch {
        remote: String,
        key: String,
        expected: String,
        actual: String,
        bytes: u64,
    },

    /// A manifest that does not parse or does not add up.
    #[error(
        "remote {remote:?}, {key}: {detail}; push the version again from a root that holds it"
    )]
    BadManifest {
        remote: String,
        key: String,
        detail: String,
    },

    /// The remote has no such version (or format).
    #[error("remote {remote:?} has no {what} ({key}); see `tantra ls --remote {remote}`")]
    NotOnRemote {
        remote: String,
        what: String,
        key: String,
    },

    /// The version name is taken on the remote by other weights: names are immutable.
    #[error("remote {remote:?}: {name} is taken by other weights (content {theirs}, yours is {ours}); push under another version name")]
    VersionTaken {
        remote: String,
        /// `model:version`.
        name: String,
        theirs: String,
        ours: String,
    },

    /// The local root holds other weights under the version name being pulled.
    #[error("{name} in the local root holds other weights (content {local}) than remote {remote:?} (content {remote_content}); pull into another root or remove the local version first")]
    LocalConflict {
        remote: String,
        /// `model:version`.
        name: String,
        local: String,
        remote_content: String,
    },

    /// Other pushers kept claiming the same name: no decision could be reached.
    #[error("remote {remote:?}: {name} is being pushed by someone else with other weights (claims under {key}); try again later")]
    Contended {
        remote: String,
        /// `model:version`.
        name: String,
        key: String,
    },

    /// A local file could not be read or written.
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Local(#[from] StoreError),

    #[error(transparent)]
    Format(#[from] FormatError),
}

impl RemoteError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RemoteError::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps an object store error with the remote, the key and a hint of what to do.
    pub(crate) fn store(
        remote: &str,
        op: &'static str,
        key: &str,
        source: object_store::Error,
    ) -> Self {
        let hint = hint_for(&source);
        RemoteError::Store {
            remote: remote.into(),
            key: key.into(),
            op,
            hint,
            error: Box::new(source),
        }
    }
}

/// ` (CAUSE)`, the innermost cause of `e`, when `e`'s own text does not already say it;
/// else nothing.
fn root_note(e: &object_store::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    let root = last.to_string();
    if std::ptr::addr_eq(last, e as &dyn std::error::Error) || e.to_string().contains(&root) {
        return String::new();
    }
    format!(" ({root})")
}

/// What the user should do about a store error, from its kind and text.
fn hint_for(e: &object_store::Error) -> String {
    use object_store::Error as E;
    let text = format!("{e:?}").to_ascii_lowercase();
    match e {
        E::Unauthenticated { .. } | E::PermissionDenied { .. } => {
            "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile in ~/.aws/credentials) and the key's rights on the bucket".into()
        }
        E::NotFound { .. } if text.contains("nosuchbucket") => {
            "the bucket does not exist: create it, or fix the URL with `tantra remote remove` + `tantra remote add`".into()
        }
        E::NotFound { .. } => "the object is missing on the remote".into(),
        _ if text.contains("nosuchbucket") => {
            "the bucket does not exist: create it, or fix the URL with `tantra remote remove` + `tantra remote add`".into()
        }
        _ if text.contains("invalidaccesskeyid")
            || text.contains("signaturedoesnotmatch")
            || text.contains("accessdenied")
            || text.contains("forbidden")
            || text.contains("403") =>
        {
            "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile in ~/.aws/credentials) and the key's rights on the bucket".into()
        }
        _ if text.contains("connect") || text.contains("dns") || text.contains("timed out") => {
            "the endpoint cannot be reached: check `--endpoint` of the remote (`tantra remote list`) and that the server runs".into()
        }
        _ if text.contains("authorizationheadermalformed") || text.contains("region") => {
            "the region does not match the server's: set it with `tantra remote add ... --region R`".into()
        }
        _ => "check the remote's URL and endpoint (`tantra remote list`) and try again; an interrupted transfer resumes".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What reqwest does: its text stops short of the operating system's reason.
    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Sending(#[source] std::io::Error);

    #[test]
    fn the_root_cause_is_added_once_when_the_text_lacks_it() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = object_store::Error::Generic {
            store: "S3",
            source: Box::new(Sending(refused)),
        };
        let e = RemoteError::store("r", "GET", "k", e);
        assert_eq!(
            tantra_formats::chain(&e).to_string(),
            "remote \"r\", GET k: Generic S3 error: error sending request (refused); the \
             endpoint cannot be reached: check `--endpoint` of the remote (`tantra remote \
             list`) and that the server runs"
        );
        // A cause the text already prints is not repeated.
        let e = object_store::Error::Generic {
            store: "S3",
            source: "bucket gone".into(),
        };
        let e = RemoteError::store("r", "GET", "k", e);
        assert_eq!(e.to_string().matches("bucket gone").count(), 1, "{e}");
    }
}
