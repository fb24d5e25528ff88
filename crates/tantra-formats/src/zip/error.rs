//! The rules of the zip container a PyTorch archive can break, each naming the offset or entry.

/// A rule of the zip container that the input breaks. Offsets are byte offsets in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZipError {
    #[error("file of {0} bytes is too short to be a zip archive")]
    TooShort(u64),
    #[error("no end of central directory record in the last 64 KiB of the file (not a zip archive, or data was appended after it)")]
    NoEndRecord,
    #[error("{bytes} bytes after the end of central directory record (a polyglot file?)")]
    TrailingData { bytes: u64 },
    #[error("multi-disk (spanned) archives are not supported")]
    MultiDisk,
    #[error("malformed ZIP64 end of central directory locator at offset {offset}")]
    BadZip64Locator { offset: u64 },
    #[error("malformed ZIP64 end of central directory record at offset {offset}")]
    BadZip64Record { offset: u64 },
    #[error(
        "the ZIP64 end record disagrees with the end of central directory record about {field}"
    )]
    EndRecordMismatch { field: &'static str },
    #[error("{bytes} bytes between the ZIP64 end record and its locator")]
    GapInEndRecords { bytes: u64 },
    #[error("central directory (offset {offset}, {size} bytes) lies outside the file of {file_len} bytes")]
    CentralDirectoryOutOfBounds {
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error("{bytes} bytes between the central directory and the end records")]
    GapBeforeEndRecords { bytes: u64 },
    #[error("the archive declares {count} entries, more than its central directory of {cd_size} bytes can hold")]
    TooManyEntries { count: u64, cd_size: u64 },
    #[error("the archive declares {declared} entries but its central directory holds {found}")]
    EntryCountMismatch { declared: u64, found: u64 },
    #[error("the archive has no entries")]
    NoEntries,
    #[error("bad central directory header at offset {offset}")]
    BadCentralHeader { offset: u64 },
    #[error("entry {entry:?}: bad local header at offset {offset}")]
    BadLocalHeader { entry: String, offset: u64 },
    #[error("entry {entry:?}: malformed extra field")]
    BadExtraField { entry: String },
    #[error("entry {entry:?}: a size or offset is 0xFFFFFFFF but the ZIP64 extra field does not supply it")]
    MissingZip64Field { entry: String },
    #[error("entry {entry:?} is encrypted")]
    Encrypted { entry: String },
    #[error("entry {entry:?} is compressed (method {method}); PyTorch archives store entries uncompressed")]
    Compressed { entry: String, method: u16 },
    #[error("entry {entry:?} is stored but its compressed size {compressed} differs from its size {uncompressed}")]
    StoredSizeMismatch {
        entry: String,
        compressed: u64,
        uncompressed: u64,
    },
    #[error("entry name at central directory offset {offset} is not UTF-8")]
    NonUtf8Name { offset: u64 },
    #[error("entry {entry:?}: name contains NUL")]
    NulInName { entry: String },
    #[error("entry {entry:?}: name contains a backslash")]
    BackslashInName { entry: String },
    #[error("entry {entry:?}: absolute path")]
    AbsolutePath { entry: String },
    #[error("entry {entry:?}: name contains a `..` component")]
    ParentComponent { entry: String },
    #[error("entry {entry:?}: name has an empty or `.` component")]
    EmptyComponent { entry: String },
    #[error("entry {entry:?} is not under a top-level folder")]
    NoPrefix { entry: String },
    #[error("entry {entry:?} is outside the archive's top-level folder {prefix:?}")]
    OutsidePrefix { entry: String, prefix: String },
    #[error("entry {entry:?} appears twice")]
    DuplicateName { entry: String },
    #[error("entries {entry:?} and {other:?} differ only in case; torch reads either for the other, so the archive is ambiguous")]
    DuplicateNameIgnoringCase { entry: String, other: String },
    #[error("end of central directory signatures at offsets {offsets:?}: readers that take the first and readers that take the last would read different archives")]
    MultipleEndRecords { offsets: Vec<u64> },
    #[error("the end of central directory comment holds a zip record signature at offset {offset} (an archive hidden in the comment?)")]
    CommentHoldsRecords { offset: u64 },
    #[error("the end of central directory record at offset {offset} declares a {comment}-byte comment but only {available} bytes follow it")]
    CommentPastEnd {
        offset: u64,
        comment: u64,
        available: u64,
    },
    #[error("entry {entry:?}: the local header names it {local:?}")]
    LocalNameMismatch { entry: String, local: String },
    #[error(
        "entry {entry:?}: the local header disagrees with the central directory about {field}"
    )]
    LocalHeaderMismatch { entry: String, field: &'static str },
    #[error("entry {entry:?}: data (offset {offset}, {size} bytes) runs past the start of the central directory")]
    DataOutOfBounds {
        entry: String,
        offset: u64,
        size: u64,
    },
    #[error("{bytes} bytes before the first local header (a polyglot file?)")]
    DataBeforeFirstEntry { bytes: u64 },
    #[error("entries {entry:?} and {other:?} overlap")]
    OverlappingEntries { entry: String, other: String },
    #[error("entry {entry:?}: directory entry with {size} bytes of data")]
    DirectoryWithData { entry: String, size: u64 },
}
