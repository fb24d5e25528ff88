//! One decoding step of the Mamba blocks on several threads at once.
//!
//! Why not hand each product to the thread pool: a decoding step is about ninety small
//! products and scans (five per layer), each too short to hide the cost of handing work to
//! the pool and joining it, which measured 20-30 microseconds per hand-off on this 2-core
//! machine, a fifth of a token's time. Instead the pool's threads get the whole step once
//! (`rayon::broadcast`) and each runs it on its own share (SPMD): thread `t` owns a range of
//! the inner channels (its rows of `in_proj` and `dt_proj`, its convolution and SSM states)
//! and a range of the rows of `x_proj` and `out_proj`. Where a thread needs what the others
//! computed (the convolution output before `x_proj`, `x_proj`'s output, the scan output before
//! `out_proj`, `out_proj`'s output), the threads publish their parts and meet at a spinning
//! barrier: four meetings per layer, each a microsecond or so while the threads are running.
//! Every value is computed with exactly the arithmetic of the one-thread path (the same row
//! kernel, the same per-channel convolution and scan), so the result is bit-identical to it,
//! and so to a prefill.

use std::sync::{Mutex, PoisonError};

use super::kernels::rms_norm;
use super::mamba::{MambaBlocks, MambaState};
use super::scan::{self, Rows};
use super::sync::{lock, AbortOnPanic, SpinBarrier};

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

/// `n` items cut into `parts` contiguous ranges whose starts are multiples of 4 (whole groups
/// of the packed matrices); the last ranges may be empty.
fn split(n: usize, parts: usize) -> Vec<(usize, usize)> {
    let per = n.div_ceil(parts.max(1)).next_multiple_of(4).max(4);
    (0..parts)
        .map(|t| ((t * per).min(n), ((t + 1) * per).min(n)))
        .collect()
}

/// Where threads publish their parts: one slot per thread, two sets used alternately, so that
/// a thread can publish its next part while a slower one still reads the last (the barrier in
/// between guarantees everyone has finished reading a set before it is written again).
struct Exchange {
    sets: [Vec<Mutex<Vec<f32>>>; 2],
    barrier: SpinBarrier,
}

impl Exchange {
    fn new(threads: usize) -> Self {
        let set = || (0..threads).map(|_| Mutex::new(Vec::new())).collect();
        Exchange {
            sets: [set(), set()],
            barrier: SpinBarrier::new(threads),
        }
    }

    /// Publishes thread `t`'s `part`, waits for everyone, and assembles the whole into `full`
    /// (part `i` at `ranges[i]`). False when the step was aborted.
    fn share(
        &self,
        phase: &mut usize,
        t: usize,
        part: &[f32],
        full: &mut [f32],
        ranges: &[(usize, usize)],
    ) -> bool {
        let set = &self.sets[*phase % 2];
        *phase += 1;
        {
            let mut slot = lock(&set[t]);
            slot.clear();
            slot.extend_from_slice(part);
        }
        if !self.barrier.wait() {
            return false;
        }
        for (slot, &(a, b)) in set.iter().zip(ranges) {
            let slot = lock(slot);
            if let (Some(dst), Some(src)) = (full.get_mut(a..b), slot.get(..b - a)) {
                dst.copy_from_slice(src);
            }
        }
        true
    }
}

/// One thread's state: per layer, its column band of each convolution and SSM state row.
type StateParts<'a> = (Vec<Vec<&'a mut [f32]>>, Vec<Vec<&'a mut [f32]>>);

/// The ranges each thread owns.
struct Plan {
    channels: Vec<(usize, usize)>,
    x_rows: Vec<(usize, usize)>,
    out_rows: Vec<(usize, usize)>,
}

/// Runs one position `h` (`[d]`, updated in place) through all blocks on `threads` threads.
/// The caller checked `h`'s length and the state's shapes.
pub(super) fn step(blocks: &MambaBlocks, h: &mut [f32], state: &mut MambaState, threads: usize) {
    let dims = blocks.dims();
    let (e, n) = (dims.inner, dims.state);
    let plan = Plan {
        channels: split(e, threads),
        x_rows: split(dims.dt_rank + 2 * n, threads),
        out_rows: split(dims.hidden, threads),
    };
    // Each thread's column bands of every layer's state rows.
    let mut conv_parts: Vec<Vec<Vec<&mut [f32]>>> = (0..threads).map(|_| Vec::new()).collect();
    let mut ssm_parts: Vec<Vec<Vec<&mut [f32]>>> = (0..threads).map(|_| Vec::new()).collect();
    for (conv, ssm) in state.conv.iter_mut().zip(state.ssm.iter_mut()) {
        let convs = scan::split_columns(scan::rows_of(conv, e), &plan.channels);
        let ssms = scan::split_columns(scan::rows_of(ssm, e), &plan.channels);
        for ((t, c), s) in convs.into_iter().enumerate().zip(ssms) {
            conv_parts[t].push(c);
            ssm_parts[t].push(s);
        }
    }
    let exchange = Exchange::new(threads);
    let start: &[f32] = h;
    // Each thread takes its own slices out of its slot.
    let parts: Vec<Mutex<Option<StateParts<'_>>>> = conv_parts
        .into_iter()
        .zip(ssm_parts)
        .map(|p| Mutex::new(Some(p)))
        .collect();
    if threads == 1 {
        // On the calling thread alone: no hand-off, and no wait for a pool thread that may
        // be without a core (see `pacer.rs`).
        if let Some((conv, ssm)) = parts
            .into_iter()
            .next()
            .and_then(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        {
            let out = run(blocks, 0, start, conv, ssm, &plan, &exchange);
            h.copy_from_slice(&out);
        }
        state.position += 1;
        return;
    }
    // The pool's threads, already running: no thread is created per step.
    let results = rayon::broadcast(|ctx| {
        let t = ctx.index();
        let mine = parts
            .get(t)
            .and_then(|m| m.lock().unwrap_or_else(PoisonError::into_inner).take());
        mine.map(|(conv, ssm)| run(blocks, t, start, conv, ssm, &plan, &exchange))
    });
    if let Some(Some(out)) = results.into_iter().next() {
        h.copy_from_slice(&out);
    }
    state.position += 1;
}

/// Thread `t`'s share of one step; returns the new residual stream (the same in every thread).
fn run(
    blocks: &MambaBlocks,
    t: usize,
    start: &[f32],
    mut conv: Vec<Vec<&mut [f32]>>,
    mut ssm: Vec<Vec<&mut [f32]>>,
    plan: &Plan,
    ex: &Exchange,
) -> Vec<f32> {
    let _guard = AbortOnPanic(&ex.barrier);
    let dims = blocks.dims();
    let (d, e, n, r) = (dims.hidden, dims.inner, dims.state, dims.dt_rank);
    let (c0, c1) = plan.channels[t];
    let (x0, x1) = plan.x_rows[t];
    let (o0, o1) = plan.out_rows[t];
    let mine = c1 - c0;
    let mut h = start.to_vec();
    let mut normed = vec![0.0; d];
    let mut x_part = vec![0.0; mine];
    let mut z_part = vec![0.0; mine];
    let mut u_part = vec![0.0; mine];
    let mut u = vec![0.0; e];
    let mut xdbl_part = vec![0.0; x1 - x0];
    let mut x_dbl = vec![0.0; r + 2 * n];
    let mut dt_part = vec![0.0; mine];
    let mut y_part = vec![0.0; mine];
    let mut y = vec![0.0; e];
    let mut out_part = vec![0.0; o1 - o0];
    let mut out = vec![0.0; d];
    let mut phase = 0;
    for (i, layer) in blocks.layers().iter().enumerate() {
        rms_norm(&h, &layer.norm, blocks.eps(), &mut normed);
        layer.in_proj.forward_rows(c0, c1, &normed, &mut x_part);
        layer
            .in_proj
            .forward_rows(e + c0, e + c1, &normed, &mut z_part);
        scan::conv(
            layer,
            c0,
            &mut conv[i],
            1,
            Rows::new(&x_part, mine),
            &mut u_part,
            mine,
        );
        if !ex.share(&mut phase, t, &u_part, &mut u, &plan.channels) {
            break;
        }
        layer.x_proj.forward_rows(x0, x1, &u, &mut xdbl_part);
        if !ex.share(&mut phase, t, &xdbl_part, &mut x_dbl, &plan.x_rows) {
            break;
        }
        layer
            .dt_proj
            .forward_rows(c0, c1, &x_dbl[..r], &mut dt_part);
        scan::scan(
            layer,
            c0,
            &mut ssm[i],
            1,
            Rows::new(&dt_part, mine),
            Rows::new(&u_part, mine),
            Rows::new(&z_part, mine),
            Rows::new(&x_dbl[r..], 2 * n),
            &mut y_part,
            mine,
        );
        if !ex.share(&mut phase, t, &y_part, &mut y, &plan.channels) {
            break;
        }
        layer.out_proj.forward_rows(o0, o1, &y, &mut out_part);
        if !ex.share(&mut phase, t, &out_part, &mut out, &plan.out_rows) {
            break;
        }
        for (hv, o) in h.iter_mut().zip(&out) {
            *hv += o;
        }
    }
    h
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
}
