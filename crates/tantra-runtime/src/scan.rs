//! The two recurrences of a Mamba block, the causal depthwise convolution and the selective
//! scan, over a range of channels and any number of positions.
//!
//! Why everything runs across channels: both recurrences are sequential in time and
//! independent per channel. Going channel by channel (a loop over the N = 16 state values of
//! one channel) leaves a horizontal sum, a `softplus` and a `silu` per channel and position,
//! and a reload of `B` and `C`, which made the scan a quarter of a decoding step. So the
//! states, `A` and the convolution weights are stored state-major (`[N][E]`, `[K][E]`): every
//! loop below runs along a row of channels, `B[n]` and `C[n]` are one broadcast for all of
//! them, the sum over the state is a vertical add, and `softplus` and `silu` (branch-free)
//! vectorize. A range of channels is a column band of those rows, which is how threads and
//! bands split the work without copying state.
//!
//! Per channel the operations and their order are fixed (`s = exp(dt A) s + (dt B) x`,
//! `y += s C` over `n` in order, `(y + D x) silu(z)`), and Rust never fuses a multiply and an
//! add on its own, so a channel's value does not depend on the band, the thread or the number
//! of positions per call: a prefill and token-by-token decoding leave bit-identical states
//! (tested below and in `tests/precisions.rs`). The bodies are compiled twice, for baseline
//! x86-64 and for AVX2 (picked at run time); the AVX2 build fuses the multiply-adds inside
//! `exp`, `ln`, `silu` and `softplus` (`kernels::fma_or`), which shortens the dependency chain
//! the scan waits on (1.5 times as fast), so the two builds may differ in the last bit, as the
//! matrix kernels' do; one machine always takes the same build.

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

/// The convolution of channels `c0..c0 + m` over `len` positions: `windows` holds their last
/// `K` inputs (`K` rows of `m`, oldest first) and is advanced; `x` gives the new inputs and
/// `out[t * out_stride + j] = silu(bias + sum_k w[k] window[k])` for channel `c0 + j`.
pub(super) fn conv(
    layer: &Layer,
    c0: usize,
    windows: &mut [&mut [f32]],
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
    conv_body::<false>(layer, c0, windows, len, x, out, out_stride)
}

/// The selective scan of channels `c0..c0 + m` over `len` positions, continuing from `ssm`
/// (`N` rows of `m`, updated). Inputs per position `t` and channel `j`: the time step before
/// softplus `dt`, the convolution output `u`, the gate `z`; `bc` row `t` holds `B` (`N`
/// values) then `C` (`N`). Writes `out[t * out_stride + j] = (sum_n s[n] C[n] + D u) silu(z)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn scan(
    layer: &Layer,
    c0: usize,
    ssm: &mut [&mut [f32]],
    len: usize,
    dt: Rows<'_>,
    u: Rows<'_>,
    z: Rows<'_>,
    bc: Rows<'_>,
    out: &mut [f32],
    out_stride: usize,
) {
    let run = |ssm: &mut [&mut [f32]], out: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if has_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { x86::scan(layer, c0, ssm, len, dt, u, z, bc, out, out_stride) };
        }
        scan_body::<false>(layer, c0, ssm, len, dt, u, z, bc, out, out_stride)
    };
    let m = ssm.first().map_or(0, |s| s.len());
    // Over several positions the band's state is updated in a copy of its own: the rows of
    // neighbouring bands, which other threads update at the same time, can share a cache
    // line at the band's edges, and writing those lines at every position from two cores
    // made the scan of a prefill twice as slow.
    if len > 1 && m > 0 {
        let mut local: Vec<f32> = ssm.iter().flat_map(|r| r.iter().copied()).collect();
        let mut rows: Vec<&mut [f32]> = local.chunks_exact_mut(m).collect();
        run(&mut rows, out);
        for (dst, src) in ssm.iter_mut().zip(local.chunks_exact(m)) {
            dst.copy_from_slice(src);
        }
    } else {
        run(ssm, out);
    }
}

#[inline(always)]
fn conv_body<const FMA: bool>(
    layer: &Layer,
    c0: usize,
    windows: &mut [&mut [f32]],
    len: usize,
    x: Rows<'_>,
    out: &mut [f32],
    out_stride: usize,
) {
    let e = layer.conv_bias.len();
    let k = windows.len();
    let m = windows.first().map_or(0, |w| w.len());
    if k == 0 || len == 0 || m == 0 {
        return;
    }
    // `ext` row `p` (`m` values) is the input the window holds at tap `i` of step `t` for
    // `p = t + i`: the stored window's last K-1 inputs, then the new ones.
    let mut ext = vec![0.0f32; (k - 1 + len) * m];
    for (dst, src) in ext.chunks_exact_mut(m).zip(windows.iter().skip(1)) {
        dst.copy_from_slice(src);
    }
    for t in 0..len {
        let row = &x.data[t * x.stride..t * x.stride + m];
        ext[(k - 1 + t) * m..(k + t) * m].copy_from_slice(row);
    }
    let bias = &layer.conv_bias[c0..c0 + m];
    let mut acc = vec![0.0f32; m];
    for t in 0..len {
        acc.copy_from_slice(bias);
        for i in 0..k {
            let w = &layer.conv_weight[i * e + c0..i * e + c0 + m];
            let xi = &ext[(t + i) * m..(t + i + 1) * m];
            for ((a, wv), xv) in acc.iter_mut().zip(w).zip(xi) {
                *a += wv * xv;
            }
        }
        for (o, a) in out[t * out_stride..t * out_stride + m].iter_mut().zip(&acc) {
            *o = silu::<FMA>(*a);
        }
    }
    for (i, window) in windows.iter_mut().enumerate() {
        window.copy_from_slice(&ext[(len - 1 + i) * m..(len + i) * m]);
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scan_body<const FMA: bool>(
    layer: &Layer,
    c0: usize,
    ssm: &mut [&mut [f32]],
    len: usize,
    dt: Rows<'_>,
    u: Rows<'_>,
    z: Rows<'_>,
    bc: Rows<'_>,
    out: &mut [f32],
    out_stride: usize,
) {
    let e = layer.d.len();
    let n = ssm.len();
    let m = ssm.first().map_or(0, |s| s.len());
    if n == 0 || len == 0 || m == 0 {
        return;
    }
    let d = &layer.d[c0..c0 + m];
    let mut dtv = vec![0.0f32; m];
    let mut acc = vec![0.0f32; m];
    for t in 0..len {
        for (o, v) in dtv
            .iter_mut()
            .zip(&dt.data[t * dt.stride..t * dt.stride + m])
        {
            *o = softplus::<FMA>(*v);
        }
        let xr = &u.data[t * u.stride..t * u.stride + m];
        let row = &bc.data[t * bc.stride..t * bc.stride + 2 * n];
        let (bs, cs) = row.split_at(n);
        acc.fill(0.0);
        for (i, ((s, &bi), &ci)) in ssm.iter_mut().zip(bs).zip(cs).enumerate() {
            let a = &layer.a[i * e + c0..i * e + c0 + m];
            for ((((sv, av), dv), xv), accv) in
                s.iter_mut().zip(a).zip(&dtv).zip(xr).zip(acc.iter_mut())
            {
                *sv = exp_fast::<FMA>(dv * av) * *sv + (dv * bi) * xv;
                *accv += *sv * ci;
            }
        }
        let zr = &z.data[t * z.stride..t * z.stride + m];
        let dst = &mut out[t * out_stride..t * out_stride + m];
        for ((((o, a), xv), dv), zv) in dst.iter_mut().zip(&acc).zip(xr).zip(d).zip(zr) {
            *o = (a + xv * dv) * silu::<FMA>(*zv);
        }
    }
}

/// Splits state rows (`[rows][width]`, one slice) into `width`-long row slices.
pub(super) fn rows_of(state: &mut [f32], width: usize) -> Vec<&mut [f32]> {
    state.chunks_exact_mut(width.max(1)).collect()
}

/// Cuts each row of `rows` at the channel ranges `ranges` (contiguous, from 0): part `p` gets
/// columns `ranges[p]` of every row, so that each part can be computed on its own.
pub(super) fn split_columns<'a>(
    rows: Vec<&'a mut [f32]>,
    ranges: &[(usize, usize)],
) -> Vec<Vec<&'a mut [f32]>> {
    let mut parts: Vec<Vec<&'a mut [f32]>> = ranges.iter().map(|_| Vec::new()).collect();
    for row in rows {
        let mut rest = row;
        for (part, &(c0, c1)) in parts.iter_mut().zip(ranges) {
            let width = (c1 - c0).min(rest.len());
            let (a, b) = std::mem::take(&mut rest).split_at_mut(width);
            part.push(a);
            rest = b;
        }
    }
    parts
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
        windows: &mut [&mut [f32]],
        len: usize,
        x: Rows<'_>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        super::conv_body::<true>(layer, c0, windows, len, x, out, out_stride)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn scan(
        layer: &Layer,
        c0: usize,
        ssm: &mut [&mut [f32]],
        len: usize,
        dt: Rows<'_>,
        u: Rows<'_>,
        z: Rows<'_>,
        bc: Rows<'_>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        super::scan_body::<true>(layer, c0, ssm, len, dt, u, z, bc, out, out_stride)
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

    /// Runs `len` positions in calls of `piece` positions each, the channels cut at
    /// `ranges`, returning outputs and states.
    #[allow(clippy::too_many_arguments)]
    fn run(
        l: &Layer,
        e: usize,
        n: usize,
        k: usize,
        len: usize,
        piece: usize,
        ranges: &[(usize, usize)],
    ) -> Vec<Vec<f32>> {
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
            let wins = split_columns(rows_of(&mut win, e), ranges);
            for (mut w, &(c0, c1)) in wins.into_iter().zip(ranges) {
                let mut part = vec![0.0; p * (c1 - c0)];
                conv(
                    l,
                    c0,
                    &mut w,
                    p,
                    Rows::new(&xr[c0..], e),
                    &mut part,
                    c1 - c0,
                );
                for t in 0..p {
                    u[(t0 + t) * e + c0..(t0 + t) * e + c1]
                        .copy_from_slice(&part[t * (c1 - c0)..(t + 1) * (c1 - c0)]);
                }
            }
            let ur = at(&u, e);
            let states = split_columns(rows_of(&mut ssm, e), ranges);
            for (mut s, &(c0, c1)) in states.into_iter().zip(ranges) {
                let mut part = vec![0.0; p * (c1 - c0)];
                scan(
                    l,
                    c0,
                    &mut s,
                    p,
                    Rows::new(&dr[c0..], e),
                    Rows::new(&ur[c0..], e),
                    Rows::new(&zr[c0..], e),
                    Rows::new(&br, 2 * n),
                    &mut part,
                    c1 - c0,
                );
                for t in 0..p {
                    y[(t0 + t) * e + c0..(t0 + t) * e + c1]
                        .copy_from_slice(&part[t * (c1 - c0)..(t + 1) * (c1 - c0)]);
                }
            }
            t0 += p;
        }
        vec![u, y, win, ssm]
    }

    #[test]
    fn any_split_of_positions_and_channels_gives_the_same_bits() {
        for (e, n, k) in [(13, 16, 4), (64, 16, 4), (8, 3, 1), (5, 1, 2)] {
            let l = layer(e, n, k);
            let whole = [(0, e)];
            let steps = run(&l, e, n, k, 23, 1, &whole);
            let cut = [(0, e / 3), (e / 3, e / 2), (e / 2, e)];
            for (piece, ranges) in [
                (4, &whole[..]),
                (23, &whole[..]),
                (7, &cut[..]),
                (1, &cut[..]),
            ] {
                let other = run(&l, e, n, k, 23, piece, ranges);
                for (a, b) in other.iter().zip(&steps) {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(a),
                        bits(b),
                        "e {e} n {n} k {k} piece {piece} {ranges:?}"
                    );
                }
            }
            assert!(steps[1].iter().all(|v| v.is_finite()) && steps[1].iter().any(|v| *v != 0.0));
        }
    }
}
