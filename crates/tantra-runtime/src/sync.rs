//! The meeting point of threads that run one computation together (SPMD): a spinning barrier
//! that lets everyone out when one of them panics, and the lock of a shared slot.
//!
//! Why spin: between two meetings the threads compute for microseconds (a decoding step) to
//! milliseconds (a prefill), far less than a sleep and wake-up through the kernel costs; a
//! thread that waits long yields its core instead, as another process may need it.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A barrier that spins (then yields) instead of sleeping, and that lets everyone out if a
/// thread panicked, so that the others do not wait forever.
pub(super) struct SpinBarrier {
    n: usize,
    count: AtomicUsize,
    generation: AtomicUsize,
    abort: AtomicBool,
}

impl SpinBarrier {
    pub(super) fn new(n: usize) -> Self {
        SpinBarrier {
            n,
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            abort: AtomicBool::new(false),
        }
    }

    /// Waits for all `n` threads; false when the step was aborted.
    pub(super) fn wait(&self) -> bool {
        let gen = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
            return !self.abort.load(Ordering::Acquire);
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == gen {
            if self.abort.load(Ordering::Acquire) {
                return false;
            }
            if spins < 2_000 {
                spins += 1;
                spin_loop();
            } else {
                // Another process has the core: give it back rather than burn the slice.
                std::thread::yield_now();
            }
        }
        !self.abort.load(Ordering::Acquire)
    }
}

/// Sets the barrier's abort flag if the thread that owns it unwinds.
pub(super) struct AbortOnPanic<'a>(pub(super) &'a SpinBarrier);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort.store(true, Ordering::Release);
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned slot means another thread panicked; the barrier already aborts the step.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_releases_everyone_many_times() {
        let b = SpinBarrier::new(3);
        let count = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for round in 0..200 {
                        count.fetch_add(1, Ordering::SeqCst);
                        assert!(b.wait());
                        assert!(count.load(Ordering::SeqCst) >= 3 * (round + 1));
                        assert!(b.wait());
                    }
                });
            }
        });
        assert_eq!(count.load(Ordering::SeqCst), 600);
    }
}
