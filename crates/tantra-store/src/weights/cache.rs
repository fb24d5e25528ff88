//! The last registry a [`super::WeightManager`] read or published, and which file it was.
//!
//! A registry of 10,000 versions is about 4 MB of JSON and takes tens of milliseconds to parse.
//! A long-lived handle (a training loop registering checkpoints, the Python package, a server)
//! would parse it again for every call; with this cache it parses it once and then only looks
//! at the file's identity. Every publish replaces the registry by a rename (a new inode), and a
//! hand edit changes its size or modification time, so an unchanged identity means unchanged
//! bytes (an in-place edit that keeps the size within one tick of the file system's clock,
//! a few milliseconds, would be missed: the store itself never writes in place). Clones of a handle share the cache; a clone of the cached registry is cheap because
//! version records are shared (`Arc`).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::registry::{ModelRecord, Registry, VersionRecord};

/// Which file a registry was read from: device, inode, size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileId {
    pub(crate) fn of(m: &Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// One remembered registry, and the JSON of its records.
#[derive(Default)]
pub(crate) struct RegistryCache {
    slot: Mutex<Option<(FileId, Arc<Registry>)>>,
    /// The file of the registry just published, until its owner adopts it
    /// ([`RegistryCache::adopt`]): publishing takes no copy of the registry.
    pending: Mutex<Option<FileId>>,
    pub(crate) fragments: Fragments,
}

impl std::fmt::Debug for RegistryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryCache")
    }
}

impl RegistryCache {
    /// The remembered registry if it was read from the file `id` names.
    pub(crate) fn get(&self, id: FileId) -> Option<Arc<Registry>> {
        let slot = self.slot.lock().ok()?;
        match &*slot {
            Some((have, reg)) if *have == id => Some(Arc::clone(reg)),
            _ => None,
        }
    }

    pub(crate) fn put(&self, id: FileId, reg: Arc<Registry>) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some((id, reg));
        }
    }

    /// A registry was just renamed into place as the file `id`: the remembered one is
    /// stale, and the published one is remembered once its owner hands it over.
    pub(crate) fn published(&self, id: FileId) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = None;
        }
        if let Ok(mut p) = self.pending.lock() {
            *p = Some(id);
        }
    }

    /// Remembers `reg`, the registry of the last [`RegistryCache::published`] file. Does
    /// nothing when nothing was published since, or a later write failed.
    pub(crate) fn adopt(&self, reg: &Arc<Registry>) {
        let id = self.pending.lock().ok().and_then(|mut p| p.take());
        if let Some(id) = id {
            self.put(id, Arc::clone(reg));
        }
    }

    /// Forgets everything (a write whose outcome is unknown).
    pub(crate) fn clear(&self) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = None;
        }
        if let Ok(mut p) = self.pending.lock() {
            *p = None;
        }
        self.fragments.clear();
    }
}

/// The JSON of every version record of the last published registry, by record.
///
/// A registry of 10,000 versions serializes to 4 MB, most of it records that a change did not
/// touch. Records are shared (`Arc`) between a registry and the plans made from it, and a
/// changed record is a new allocation (`Arc::make_mut` copies a shared record), so a record
/// whose allocation is the same as last time has the same JSON. Holding a strong reference to
/// each remembered record keeps its allocation from being reused by another record.
#[derive(Default)]
pub(crate) struct Fragments(Mutex<FragmentMap>);

#[derive(Default)]
struct FragmentMap {
    /// By record allocation: the record (held, so the allocation is not reused), its JSON,
    /// and the round that last used it.
    map: HashMap<usize, Fragment, BuildPtrHasher>,
    round: u64,
    /// Length of the last output, to size the next one.
    last_len: usize,
}

type Fragment = (Arc<VersionRecord>, Box<RawValue>, u64);

/// Hashes an allocation's address with one multiplication: the keys are distinct pointers
/// chosen by the allocator, not input an attacker controls, and SipHash on 10,000 of them per
/// publish is time the registry write does not need.
#[derive(Default)]
struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // Allocations are 8- or 16-byte aligned: the low bits carry nothing.
        self.0 = ((n as u64) >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type BuildPtrHasher = std::hash::BuildHasherDefault<PtrHasher>;

impl std::fmt::Debug for Fragments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fragments")
    }
}

fn key(rec: &Arc<VersionRecord>) -> usize {
    Arc::as_ptr(rec) as usize
}

impl Fragments {
    /// `reg` as JSON, with the records seen in the last call reused; remembers this call's.
    /// The bytes are exactly those of `serde_json::to_vec(reg)`.
    pub(crate) fn to_json(&self, reg: &Registry) -> serde_json::Result<Vec<u8>> {
        let Ok(mut slot) = self.0.lock() else {
            return serde_json::to_vec(reg);
        };
        let f = &mut *slot;
        f.round += 1;
        let round = f.round;
        for model in reg.models.values() {
            for rec in model.versions.values() {
                match f.map.get_mut(&key(rec)) {
                    Some((had, _, used)) if Arc::ptr_eq(had, rec) => *used = round,
                    _ => {
                        let raw = serde_json::value::to_raw_value(&**rec)?;
                        f.map.insert(key(rec), (Arc::clone(rec), raw, round));
                    }
                }
            }
        }
        // Records no longer in the registry are let go (and their allocations with them).
        f.map.retain(|_, (_, _, used)| *used == round);
        let mut out = Vec::with_capacity(f.last_len + 4096);
        serde_json::to_writer(
            &mut out,
            &WithFragments {
                reg,
                fragments: &f.map,
            },
        )?;
        f.last_len = out.len();
        Ok(out)
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut slot) = self.0.lock() {
            slot.map.clear();
        }
    }
}

/// [`Registry`]'s own shape (the derived `Serialize`: fields in order, `extra` flattened, a
/// missing default left out), with version records taken from `fragments`.
struct WithFragments<'a> {
    reg: &'a Registry,
    fragments: &'a HashMap<usize, Fragment, BuildPtrHasher>,
}

struct ModelOut<'a> {
    model: &'a ModelRecord,
    fragments: &'a HashMap<usize, Fragment, BuildPtrHasher>,
}

struct VersionsOut<'a> {
    versions: &'a crate::registry::Versions,
    fragments: &'a HashMap<usize, Fragment, BuildPtrHasher>,
}

struct ModelsOut<'a> {
    reg: &'a Registry,
    fragments: &'a HashMap<usize, Fragment, BuildPtrHasher>,
}

impl Serialize for WithFragments<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("schema", &self.reg.schema)?;
        m.serialize_entry("generation", &self.reg.generation)?;
        m.serialize_entry(
            "models",
            &ModelsOut {
                reg: self.reg,
                fragments: self.fragments,
            },
        )?;
        for (k, v) in &self.reg.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for ModelsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.reg.models.len()))?;
        for (name, model) in &self.reg.models {
            m.serialize_entry(
                name,
                &ModelOut {
                    model,
                    fragments: self.fragments,
                },
            )?;
        }
        m.end()
    }
}

impl Serialize for ModelOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(d) = &self.model.default {
            m.serialize_entry("default", d)?;
        }
        m.serialize_entry(
            "versions",
            &VersionsOut {
                versions: &self.model.versions,
                fragments: self.fragments,
            },
        )?;
        for (k, v) in &self.model.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for VersionsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.versions.len()))?;
        for (name, rec) in self.versions {
            match self.fragments.get(&key(rec)) {
                Some((_, raw, _)) => m.serialize_entry(name, raw)?,
                None => m.serialize_entry(name, &**rec)?,
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Extra, FormatRecord, Source};

    fn rec(content: &str) -> Arc<VersionRecord> {
        let f = FormatRecord {
            path: format!("weights/m_{content}_pt.pt"),
            bytes: 3,
            sha256: "ab".into(),
            created: "2025-01-01T00:00:00.000000Z".into(),
            source: Source::Generated { by: None },
            extra: Extra::new(),
        };
        Arc::new(VersionRecord {
            created: "2025-01-01T00:00:00.000000Z".into(),
            parameters: 3,
            tensors: 1,
            dtypes: vec!["F32".into()],
            content: content.into(),
            tags: vec![],
            note: Some("a \"quoted\" note".into()),
            config: None,
            formats: [("pt".to_string(), f)].into(),
            extra: Extra::new(),
        })
    }

    #[test]
    fn fragments_give_the_plain_bytes_and_follow_changes() {
        let mut reg = Registry::default();
        reg.extra
            .insert("later".into(), serde_json::json!({"x": 1}));
        let mut m = ModelRecord {
            default: Some("a".into()),
            ..Default::default()
        };
        m.versions.insert("a".into(), rec("c1"));
        m.versions.insert("b".into(), rec("c2"));
        m.extra.insert("owner".into(), serde_json::json!("team"));
        reg.models.insert("m".into(), m);
        reg.models.insert("n".into(), ModelRecord::default());
        let frags = Fragments::default();
        let plain = |r: &Registry| serde_json::to_vec(r).unwrap();
        assert_eq!(frags.to_json(&reg).unwrap(), plain(&reg));
        // A plan copies the registry and changes one record: the copy-on-write gives it a new
        // allocation, so the remembered JSON of the old one is not used for it.
        let mut next = reg.clone();
        next.version_mut("m", "b").unwrap().tags.push("gold".into());
        let out = frags.to_json(&next).unwrap();
        assert_eq!(out, plain(&next));
        assert!(String::from_utf8(out).unwrap().contains("gold"));
        // Dropped and re-added records, and a model's default removed.
        let mut third = next.clone();
        third.models.get_mut("m").unwrap().versions.remove("a");
        third.models.get_mut("m").unwrap().default = None;
        third
            .models
            .get_mut("n")
            .unwrap()
            .versions
            .insert("z".into(), rec("c9"));
        assert_eq!(frags.to_json(&third).unwrap(), plain(&third));
        assert_eq!(frags.to_json(&reg).unwrap(), plain(&reg));
    }
}
