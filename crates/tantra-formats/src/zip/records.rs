//! The zip records a PyTorch archive is made of, written down once: their signatures, fixed
//! lengths and flag bits, little-endian field readers for the parser, and an encoder per record
//! that the writer and the tests' hand-made archives both use, so that the three agree on every
//! field by construction.

/// Signature of a local file header (`PK\x03\x04`).
pub const LOCAL_SIG: u32 = 0x0403_4b50;
/// Signature of a central directory header (`PK\x01\x02`).
pub const CENTRAL_SIG: u32 = 0x0201_4b50;
/// Signature of a data descriptor (`PK\x07\x08`).
pub const DATA_DESCRIPTOR_SIG: u32 = 0x0807_4b50;
/// Signature of the end of central directory record (`PK\x05\x06`).
pub const EOCD_SIG: u32 = 0x0605_4b50;
/// Signature of the ZIP64 end of central directory locator (`PK\x06\x07`).
pub const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
/// Signature of the ZIP64 end of central directory record (`PK\x06\x06`).
pub const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;

/// Fixed part of a local header, before its name and extra field.
pub const LOCAL_LEN: u64 = 30;
/// Fixed part of a central header, before its name, extra field and comment.
pub const CENTRAL_LEN: u64 = 46;
/// End of central directory record without its comment.
pub const EOCD_LEN: u64 = 22;
pub const ZIP64_LOCATOR_LEN: u64 = 20;
pub const ZIP64_EOCD_LEN: u64 = 56;

/// Flag bits that mean encryption: 0 (encrypted), 6 (strong encryption), 13 (masked header).
pub const ENCRYPTION_FLAGS: u16 = 0x0001 | 0x0040 | 0x2000;
/// Flag bit 3: sizes and CRC are in a data descriptor after the data (torch sets it).
pub const DATA_DESCRIPTOR_FLAG: u16 = 0x0008;
/// Flag bit 11: the name is UTF-8.
pub const UTF8_FLAG: u16 = 0x0800;

/// Extra field holding ZIP64 sizes and offsets.
pub const ZIP64_EXTRA_ID: u16 = 0x0001;
/// Extra field torch pads local headers with so that data is aligned (`FB`).
pub const PADDING_EXTRA_ID: u16 = u16::from_le_bytes(*b"FB");
/// "Version made by" and "needed" of miniz's ZIP64 end record (UNIX, 3.0; 4.5 for ZIP64).
pub const ZIP64_MADE_BY: u16 = 0x031e;
pub const ZIP64_NEEDED: u16 = 0x002d;
/// Sizes and offsets at or above this go to a ZIP64 extra field.
pub const U32_LIMIT: u64 = u32::MAX as u64;

pub(crate) fn u16_at(b: &[u8], off: u64) -> Option<u16> {
    let o = usize::try_from(off).ok()?;
    let s = b.get(o..o.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

pub(crate) fn u32_at(b: &[u8], off: u64) -> Option<u32> {
    let o = usize::try_from(off).ok()?;
    let s = b.get(o..o.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn u64_at(b: &[u8], off: u64) -> Option<u64> {
    let o = usize::try_from(off).ok()?;
    let s = b.get(o..o.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

pub(crate) fn slice_at(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let o = usize::try_from(off).ok()?;
    let l = usize::try_from(len).ok()?;
    b.get(o..o.checked_add(l)?)
}

/// `v` as a 32-bit field: `0xffffffff` (look in the ZIP64 field) when it does not fit.
pub fn clamp32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// An extra field: id, length, body.
pub fn extra_field(out: &mut Vec<u8>, id: u16, body: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(body);
}

/// A local file header. Lengths of name and extra are taken from the slices (callers check
/// they fit 16 bits).
#[derive(Debug, Clone, Default)]
pub struct LocalHeader<'a> {
    pub version_needed: u16,
    pub flags: u16,
    pub method: u16,
    pub crc: u32,
    pub compressed_size: u32,
    pub size: u32,
    pub name: &'a [u8],
    pub extra: &'a [u8],
}

impl LocalHeader<'_> {
    /// Appends the header, its name and its extra field (DOS time and date zero).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        out.extend_from_slice(&self.version_needed.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.method.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // DOS time and date
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.extend_from_slice(&self.compressed_size.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.extra.len() as u16).to_le_bytes());
        out.extend_from_slice(self.name);
        out.extend_from_slice(self.extra);
    }
}

/// A data descriptor after an entry's data; 64-bit sizes when the local header has a ZIP64
/// field.
#[derive(Debug, Clone, Copy)]
pub struct DataDescriptor {
    pub crc: u32,
    pub size: u64,
    pub zip64: bool,
}

impl DataDescriptor {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&DATA_DESCRIPTOR_SIG.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        if self.zip64 {
            out.extend_from_slice(&self.size.to_le_bytes());
            out.extend_from_slice(&self.size.to_le_bytes());
        } else {
            out.extend_from_slice(&(self.size as u32).to_le_bytes());
            out.extend_from_slice(&(self.size as u32).to_le_bytes());
        }
    }
}

/// A central directory header (no comment, disk 0, attributes zero).
#[derive(Debug, Clone, Default)]
pub struct CentralHeader<'a> {
    pub version_made_by: u16,
    pub version_needed: u16,
    pub flags: u16,
    pub method: u16,
    pub crc: u32,
    pub compressed_size: u32,
    pub size: u32,
    pub local_offset: u32,
    pub name: &'a [u8],
    pub extra: &'a [u8],
}

impl CentralHeader<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
        out.extend_from_slice(&self.version_made_by.to_le_bytes());
        out.extend_from_slice(&self.version_needed.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.method.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // DOS time and date
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.extend_from_slice(&self.compressed_size.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.extra.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // comment length
        out.extend_from_slice(&0u16.to_le_bytes()); // disk
        out.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        out.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        out.extend_from_slice(&self.local_offset.to_le_bytes());
        out.extend_from_slice(self.name);
        out.extend_from_slice(self.extra);
    }
}

/// The ZIP64 end of central directory record (single disk), as miniz writes it for torch.
#[derive(Debug, Clone, Copy)]
pub struct Zip64EndRecord {
    pub entries: u64,
    pub cd_size: u64,
    pub cd_offset: u64,
}

impl Zip64EndRecord {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&ZIP64_EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&(ZIP64_EOCD_LEN - 12).to_le_bytes()); // size of the rest
        out.extend_from_slice(&ZIP64_MADE_BY.to_le_bytes());
        out.extend_from_slice(&ZIP64_NEEDED.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // this disk
        out.extend_from_slice(&0u32.to_le_bytes()); // disk of the central directory
        out.extend_from_slice(&self.entries.to_le_bytes());
        out.extend_from_slice(&self.entries.to_le_bytes());
        out.extend_from_slice(&self.cd_size.to_le_bytes());
        out.extend_from_slice(&self.cd_offset.to_le_bytes());
    }
}

/// The ZIP64 locator: where the ZIP64 end record is.
#[derive(Debug, Clone, Copy)]
pub struct Zip64Locator {
    pub zip64_eocd_offset: u64,
}

impl Zip64Locator {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&ZIP64_LOCATOR_SIG.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // disk of the ZIP64 end record
        out.extend_from_slice(&self.zip64_eocd_offset.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // total disks
    }
}

/// The end of central directory record (single disk); counts, size and offset are clamped
/// to their field widths, as ZIP64 archives do.
#[derive(Debug, Clone, Default)]
pub struct EndRecord<'a> {
    pub entries: u64,
    pub cd_size: u64,
    pub cd_offset: u64,
    pub comment: &'a [u8],
}

impl EndRecord<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let count = self.entries.min(0xffff) as u16;
        out.extend_from_slice(&EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // this disk
        out.extend_from_slice(&0u16.to_le_bytes()); // disk of the central directory
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&clamp32(self.cd_size).to_le_bytes());
        out.extend_from_slice(&clamp32(self.cd_offset).to_le_bytes());
        out.extend_from_slice(&(self.comment.len() as u16).to_le_bytes());
        out.extend_from_slice(self.comment);
    }
}

/// Appends what ends an archive after its central directory of `entries` records
/// (`cd_size` bytes at `cd_offset`): with `zip64`, the ZIP64 end record and its locator, then
/// the end record. `at` is the file offset where the appended bytes start (where the ZIP64
/// end record lands, which the locator names).
pub fn encode_end(
    out: &mut Vec<u8>,
    at: u64,
    entries: u64,
    cd_size: u64,
    cd_offset: u64,
    zip64: bool,
) {
    if zip64 {
        Zip64EndRecord {
            entries,
            cd_size,
            cd_offset,
        }
        .encode(out);
        Zip64Locator {
            zip64_eocd_offset: at,
        }
        .encode(out);
    }
    EndRecord {
        entries,
        cd_size,
        cd_offset,
        comment: &[],
    }
    .encode(out);
}
