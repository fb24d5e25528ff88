//! Remote definitions and credentials.
//!
//! Definitions (name, bucket, prefix, endpoint, region, profile) live in `remotes.json` beside
//! the registry, written atomically, so that every command run on a root sees the same remotes.
//! Credentials never go there: they come, at connect time, from the usual AWS environment
//! variables or, failing those, from a profile of `~/.aws/credentials` (the file the AWS CLI
//! writes). `object_store` reads only the variables, so the profile file is parsed here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{RemoteError, Result};

/// The file under the weights root that holds the remote definitions.
pub const REMOTES_FILE: &str = "remotes.json";

/// One remote: where its objects live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteDef {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (empty: the bucket's root).
    #[serde(default)]
    pub prefix: String,
    /// S3 endpoint (`http://127.0.0.1:3900`); AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The `~/.aws/credentials` profile to use when no key is in the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl RemoteDef {
    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// Parses `s3://BUCKET[/PREFIX]`.
    ///
    /// # Errors
    /// Another scheme, an empty or invalid bucket name, an empty prefix segment.
    pub fn from_url(url: &str) -> Result<RemoteDef> {
        let bad = |detail: &str| RemoteError::InvalidArgument {
            what: "remote URL",
            value: url.into(),
            detail: detail.into(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected s3://BUCKET[/PREFIX]"))?;
        let rest = rest.trim_end_matches('/');
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(bad(
                "the bucket name must be 3-63 characters of a-z, 0-9, '-' and '.'",
            ));
        }
        if prefix.split('/').any(|s| s.is_empty()) && !prefix.is_empty() {
            return Err(bad("the prefix has an empty segment ('//')"));
        }
        Ok(RemoteDef {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: None,
            region: None,
            profile: None,
        })
    }
}

/// Every remote of a root, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remotes {
    #[serde(default)]
    pub remotes: BTreeMap<String, RemoteDef>,
    /// The remote used when a command names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

impl Remotes {
    /// The path of the definitions under `root`.
    pub fn path(root: &Path) -> PathBuf {
        root.join(REMOTES_FILE)
    }

    /// Reads the definitions of `root` (none when the file is missing).
    ///
    /// # Errors
    /// A file that cannot be read or does not parse.
    pub fn load(root: &Path) -> Result<Remotes> {
        let path = Self::path(root);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| RemoteError::Config {
                path,
                detail: format!("not a remotes file: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Remotes::default()),
            Err(e) => Err(RemoteError::io(path, e)),
        }
    }

    /// Writes the definitions atomically (temporary file, fsync, rename).
    ///
    /// # Errors
    /// The root cannot be written.
    pub fn save(&self, root: &Path) -> Result<()> {
        // Folders made here are synced in their parents (the store's rule for what it creates),
        // so that the definitions survive a crash with the root.
        let mut missing: Vec<&Path> = root
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.is_dir())
            .collect();
        std::fs::create_dir_all(root).map_err(|e| RemoteError::io(root, e))?;
        missing.reverse();
        for dir in missing {
            let parent = tantra_formats::fsutil::parent_dir(dir);
            tantra_formats::fsutil::sync_dir(&parent).map_err(|e| RemoteError::io(&parent, e))?;
        }
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| RemoteError::Config {
            path: Self::path(root),
            detail: e.to_string(),
        })?;
        bytes.push(b'\n');
        tantra_formats::fsutil::atomic_write_bytes(&Self::path(root), &bytes, true)?;
        Ok(())
    }

    /// The remote called `name`, or the default (or only) one when `name` is `None`.
    ///
    /// # Errors
    /// No such remote; no name given and no default among several.
    pub fn get(&self, name: Option<&str>) -> Result<(String, RemoteDef)> {
        let name = match name {
            Some(n) => n.to_string(),
            None => match (&self.default, self.remotes.len()) {
                (Some(d), _) => d.clone(),
                (None, 1) => self.remotes.keys().next().cloned().unwrap_or_default(),
                _ => {
                    return Err(RemoteError::UnknownRemote {
                        name: "(none given)".into(),
                        known: self.known(),
                    })
                }
            },
        };
        match self.remotes.get(&name) {
            Some(d) => Ok((name, d.clone())),
            None => Err(RemoteError::UnknownRemote {
                name,
                known: self.known(),
            }),
        }
    }

    /// Defines remote `name` (the default one too when `make_default`).
    ///
    /// # Errors
    /// A name outside `[A-Za-z0-9._-]`; an endpoint that is not an http(s) URL; a remote of
    /// that name exists already.
    pub fn add(&mut self, name: &str, def: RemoteDef, make_default: bool) -> Result<()> {
        tantra_store::validate_name("remote", name)?;
        if let Some(ep) = &def.endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(RemoteError::InvalidArgument {
                    what: "endpoint",
                    value: ep.clone(),
                    detail: "expected an http:// or https:// URL".into(),
                });
            }
        }
        if self.remotes.contains_key(name) {
            return Err(RemoteError::RemoteExists { name: name.into() });
        }
        self.remotes.insert(name.into(), def);
        if make_default {
            self.default = Some(name.into());
        }
        Ok(())
    }

    /// Forgets remote `name` (and that it was the default); its objects are not touched.
    ///
    /// # Errors
    /// No remote of that name.
    pub fn remove(&mut self, name: &str) -> Result<RemoteDef> {
        let Some(def) = self.remotes.remove(name) else {
            return Err(RemoteError::UnknownRemote {
                name: name.into(),
                known: self.known(),
            });
        };
        if self.default.as_deref() == Some(name) {
            self.default = None;
        }
        Ok(def)
    }

    fn known(&self) -> String {
        if self.remotes.is_empty() {
            "none".into()
        } else {
            self.remotes.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// An access key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
    /// Where they came from (for messages): `environment` or `profile P of FILE`.
    pub from: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} from {})", self.key_id, self.from)
    }
}

/// The credentials for `remote`: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+
/// `AWS_SESSION_TOKEN`) when set; otherwise the profile (`def.profile`, else `AWS_PROFILE`,
/// else `default`) of `AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`.
///
/// # Errors
/// Neither the variables nor the profile exist; a profile without both keys.
pub fn credentials(remote: &str, def: &RemoteDef) -> Result<Credentials> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(key_id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials {
            key_id,
            secret,
            token: env("AWS_SESSION_TOKEN"),
            from: "environment".into(),
        });
    }
    let profile = def
        .profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws").join("credentials")));
    let none = |detail: String| RemoteError::Credentials {
        remote: remote.into(),
        detail,
    };
    let Some(file) = file else {
        return Err(none("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write ~/.aws/credentials".into()));
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(none(format!(
                "no credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set and {} does not exist",
                file.display()
            )))
        }
        Err(e) => return Err(RemoteError::io(file, e)),
    };
    let sections = parse_ini(&text);
    let Some(sec) = sections.get(&profile) else {
        return Err(none(format!(
            "no credentials: the environment has none and {} has no [{profile}] profile (it has: {})",
            file.display(),
            sections.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    match (
        sec.get("aws_access_key_id"),
        sec.get("aws_secret_access_key"),
    ) {
        (Some(k), Some(s)) => Ok(Credentials {
            key_id: k.clone(),
            secret: s.clone(),
            token: sec.get("aws_session_token").cloned(),
            from: format!("profile {profile} of {}", file.display()),
        }),
        _ => Err(none(format!(
            "profile [{profile}] of {} lacks aws_access_key_id or aws_secret_access_key",
            file.display()
        ))),
    }
}

/// The sections of an INI file (the AWS credentials format): `[name]` headers, `key = value`
/// lines, `#` and `;` comments. Keys are lowercased; a `profile ` prefix in a header (as in
/// `~/.aws/config`) is dropped.
pub fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let h = h.trim();
            let h = h.strip_prefix("profile ").unwrap_or(h).trim();
            current = Some(h.to_string());
            out.entry(h.to_string()).or_default();
            continue;
        }
        if let (Some(sec), Some((k, v))) = (&current, line.split_once('=')) {
            out.entry(sec.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print() {
        let d = RemoteDef::from_url("s3://tantra-test/team/a/").unwrap();
        assert_eq!(
            (d.bucket.as_str(), d.prefix.as_str()),
            ("tantra-test", "team/a")
        );
        assert_eq!(d.url(), "s3://tantra-test/team/a");
        assert_eq!(RemoteDef::from_url("s3://abc").unwrap().prefix, "");
        for bad in ["http://x/y", "s3://", "s3://A_B", "s3://ok-bucket/a//b"] {
            assert!(RemoteDef::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ini_profiles() {
        let s = parse_ini(
            "# c\n[default]\naws_access_key_id = AK\nAWS_SECRET_ACCESS_KEY=SK\n\n[profile ci]\naws_access_key_id=K2\n",
        );
        assert_eq!(s["default"]["aws_access_key_id"], "AK");
        assert_eq!(s["default"]["aws_secret_access_key"], "SK");
        assert_eq!(s["ci"]["aws_access_key_id"], "K2");
    }
}
