//! A prefill of several positions through the Mamba blocks, on one thread or several.
//!
//! Why not hand each product to the thread pool, as the first threaded prefill did: a layer is
//! five products, a convolution and a scan, each a parallel region that ended with a join, a
//! copy of the bands into place on one thread, and work between them (the normalization, the
//! convolution, the slicing of `x_proj`'s output) that ran on one thread while the other
//! waited. Two threads made a 64-token prefill only 1.2-1.5 times faster than one. Here the
//! pool's threads get the whole chunk once (`rayon::broadcast`, as the decoding step in
//! `decode.rs` does; one thread runs it on the caller) and meet at a spinning barrier four
//! times per layer; between two meetings they take tasks from a shared counter until none is
//! left:
//!
//! 1. bands of inner channels: their rows of `in_proj` (`x` and `z`) for every position, then
//!    the convolution of the band, which advances that band of the convolution state;
//! 2. bands of rows of `x_proj`;
//! 3. bands of inner channels again: their rows of `dt_proj`, then the scan of the band, which
//!    advances that band of the SSM state;
//! 4. bands of rows of `out_proj`.
//!
//! A task writes its output into its own slot; after each meeting every thread copies the
//! slots it needs into its own full matrix (`[positions, width]`) for the next phase, so no
//! copy runs on one thread alone, and each thread keeps the residual stream itself. Taking
//! tasks from a counter, not a fixed share, is what keeps a thread whose core another process
//! took from holding the others up for more than one task.
//!
//! Every value is computed with the arithmetic of the decoding step (the same result per row
//! and vector from the matrix kernels, the same convolution and scan per channel), so the
//! result is bit-identical to decoding token by token, whatever the number of threads (tested
//! in `tests/precisions.rs` on 1, 2 and 3 threads).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::kernels::rms_norm;
use super::layers::Linear;
use super::mamba::{MambaBlocks, MambaState};
use super::scan::{self, Rows};
use super::sync::{lock, AbortOnPanic, SpinBarrier};

/// Bytes of f32 weights a task of rows aims at: large enough that handing out tasks costs
/// nothing next to them, small enough to stay in L2 with a block of inputs and to give each
/// thread several tasks.
const TASK_BYTES: usize = 192 * 1024;

/// `n` items in contiguous ranges of `per` (a multiple of `align`), at least `min_tasks` of
/// them when `n` allows; the last range may be shorter.
fn bands(n: usize, per: usize, align: usize, min_tasks: usize) -> Vec<(usize, usize)> {
    let cap = n.div_ceil(min_tasks.max(1));
    let per = per.min(cap).next_multiple_of(align).max(align);
    (0..n).step_by(per).map(|a| (a, (a + per).min(n))).collect()
}

/// Row bands of a layer of `cols` inputs for `threads` threads.
fn row_bands(layer: &Linear, threads: usize) -> Vec<(usize, usize)> {
    let per = TASK_BYTES / (layer.in_features().max(1) * 4);
    bands(layer.out_features(), per, 4, 4 * threads)
}

/// What a band of channels leaves for the phases after it, each `[positions, band width]`.
#[derive(Default)]
struct BandOut {
    /// The convolution's output (the scan's input).
    u: Vec<f32>,
    /// The gate.
    z: Vec<f32>,
    /// The scan's gated output.
    y: Vec<f32>,
}

/// Which task ranges each phase hands out.
struct Plan {
    channels: Vec<(usize, usize)>,
    x_rows: Vec<(usize, usize)>,
    out_rows: Vec<(usize, usize)>,
}

/// A band of one layer's state: the convolution window rows and the SSM rows of its channels.
type StateBand<'a> = (Vec<&'a mut [f32]>, Vec<&'a mut [f32]>);

/// What the threads share during one chunk.
struct Shared<'a> {
    blocks: &'a MambaBlocks,
    len: usize,
    plan: Plan,
    /// Per layer, per band of channels.
    states: Vec<Vec<Mutex<StateBand<'a>>>>,
    band_out: Vec<Mutex<BandOut>>,
    x_out: Vec<Mutex<Vec<f32>>>,
    o_out: Vec<Mutex<Vec<f32>>>,
    /// The next task of each phase of each layer.
    next: Vec<AtomicUsize>,
    barrier: SpinBarrier,
}

impl Shared<'_> {
    /// Runs `task` on the tasks of phase `phase` of layer `layer` until none is left.
    fn take(&self, layer: usize, phase: usize, tasks: usize, mut task: impl FnMut(usize)) {
        let Some(next) = self.next.get(layer * 4 + phase) else {
            return;
        };
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= tasks {
                return;
            }
            task(i);
        }
    }

    /// Phase `phase` of layer `layer`, a product by bands of rows: the tasks (`ranges`, each
    /// writing its `[len, rows]` part into its slot), the meeting, then the whole output
    /// (`[len, out_features]`) assembled into `full`. False when another thread panicked.
    #[allow(clippy::too_many_arguments)]
    fn product_by_rows(
        &self,
        layer: usize,
        phase: usize,
        linear: &Linear,
        xs: &[f32],
        ranges: &[(usize, usize)],
        slots: &[Mutex<Vec<f32>>],
        full: &mut [f32],
    ) -> bool {
        let input = linear.prepare(xs);
        self.take(layer, phase, ranges.len(), |b| {
            let (a, z) = ranges[b];
            let mut slot = lock(&slots[b]);
            slot.resize(self.len * (z - a), 0.0);
            linear.forward_rows_batch(a, z, &input, &mut slot);
        });
        if !self.barrier.wait() {
            return false;
        }
        let width = linear.out_features();
        assemble(slots, |s| s, ranges, self.len, width, full);
        true
    }
}

/// Copies the `[len, b - a]` parts of `slots` (one per range of `ranges`) into `full`
/// (`[len, width]`), part `i` at columns `ranges[i]`.
fn assemble<T>(
    slots: &[Mutex<T>],
    part: impl Fn(&T) -> &[f32],
    ranges: &[(usize, usize)],
    len: usize,
    width: usize,
    full: &mut [f32],
) {
    for (slot, &(a, b)) in slots.iter().zip(ranges) {
        let slot = lock(slot);
        let src = part(&slot);
        let w = b - a;
        if w == 0 || src.len() < len * w {
            continue;
        }
        for (dst, s) in full.chunks_exact_mut(width).zip(src.chunks_exact(w)) {
            dst[a..b].copy_from_slice(s);
        }
    }
}

/// Runs `len` positions `h` (`[len, d]`, updated in place) through all blocks on `threads`
/// threads. The caller checked `h`'s length and the state's shapes.
pub(super) fn chunk(
    blocks: &MambaBlocks,
    h: &mut [f32],
    len: usize,
    state: &mut MambaState,
    threads: usize,
) {
    let dims = blocks.dims();
    let e = dims.inner;
    let Some(first) = blocks.layers().first() else {
        return;
    };
    // Bands of channels of about TASK_BYTES of in_proj rows (x and z), in whole blocks of
    // eight (the scan's vector width).
    let per_channel = TASK_BYTES / (2 * dims.hidden.max(1) * 4);
    let plan = Plan {
        channels: bands(e, per_channel, 8, 4 * threads),
        x_rows: row_bands(&first.x_proj, threads),
        out_rows: row_bands(&first.out_proj, threads),
    };
    let states = state
        .conv
        .iter_mut()
        .zip(state.ssm.iter_mut())
        .map(|(conv, ssm)| {
            let convs = scan::split_columns(scan::rows_of(conv, e), &plan.channels);
            let ssms = scan::split_columns(scan::rows_of(ssm, e), &plan.channels);
            convs.into_iter().zip(ssms).map(Mutex::new).collect()
        })
        .collect();
    let slots = |n: usize| (0..n).map(|_| Mutex::new(Vec::new())).collect();
    let shared = Shared {
        blocks,
        len,
        band_out: (0..plan.channels.len())
            .map(|_| Mutex::new(BandOut::default()))
            .collect(),
        x_out: slots(plan.x_rows.len()),
        o_out: slots(plan.out_rows.len()),
        next: (0..blocks.layers().len() * 4)
            .map(|_| AtomicUsize::new(0))
            .collect(),
        barrier: SpinBarrier::new(threads),
        states,
        plan,
    };
    let start: &[f32] = h;
    let results = if threads > 1 {
        rayon::broadcast(|_| run(&shared, start))
    } else {
        // One thread: on the caller, no hand-off.
        vec![run(&shared, start)]
    };
    drop(shared);
    if let Some(Some(out)) = results.into_iter().next() {
        h.copy_from_slice(&out);
    }
    state.position += len;
}

/// One thread's part of a chunk; returns the new residual stream (the same in every thread),
/// or `None` when another thread panicked.
fn run(sh: &Shared<'_>, start: &[f32]) -> Option<Vec<f32>> {
    let _guard = AbortOnPanic(&sh.barrier);
    let blocks = sh.blocks;
    let dims = blocks.dims();
    let (d, e, n, r, len) = (dims.hidden, dims.inner, dims.state, dims.dt_rank, sh.len);
    let stride = r + 2 * n;
    let plan = &sh.plan;
    let mut h = start.to_vec();
    let mut normed = vec![0.0; len * d];
    let mut u = vec![0.0; len * e];
    let mut x_dbl = vec![0.0; len * stride];
    let mut dt_in = vec![0.0; len * r];
    let mut y = vec![0.0; len * e];
    let mut out = vec![0.0; len * d];
    // A task's scratch: the band's x (before the convolution) and its time steps.
    let mut scratch = Vec::new();
    for (i, layer) in blocks.layers().iter().enumerate() {
        let states = sh.states.get(i)?;
        for (src, dst) in h.chunks_exact(d).zip(normed.chunks_exact_mut(d)) {
            rms_norm(src, &layer.norm, blocks.eps(), dst);
        }

        // 1. in_proj by bands of channels, then their convolution.
        let input = layer.in_proj.prepare(&normed);
        sh.take(i, 0, plan.channels.len(), |b| {
            let (c0, c1) = plan.channels[b];
            let w = c1 - c0;
            let mut slot = lock(&sh.band_out[b]);
            let slot = &mut *slot;
            scratch.resize(len * w, 0.0);
            slot.z.resize(len * w, 0.0);
            slot.u.resize(len * w, 0.0);
            layer
                .in_proj
                .forward_rows_batch(c0, c1, &input, &mut scratch);
            layer
                .in_proj
                .forward_rows_batch(e + c0, e + c1, &input, &mut slot.z);
            let mut st = lock(&states[b]);
            scan::conv(
                layer,
                c0,
                &mut st.0,
                len,
                Rows::new(&scratch, w),
                &mut slot.u,
                w,
            );
        });
        if !sh.barrier.wait() {
            return None;
        }
        assemble(&sh.band_out, |s| &s.u, &plan.channels, len, e, &mut u);

        // 2. x_proj by bands of rows.
        if !sh.product_by_rows(i, 1, &layer.x_proj, &u, &plan.x_rows, &sh.x_out, &mut x_dbl) {
            return None;
        }
        for (dst, row) in dt_in
            .chunks_exact_mut(r.max(1))
            .zip(x_dbl.chunks_exact(stride))
        {
            dst.copy_from_slice(&row[..r]);
        }

        // 3. dt_proj by bands of channels, then their scan.
        let input = layer.dt_proj.prepare(&dt_in);
        sh.take(i, 2, plan.channels.len(), |b| {
            let (c0, c1) = plan.channels[b];
            let w = c1 - c0;
            let mut slot = lock(&sh.band_out[b]);
            let slot = &mut *slot;
            scratch.resize(len * w, 0.0);
            slot.y.resize(len * w, 0.0);
            layer
                .dt_proj
                .forward_rows_batch(c0, c1, &input, &mut scratch);
            let mut st = lock(&states[b]);
            scan::scan(
                layer,
                c0,
                &mut st.1,
                len,
                Rows::new(&scratch, w),
                Rows::new(&slot.u, w),
                Rows::new(&slot.z, w),
                Rows::new(&x_dbl[r..], stride),
                &mut slot.y,
                w,
            );
        });
        if !sh.barrier.wait() {
            return None;
        }
        assemble(&sh.band_out, |s| &s.y, &plan.channels, len, e, &mut y);

        // 4. out_proj by bands of rows, then the residual.
        if !sh.product_by_rows(
            i,
            3,
            &layer.out_proj,
            &y,
            &plan.out_rows,
            &sh.o_out,
            &mut out,
        ) {
            return None;
        }
        for (hv, o) in h.iter_mut().zip(&out) {
            *hv += o;
        }
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cover_everything_aligned() {
        for (n, per, align, min) in [
            (1408, 68, 8, 8),
            (76, 17, 4, 8),
            (704, 70, 4, 8),
            (5, 64, 8, 8),
        ] {
            let b = bands(n, per, align, min);
            assert_eq!(b[0].0, 0);
            assert_eq!(b[b.len() - 1].1, n);
            for w in b.windows(2) {
                assert_eq!(w[0].1, w[1].0);
            }
            assert!(b.iter().all(|&(a, _)| a % align == 0));
        }
        // As many tasks as asked for when there are items enough.
        assert_eq!(bands(1408, 1000, 8, 8).len(), 8);
        assert_eq!(bands(1408, 64, 8, 8).len(), 22);
    }
}
