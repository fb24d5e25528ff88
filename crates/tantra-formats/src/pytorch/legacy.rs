//! Legacy `torch.save` files (`_use_new_zipfile_serialization=False`): five pickles in a row
//! (magic number, protocol, system info, the object, storage keys), then each storage's raw
//! bytes after an 8-byte element count. Refused when the bytes could also be read as the tar
//! format torch tries first, or when anything follows the last storage.

use std::collections::HashMap;
use std::path::Path;

use crate::error::FormatError;
use crate::pickle::{Object, ParseOptions, PersistentIds, Pickle};
use crate::Format;

use super::read::{pickle_err, pt_err, Parsed, Records};
use super::PytorchError;

/// The legacy magic number 0x1950a86a20f9469cfc6c, little-endian.
pub(super) const LEGACY_MAGIC: [u8; 10] =
    [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

pub(super) fn parse_legacy(path: Option<&Path>, data: &[u8]) -> Result<Parsed, FormatError> {
    if crate::tar::is_tar_header(data) {
        return Err(pt_err(path, PytorchError::LegacyIsTar));
    }
    let header = ParseOptions::new(PersistentIds::Forbidden);
    let mut pos = 0usize;
    let mut next = |opts: &ParseOptions, part: &str| -> Result<Pickle, FormatError> {
        let rest = data.get(pos..).unwrap_or(&[]);
        let (p, used) = Pickle::parse_prefix(rest, opts).map_err(|e| pickle_err(path, part, e))?;
        pos += used;
        Ok(p)
    };
    let magic = next(&header, "legacy magic number")?;
    match magic.get(magic.root()) {
        Object::BigInt(b) if b.le_bytes() == LEGACY_MAGIC => {}
        _ => return Err(pt_err(path, PytorchError::LegacyMagic)),
    }
    let proto = next(&header, "legacy protocol version")?;
    match proto.get(proto.root()) {
        Object::Int(1001) => {}
        other => {
            return Err(pt_err(
                path,
                PytorchError::LegacyProtocol {
                    found: format!("{other:?}"),
                },
            ))
        }
    }
    let sys = next(&header, "legacy system info")?;
    let big_endian = match sys
        .dict_get(sys.root(), "little_endian")
        .map(|v| sys.get(v))
    {
        Some(Object::Bool(little)) => !little,
        Some(_) => {
            return Err(pt_err(
                path,
                PytorchError::LegacySysInfo {
                    why: "little_endian is not a bool",
                },
            ))
        }
        None => {
            return Err(pt_err(
                path,
                PytorchError::LegacySysInfo {
                    why: "no little_endian entry",
                },
            ))
        }
    };
    let part = "legacy object pickle".to_string();
    let pickle = next(&ParseOptions::new(PersistentIds::Legacy), &part)?;
    let keys_pickle = next(&header, "legacy storage key list")?;
    let keys: Vec<String> = match keys_pickle.get(keys_pickle.root()) {
        Object::List(items) => items
            .iter()
            .map(|&k| match keys_pickle.get(k) {
                Object::Str(s) => Ok(s.clone()),
                _ => Err(pt_err(
                    path,
                    PytorchError::LegacyKeys {
                        why: "a key is not a string".into(),
                    },
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(pt_err(
                path,
                PytorchError::LegacyKeys {
                    why: "not a list".into(),
                },
            ))
        }
    };
    // Unit size (and declared count) of each storage, from every persistent id.
    let mut units: HashMap<&str, (u64, u64)> = HashMap::new();
    for s in pickle.storages() {
        let u = s.kind.unit_size();
        match units.get(s.key.as_str()) {
            Some(&(unit, _)) if unit != u => {
                return Err(pt_err(
                    path,
                    PytorchError::LegacyStorageKinds { key: s.key.clone() },
                ))
            }
            _ => {
                units.insert(s.key.as_str(), (u, s.numel));
            }
        }
    }
    let mut records = Records::new();
    let mut off = pos as u64;
    let total = data.len() as u64;
    for key in keys {
        if records.contains_key(&key) {
            return Err(pt_err(
                path,
                PytorchError::LegacyKeys {
                    why: format!("key {key:?} appears twice"),
                },
            ));
        }
        let Some(&(unit, _)) = units.get(key.as_str()) else {
            return Err(pt_err(path, PytorchError::LegacyUnknownStorage { key }));
        };
        let truncated = |needed: u64, key: &str, at: u64| PytorchError::LegacyStorageTruncated {
            key: key.to_string(),
            offset: at,
            needed,
            remaining: total.saturating_sub(at),
        };
        if total.saturating_sub(off) < 8 {
            return Err(pt_err(path, truncated(8, &key, off)));
        }
        let at = off as usize;
        let mut n = [0u8; 8];
        n.copy_from_slice(&data[at..at + 8]);
        let count = i64::from_le_bytes(n);
        off += 8;
        let bytes = u64::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(unit))
            .ok_or_else(|| pt_err(path, truncated(u64::MAX, &key, off)))?;
        if bytes > total - off {
            return Err(pt_err(path, truncated(bytes, &key, off)));
        }
        // Both fit in the file, hence in usize.
        records.insert(key, (off as usize, bytes as usize));
        off += bytes;
    }
    if off != total {
        return Err(pt_err(
            path,
            PytorchError::LegacyTrailing { bytes: total - off },
        ));
    }
    Ok(Parsed {
        format: Format::PytorchLegacy,
        file_len: data.len() as u64,
        pickle,
        part,
        records,
        big_endian,
    })
}
