//! [`Threads`]: the cores one runtime computes on, for callers that hold several runtimes or
//! cannot fix the process-wide pool first (Python's `MambaRuntime(..., threads=N)`). The CLI's
//! `--threads` sets rayon's global pool once instead ([`crate::set_threads`]).
//!
//! Every kernel asks rayon for the *current* pool (`rayon::current_num_threads`,
//! `rayon::broadcast`, parallel iterators), so running a call inside [`Threads::install`] puts
//! all of its work on that pool. Results do not depend on the thread count: every product is
//! bit-identical whatever the split.

use std::sync::Arc;

use super::error::{Result, RuntimeError};

/// A pool of `n` threads, or the global pool (all cores unless [`crate::set_threads`] said
/// otherwise).
#[derive(Debug, Clone, Default)]
pub struct Threads {
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Threads {
    /// `Some(n)`: a pool of its own with `n` threads; `None`: the global pool.
    ///
    /// # Errors
    /// [`RuntimeError::ZeroThreads`] for `n == 0`, [`RuntimeError::Threads`] for a pool the
    /// system cannot start.
    pub fn new(n: Option<usize>) -> Result<Self> {
        let Some(n) = n else {
            return Ok(Threads::default());
        };
        if n == 0 {
            return Err(RuntimeError::ZeroThreads);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("tantra-runtime-{i}"))
            .build()
            .map_err(|source| RuntimeError::Threads { threads: n, source })?;
        Ok(Threads {
            pool: Some(Arc::new(pool)),
        })
    }

    /// Runs `f` with this pool as rayon's current pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// The number of threads work is split over.
    pub fn count(&self) -> usize {
        match &self.pool {
            Some(p) => p.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_have_the_size_asked_for() {
        assert_eq!(
            Threads::new(Some(3))
                .unwrap()
                .install(rayon::current_num_threads),
            3
        );
        assert_eq!(Threads::new(Some(1)).unwrap().count(), 1);
        assert_eq!(
            Threads::new(None).unwrap().count(),
            rayon::current_num_threads()
        );
        assert!(matches!(
            Threads::new(Some(0)),
            Err(RuntimeError::ZeroThreads)
        ));
    }
}
