//! How many threads a decoding step runs on, chosen from the time steps take.
//!
//! Why measure instead of always using every core: the threaded step (`decode.rs`) splits each
//! layer's work in fixed shares and meets at a barrier four times per layer, so it goes at the
//! pace of its slowest thread. When another program holds one of the two cores, the thread on
//! that core runs a fraction of the time and the whole step waits for it: on this 2-core
//! machine decoding fell from 103 to 39-55 tokens/s that way, while one thread alone kept 70-79.
//! Both ways give bit-identical results (the same arithmetic per row), so the choice is free to
//! change at any step: the pacer keeps a moving average of the step time of each way, runs the
//! faster, and now and then runs the other once to notice when the load changed: every
//! [`PROBE_EVERY`] steps while one thread is the faster (to take the second core back soon
//! after it frees), every [`PROBE_RARE`] while the threaded step is (a one-thread probe costs
//! most of a step on a quiet machine, 2% of decoding at one in 32; and no probe is needed to
//! leave the threaded step when a core gets busy, as its own average then rises past the one
//! thread's).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Steps between two runs of the threaded step while one thread is the faster.
pub(super) const PROBE_EVERY: u64 = 32;

/// Steps between two one-thread runs while the threaded step is the faster.
pub(super) const PROBE_RARE: u64 = 256;

/// Step-time averages of the threaded and the one-thread step; shared by every use of one
/// model (atomics, so `&self` suffices and threads may decode at once).
#[derive(Debug, Default)]
pub(super) struct Pacer {
    steps: AtomicU64,
    /// Moving averages in nanoseconds, 0 until measured: `[threaded, alone]`.
    ema_ns: [AtomicU64; 2],
}

impl Clone for Pacer {
    /// A copy of a model measures afresh.
    fn clone(&self) -> Self {
        Pacer::default()
    }
}

impl Pacer {
    /// Whether the next step should run on the calling thread alone.
    pub(super) fn alone(&self) -> bool {
        let n = self.steps.fetch_add(1, Ordering::Relaxed);
        let threaded = self.ema_ns[0].load(Ordering::Relaxed);
        let alone = self.ema_ns[1].load(Ordering::Relaxed);
        if threaded == 0 {
            return false;
        }
        if alone == 0 {
            return true;
        }
        let best = alone < threaded;
        let every = if best { PROBE_EVERY } else { PROBE_RARE };
        if n % every == every - 1 {
            !best
        } else {
            best
        }
    }

    /// Records the time of a step run `alone` or threaded: a quarter of the new time into
    /// the average of the way in use; the way that was only probed takes the new time as it
    /// is, its old average being stale. A
    /// lucky probe costs little: once in use, a way's average follows its real time within a
    /// few steps.
    pub(super) fn record(&self, alone: bool, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let other = self.ema_ns[usize::from(!alone)].load(Ordering::Relaxed);
        let slot = &self.ema_ns[usize::from(alone)];
        let old = slot.load(Ordering::Relaxed);
        let probed = other != 0 && old > other;
        let new = match old {
            0 => ns,
            _ if probed => ns,
            _ => old - old / 4 + ns / 4,
        };
        slot.store(new.max(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `steps` steps whose time is `time(alone)`, returning how many ran alone.
    fn drive(p: &Pacer, steps: usize, time: impl Fn(bool) -> u64) -> usize {
        let mut alone_steps = 0;
        for _ in 0..steps {
            let alone = p.alone();
            alone_steps += usize::from(alone);
            p.record(alone, Duration::from_micros(time(alone)));
        }
        alone_steps
    }

    #[test]
    fn runs_the_faster_way_and_follows_a_change_of_load() {
        let p = Pacer::default();
        // Quiet machine: threaded 6 ms, alone 10 ms. Alone runs once to be measured, then
        // only as a rare probe (one in PROBE_RARE steps).
        let alone = drive(&p, 320, |a| if a { 10_000 } else { 6_000 });
        assert!((2..=3).contains(&alone), "{alone}");
        // The other core gets busy: threaded 25 ms. The threaded average passes the one-thread
        // one within a few steps, without waiting for a probe.
        let alone = drive(&p, 320, |a| if a { 10_000 } else { 25_000 });
        assert!(alone >= 300, "{alone}");
        // Quiet again: back to threads at the next probe.
        let alone = drive(&p, 320, |a| if a { 10_000 } else { 6_000 });
        assert!(alone <= 45, "{alone}");
        let later = drive(&p, 320, |a| if a { 10_000 } else { 6_000 });
        assert!(later <= 2, "{later}");
    }

    #[test]
    fn a_copy_starts_afresh() {
        let p = Pacer::default();
        drive(&p, 10, |a| if a { 1 } else { 2 });
        let q = p.clone();
        assert!(!q.alone(), "the first step of a fresh pacer is threaded");
    }
}
