//! The two recurrences of a Mamba block, the causal depthwise convolution and the selective
//! scan, over a range of channels and any number of positions.
//!
//! Why a long call runs across channels: both recurrences are sequential in time and
//! independent per channel. Going channel by channel (the loop over the N = 16 state values of
//! one channel) leaves a horizontal sum, a `softplus` and a `silu` per channel and position,
//! and a reload of `B` and `C`. Over many positions the state is moved into state-major order
//! (`[N][channels]`) for the call, and every loop runs across the channels: `B[n]` and `C[n]`
//! are one broadcast for all of them, the sum over the state is a vertical add, and `softplus`
//! and `silu` (branch-free) vectorize. A call of a few positions (a decoding step) goes
//! channel by channel, without moving the state.
//!
//! Both paths do, per channel, the same operations in the same order (`s = exp(dt A) s +
//! (dt B) x`, `y += s C` over `n` in order, `(y + D x) silu(z)`), and Rust never fuses a
//! multiply and an add on its own, so a channel's value does not depend on the path, the
//! thread or the batch: a prefill and token-by-token decoding leave bit-identical states
//! (tested below and in `tests/precisions.rs`). The bodies are compiled twice, for baseline
//! x86-64 and for AVX2 (picked at run time), with the same results.

use super::kernels::{exp_fast, has_fma, silu, softplus};
use super::mamba::Layer;

/// A read-only `[positions, channels]` view whose rows are `stride` apart; channel 0 of the
/// view is the first channel of the range being computed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
}

impl<'a> Rows<'a> {
    pub(super) fn new(data: &'a [f32], stride: usize) -> Self {
        Rows { data, stride }
    }
}

/// The convolution of channels `c0..c0 + m` over `len` positions: `windows` holds their
/// last `K` inputs (`[m, K]`, newest last) and is advanced; `x` gives the new inputs and
/// `out[t * out_stride + j] = silu(bias + sum_k w[k] window[k])` for channel `c0 + j`.
pub(super) fn conv(
    layer: &Layer,
    c0: usize,
    windows: &mut [f32],
    len: usize,
    x: Rows<'_>,
    out: &mut [f32],
    out_stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::conv(layer, c0, windows, len, x, out, out_stride) };
    }
    conv_body(layer, c0, windows, len, x, out, out_stride)
}

/// The selective scan of channels `c0..c0 + m` over `len` positions, continuing from `ssm`
/// (`[m, N]`, updated). Inputs per position `t` and channel `j`: the time step before
/// softplus `dt`, the convolution output `u`, the gate `z`; `bc` row `t` holds `B` (`N`
/// values) then `C` (`N`). Writes `out[t * out_stride + j] = (sum_n s[n] C[n] + D u) silu(z)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn scan(
    layer: &Layer,
    c0: usize,
    ssm: &mut [f32],
    len: usize,
    dt: Rows<'_>,
    u: Rows<'_>,
    z: Rows<'_>,
    bc: Rows<'_>,
    out: &mut [f32],
    out_stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::scan(layer, c0, ssm, len, dt, u, z, bc, out, out_stride) };
    }
    scan_body(layer, c0, ssm, len, dt, u, z, bc, out, out_stride)
}

/// Positions from which a call takes the channel-parallel path; shorter calls (a decoding
/// step) go channel by channel, without moving the state. Both give the same bits.
const ACROSS_MIN: usize = 4;

#[inline(always)]
fn conv_body(
    layer: &Layer,
    c0: usize,
    windows: &mut [f32],
    len: usize,
    x: Rows<'_>,
    out: &mut [f32],
    out_stride: usize,
) {
    let k = layer.conv_weight.len() / layer.conv_bias.len().max(1);
    if k == 0 || len == 0 {
        return;
    }
    let m = windows.len() / k;
    if len < ACROSS_MIN {
        for (j, window) in windows.chunks_exact_mut(k).enumerate() {
            let ch = c0 + j;
            let w = &layer.conv_weight[ch * k..(ch + 1) * k];
            for t in 0..len {
                window.copy_within(1.., 0);
                window[k - 1] = x.data[t * x.stride + j];
                let mut acc = layer.conv_bias[ch];
                for (wk, xk) in w.iter().zip(window.iter()) {
                    acc += wk * xk;
                }
                out[t * out_stride + j] = silu(acc);
            }
        }
        return;
    }
    // `ext[p]` (`[m]` per position) is the input the window holds at offset `i` of step `t`
    // for `p = t + i`: the stored window's last K-1 inputs, then the new ones.
    let mut ext = vec![0.0f32; (k - 1 + len) * m];
    for (j, window) in windows.chunks_exact(k).enumerate() {
        for i in 1..k {
            ext[(i - 1) * m + j] = window[i];
        }
    }
    for t in 0..len {
        let row = &x.data[t * x.stride..t * x.stride + m];
        ext[(k - 1 + t) * m..(k + t) * m].copy_from_slice(row);
    }
    let mut wt = vec![0.0f32; k * m];
    for j in 0..m {
        for i in 0..k {
            wt[i * m + j] = layer.conv_weight[(c0 + j) * k + i];
        }
    }
    let bias = &layer.conv_bias[c0..c0 + m];
    let mut acc = vec![0.0f32; m];
    for t in 0..len {
        acc.copy_from_slice(bias);
        for i in 0..k {
            let (w, e) = (&wt[i * m..(i + 1) * m], &ext[(t + i) * m..(t + i + 1) * m]);
            for ((a, wv), ev) in acc.iter_mut().zip(w).zip(e) {
                *a += wv * ev;
            }
        }
        for (o, a) in out[t * out_stride..t * out_stride + m].iter_mut().zip(&acc) {
            *o = silu(*a);
        }
    }
    for (j, window) in windows.chunks_exact_mut(k).enumerate() {
        for (i, v) in window.iter_mut().enumerate() {
            *v = ext[(len - 1 + i) * m + j];
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scan_body(
    layer: &Layer,
    c0: usize,
    ssm: &mut [f32],
    len: usize,
    dt: Rows<'_>,
    u: Rows<'_>,
    z: Rows<'_>,
    bc: Rows<'_>,
    out: &mut [f32],
    out_stride: usize,
) {
    let n = layer.a.len() / layer.d.len().max(1);
    if n == 0 || len == 0 {
        return;
    }
    let m = ssm.len() / n;
    if len < ACROSS_MIN {
        for (j, s) in ssm.chunks_exact_mut(n).enumerate() {
            let ch = c0 + j;
            let a = &layer.a[ch * n..(ch + 1) * n];
            for t in 0..len {
                let row = &bc.data[t * bc.stride..t * bc.stride + 2 * n];
                let (b, c) = row.split_at(n);
                let dt = softplus(dt.data[t * dt.stride + j]);
                let x = u.data[t * u.stride + j];
                // Two loops: the update vectorizes, the sum stays in order.
                for ((sv, av), bv) in s.iter_mut().zip(a).zip(b) {
                    *sv = exp_fast(dt * av) * *sv + (dt * bv) * x;
                }
                let mut acc = 0.0f32;
                for (sv, cv) in s.iter().zip(c) {
                    acc += sv * cv;
                }
                let zv = z.data[t * z.stride + j];
                out[t * out_stride + j] = (acc + x * layer.d[ch]) * silu(zv);
            }
        }
        return;
    }
    // State and A moved to `[N][m]`, so that each loop below runs across channels.
    let mut st = vec![0.0f32; n * m];
    let mut at = vec![0.0f32; n * m];
    for j in 0..m {
        for i in 0..n {
            st[i * m + j] = ssm[j * n + i];
            at[i * m + j] = layer.a[(c0 + j) * n + i];
        }
    }
    let d = &layer.d[c0..c0 + m];
    let mut dtv = vec![0.0f32; m];
    let mut acc = vec![0.0f32; m];
    for t in 0..len {
        for (o, v) in dtv
            .iter_mut()
            .zip(&dt.data[t * dt.stride..t * dt.stride + m])
        {
            *o = softplus(*v);
        }
        let xr = &u.data[t * u.stride..t * u.stride + m];
        let row = &bc.data[t * bc.stride..t * bc.stride + 2 * n];
        let (bs, cs) = row.split_at(n);
        acc.fill(0.0);
        for (i, (&bi, &ci)) in bs.iter().zip(cs).enumerate() {
            let (s, a) = (&mut st[i * m..(i + 1) * m], &at[i * m..(i + 1) * m]);
            for ((((sv, av), dv), xv), accv) in
                s.iter_mut().zip(a).zip(&dtv).zip(xr).zip(acc.iter_mut())
            {
                *sv = exp_fast(dv * av) * *sv + (dv * bi) * xv;
                *accv += *sv * ci;
            }
        }
        let zr = &z.data[t * z.stride..t * z.stride + m];
        let dst = &mut out[t * out_stride..t * out_stride + m];
        for ((((o, a), xv), dv), zv) in dst.iter_mut().zip(&acc).zip(xr).zip(d).zip(zr) {
            *o = (a + xv * dv) * silu(*zv);
        }
    }
    for j in 0..m {
        for i in 0..n {
            ssm[j * n + i] = st[i * m + j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Layer, Rows};

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv(
        layer: &Layer,
        c0: usize,
        windows: &mut [f32],
        len: usize,
        x: Rows<'_>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        super::conv_body(layer, c0, windows, len, x, out, out_stride)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn scan(
        layer: &Layer,
        c0: usize,
        ssm: &mut [f32],
        len: usize,
        dt: Rows<'_>,
        u: Rows<'_>,
        z: Rows<'_>,
        bc: Rows<'_>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        super::scan_body(layer, c0, ssm, len, dt, u, z, bc, out, out_stride)
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels::test_data as data;
    use super::super::layers::Linear;
    use super::super::precision::Precision;
    use super::*;

    fn layer(e: usize, n: usize, k: usize) -> Layer {
        let lin =
            |o: usize, i: usize| Linear::from_parts(&data(o * i, 1), None, o, i, Precision::F32);
        Layer {
            norm: vec![1.0; 4],
            in_proj: lin(2 * e, 4),
            conv_weight: data(e * k, 2),
            conv_bias: data(e, 3),
            x_proj: lin(2 * n + 1, e),
            dt_proj: lin(e, 1),
            a: data(e * n, 4).iter().map(|v| -(v * 3.0).exp()).collect(),
            d: data(e, 5),
            out_proj: lin(4, e),
        }
    }

    /// Runs `len` positions in calls of `piece` positions each, returning outputs and states.
    fn run(l: &Layer, e: usize, n: usize, k: usize, len: usize, piece: usize) -> Vec<Vec<f32>> {
        let xs: Vec<f32> = data(len * e, 6).iter().map(|v| v * 4.0).collect();
        let dts: Vec<f32> = data(len * e, 7).iter().map(|v| v * 8.0 - 2.0).collect();
        let zs = data(len * e, 8);
        let bcs = data(len * 2 * n, 9);
        let (mut win, mut ssm) = (data(e * k, 10), data(e * n, 11));
        let (mut u, mut y) = (vec![0.0; len * e], vec![0.0; len * e]);
        let mut t0 = 0;
        while t0 < len {
            let p = piece.min(len - t0);
            let at = |v: &[f32], w: usize| v[t0 * w..].to_vec();
            let (xr, dr, zr, br) = (at(&xs, e), at(&dts, e), at(&zs, e), at(&bcs, 2 * n));
            conv(l, 0, &mut win, p, Rows::new(&xr, e), &mut u[t0 * e..], e);
            let ur = at(&u, e);
            scan(
                l,
                0,
                &mut ssm,
                p,
                Rows::new(&dr, e),
                Rows::new(&ur, e),
                Rows::new(&zr, e),
                Rows::new(&br, 2 * n),
                &mut y[t0 * e..],
                e,
            );
            t0 += p;
        }
        vec![u, y, win, ssm]
    }

    #[test]
    fn long_calls_equal_step_by_step_bit_for_bit() {
        for (e, n, k) in [(13, 16, 4), (64, 16, 4), (8, 3, 1), (5, 1, 2)] {
            let l = layer(e, n, k);
            let steps = run(&l, e, n, k, 23, 1);
            for piece in [4, 7, 23] {
                let long = run(&l, e, n, k, 23, piece);
                for (a, b) in long.iter().zip(&steps) {
                    let (a, b): (Vec<u32>, Vec<u32>) = (
                        a.iter().map(|v| v.to_bits()).collect(),
                        b.iter().map(|v| v.to_bits()).collect(),
                    );
                    assert_eq!(a, b, "e {e} n {n} k {k} piece {piece}");
                }
            }
            assert!(steps[1].iter().all(|v| v.is_finite()) && steps[1].iter().any(|v| *v != 0.0));
        }
    }
}
