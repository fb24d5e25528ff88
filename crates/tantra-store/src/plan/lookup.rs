//! What a registration asks of the whole registry, answered from one walk over it.
//!
//! Planning a registration asks the registry several questions that each need every version:
//! who owns the file names the new files may take (the canonical name, then each alternate),
//! which registered file already holds the new bytes (to link it instead of storing them
//! twice), and which versions hold the same weights (the duplicate warning). Asked one by one
//! they cost a walk over every version each, and made `register` linear in the registry
//! several times over. [`Lookup`] walks once, keeping only what the request can ask about:
//! the files whose names start with one of the request's canonical stems, and the files with
//! one of its digests. (Hash maps of every path and digest cost more to build than the walks
//! they save: measured with `examples/register_bench.rs`.)

use crate::names::weight_file_name;
use crate::plan::RegisterRequest;
use crate::registry::Registry;

/// `(model, version, format)` of a registered file.
pub(crate) type Owner<'a> = (&'a str, &'a str, &'a str);

/// The answers to a registration's questions about the registry.
pub(crate) struct Lookup<'a> {
    reg: &'a Registry,
    /// Name stems (`weights/<model>_<version>_<format>`) of the files the request registers.
    stems: Vec<String>,
    /// Registered files whose path starts with one of `stems`: `(path, owner)`.
    near: Vec<(&'a str, Owner<'a>)>,
    /// Registered files whose `(sha256, bytes)` is one of the request's, in registry order:
    /// `(sha256, bytes, MODEL, VERSION, path)`.
    same_bytes: Vec<(&'a str, u64, &'a str, &'a str, &'a str)>,
    /// Every version holding the request's content, in registry order.
    same_content: Vec<(&'a str, &'a str)>,
}

impl<'a> Lookup<'a> {
    /// Walks `reg` once for the questions planning `req` asks.
    pub(crate) fn new(reg: &'a Registry, req: &RegisterRequest) -> Lookup<'a> {
        let stems: Vec<String> = req
            .files
            .iter()
            .map(|f| {
                let name = weight_file_name(&req.model, &req.version, f.format);
                let stem = name
                    .strip_suffix(f.format.extension())
                    .and_then(|s| s.strip_suffix('.'))
                    .unwrap_or(&name);
                format!("weights/{stem}")
            })
            .collect();
        let (mut near, mut same_bytes, mut same_content) = (Vec::new(), Vec::new(), Vec::new());
        for (m, model) in &reg.models {
            for (v, ver) in &model.versions {
                if ver.content == req.content {
                    same_content.push((m.as_str(), v.as_str()));
                }
                for (f, r) in &ver.formats {
                    if stems.iter().any(|s| r.path.starts_with(s.as_str())) {
                        near.push((r.path.as_str(), (m.as_str(), v.as_str(), f.as_str())));
                    }
                    if req
                        .files
                        .iter()
                        .any(|n| n.bytes == r.bytes && n.sha256 == r.sha256)
                    {
                        same_bytes.push((
                            r.sha256.as_str(),
                            r.bytes,
                            m.as_str(),
                            v.as_str(),
                            r.path.as_str(),
                        ));
                    }
                }
            }
        }
        Lookup {
            reg,
            stems,
            near,
            same_bytes,
            same_content,
        }
    }

    /// Who owns the file at relative path `rel` (as [`Registry::owner_of`]; a name outside
    /// the request's stems is looked up by a walk).
    pub(crate) fn owner_of(&self, rel: &str) -> Option<Owner<'a>> {
        if !self.stems.iter().any(|s| rel.starts_with(s.as_str())) {
            return self.reg.owner_of(rel);
        }
        self.near.iter().find(|(p, _)| *p == rel).map(|(_, o)| *o)
    }

    /// The first registered file holding exactly these bytes: `(MODEL:VERSION, rel)` (one
    /// of the request's files).
    pub(crate) fn same_bytes(&self, sha256: &str, bytes: u64) -> Option<(String, String)> {
        self.same_bytes
            .iter()
            .find(|(s, b, ..)| *s == sha256 && *b == bytes)
            .map(|(_, _, m, v, path)| (format!("{m}:{v}"), (*path).to_string()))
    }

    /// The versions holding the request's content, but `(model, version)`.
    pub(crate) fn same_content(&self, model: &str, version: &str) -> Vec<String> {
        self.same_content
            .iter()
            .filter(|(m, v)| (*m, *v) != (model, version))
            .map(|(m, v)| format!("{m}:{v}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{FormatRecord, ModelRecord, Source, VersionRecord};
    use std::sync::Arc;
    use tantra_formats::OutputFormat;

    fn version(content: &str, files: &[(&str, &str, &str)]) -> Arc<VersionRecord> {
        Arc::new(VersionRecord {
            created: "2025-01-01T00:00:00.000000Z".into(),
            parameters: 1,
            tensors: 1,
            dtypes: vec!["F32".into()],
            content: content.into(),
            tags: vec![],
            note: None,
            config: None,
            formats: files
                .iter()
                .map(|(f, path, sha)| {
                    (
                        f.to_string(),
                        FormatRecord {
                            path: path.to_string(),
                            bytes: 8,
                            sha256: sha.to_string(),
                            created: "2025-01-01T00:00:00.000000Z".into(),
                            source: Source::Generated { by: None },
                            extra: Default::default(),
                        },
                    )
                })
                .collect(),
            extra: Default::default(),
        })
    }

    fn request(
        model: &str,
        version: &str,
        content: &str,
        files: &[(&str, u64)],
    ) -> RegisterRequest {
        RegisterRequest {
            model: model.into(),
            version: version.into(),
            content: content.into(),
            parameters: 1,
            tensors: 1,
            dtypes: vec![],
            files: files
                .iter()
                .map(|(sha, bytes)| crate::plan::NewFile {
                    format: OutputFormat::Pt,
                    sha256: sha.to_string(),
                    bytes: *bytes,
                    source: Source::Generated { by: None },
                    staged: true,
                })
                .collect(),
            tags: vec![],
            note: None,
            config: None,
            make_default: false,
            force: false,
            now: String::new(),
            reason: String::new(),
        }
    }

    /// Every answer is the one the walk-per-question functions give, for names inside the
    /// request's stems and outside them.
    #[test]
    fn answers_as_a_walk_would() {
        let mut reg = Registry::default();
        let mut a = ModelRecord::default();
        a.versions.insert(
            "v1".into(),
            version("c1", &[("pt", "weights/a_v1_pt.pt", "s1")]),
        );
        a.versions.insert(
            "v10".into(),
            version("c3", &[("pt", "weights/a_v1_pt.1.pt", "s3")]),
        );
        a.versions.insert(
            "v2".into(),
            version(
                "c2",
                &[
                    ("pt", "weights/a_v2_pt.pt", "s2"),
                    ("safetensors", "weights/a_v2_safetensors.safetensors", "s1"),
                ],
            ),
        );
        reg.models.insert("a".into(), a);
        let mut b = ModelRecord::default();
        b.versions.insert(
            "x".into(),
            version("c1", &[("pt", "weights/b_x_pt.pt", "s1")]),
        );
        reg.models.insert("b".into(), b);
        let req = request("a", "v1", "c1", &[("s1", 8), ("s2", 9)]);
        let l = Lookup::new(&reg, &req);
        for rel in [
            "weights/a_v1_pt.pt",
            "weights/a_v1_pt.1.pt",
            "weights/a_v1_pt.2.pt",
            "weights/a_v2_pt.pt",
            "weights/a_v2_safetensors.safetensors",
            "weights/b_x_pt.pt",
            "weights/none.pt",
        ] {
            assert_eq!(l.owner_of(rel), reg.owner_of(rel), "{rel}");
        }
        assert_eq!(l.owner_of("weights/a_v1_pt.1.pt"), Some(("a", "v10", "pt")));
        // The first file in registry order with these bytes; sizes must match too.
        assert_eq!(
            l.same_bytes("s1", 8),
            Some(("a:v1".to_string(), "weights/a_v1_pt.pt".to_string()))
        );
        assert_eq!(l.same_bytes("s2", 9), None);
        assert_eq!(l.same_content("a", "v1"), vec!["b:x".to_string()]);
        assert_eq!(l.same_content("a", "v9"), vec!["a:v1", "b:x"]);
    }
}
