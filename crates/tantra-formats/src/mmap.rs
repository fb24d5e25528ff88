//! The bytes of an open weight file, memory-mapped or held in memory, and how they are streamed.
//!
//! Both readers that serve tensors straight from their file (safetensors and PyTorch) map it and
//! hand out borrowed slices of the map. Streaming a tensor is the same for both: bounded chunks,
//! cut at fixed file offsets, and after each chunk the pages it covered are dropped from the
//! resident set, so that hashing or converting a 100 GB file does not look like a 100 GB process.
//! The rules that make the release safe (and cheap) live here once, next to the one `unsafe` map.

use std::fs::File;
use std::io;
use std::ops::Range;

use memmap2::Mmap;

use crate::error::FormatError;

/// The largest chunk [`Backing::stream`] hands to its sink.
pub(crate) const STREAM_CHUNK: usize = 8 << 20;

/// Pages are released in multiples of this (a multiple of every page size in use: 4, 16, 64 KiB).
const RELEASE_ALIGN: usize = 64 << 10;

/// The part `within` (offsets relative to `whole.start`) of `whole`, as absolute offsets;
/// `None` when it reaches beyond `whole` or is reversed.
pub(crate) fn sub_range(whole: &Range<usize>, within: &Range<u64>) -> Option<Range<usize>> {
    let start = usize::try_from(within.start).ok()?;
    let end = usize::try_from(within.end).ok()?;
    if start > end || end > whole.end.checked_sub(whole.start)? {
        return None;
    }
    Some(whole.start + start..whole.start + end)
}

/// Streams bytes `range` of `file` to `sink` as [`Backing::stream`] does (bounded chunks,
/// pages populated before and released after), through a map of just that part of the file:
/// for reading back part of a file that is still being written.
///
/// # Errors
/// A range past the file's end, a failed map, and the sink's first error.
pub(crate) fn stream_file_range(
    file: &File,
    range: Range<u64>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let outside = || {
        FormatError::memory(format!(
            "bytes {}..{} are not all in the file",
            range.start, range.end
        ))
    };
    let io = |e: std::io::Error| FormatError {
        path: None,
        kind: e.into(),
    };
    if range.start > range.end || range.end > file.metadata().map_err(io)?.len() {
        return Err(outside());
    }
    if range.is_empty() {
        return sink(&[]);
    }
    let from = range.start - range.start % RELEASE_ALIGN as u64;
    let len = usize::try_from(range.end - from).map_err(|_| outside())?;
    // SAFETY: as for `Backing::map`: a read-only shared map of a file that nobody truncates
    // while it is mapped (here tantra's own temporary file, which only grows).
    let map = unsafe { memmap2::MmapOptions::new().offset(from).len(len).map(file) }.map_err(io)?;
    let skip = (range.start - from) as usize;
    Backing::Map(map).stream(skip..len, sink, &outside)
}

/// Where the bytes of an open file live.
pub(crate) enum Backing {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    /// Maps `file` read-only. The caller refuses empty files first (mmap refuses them on some
    /// systems, and no format tantra reads is empty).
    pub(crate) fn map(file: &File) -> io::Result<Backing> {
        // SAFETY: the map is read-only and shared. Like every memory-mapped reader, this assumes
        // no other process truncates or rewrites the file while it is open (a truncation shows
        // up as SIGBUS, a rewrite as changed bytes); tantra's own writers never modify a file in
        // place, they write a new one and rename it over the old.
        unsafe { Mmap::map(file) }.map(Backing::Map)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        }
    }

    /// Feeds `range` (offsets in the file) to `sink` in chunks of at most [`STREAM_CHUNK`] bytes,
    /// cut at multiples of it, and releases each chunk's pages once the sink has taken it. An
    /// empty range is one empty chunk.
    ///
    /// # Errors
    /// `outside()` when `range` does not lie within the bytes (the readers check their ranges at
    /// open, so this is a broken invariant reported as an error, not a panic), and the sink's
    /// first error, which stops the stream.
    pub(crate) fn stream(
        &self,
        range: Range<usize>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
        outside: &dyn Fn() -> FormatError,
    ) -> Result<(), FormatError> {
        let bytes = self.bytes();
        if range.start > range.end || range.end > bytes.len() {
            return Err(outside());
        }
        if range.is_empty() {
            return sink(&[]);
        }
        // No MADV_SEQUENTIAL here: advice that changes a range's flags splits the mapping's VMA,
        // and per-tensor advice in a non-storage order could split it into as many pieces as
        // there are tensors (Linux caps a process at ~65k). DONTNEED changes no flags.
        let mut pos = range.start;
        while pos < range.end {
            let next = (pos - pos % STREAM_CHUNK)
                .saturating_add(STREAM_CHUNK)
                .min(range.end);
            let chunk = bytes.get(pos..next).ok_or_else(outside)?;
            self.populate(pos, next);
            sink(chunk)?;
            self.release(pos, next);
            pos = next;
        }
        Ok(())
    }

    /// Drops the pages of bytes `..end` that a reader has parsed into owned structures (a
    /// safetensors header): they would otherwise stay resident for as long as the file is open,
    /// one more copy of the header beside the parsed one. Later reads fault them back in.
    pub(crate) fn release_parsed(&self, end: usize) {
        self.release(0, end);
    }

    /// Drops the pages of `start..end` (file offsets) from the resident set. The start is
    /// rounded down to [`RELEASE_ALIGN`], the end is rounded down to it too, so that the next
    /// chunk's first page is not dropped just before it is read: what one call leaves mapped
    /// below its end, the next call over the following bytes drops. Without the rounding of the
    /// start, a reader streaming a tensor in many small ranges (the runtime converting a matrix
    /// range by range) kept up to 64 KiB per range resident until the file was closed (7.8 MiB
    /// over the full Mamba). The part before `start` was streamed already or belongs to another
    /// tensor; dropping it costs at most a refault.
    #[cfg(unix)]
    fn release(&self, start: usize, end: usize) {
        let Backing::Map(map) = self else {
            return;
        };
        let stop = if end >= map.len() {
            map.len()
        } else {
            end - end % RELEASE_ALIGN
        };
        let start = start - start % RELEASE_ALIGN;
        if stop > start {
            // SAFETY: MADV_DONTNEED on a read-only *shared file* mapping only unmaps the pages;
            // a later access faults them back in from the page cache or the file, with the same
            // contents. Borrowed slices into the map stay valid and unchanged (under the same
            // assumption as the map itself: nobody rewrites the file). It is the private and
            // anonymous mappings, which this is not, where DONTNEED discards contents.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, stop - start)
            };
        }
    }

    #[cfg(not(unix))]
    fn release(&self, _start: usize, _end: usize) {}

    /// Maps the pages of `start..end` in one call before they are read (Linux 5.14+; elsewhere
    /// nothing), instead of one page fault per page as they are touched. Handing mapped bytes
    /// to `write()` is where this counts: a fault inside the kernel's copy makes it back out,
    /// fault the page in and retry; populated first, the same conversion took half the time
    /// (`bench/convert.sh`, Linux 6.18, ext4). The advice changes no flags (no VMA split) and
    /// no contents; an older kernel refuses it, and the pages then fault in as they are read.
    /// Below [`RELEASE_ALIGN`] bytes the system call costs more than the few faults it saves
    /// (the kernel maps up to 16 neighbouring pages per fault anyway).
    #[cfg(target_os = "linux")]
    fn populate(&self, start: usize, end: usize) {
        if let Backing::Map(map) = self {
            if end.saturating_sub(start) >= RELEASE_ALIGN {
                let _ = map.advise_range(memmap2::Advice::PopulateRead, start, end - start);
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn populate(&self, _start: usize, _end: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(b: &Backing, range: Range<usize>) -> Result<Vec<usize>, FormatError> {
        let mut lens = Vec::new();
        b.stream(
            range,
            &mut |c| {
                lens.push(c.len());
                Ok(())
            },
            &|| FormatError::memory("outside"),
        )?;
        Ok(lens)
    }

    #[test]
    fn chunks_are_cut_at_multiples_of_the_chunk_size() {
        let b = Backing::Owned(vec![0; 2 * STREAM_CHUNK + 10]);
        assert_eq!(
            collect(&b, 5..2 * STREAM_CHUNK + 10).unwrap(),
            vec![STREAM_CHUNK - 5, STREAM_CHUNK, 10]
        );
        assert_eq!(collect(&b, 7..7).unwrap(), vec![0]);
    }

    #[test]
    fn ranges_outside_are_errors() {
        let b = Backing::Owned(vec![0; 10]);
        assert!(collect(&b, 5..11).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 6..5;
        assert!(collect(&b, reversed).is_err());
    }
}
