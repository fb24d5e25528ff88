//! Writing a zip archive front to back in the layout miniz gives torch: stored entries, data at
//! a multiple of 64 bytes (padding in an `FB` extra field), data descriptors after the data,
//! ZIP64 records where sizes or offsets need them. Only [`std::io::Write`] is needed: sizes are
//! known up front and each CRC travels in a data descriptor after its data.

use std::io::{self, Write};

use super::records::{
    clamp32, encode_end, extra_field, CentralHeader, DataDescriptor, LocalHeader, CENTRAL_LEN,
    DATA_DESCRIPTOR_FLAG, EOCD_LEN, LOCAL_LEN, PADDING_EXTRA_ID, U32_LIMIT, UTF8_FLAG,
    ZIP64_EOCD_LEN, ZIP64_EXTRA_ID, ZIP64_LOCATOR_LEN,
};
use crate::error::FormatError;
use crate::pytorch::write_error::{io_error, WriteError};

/// Where every record's data starts: a multiple of this (`.storage_alignment`).
pub(crate) const ALIGNMENT: u64 = 64;

// ---------------------------------------------------------------------------------------------
// Zip

/// One central directory record, kept until the end.
pub(crate) struct CentralEntry {
    name: String,
    offset: u64,
    size: u64,
    crc: u32,
    flags: u16,
}

/// An entry whose data is being written.
pub(crate) struct OpenEntry {
    /// What the entry holds, for errors (`tensor "w"`).
    what: String,
    expected: u64,
    written: u64,
    crc: crc32fast::Hasher,
    central: CentralEntry,
    /// The local header carries a ZIP64 extra field, so the data descriptor has 64-bit sizes.
    zip64: bool,
}

impl OpenEntry {
    pub(crate) fn write(
        &mut self,
        zip: &mut ZipWriter<'_>,
        chunk: &[u8],
    ) -> Result<(), FormatError> {
        let after = self
            .written
            .checked_add(chunk.len() as u64)
            .filter(|&n| n <= self.expected)
            .ok_or_else(|| {
                wrong_length(
                    &self.what,
                    self.expected,
                    self.written.saturating_add(chunk.len() as u64),
                )
            })?;
        zip.put(chunk)?;
        self.crc.update(chunk);
        self.written = after;
        Ok(())
    }
}

/// A zip archive written front to back in the layout miniz gives torch.
pub(crate) struct ZipWriter<'a> {
    out: &'a mut dyn Write,
    /// `<archive_name>/`.
    prefix: String,
    pos: u64,
    entries: Vec<CentralEntry>,
    /// Folded over the names and CRCs of the records written, for the serialization id.
    name_hash: u64,
    crc_hash: u64,
}

impl<'a> ZipWriter<'a> {
    pub(crate) fn new(out: &'a mut dyn Write, archive_name: &str) -> Self {
        ZipWriter {
            out,
            prefix: format!("{archive_name}/"),
            pos: 0,
            entries: Vec::new(),
            name_hash: 0,
            crc_hash: 0,
        }
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        self.out.write_all(bytes).map_err(io_error)?;
        self.pos = self
            .pos
            .checked_add(bytes.len() as u64)
            .ok_or(WriteError::ArchiveTooLarge)?;
        Ok(())
    }

    /// Writes a whole small record.
    pub(crate) fn record(&mut self, name: &str, data: &[u8]) -> Result<(), FormatError> {
        let mut entry = self.begin(name, data.len() as u64, format!("record {name:?}"))?;
        entry.write(self, data)?;
        self.finish(entry)
    }

    /// Writes the local header of `name` (under the prefix) whose data will be `size` bytes,
    /// padded so that the data starts at a multiple of [`ALIGNMENT`].
    pub(crate) fn begin(
        &mut self,
        name: &str,
        size: u64,
        what: String,
    ) -> Result<OpenEntry, FormatError> {
        let full = format!("{}{name}", self.prefix);
        let name_len =
            u16::try_from(full.len()).map_err(|_| WriteError::EntryNameTooLong(full.clone()))?;
        let offset = self.pos;
        let large_size = size >= U32_LIMIT;
        let large_offset = offset >= U32_LIMIT;
        let mut zip64 = Vec::new();
        if large_size || large_offset {
            let mut fields = Vec::new();
            if large_size {
                fields.extend_from_slice(&size.to_le_bytes());
                fields.extend_from_slice(&size.to_le_bytes());
            }
            if large_offset {
                fields.extend_from_slice(&offset.to_le_bytes());
            }
            extra_field(&mut zip64, ZIP64_EXTRA_ID, &fields);
        }
        // Data start without padding: header, name, ZIP64 field, `FB` id and length.
        let unpadded = [LOCAL_LEN, u64::from(name_len), zip64.len() as u64, 4]
            .iter()
            .try_fold(offset, |acc, &n| acc.checked_add(n))
            .ok_or(WriteError::ArchiveTooLarge)?;
        let padding = (ALIGNMENT - unpadded % ALIGNMENT) % ALIGNMENT;
        let extra_len = zip64.len() as u64 + 4 + padding;
        let flags = if size > 0 {
            UTF8_FLAG | DATA_DESCRIPTOR_FLAG
        } else {
            UTF8_FLAG
        };
        let mut extra = Vec::with_capacity(extra_len as usize);
        extra.extend_from_slice(&zip64);
        extra_field(&mut extra, PADDING_EXTRA_ID, &vec![b'Z'; padding as usize]);
        let mut header = Vec::with_capacity(LOCAL_LEN as usize + full.len() + extra.len());
        // CRC and sizes are in the data descriptor.
        LocalHeader {
            flags,
            name: full.as_bytes(),
            extra: &extra,
            ..LocalHeader::default()
        }
        .encode(&mut header);
        self.put(&header)?;
        Ok(OpenEntry {
            what,
            expected: size,
            written: 0,
            crc: crc32fast::Hasher::new(),
            central: CentralEntry {
                name: full,
                offset,
                size,
                crc: 0,
                flags,
            },
            zip64: !zip64.is_empty(),
        })
    }

    /// Writes the data descriptor of a fully written entry and records it for the central
    /// directory.
    pub(crate) fn finish(&mut self, entry: OpenEntry) -> Result<(), FormatError> {
        let OpenEntry {
            what,
            expected,
            written,
            crc,
            mut central,
            zip64,
        } = entry;
        if written != expected {
            return Err(wrong_length(&what, expected, written));
        }
        central.crc = crc.finalize();
        if central.size > 0 {
            let mut d = Vec::with_capacity(24);
            DataDescriptor {
                crc: central.crc,
                size: central.size,
                zip64,
            }
            .encode(&mut d);
            self.put(&d)?;
        }
        self.name_hash = hash_combine(self.name_hash, fnv1a(central.name.as_bytes()));
        self.crc_hash = hash_combine(self.crc_hash, u64::from(central.crc));
        self.entries.push(central);
        Ok(())
    }

    /// Forty decimal digits, like torch's: twenty from the record names, twenty from their CRCs.
    pub(crate) fn serialization_id(&self) -> String {
        format!("{:020}{:020}", self.name_hash, self.crc_hash)
    }

    /// Writes the central directory and the end records; returns the archive's length.
    pub(crate) fn finish_archive(mut self) -> Result<u64, FormatError> {
        let cd_offset = self.pos;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let large_size = e.size >= U32_LIMIT;
            let large_offset = e.offset >= U32_LIMIT;
            let mut zip64 = Vec::new();
            if large_size {
                zip64.extend_from_slice(&e.size.to_le_bytes());
                zip64.extend_from_slice(&e.size.to_le_bytes());
            }
            if large_offset {
                zip64.extend_from_slice(&e.offset.to_le_bytes());
            }
            let mut extra = Vec::new();
            if !zip64.is_empty() {
                extra_field(&mut extra, ZIP64_EXTRA_ID, &zip64);
            }
            let mut h = Vec::with_capacity(CENTRAL_LEN as usize + e.name.len() + extra.len());
            // The name length was checked when the local header was written.
            CentralHeader {
                flags: e.flags,
                crc: e.crc,
                compressed_size: clamp32(e.size),
                size: clamp32(e.size),
                local_offset: clamp32(e.offset),
                name: e.name.as_bytes(),
                extra: &extra,
                ..CentralHeader::default()
            }
            .encode(&mut h);
            self.put(&h)?;
        }
        let cd_size = self.pos - cd_offset;
        let count = entries.len() as u64;
        let mut t = Vec::with_capacity((ZIP64_EOCD_LEN + ZIP64_LOCATOR_LEN + EOCD_LEN) as usize);
        encode_end(&mut t, self.pos, count, cd_size, cd_offset, true);
        self.put(&t)?;
        self.out.flush().map_err(io_error)?;
        Ok(self.pos)
    }
}

/// FNV-1a, 64-bit: a fixed hash for the serialization id.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// boost's `hash_combine`, which torch (`c10::hash_combine`) also uses for this id.
fn hash_combine(seed: u64, value: u64) -> u64 {
    seed ^ value
        .wrapping_add(0x9e37_79b9)
        .wrapping_add(seed << 6)
        .wrapping_add(seed >> 2)
}

/// `what` (`tensor "w"`) came with `got` bytes where `expected` were announced.
fn wrong_length(what: &str, expected: u64, got: u64) -> FormatError {
    io_error(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{what}: the source gave {} {got} bytes, its dtype and shape say {expected}",
            if got > expected { "at least" } else { "only" }
        ),
    ))
}
