//! One decoding step of the Mamba blocks on several threads at once.
//!
//! Why not hand each product to the thread pool: a decoding step is about ninety small
//! products and scans (five per layer), each too short to hide the cost of handing work to
//! the pool and joining it, which measured 20-30 microseconds per hand-off on this 2-core
//! machine, a fifth of a token's time. Instead the step is handed out once: the calling thread
//! runs it, and helpers spawned on the pool join it, going through it together phase by
//! phase: four phases per layer
//! (`in_proj` and the convolution, `x_proj`, `dt_proj` and the scan, `out_proj`), each cut
//! into pieces (ranges of inner channels or of output rows) that the threads claim from a
//! shared counter. A thread that finishes a phase's last piece waits, spinning, until every
//! piece is done, then reads them all back and goes on.
//!
//! Why pieces claimed at run time rather than a fixed share per thread: on a shared machine
//! another process can take a core from one of the threads for a whole time slice. With fixed
//! shares every phase then waits for that thread (decode fell from 103 to 39-55 tokens/s on a
//! busy 2-core machine); with claimed pieces the running threads take the rest of its phase
//! and wait at most for the one piece it holds. For the same reason the step never waits for
//! a helper to start (as `rayon::broadcast` would, for every thread of the pool, on every
//! token): a helper that starts late finds the step done and returns. Every value is computed with exactly the arithmetic of the one-thread path
//! (the same row kernel, the same per-channel convolution and scan, whichever thread runs a
//! piece), so the result is bit-identical to it, and so to a prefill.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::kernels::rms_norm;
use super::mamba::{MambaBlocks, MambaState};

/// Threads for a step of `blocks`: rayon's (which follows `RAYON_NUM_THREADS`), at most 8,
/// when the layers are big enough to be worth splitting; 0 or 1 means "run it the usual way".
pub(super) fn threads_for(blocks: &MambaBlocks) -> usize {
    let dims = blocks.dims();
    let threads = rayon::current_num_threads().min(8);
    let work = dims.inner * dims.hidden;
    if threads < 2 || work < (1 << 16) || dims.inner < 16 * threads {
        return 1;
    }
    threads
}

/// Pieces per thread in each phase: enough that the running threads can take over most of a
/// phase from a thread that lost its core, few enough that a piece stays a few microseconds
/// of work.
const PIECES_PER_THREAD: usize = 4;

/// `n` items cut into `parts` contiguous ranges whose starts are multiples of 4 (whole groups
/// of the packed matrices); the last ranges may be empty.
fn split(n: usize, parts: usize) -> Vec<(usize, usize)> {
    let per = n.div_ceil(parts.max(1)).next_multiple_of(4).max(4);
    (0..parts)
        .map(|t| ((t * per).min(n), ((t + 1) * per).min(n)))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means another thread panicked; `abort` already ends the step.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One phase of a step: pieces handed out by a counter, each piece's output, and how many
/// are done.
struct Phase {
    next: AtomicUsize,
    done: AtomicUsize,
    slots: Vec<Mutex<Vec<f32>>>,
}

impl Phase {
    fn new(pieces: usize) -> Phase {
        Phase {
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            slots: (0..pieces).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// The next unclaimed piece, if any is left.
    fn claim(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::AcqRel);
        (i < self.slots.len()).then_some(i)
    }

    /// Stores piece `i`'s output and counts it done.
    fn finish(&self, i: usize, out: &[f32]) {
        if let Some(slot) = self.slots.get(i) {
            let mut slot = lock(slot);
            slot.clear();
            slot.extend_from_slice(out);
        }
        self.done.fetch_add(1, Ordering::AcqRel);
    }

    /// Waits until every piece is done, then hands each piece's output to `take`. False when
    /// the step was aborted (another thread panicked).
    fn gather(&self, abort: &AtomicBool, mut take: impl FnMut(usize, &[f32])) -> bool {
        let mut spins = 0u32;
        while self.done.load(Ordering::Acquire) < self.slots.len() {
            if abort.load(Ordering::Acquire) {
                return false;
            }
            if spins < 2_000 {
                spins += 1;
                spin_loop();
            } else {
                // The piece's thread lost its core: give ours back rather than burn the slice.
                std::thread::yield_now();
            }
        }
        for (i, slot) in self.slots.iter().enumerate() {
            take(i, &lock(slot));
        }
        !abort.load(Ordering::Acquire)
    }
}

/// Sets the step's abort flag if the thread that owns it unwinds, so that the others stop
/// waiting for its pieces.
struct AbortOnPanic<'a>(&'a AtomicBool);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// One piece of channels of one layer's convolution and SSM states.
type StatePiece<'a> = Mutex<(&'a mut [f32], &'a mut [f32])>;

/// The pieces of each phase.
struct Plan {
    channels: Vec<(usize, usize)>,
    x_rows: Vec<(usize, usize)>,
    out_rows: Vec<(usize, usize)>,
}

/// Runs one position `h` (`[d]`, updated in place) through all blocks on `threads` threads.
/// The caller checked `h`'s length and the state's shapes.
pub(super) fn step(blocks: &MambaBlocks, h: &mut [f32], state: &mut MambaState, threads: usize) {
    let dims = blocks.dims();
    let (e, n, k) = (dims.inner, dims.state, dims.kernel);
    let pieces = threads.max(1) * PIECES_PER_THREAD;
    let plan = Plan {
        channels: split(e, pieces),
        x_rows: split(dims.dt_rank + 2 * n, pieces),
        out_rows: split(dims.hidden, pieces),
    };
    // Every layer's states, cut at the channel pieces.
    let mut states: Vec<Vec<StatePiece<'_>>> = Vec::with_capacity(state.conv.len());
    for (conv, ssm) in state.conv.iter_mut().zip(state.ssm.iter_mut()) {
        let mut conv_rest: &mut [f32] = conv;
        let mut ssm_rest: &mut [f32] = ssm;
        let mut layer = Vec::with_capacity(plan.channels.len());
        for &(c0, c1) in &plan.channels {
            let (a, b) = std::mem::take(&mut conv_rest).split_at_mut((c1 - c0) * k);
            conv_rest = b;
            let (s, rest) = std::mem::take(&mut ssm_rest).split_at_mut((c1 - c0) * n);
            ssm_rest = rest;
            layer.push(Mutex::new((a, s)));
        }
        states.push(layer);
    }
    let phases: Vec<[Phase; 4]> = (0..blocks.layers().len())
        .map(|_| {
            [
                Phase::new(plan.channels.len()),
                Phase::new(plan.x_rows.len()),
                Phase::new(plan.channels.len()),
                Phase::new(plan.out_rows.len()),
            ]
        })
        .collect();
    let abort = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    let start: &[f32] = h;
    let (states, phases, plan) = (&states, &phases, &plan);
    // This thread runs the whole step; `threads - 1` helpers join in if they get a core. The
    // step does not wait for a helper to start: one that starts after this thread finished
    // (or that nobody took, which this thread then runs itself while leaving the scope) sees
    // `finished` and returns at once.
    let out = rayon::scope(|s| {
        for _ in 1..threads {
            let (abort, finished) = (&abort, &finished);
            s.spawn(move |_| {
                let _ = run(blocks, start, states, phases, plan, abort, Some(finished));
            });
        }
        let out = run(blocks, start, states, phases, plan, &abort, None);
        finished.store(true, Ordering::Release);
        out
    });
    if let Some(out) = out {
        h.copy_from_slice(&out);
    }
    state.position += 1;
}

/// One thread's walk through a step: claims pieces of each phase while some are left, waits
/// for the phase to be done, reads it back. Returns the new residual stream, `None` when the
/// step was aborted. A helper (`finished` given) stops at the first layer it reaches after the
/// step's own thread finished.
fn run(
    blocks: &MambaBlocks,
    start: &[f32],
    states: &[Vec<StatePiece<'_>>],
    phases: &[[Phase; 4]],
    plan: &Plan,
    abort: &AtomicBool,
    finished: Option<&AtomicBool>,
) -> Option<Vec<f32>> {
    let _guard = AbortOnPanic(abort);
    let dims = blocks.dims();
    let (d, e, n, r, k) = (
        dims.hidden,
        dims.inner,
        dims.state,
        dims.dt_rank,
        dims.kernel,
    );
    let mut h = start.to_vec();
    let mut normed = vec![0.0; d];
    let mut u = vec![0.0; e];
    let mut z = vec![0.0; e];
    let mut x_dbl = vec![0.0; r + 2 * n];
    let mut y = vec![0.0; e];
    let mut out = vec![0.0; d];
    let (mut piece, mut dt) = (Vec::new(), Vec::new());
    for ((layer, phase), state) in blocks.layers().iter().zip(phases).zip(states) {
        if finished.is_some_and(|f| f.load(Ordering::Acquire)) {
            return None;
        }
        rms_norm(&h, &layer.norm, blocks.eps(), &mut normed);
        // in_proj (x and z) and the convolution: a piece's output is u, then z.
        while let Some(j) = phase[0].claim() {
            let (c0, c1) = plan.channels[j];
            let m = c1 - c0;
            piece.clear();
            piece.resize(2 * m, 0.0);
            let (xs, zs) = piece.split_at_mut(m);
            layer.in_proj.forward_rows(c0, c1, &normed, xs);
            layer.in_proj.forward_rows(e + c0, e + c1, &normed, zs);
            let mut st = lock(&state[j]);
            for (q, window) in st.0.chunks_exact_mut(k).enumerate() {
                xs[q] = layer.conv_step(c0 + q, window, xs[q]);
            }
            drop(st);
            phase[0].finish(j, &piece);
        }
        let whole = phase[0].gather(abort, |j, p| {
            let (c0, c1) = plan.channels[j];
            let m = c1 - c0;
            if let (Some(du), Some(dz), Some(su), Some(sz)) = (
                u.get_mut(c0..c1),
                z.get_mut(c0..c1),
                p.get(..m),
                p.get(m..2 * m),
            ) {
                du.copy_from_slice(su);
                dz.copy_from_slice(sz);
            }
        });
        if !whole {
            return None;
        }
        // x_proj.
        while let Some(j) = phase[1].claim() {
            let (a, b) = plan.x_rows[j];
            piece.clear();
            piece.resize(b - a, 0.0);
            layer.x_proj.forward_rows(a, b, &u, &mut piece);
            phase[1].finish(j, &piece);
        }
        if !phase[1].gather(abort, |j, p| copy_piece(&mut x_dbl, plan.x_rows[j], p)) {
            return None;
        }
        // dt_proj and the scan.
        let (bv, cv) = x_dbl[r..].split_at(n);
        while let Some(j) = phase[2].claim() {
            let (c0, c1) = plan.channels[j];
            let m = c1 - c0;
            dt.clear();
            dt.resize(m, 0.0);
            layer.dt_proj.forward_rows(c0, c1, &x_dbl[..r], &mut dt);
            piece.clear();
            piece.resize(m, 0.0);
            let mut st = lock(&state[j]);
            for (q, s) in st.1.chunks_exact_mut(n).enumerate() {
                let c = c0 + q;
                piece[q] = layer.scan_step(c, s, dt[q], u[c], bv, cv, z[c]);
            }
            drop(st);
            phase[2].finish(j, &piece);
        }
        if !phase[2].gather(abort, |j, p| copy_piece(&mut y, plan.channels[j], p)) {
            return None;
        }
        // out_proj.
        while let Some(j) = phase[3].claim() {
            let (a, b) = plan.out_rows[j];
            piece.clear();
            piece.resize(b - a, 0.0);
            layer.out_proj.forward_rows(a, b, &y, &mut piece);
            phase[3].finish(j, &piece);
        }
        if !phase[3].gather(abort, |j, p| copy_piece(&mut out, plan.out_rows[j], p)) {
            return None;
        }
        for (hv, o) in h.iter_mut().zip(&out) {
            *hv += o;
        }
    }
    Some(h)
}

/// Puts a piece's output `p` at `range` of `full`.
fn copy_piece(full: &mut [f32], (a, b): (usize, usize), p: &[f32]) {
    if let (Some(dst), Some(src)) = (full.get_mut(a..b), p.get(..b - a)) {
        dst.copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_everything_in_groups_of_four() {
        for (n, parts) in [(1408, 2), (76, 2), (704, 3), (10, 4), (4, 2)] {
            let s = split(n, parts);
            assert_eq!(s.len(), parts);
            assert_eq!(s[0].0, 0);
            assert_eq!(s[parts - 1].1, n);
            for w in s.windows(2) {
                assert_eq!(w[0].1, w[1].0);
            }
            assert!(s.iter().all(|&(a, _)| a % 4 == 0 || a == n));
        }
    }

    /// Three threads, one of which starts late: every piece is claimed once, and every
    /// thread reads back every piece's output.
    #[test]
    fn phases_hand_out_each_piece_once_and_everyone_sees_all() {
        let phases: Vec<Phase> = (0..50).map(|_| Phase::new(7)).collect();
        let abort = AtomicBool::new(false);
        let claimed = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..3 {
                let (phases, abort, claimed) = (&phases, &abort, &claimed);
                s.spawn(move || {
                    if t == 2 {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    for (round, p) in phases.iter().enumerate() {
                        while let Some(j) = p.claim() {
                            claimed.fetch_add(1, Ordering::SeqCst);
                            p.finish(j, &[(round * 10 + j) as f32]);
                        }
                        let mut seen = Vec::new();
                        assert!(p.gather(abort, |j, v| seen.push((j, v[0]))));
                        let want: Vec<(usize, f32)> =
                            (0..7).map(|j| (j, (round * 10 + j) as f32)).collect();
                        assert_eq!(seen, want);
                    }
                });
            }
        });
        assert_eq!(claimed.load(Ordering::SeqCst), 50 * 7);
    }

    /// A thread that panics ends the others' waits instead of leaving them spinning.
    #[test]
    fn an_aborted_phase_releases_the_waiters() {
        let p = Phase::new(2);
        let abort = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| p.gather(&abort, |_, _| {}));
            let claimer = s.spawn(|| {
                let _guard = AbortOnPanic(&abort);
                let _ = p.claim();
                panic!("a piece failed");
            });
            assert!(claimer.join().is_err());
            assert!(!waiter.join().unwrap_or(true));
        });
    }
}
