//! `y = W x` for a 768 x 3072 row-major f32 weight (the shape of a d=768 Mamba's in_proj rows,
//! transposed or not): candle's CPU matmul against tantra's kernel, with one matrix that stays
//! in cache (compute-bound) and with 24 distinct matrices, 226 MB, that do not (memory-bound,
//! which is what decoding a full model is).

use std::time::Instant;

use candle_core::{Device, Tensor};
use tantra_runtime::{kernel_name, Linear, Precision};

fn main() -> candle_core::Result<()> {
    let (rows, cols) = (3072usize, 768usize);
    let dev = Device::Cpu;
    let x: Vec<f32> = (0..cols).map(|i| (i % 5) as f32 * 0.1).collect();
    let xt = Tensor::from_slice(&x, (1, cols), &dev)?;
    println!(
        "threads: candle/gemm and rayon default; tantra kernel {}",
        kernel_name()
    );
    println!(
        "{:>9} {:>28} {:>12} {:>10}",
        "matrices", "implementation", "us/product", "GB/s"
    );
    for nmat in [1usize, 24] {
        let iters = (600 / nmat).max(10);
        let ws: Vec<Vec<f32>> = (0..nmat)
            .map(|m| {
                (0..rows * cols)
                    .map(|i| ((i * 7 + m) % 13) as f32 * 0.01)
                    .collect()
            })
            .collect();
        let wts: Vec<Tensor> = ws
            .iter()
            .map(|w| Tensor::from_slice(w, (rows, cols), &dev))
            .collect::<Result<_, _>>()?;
        let wt_views: Vec<Tensor> = wts.iter().map(|w| w.t()).collect::<Result<_, _>>()?;
        let wt_contig: Vec<Tensor> = wts
            .iter()
            .map(|w| w.t().and_then(|t| t.contiguous()))
            .collect::<Result<_, _>>()?;
        let bytes = (rows * cols * 4) as f64;
        let packed: Vec<Linear> = ws
            .iter()
            .map(|w| Linear::from_parts(w, None, rows, cols, Precision::F32))
            .collect();
        for set in [&wt_views, &wt_contig] {
            for w in set.iter() {
                xt.matmul(w)?;
            }
        }
        let mut y = vec![0.0f32; rows];
        // Best of five interleaved rounds: the machine may be shared.
        let mut best = [f64::MAX; 3];
        for _ in 0..5 {
            for (k, set) in [&wt_views, &wt_contig].into_iter().enumerate() {
                let t = Instant::now();
                for _ in 0..iters {
                    for w in set.iter() {
                        xt.matmul(w)?;
                    }
                }
                best[k] = best[k].min(t.elapsed().as_secs_f64());
            }
            let t = Instant::now();
            for _ in 0..iters {
                for p in &packed {
                    p.forward(&x, &mut y);
                }
            }
            best[2] = best[2].min(t.elapsed().as_secs_f64());
        }
        let names = [
            "candle x.matmul(W.t())",
            "candle x.matmul(W^T copy)",
            "tantra Linear::forward (f32)",
        ];
        for (name, secs) in names.iter().zip(best) {
            let per = secs / (iters * nmat) as f64;
            println!(
                "{nmat:>9} {name:>28} {:>12.1} {:>10.1}",
                per * 1e6,
                bytes / per / 1e9
            );
        }
        let c = xt.matmul(&wt_views[0])?.flatten_all()?.to_vec1::<f32>()?;
        packed[0].forward(&x, &mut y);
        let diff = c
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("{nmat:>9} {:>28} {diff:e}", "max |candle - tantra|");
    }
    Ok(())
}
