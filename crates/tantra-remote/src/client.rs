//! The connection to one remote: an `object_store` S3 client, the key layout under the
//! remote's prefix, and the few requests the rest of the crate needs, each wrapped so that an
//! error names the remote, the key and what to do.
//!
//! The public operations of the crate are synchronous (the CLI and the store are); each
//! [`Client`] owns a small tokio runtime and blocks on it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjPath;
use object_store::{
    ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use crate::config::{credentials, RemoteDef};
use crate::error::{RemoteError, Result};

/// A connected remote.
pub struct Client {
    pub(crate) name: String,
    pub(crate) def: RemoteDef,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) rt: tokio::runtime::Runtime,
    /// Transfers in flight at once.
    pub(crate) jobs: usize,
}

impl Client {
    /// Connects to remote `name` (no request is sent yet).
    ///
    /// # Errors
    /// No credentials; an endpoint that is not a URL; the runtime cannot start.
    pub fn connect(name: &str, def: &RemoteDef) -> Result<Client> {
        let creds = credentials(name, def)?;
        let region = def
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        let retry = RetryConfig {
            max_retries: 6,
            retry_timeout: Duration::from_secs(120),
            ..Default::default()
        };
        let options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(300));
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&def.bucket)
            .with_region(region)
            .with_access_key_id(&creds.key_id)
            .with_secret_access_key(&creds.secret)
            // Conditional writes are not relied on (Garage ignores them); fail loudly if used.
            .with_conditional_put(S3ConditionalPut::Disabled)
            .with_disable_tagging(true)
            .with_retry(retry)
            .with_client_options(options);
        if let Some(t) = &creds.token {
            b = b.with_token(t);
        }
        if let Some(ep) = def
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        {
            b = b
                .with_allow_http(ep.starts_with("http://"))
                .with_endpoint(ep);
        }
        let store = b.build().map_err(|e| RemoteError::Credentials {
            remote: name.into(),
            detail: format!("cannot configure the S3 client: {e}"),
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| RemoteError::io("tokio runtime", e))?;
        let jobs = std::env::var("TANTRA_REMOTE_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8usize)
            .max(1);
        Ok(Client {
            name: name.into(),
            def: def.clone(),
            store: Arc::new(store),
            rt,
            jobs,
        })
    }

    /// The remote's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object key of `rel` under the remote's prefix.
    pub fn key(&self, rel: &str) -> String {
        if self.def.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.def.prefix)
        }
    }

    pub(crate) fn path(&self, rel: &str) -> ObjPath {
        ObjPath::from(self.key(rel))
    }

    pub(crate) fn err(&self, op: &'static str, rel: &str, e: object_store::Error) -> RemoteError {
        RemoteError::store(&self.name, op, &format!("{}/{}", self.def.url(), rel), e)
    }

    /// The object's size, or `None` when it does not exist.
    pub(crate) async fn head(&self, rel: &str) -> Result<Option<ObjectMeta>> {
        match self.store.head(&self.path(rel)).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("HEAD", rel, e)),
        }
    }

    /// The object's bytes, or `None` when it does not exist.
    pub(crate) async fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        let r = match self.store.get(&self.path(rel)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("GET", rel, e)),
        };
        r.bytes()
            .await
            .map(Some)
            .map_err(|e| self.err("GET", rel, e))
    }

    /// Writes an object in one request.
    pub(crate) async fn put(&self, rel: &str, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.path(rel), PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.err("PUT", rel, e))
    }

    pub(crate) async fn delete(&self, rel: &str) -> Result<()> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("DELETE", rel, e)),
        }
    }

    /// Every object under `rel` (a folder-like prefix), with its key relative to the remote's
    /// prefix.
    pub(crate) async fn list(&self, rel: &str) -> Result<Vec<(String, ObjectMeta)>> {
        let prefix = self.path(rel);
        let mut s = self.store.list(Some(&prefix));
        let mut out = Vec::new();
        let strip = if self.def.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.def.prefix)
        };
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| self.err("LIST", rel, e))?;
            let full = m.location.to_string();
            let rel = full.strip_prefix(&strip).unwrap_or(&full).to_string();
            out.push((rel, m));
        }
        Ok(out)
    }

    /// Blocks on `f` in this client's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}
