//! A counting global allocator, so that a fuzz run fails on a memory blow-up and not only on a
//! crash (issue 10: no input may cost more than about 32 bytes of memory per input byte).
//!
//! libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb` only catch a blow-up past hundreds of
//! megabytes, and the inputs it tries are a few kilobytes: a parser that spends 1,000 bytes per
//! input byte would never reach them. Here every allocation goes through [`Counting`], which keeps
//! the live byte count and its high-water mark; [`within_budget`] runs one parse and asserts
//! that the peak of live bytes it added stays within [`PER_INPUT_BYTE`] bytes per input byte
//! plus [`FIXED`]. Each target includes this file with `#[path]` and installs the allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Memory a parse may add per byte of its input (README, "Limits").
pub const PER_INPUT_BYTE: usize = 32;
/// Memory a parse may add whatever its input: tables sized up front, the first buffers. Small
/// enough that a blow-up shows on the kilobyte inputs libFuzzer tries.
pub const FIXED: usize = 128 << 10;
/// The fixed allowance of work that flattens a pickle (README, "Limits"): dotted names may take
/// 16 MiB and str/bytes values 1 MiB whatever the input, plus the entries of 65,536 visits.
#[allow(dead_code)] // used by the targets that reach the pickle reader (pickle, zip)
pub const FLATTEN_FIXED: usize = 32 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and their peak.
pub struct Counting;

impl Counting {
    fn add(n: usize) {
        let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }

    fn sub(n: usize) {
        LIVE.fetch_sub(n, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to `System` unchanged; only counters are updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        Self::sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Old and new blocks may both be live while the bytes are copied.
            Self::add(new_size);
            Self::sub(layout.size());
        }
        p
    }
}

/// Runs `f` (one parse of `input_len` bytes) and panics, naming `what`, if the live bytes it
/// added ever exceeded [`PER_INPUT_BYTE`] per input byte plus [`FIXED`].
pub fn within_budget<T>(what: &str, input_len: usize, f: impl FnOnce() -> T) -> T {
    within(what, input_len, FIXED, f)
}

/// [`within_budget`] with another fixed allowance, for work whose documented budget has a
/// larger constant (flattening a pickle may build 16 MiB of names from any input).
pub fn within<T>(what: &str, input_len: usize, fixed: usize, f: impl FnOnce() -> T) -> T {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    let added = PEAK.load(Ordering::Relaxed) - start;
    let budget = PER_INPUT_BYTE * input_len + fixed;
    assert!(
        added <= budget,
        "{what}: {added} bytes at peak for {input_len} input bytes (budget {budget})"
    );
    out
}
