//! Parsing the index of a PyTorch zip archive over a byte slice, refusing anything ambiguous
//! (see [`crate::zip`] for the rules).

use std::collections::HashMap;

use super::records::{
    slice_at, u16_at, u32_at, u64_at, CENTRAL_LEN, CENTRAL_SIG, DATA_DESCRIPTOR_FLAG,
    ENCRYPTION_FLAGS, EOCD_LEN, EOCD_SIG, LOCAL_LEN, LOCAL_SIG, ZIP64_EOCD_LEN, ZIP64_EOCD_SIG,
    ZIP64_LOCATOR_LEN, ZIP64_LOCATOR_SIG,
};
use super::ZipError;

/// One stored entry of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    /// Full name, including the top-level prefix (`archive/data.pkl`).
    pub name: String,
    /// Offset of the local header.
    pub header_offset: u64,
    /// Offset of the first data byte (after the local header's name and extra field).
    pub data_offset: u64,
    /// Data length in bytes.
    pub size: u64,
    /// The CRC the central directory records (often 0 in torch files; never checked).
    pub crc32: u32,
}

impl ZipEntry {
    /// The byte range of the data in the file.
    pub fn range(&self) -> std::ops::Range<u64> {
        // data_offset + size was checked against the file length when parsing.
        self.data_offset..self.data_offset.saturating_add(self.size)
    }
}

/// The index of a zip archive: its entries and their data ranges. It holds no bytes; slice the
/// same bytes it was parsed from with [`ZipArchive::data`].
#[derive(Debug, Clone)]
pub struct ZipArchive {
    prefix: String,
    entries: Vec<ZipEntry>,
    by_name: HashMap<String, usize>,
}

/// Where the central directory is, from the end records.
struct EndRecords {
    /// Offset where the end records (ZIP64 record, or EOCD) begin.
    start: u64,
    entries: u64,
    cd_size: u64,
    cd_offset: u64,
}

/// Offsets of every end-of-central-directory signature in the last 64 KiB + 22 bytes of the
/// file (where a reader looks for one) that leaves room for a whole record, in file order.
fn eocd_candidates(data: &[u8]) -> Result<Vec<u64>, ZipError> {
    let len = data.len() as u64;
    if len < EOCD_LEN {
        return Err(ZipError::TooShort(len));
    }
    let last = len - EOCD_LEN;
    let first = last.saturating_sub(u64::from(u16::MAX));
    let window = slice_at(data, first, last - first + 4).unwrap_or(&[]);
    let sig = EOCD_SIG.to_le_bytes();
    Ok(window
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == sig)
        .map(|(i, _)| first + i as u64)
        .collect())
}

/// Picks the end record the way torch's zip reader (miniz) and Python's `zipfile` do: the LAST
/// signature. It must end the file exactly, and its comment must hold no zip record: a comment
/// that hides a second archive is read by one tool and skipped by another.
fn find_eocd(data: &[u8], candidates: &[u64]) -> Result<u64, ZipError> {
    let len = data.len() as u64;
    let Some(&p) = candidates.last() else {
        return Err(ZipError::NoEndRecord);
    };
    let comment = u64::from(u16_at(data, p + 20).unwrap_or(0));
    let end = p + EOCD_LEN + comment;
    if end != len {
        if candidates.len() > 1 {
            return Err(ZipError::MultipleEndRecords {
                offsets: candidates.to_vec(),
            });
        }
        if end < len {
            return Err(ZipError::TrailingData { bytes: len - end });
        }
        return Err(ZipError::CommentPastEnd {
            offset: p,
            comment,
            available: len - p - EOCD_LEN,
        });
    }
    let body = slice_at(data, p + EOCD_LEN, comment).unwrap_or(&[]);
    if let Some(at) = find_record_signature(body) {
        return Err(ZipError::CommentHoldsRecords {
            offset: p + EOCD_LEN + at as u64,
        });
    }
    Ok(p)
}

/// The offset in `bytes` of the first zip record signature (`PK` then 1/2, 3/4, 5/6, 6/6, 6/7
/// or 7/8), if any.
fn find_record_signature(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| {
        w[0] == b'P'
            && w[1] == b'K'
            && matches!(
                (w[2], w[3]),
                (1, 2) | (3, 4) | (5, 6) | (6, 6) | (6, 7) | (7, 8)
            )
    })
}

fn read_end_records(data: &[u8], p: u64) -> Result<EndRecords, ZipError> {
    let rd16 = |o: u64| u64::from(u16_at(data, p + o).unwrap_or(0));
    let rd32 = |o: u64| u64::from(u32_at(data, p + o).unwrap_or(0));
    let (disk, cd_disk, n_disk, n_total) = (rd16(4), rd16(6), rd16(8), rd16(10));
    let (cd_size, cd_offset) = (rd32(12), rd32(16));
    if disk != 0 || cd_disk != 0 || n_disk != n_total {
        return Err(ZipError::MultiDisk);
    }
    let locator = p.checked_sub(ZIP64_LOCATOR_LEN);
    let has_locator = locator.is_some_and(|l| u32_at(data, l) == Some(ZIP64_LOCATOR_SIG));
    let needs_zip64 = n_total == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF;
    let Some(loc) = locator.filter(|_| has_locator) else {
        if needs_zip64 {
            return Err(ZipError::BadZip64Locator {
                offset: p.saturating_sub(ZIP64_LOCATOR_LEN),
            });
        }
        return Ok(EndRecords {
            start: p,
            entries: n_total,
            cd_size,
            cd_offset,
        });
    };
    let bad_loc = ZipError::BadZip64Locator { offset: loc };
    let z64_disk = u32_at(data, loc + 4).ok_or(bad_loc.clone())?;
    let z64_off = u64_at(data, loc + 8).ok_or(bad_loc.clone())?;
    let disks = u32_at(data, loc + 16).ok_or(bad_loc.clone())?;
    if z64_disk != 0 || disks > 1 {
        return Err(ZipError::MultiDisk);
    }
    let bad_rec = ZipError::BadZip64Record { offset: z64_off };
    if z64_off.checked_add(ZIP64_EOCD_LEN).is_none_or(|e| e > loc)
        || u32_at(data, z64_off) != Some(ZIP64_EOCD_SIG)
    {
        return Err(bad_rec);
    }
    // The record's size field counts the bytes after its first 12.
    let rec_size = u64_at(data, z64_off + 4).ok_or(bad_rec.clone())?;
    let rec_end = rec_size
        .checked_add(12)
        .and_then(|s| s.checked_add(z64_off))
        .ok_or(bad_rec.clone())?;
    if rec_size < ZIP64_EOCD_LEN - 12 || rec_end > loc {
        return Err(bad_rec);
    }
    if rec_end != loc {
        return Err(ZipError::GapInEndRecords {
            bytes: loc - rec_end,
        });
    }
    let r32 = |o: u64| u32_at(data, z64_off + o).unwrap_or(0);
    let r64 = |o: u64| u64_at(data, z64_off + o).unwrap_or(0);
    if r32(16) != 0 || r32(20) != 0 || r64(24) != r64(32) {
        return Err(ZipError::MultiDisk);
    }
    let (z_total, z_cd_size, z_cd_off) = (r64(32), r64(40), r64(48));
    if n_total != 0xFFFF && n_total != z_total {
        return Err(ZipError::EndRecordMismatch {
            field: "the entry count",
        });
    }
    if cd_size != 0xFFFF_FFFF && cd_size != z_cd_size {
        return Err(ZipError::EndRecordMismatch {
            field: "the central directory size",
        });
    }
    if cd_offset != 0xFFFF_FFFF && cd_offset != z_cd_off {
        return Err(ZipError::EndRecordMismatch {
            field: "the central directory offset",
        });
    }
    Ok(EndRecords {
        start: z64_off,
        entries: z_total,
        cd_size: z_cd_size,
        cd_offset: z_cd_off,
    })
}

/// Walks the extra fields of a header, calling `f(id, body)` for each.
fn for_each_extra(extra: &[u8], mut f: impl FnMut(u16, &[u8]) -> bool) -> bool {
    let mut rest = extra;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return false;
        }
        let id = u16::from_le_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
        let Some(body) = rest.get(4..4 + len) else {
            return false;
        };
        if !f(id, body) {
            return false;
        }
        rest = &rest[4 + len..];
    }
    true
}

fn check_name(name: &str) -> Result<(), ZipError> {
    let entry = || name.to_string();
    if name.is_empty() {
        return Err(ZipError::EmptyComponent { entry: entry() });
    }
    if name.contains('\0') {
        return Err(ZipError::NulInName { entry: entry() });
    }
    if name.contains('\\') {
        return Err(ZipError::BackslashInName { entry: entry() });
    }
    let bytes = name.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if name.starts_with('/') || drive {
        return Err(ZipError::AbsolutePath { entry: entry() });
    }
    let body = name.strip_suffix('/').unwrap_or(name);
    for comp in body.split('/') {
        if comp == ".." {
            return Err(ZipError::ParentComponent { entry: entry() });
        }
        if comp.is_empty() || comp == "." {
            return Err(ZipError::EmptyComponent { entry: entry() });
        }
    }
    Ok(())
}

impl ZipArchive {
    /// Parses the archive in `data` (the whole file).
    ///
    /// # Errors
    /// A [`ZipError`] naming the first rule the archive breaks.
    pub fn parse(data: &[u8]) -> Result<ZipArchive, ZipError> {
        let candidates = eocd_candidates(data)?;
        let eocd = find_eocd(data, &candidates)?;
        match ZipArchive::parse_from(data, eocd, &candidates) {
            // With several end records, the broken rule that matters is the ambiguity.
            Err(_) if candidates.len() > 1 => Err(ZipError::MultipleEndRecords {
                offsets: candidates,
            }),
            r => r,
        }
    }

    /// Parses the archive whose end of central directory record is at `eocd`; `candidates`
    /// are every end record signature found.
    fn parse_from(data: &[u8], eocd: u64, candidates: &[u64]) -> Result<ZipArchive, ZipError> {
        let file_len = data.len() as u64;
        let end = read_end_records(data, eocd)?;
        let cd_end = end.cd_offset.checked_add(end.cd_size);
        if cd_end.is_none_or(|e| e > end.start) {
            return Err(ZipError::CentralDirectoryOutOfBounds {
                offset: end.cd_offset,
                size: end.cd_size,
                file_len,
            });
        }
        let cd_end = end.cd_offset + end.cd_size;
        if cd_end != end.start {
            return Err(ZipError::GapBeforeEndRecords {
                bytes: end.start - cd_end,
            });
        }
        if end.entries > end.cd_size / CENTRAL_LEN {
            return Err(ZipError::TooManyEntries {
                count: end.entries,
                cd_size: end.cd_size,
            });
        }
        if end.entries == 0 {
            return Err(ZipError::NoEntries);
        }
        // Bounded by cd_size / 46 <= file length / 46 above.
        let count = usize::try_from(end.entries).map_err(|_| ZipError::TooManyEntries {
            count: end.entries,
            cd_size: end.cd_size,
        })?;
        let mut entries: Vec<ZipEntry> = Vec::with_capacity(count);
        let mut by_name: HashMap<String, usize> = HashMap::with_capacity(count);
        let mut folded_names: HashMap<String, String> = HashMap::with_capacity(count);
        let mut prefix: Option<String> = None;
        let mut pos = end.cd_offset;
        while pos < cd_end {
            let entry = read_central(data, pos, cd_end, end.cd_offset)?;
            pos = entry.1;
            let e = entry.0;
            let top = match &prefix {
                Some(p) => p.clone(),
                None => {
                    let Some((p, _)) = e.name.split_once('/') else {
                        return Err(ZipError::NoPrefix { entry: e.name });
                    };
                    prefix = Some(p.to_string());
                    p.to_string()
                }
            };
            let under = e
                .name
                .strip_prefix(top.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|r| !r.is_empty());
            if !under {
                return Err(ZipError::OutsidePrefix {
                    entry: e.name,
                    prefix: top,
                });
            }
            if by_name.contains_key(&e.name) {
                return Err(ZipError::DuplicateName { entry: e.name });
            }
            // torch finds records by name ignoring ASCII case (`Data.pkl` is read as
            // `data.pkl`): two names that differ only in case are two readings of one file.
            let folded = e.name.to_ascii_lowercase();
            if let Some(other) = folded_names.insert(folded, e.name.clone()) {
                return Err(ZipError::DuplicateNameIgnoringCase {
                    entry: e.name,
                    other,
                });
            }
            by_name.insert(e.name.clone(), entries.len());
            entries.push(e);
            if entries.len() as u64 > end.entries {
                break;
            }
        }
        if entries.len() as u64 != end.entries || pos != cd_end {
            return Err(ZipError::EntryCountMismatch {
                declared: end.entries,
                found: entries.len() as u64,
            });
        }
        // Entries in file order: the first starts at 0, none overlaps the next.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| entries[i].header_offset);
        if let Some(&first) = order.first() {
            let off = entries[first].header_offset;
            if off != 0 {
                return Err(ZipError::DataBeforeFirstEntry { bytes: off });
            }
        }
        for w in order.windows(2) {
            let (a, b) = (&entries[w[0]], &entries[w[1]]);
            if a.data_offset.saturating_add(a.size) > b.header_offset {
                return Err(ZipError::OverlappingEntries {
                    entry: a.name.clone(),
                    other: b.name.clone(),
                });
            }
        }
        // Another end record signature is harmless only inside an entry's data (tensor bytes
        // can hold any pattern); anywhere else a reader could take it for the end.
        for &c in candidates.iter().filter(|&&c| c != eocd) {
            let inside = entries
                .iter()
                .any(|e| c >= e.data_offset && c.saturating_add(4) <= e.data_offset + e.size);
            if !inside {
                return Err(ZipError::MultipleEndRecords {
                    offsets: candidates.to_vec(),
                });
            }
        }
        // Directory entries carry no data and are not listed.
        entries.retain(|e| !e.name.ends_with('/'));
        by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(ZipArchive {
            prefix: prefix.unwrap_or_default(),
            entries,
            by_name,
        })
    }

    /// The top-level folder every entry lives under (without the slash).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The entries (directories left out), in central directory order.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The entry at `relative` under the prefix (`data.pkl`, `data/0`).
    pub fn get(&self, relative: &str) -> Option<&ZipEntry> {
        let full = format!("{}/{}", self.prefix, relative);
        self.by_name.get(&full).map(|&i| &self.entries[i])
    }

    /// An entry's name relative to the prefix.
    pub fn relative_name<'e>(&self, entry: &'e ZipEntry) -> &'e str {
        entry
            .name
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(&entry.name)
    }

    /// The data of `entry`, sliced out of `data` (the bytes the archive was parsed from).
    ///
    /// # Errors
    /// [`ZipError::DataOutOfBounds`] when `data` is not those bytes.
    pub fn data<'a>(&self, data: &'a [u8], entry: &ZipEntry) -> Result<&'a [u8], ZipError> {
        slice_at(data, entry.data_offset, entry.size).ok_or_else(|| ZipError::DataOutOfBounds {
            entry: entry.name.clone(),
            offset: entry.data_offset,
            size: entry.size,
        })
    }
}

/// Reads the central header at `pos` and its local header; returns the entry and the offset of
/// the next central header.
fn read_central(
    data: &[u8],
    pos: u64,
    cd_end: u64,
    cd_offset: u64,
) -> Result<(ZipEntry, u64), ZipError> {
    let bad = ZipError::BadCentralHeader { offset: pos };
    if pos.checked_add(CENTRAL_LEN).is_none_or(|e| e > cd_end)
        || u32_at(data, pos) != Some(CENTRAL_SIG)
    {
        return Err(bad);
    }
    let r16 = |o: u64| u16_at(data, pos + o).unwrap_or(0);
    let r32 = |o: u64| u32_at(data, pos + o).unwrap_or(0);
    let flags = r16(8);
    let method = r16(10);
    let crc32 = r32(16);
    let mut csize = u64::from(r32(20));
    let mut usize_ = u64::from(r32(24));
    let name_len = u64::from(r16(28));
    let extra_len = u64::from(r16(30));
    let comment_len = u64::from(r16(32));
    let disk = r16(34);
    let mut header_offset = u64::from(r32(42));
    let next = pos + CENTRAL_LEN + name_len + extra_len + comment_len;
    if next > cd_end {
        return Err(bad);
    }
    let name_bytes = slice_at(data, pos + CENTRAL_LEN, name_len).ok_or(bad.clone())?;
    let name = std::str::from_utf8(name_bytes)
        .map_err(|_| ZipError::NonUtf8Name { offset: pos })?
        .to_string();
    check_name(&name)?;
    let extra = slice_at(data, pos + CENTRAL_LEN + name_len, extra_len).ok_or(bad)?;
    // ZIP64 extra: only the fields whose 32-bit value is 0xFFFFFFFF, in this order.
    let (need_u, need_c, need_o) = (
        usize_ == 0xFFFF_FFFF,
        csize == 0xFFFF_FFFF,
        header_offset == 0xFFFF_FFFF,
    );
    let mut found_zip64 = false;
    let mut zip64_short = false;
    let ok = for_each_extra(extra, |id, body| {
        if id == 0x0001 && !found_zip64 {
            found_zip64 = true;
            let mut at = 0usize;
            let mut take = |want: bool, slot: &mut u64| {
                if !want {
                    return;
                }
                match body.get(at..at + 8) {
                    Some(s) => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(s);
                        *slot = u64::from_le_bytes(a);
                        at += 8;
                    }
                    None => zip64_short = true,
                }
            };
            take(need_u, &mut usize_);
            take(need_c, &mut csize);
            take(need_o, &mut header_offset);
        }
        true
    });
    if !ok {
        return Err(ZipError::BadExtraField { entry: name });
    }
    if zip64_short || ((need_u || need_c || need_o) && !found_zip64) {
        return Err(ZipError::MissingZip64Field { entry: name });
    }
    if disk != 0 && disk != 0xFFFF {
        return Err(ZipError::MultiDisk);
    }
    if flags & ENCRYPTION_FLAGS != 0 {
        return Err(ZipError::Encrypted { entry: name });
    }
    if method != 0 {
        return Err(ZipError::Compressed {
            entry: name,
            method,
        });
    }
    if csize != usize_ {
        return Err(ZipError::StoredSizeMismatch {
            entry: name,
            compressed: csize,
            uncompressed: usize_,
        });
    }
    if name.ends_with('/') && usize_ != 0 {
        return Err(ZipError::DirectoryWithData {
            entry: name,
            size: usize_,
        });
    }
    let entry = read_local(data, name, header_offset, usize_, crc32, cd_offset)?;
    Ok((entry, next))
}

fn read_local(
    data: &[u8],
    name: String,
    off: u64,
    size: u64,
    crc32: u32,
    cd_offset: u64,
) -> Result<ZipEntry, ZipError> {
    let bad = |name: String| ZipError::BadLocalHeader {
        entry: name,
        offset: off,
    };
    if off.checked_add(LOCAL_LEN).is_none_or(|e| e > cd_offset)
        || u32_at(data, off) != Some(LOCAL_SIG)
    {
        return Err(bad(name));
    }
    let r16 = |o: u64| u16_at(data, off + o).unwrap_or(0);
    let r32 = |o: u64| u32_at(data, off + o).unwrap_or(0);
    let flags = r16(6);
    let method = r16(8);
    let l_crc = r32(14);
    let l_csize = r32(18);
    let l_usize = r32(22);
    let name_len = u64::from(r16(26));
    let extra_len = u64::from(r16(28));
    let Some(local_name) = slice_at(data, off + LOCAL_LEN, name_len) else {
        return Err(bad(name));
    };
    if local_name != name.as_bytes() {
        return Err(ZipError::LocalNameMismatch {
            local: String::from_utf8_lossy(local_name).into_owned(),
            entry: name,
        });
    }
    let Some(extra) = slice_at(data, off + LOCAL_LEN + name_len, extra_len) else {
        return Err(bad(name));
    };
    if !for_each_extra(extra, |_, _| true) {
        return Err(ZipError::BadExtraField { entry: name });
    }
    if flags & ENCRYPTION_FLAGS != 0 {
        return Err(ZipError::Encrypted { entry: name });
    }
    if method != 0 {
        return Err(ZipError::LocalHeaderMismatch {
            entry: name,
            field: "the compression method",
        });
    }
    // Without a data descriptor the local header carries the real CRC and sizes (0xFFFFFFFF
    // means they are in its ZIP64 extra). With one (torch), they may be zero.
    if flags & DATA_DESCRIPTOR_FLAG == 0 {
        let sizes_ok = (l_usize == 0xFFFF_FFFF || u64::from(l_usize) == size)
            && (l_csize == 0xFFFF_FFFF || u64::from(l_csize) == size);
        if !sizes_ok {
            return Err(ZipError::LocalHeaderMismatch {
                entry: name,
                field: "the entry size",
            });
        }
        if l_crc != crc32 {
            return Err(ZipError::LocalHeaderMismatch {
                entry: name,
                field: "the CRC",
            });
        }
    }
    let data_offset = off + LOCAL_LEN + name_len + extra_len;
    if data_offset.checked_add(size).is_none_or(|e| e > cd_offset) {
        return Err(ZipError::DataOutOfBounds {
            entry: name,
            offset: data_offset,
            size,
        });
    }
    Ok(ZipEntry {
        name,
        header_offset: off,
        data_offset,
        size,
        crc32,
    })
}

#[cfg(test)]
mod tests {
    use super::super::records::{
        encode_end, extra_field, CentralHeader, DataDescriptor, LocalHeader, PADDING_EXTRA_ID,
    };
    use super::*;

    /// One entry for [`build`].
    #[derive(Clone)]
    struct E {
        name: &'static str,
        local_name: &'static str,
        data: Vec<u8>,
        flags: u16,
        method: u16,
        /// Padding extra field in the local header (torch's `FB` field).
        pad: u16,
        /// Local header sizes zero (torch, with flag 0x08).
        zero_local: bool,
        crc: u32,
    }

    fn e(name: &'static str, data: &[u8]) -> E {
        E {
            name,
            local_name: name,
            data: data.to_vec(),
            flags: 0x0808,
            method: 0,
            pad: 0,
            zero_local: true,
            crc: 0,
        }
    }

    #[derive(Default)]
    struct Opts {
        zip64: bool,
        prepend: Vec<u8>,
        append: Vec<u8>,
        gap_before_end: usize,
        count_delta: i32,
        cd_offset_delta: i64,
    }

    impl Opts {
        fn zip64() -> Self {
            Opts {
                zip64: true,
                ..Default::default()
            }
        }
    }

    /// A small zip written by hand, the way torch writes them (data descriptor after data),
    /// with the record encoders the writer uses.
    fn build(entries: &[E], o: Opts) -> Vec<u8> {
        let mut out = o.prepend.clone();
        let mut cd = Vec::new();
        for en in entries {
            let off = out.len() as u32;
            let size = en.data.len() as u32;
            let (lc, ls) = if en.zero_local {
                (0, 0)
            } else {
                (en.crc, size)
            };
            let mut extra = Vec::new();
            if en.pad > 0 {
                let pad = vec![b'Z'; usize::from(en.pad)];
                extra_field(&mut extra, PADDING_EXTRA_ID, &pad);
            }
            LocalHeader {
                version_needed: 20,
                flags: en.flags,
                method: en.method,
                crc: lc,
                compressed_size: ls,
                size: ls,
                name: en.local_name.as_bytes(),
                extra: &extra,
            }
            .encode(&mut out);
            out.extend_from_slice(&en.data);
            if en.flags & DATA_DESCRIPTOR_FLAG != 0 {
                DataDescriptor {
                    crc: en.crc,
                    size: u64::from(size),
                    zip64: false,
                }
                .encode(&mut out);
            }
            CentralHeader {
                version_made_by: 20,
                version_needed: 20,
                flags: en.flags,
                method: en.method,
                crc: en.crc,
                compressed_size: size,
                size,
                local_offset: off,
                name: en.name.as_bytes(),
                extra: &[],
            }
            .encode(&mut cd);
        }
        let cd_offset = (out.len() as i64 + o.cd_offset_delta) as u64;
        let cd_size = cd.len() as u64;
        out.extend_from_slice(&cd);
        out.extend(std::iter::repeat_n(0u8, o.gap_before_end));
        let n = (entries.len() as i64 + i64::from(o.count_delta)) as u64;
        let at = out.len() as u64;
        encode_end(&mut out, at, n, cd_size, cd_offset, o.zip64);
        out.extend_from_slice(&o.append);
        out
    }

    fn ok_entries() -> Vec<E> {
        vec![e("arch/data.pkl", b"\x80\x02."), e("arch/data/0", b"abcd")]
    }

    /// The error of [`ok_entries`] built plainly, then changed by `patch`, which gets the
    /// bytes and the offsets of the central directory headers.
    fn patched_err(patch: impl FnOnce(&mut Vec<u8>, &[usize])) -> ZipError {
        let mut bytes = build(&ok_entries(), Opts::default());
        let central: Vec<usize> = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == CENTRAL_SIG.to_le_bytes())
            .map(|(i, _)| i)
            .collect();
        patch(&mut bytes, &central);
        ZipArchive::parse(&bytes).unwrap_err()
    }

    #[test]
    fn reads_torch_style_archive_with_zero_crcs_and_padding() {
        let mut es = ok_entries();
        es[1].pad = 27;
        for z in [false, true] {
            let bytes = build(
                &es,
                Opts {
                    zip64: z,
                    ..Default::default()
                },
            );
            let a = ZipArchive::parse(&bytes).unwrap();
            assert_eq!(a.prefix(), "arch");
            assert_eq!(a.entries().len(), 2);
            let d = a.get("data/0").unwrap();
            assert_eq!(a.data(&bytes, d).unwrap(), b"abcd");
            assert_eq!(a.relative_name(d), "data/0");
            assert_eq!(d.crc32, 0);
        }
    }

    #[test]
    fn reads_plain_local_sizes() {
        let mut es = ok_entries();
        for x in &mut es {
            x.flags = 0;
            x.zero_local = false;
            x.crc = 7;
        }
        let bytes = build(&es, Opts::default());
        assert!(ZipArchive::parse(&bytes).is_ok());
    }

    fn err(es: &[E], o: Opts) -> ZipError {
        ZipArchive::parse(&build(es, o)).unwrap_err()
    }

    #[test]
    fn too_short_and_no_end_record() {
        assert_eq!(ZipArchive::parse(b"PK").unwrap_err(), ZipError::TooShort(2));
        assert_eq!(
            ZipArchive::parse(&[0u8; 100]).unwrap_err(),
            ZipError::NoEndRecord
        );
    }

    #[test]
    fn trailing_data_is_refused() {
        let o = Opts {
            append: b"junk".to_vec(),
            ..Default::default()
        };
        assert_eq!(err(&ok_entries(), o), ZipError::TrailingData { bytes: 4 });
    }

    /// `bytes` with its EOCD comment replaced by `comment` (the builder writes none).
    fn with_comment(mut bytes: Vec<u8>, comment: &[u8]) -> Vec<u8> {
        let n = bytes.len();
        bytes[n - 2..].copy_from_slice(&(comment.len() as u16).to_le_bytes());
        bytes.extend_from_slice(comment);
        bytes
    }

    #[test]
    fn a_second_archive_in_the_end_comment_is_refused() {
        // torch and Python's zipfile take the LAST end record: the hidden archive's.
        let outer = build(&ok_entries(), Opts::default());
        let hidden = build(&[e("evil/data.pkl", b"\x80\x02N.")], Opts::default());
        let bytes = with_comment(outer, &hidden);
        assert!(matches!(
            ZipArchive::parse(&bytes).unwrap_err(),
            ZipError::MultipleEndRecords { offsets } if offsets.len() == 2
        ));
    }

    #[test]
    fn an_end_comment_holding_records_is_refused() {
        let outer = build(&ok_entries(), Opts::default());
        let eocd = outer.len() - 22;
        let bytes = with_comment(outer, b"note PK\x03\x04 here");
        assert_eq!(
            ZipArchive::parse(&bytes).unwrap_err(),
            ZipError::CommentHoldsRecords {
                offset: eocd as u64 + 22 + 5
            }
        );
        // A plain comment is fine.
        let outer = build(&ok_entries(), Opts::default());
        assert!(ZipArchive::parse(&with_comment(outer, b"made by hand")).is_ok());
    }

    #[test]
    fn an_end_record_not_ending_the_file_after_another_is_refused() {
        // The last signature (in the comment) claims a comment that does not end the file.
        let outer = build(&ok_entries(), Opts::default());
        let mut fake = EOCD_SIG.to_le_bytes().to_vec();
        fake.extend_from_slice(&[0u8; 16]);
        fake.extend_from_slice(&100u16.to_le_bytes());
        let bytes = with_comment(outer, &fake);
        assert!(matches!(
            ZipArchive::parse(&bytes).unwrap_err(),
            ZipError::MultipleEndRecords { .. }
        ));
        let outer = build(&ok_entries(), Opts::default());
        let n = outer.len();
        let mut bytes = outer;
        bytes[n - 2..].copy_from_slice(&9u16.to_le_bytes());
        assert_eq!(
            ZipArchive::parse(&bytes).unwrap_err(),
            ZipError::CommentPastEnd {
                offset: n as u64 - 22,
                comment: 9,
                available: 0
            }
        );
    }

    #[test]
    fn an_end_signature_inside_entry_data_is_data() {
        let mut data = b"xx".to_vec();
        data.extend_from_slice(&EOCD_SIG.to_le_bytes());
        data.extend_from_slice(&[0u8; 30]);
        let es = vec![e("arch/data.pkl", b"\x80\x02."), e("arch/data/0", &data)];
        let bytes = build(&es, Opts::default());
        let a = ZipArchive::parse(&bytes).unwrap();
        assert_eq!(a.data(&bytes, a.get("data/0").unwrap()).unwrap(), &data[..]);
    }

    #[test]
    fn names_equal_ignoring_case_are_refused() {
        for (a, b) in [
            ("arch/data.pkl", "arch/Data.pkl"),
            ("arch/data/0", "arch/DATA/0"),
        ] {
            let es = vec![e("arch/version", b"3\n"), e(a, b"x"), e(b, b"y")];
            assert_eq!(
                err(&es, Opts::default()),
                ZipError::DuplicateNameIgnoringCase {
                    entry: b.to_string(),
                    other: a.to_string()
                }
            );
        }
    }

    #[test]
    fn data_before_first_header_is_refused() {
        let o = Opts {
            prepend: b"#!/bin/sh\n".to_vec(),
            ..Default::default()
        };
        assert_eq!(
            err(&ok_entries(), o),
            ZipError::DataBeforeFirstEntry { bytes: 10 }
        );
    }

    #[test]
    fn gap_before_end_records_is_refused() {
        let o = Opts {
            gap_before_end: 3,
            ..Default::default()
        };
        assert_eq!(
            err(&ok_entries(), o),
            ZipError::GapBeforeEndRecords { bytes: 3 }
        );
    }

    #[test]
    fn central_directory_out_of_bounds() {
        let o = Opts {
            cd_offset_delta: 1000,
            ..Default::default()
        };
        assert!(matches!(
            err(&ok_entries(), o),
            ZipError::CentralDirectoryOutOfBounds { .. }
        ));
    }

    #[test]
    fn entry_count_mismatch_and_absurd_counts() {
        let o = Opts {
            count_delta: -1,
            ..Default::default()
        };
        assert!(matches!(
            err(&ok_entries(), o),
            ZipError::EntryCountMismatch { declared: 1, .. }
        ));
        let o = Opts {
            count_delta: 1000,
            zip64: true,
            ..Default::default()
        };
        assert!(matches!(
            err(&ok_entries(), o),
            ZipError::TooManyEntries { .. }
        ));
    }

    #[test]
    fn end_record_mismatch_is_refused() {
        let mut bytes = build(&ok_entries(), Opts::zip64());
        let n = bytes.len();
        // EOCD entry count (offset 10 in the EOCD) says 1, the ZIP64 record 2.
        bytes[n - 22 + 10] = 1;
        bytes[n - 22 + 8] = 1;
        assert!(matches!(
            ZipArchive::parse(&bytes).unwrap_err(),
            ZipError::EndRecordMismatch { .. }
        ));
    }

    #[test]
    fn bad_zip64_locator_is_refused() {
        let mut bytes = build(&ok_entries(), Opts::zip64());
        let n = bytes.len();
        // Locator points past itself.
        let loc = n - 22 - 20;
        bytes[loc + 8..loc + 16].copy_from_slice(&(n as u64).to_le_bytes());
        assert!(matches!(
            ZipArchive::parse(&bytes).unwrap_err(),
            ZipError::BadZip64Record { .. }
        ));
        // EOCD says ZIP64 but there is no locator.
        let mut bytes = build(&ok_entries(), Opts::default());
        let n = bytes.len();
        bytes[n - 22 + 16..n - 22 + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ZipArchive::parse(&bytes).unwrap_err(),
            ZipError::BadZip64Locator { .. }
        ));
    }

    #[test]
    fn multi_disk_is_refused() {
        let mut bytes = build(&ok_entries(), Opts::default());
        let n = bytes.len();
        bytes[n - 22 + 4] = 1;
        assert_eq!(ZipArchive::parse(&bytes).unwrap_err(), ZipError::MultiDisk);
    }

    #[test]
    fn encryption_is_refused() {
        let mut es = ok_entries();
        es[0].flags |= 1;
        assert!(matches!(
            err(&es, Opts::default()),
            ZipError::Encrypted { .. }
        ));
    }

    #[test]
    fn compression_is_refused() {
        let mut es = ok_entries();
        es[1].method = 8;
        assert!(matches!(
            err(&es, Opts::default()),
            ZipError::Compressed { method: 8, .. }
        ));
    }

    #[test]
    fn bad_names_are_refused() {
        type Check = fn(&ZipError) -> bool;
        let cases: [(&'static str, Check); 7] = [
            ("arch/../etc/passwd", |e| {
                matches!(e, ZipError::ParentComponent { .. })
            }),
            ("/arch/x", |e| matches!(e, ZipError::AbsolutePath { .. })),
            ("C:/arch/x", |e| matches!(e, ZipError::AbsolutePath { .. })),
            ("arch\\x", |e| matches!(e, ZipError::BackslashInName { .. })),
            ("arch/x\0y", |e| matches!(e, ZipError::NulInName { .. })),
            ("arch//x", |e| matches!(e, ZipError::EmptyComponent { .. })),
            ("other/x", |e| matches!(e, ZipError::OutsidePrefix { .. })),
        ];
        for (name, check) in cases {
            let mut es = ok_entries();
            es[1].name = name;
            es[1].local_name = name;
            let got = err(&es, Opts::default());
            assert!(check(&got), "{name:?}: {got:?}");
        }
        let es = vec![e("data.pkl", b"x")];
        assert!(matches!(
            err(&es, Opts::default()),
            ZipError::NoPrefix { .. }
        ));
        let mut es = ok_entries();
        es[1].name = "arch/";
        es[1].local_name = "arch/";
        es[1].data = Vec::new();
        assert!(matches!(
            err(&es, Opts::default()),
            ZipError::OutsidePrefix { .. }
        ));
    }

    #[test]
    fn non_utf8_name_is_refused() {
        // Patch the first central name's first byte.
        let got = patched_err(|b, cd| b[cd[0] + 46] = 0xFF);
        assert!(matches!(got, ZipError::NonUtf8Name { .. }));
    }

    #[test]
    fn duplicate_names_are_refused() {
        let es = vec![e("arch/data.pkl", b"a"), e("arch/data.pkl", b"b")];
        assert!(matches!(
            err(&es, Opts::default()),
            ZipError::DuplicateName { .. }
        ));
    }

    #[test]
    fn local_name_must_match() {
        let mut es = ok_entries();
        es[1].local_name = "arch/data/1";
        assert!(matches!(
            err(&es, Opts::default()),
            ZipError::LocalNameMismatch { .. }
        ));
    }

    #[test]
    fn local_sizes_must_match_without_descriptor() {
        let mut es = ok_entries();
        es[1].flags = 0;
        es[1].zero_local = true;
        es[1].data = b"abcd".to_vec();
        assert!(matches!(
            err(&es, Opts::default()),
            ZipError::LocalHeaderMismatch { .. }
        ));
    }

    #[test]
    fn overlapping_entries_are_refused() {
        // Point the second central entry at the first local header (whose name is not its
        // own, so the name check may fire first).
        let got =
            patched_err(|b, cd| b[cd[1] + 42..cd[1] + 46].copy_from_slice(&0u32.to_le_bytes()));
        assert!(
            matches!(
                got,
                ZipError::LocalNameMismatch { .. } | ZipError::OverlappingEntries { .. }
            ),
            "{got:?}"
        );
    }

    #[test]
    fn overlap_of_data_is_refused() {
        // Grow the first entry so it runs into the second local header.
        let got = patched_err(|b, cd| {
            b[cd[0] + 20..cd[0] + 28].copy_from_slice(&[40, 0, 0, 0, 40, 0, 0, 0]);
        });
        assert!(matches!(got, ZipError::OverlappingEntries { .. }));
    }

    #[test]
    fn data_past_central_directory_is_refused() {
        let got = patched_err(|b, cd| {
            b[cd[1] + 20..cd[1] + 28].copy_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0]);
        });
        assert!(matches!(got, ZipError::DataOutOfBounds { .. }));
    }

    #[test]
    fn stored_size_mismatch_is_refused() {
        let got = patched_err(|b, cd| b[cd[0] + 20] = 2);
        assert!(matches!(got, ZipError::StoredSizeMismatch { .. }));
    }

    #[test]
    fn bad_extra_and_missing_zip64_fields() {
        // Size 0xFFFFFFFF without a ZIP64 extra.
        let got = patched_err(|b, cd| b[cd[0] + 20..cd[0] + 28].copy_from_slice(&[0xFF; 8]));
        assert!(matches!(got, ZipError::MissingZip64Field { .. }));
        // A local extra field whose length runs past its area.
        let mut es = ok_entries();
        es[0].pad = 4;
        let mut bytes = build(&es, Opts::default());
        let name_len = es[0].name.len();
        bytes[30 + name_len + 2] = 9;
        assert!(matches!(
            ZipArchive::parse(&bytes).unwrap_err(),
            ZipError::BadExtraField { .. }
        ));
    }

    #[test]
    fn bad_headers_are_refused() {
        let got = patched_err(|b, _| b[0] = b'X');
        assert!(matches!(got, ZipError::BadLocalHeader { .. }));
        let got = patched_err(|b, cd| b[cd[0]] = b'X');
        assert!(matches!(got, ZipError::BadCentralHeader { .. }));
    }

    #[test]
    fn directory_entries_are_skipped_but_must_be_empty() {
        let es = vec![e("arch/data/", b""), e("arch/data.pkl", b".")];
        let bytes = build(&es, Opts::default());
        let a = ZipArchive::parse(&bytes).unwrap();
        assert_eq!(a.entries().len(), 1);
        let es = vec![e("arch/data/", b"xx"), e("arch/data.pkl", b".")];
        assert!(matches!(
            err(&es, Opts::default()),
            ZipError::DirectoryWithData { .. }
        ));
    }

    #[test]
    fn empty_archive_is_refused() {
        assert_eq!(err(&[], Opts::default()), ZipError::NoEntries);
    }

    #[test]
    fn never_panics_on_truncations() {
        let bytes = build(&ok_entries(), Opts::zip64());
        for n in 0..bytes.len() {
            let _ = ZipArchive::parse(&bytes[..n]);
            let mut b = bytes.clone();
            b[n] ^= 0xFF;
            let _ = ZipArchive::parse(&b);
        }
    }
}
