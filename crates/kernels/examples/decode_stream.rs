//! Micro-benchmark: one token's matrix products through the layers of a llama-shaped model
//! in the order a forward pass runs them (each matrix read once per token from memory),
//! timed per kind (the best of 20 runs), in GB/s of weights read.
//! `cargo run --release -p kernels --example decode_stream -- 2048 8192 16 1`
//! (hidden, ffn, layers, threads; Q4_K with Q6_K for v and half the down projections, as
//! llama.cpp's Q4_K_M mix).

use ggml_type::GgmlType;
use kernels::matmul::QuantizedActs;
use kernels::packed::{matmul_packed_many, preferred_group, PackedMatrix};
use kernels::pool::ThreadPool;
use kernels::quant::format;
use std::time::Instant;

fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: usize) -> PackedMatrix {
    let f = format(ty).expect("kernels");
    let src: Vec<f32> = (0..rows * cols)
        .map(|i| (((i + seed) * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let mut w = vec![0u8; rows * cols / ty.block_size() * ty.block_bytes()];
    f.quantize_row(&src, &mut w);
    PackedMatrix::from_rows_with_group(ty, rows, cols, preferred_group(ty, rows), &w)
        .expect("packable")
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let arg = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (hidden, ffn, layers, threads) = (arg(0, 2048), arg(1, 8192), arg(2, 16), arg(3, 1));
    let kv = hidden / 4;
    let pool = ThreadPool::new(threads);
    let (q4, q6) = (GgmlType::Q4_K, GgmlType::Q6_K);
    struct Layer {
        qkv: [PackedMatrix; 3],
        o: PackedMatrix,
        gate_up: [PackedMatrix; 2],
        down: PackedMatrix,
    }
    let ls: Vec<Layer> = (0..layers)
        .map(|l| Layer {
            qkv: [
                matrix(q4, hidden, hidden, l),
                matrix(q4, kv, hidden, l + 1),
                matrix(q6, kv, hidden, l + 2),
            ],
            o: matrix(q4, hidden, hidden, l + 3),
            gate_up: [
                matrix(q4, ffn, hidden, l + 4),
                matrix(q4, ffn, hidden, l + 5),
            ],
            down: matrix(if l % 2 == 0 { q6 } else { q4 }, hidden, ffn, l + 6),
        })
        .collect();
    let act = |cols: usize| {
        let xf: Vec<f32> = (0..cols)
            .map(|i| ((i * 104729 % 997) as f32 / 498.0) - 1.0)
            .collect();
        let mut x = QuantizedActs::new();
        x.quantize(GgmlType::Q8_K, &xf, 1, cols);
        x
    };
    let (xh, xf) = (act(hidden), act(ffn));
    let bytes = |w: &PackedMatrix| (w.rows() * w.cols() / 256 * w.ty().block_bytes()) as f64;
    let names = ["qkv", "o", "gate+up", "down"];
    // Per kind, the best run's time: on a shared machine others' load only ever slows a run.
    let mut secs = [f64::MAX; 4];
    let mut total_bytes = [0f64; 4];
    let (mut o1, mut o2, mut o3) = (vec![0f32; ffn], vec![0f32; ffn], vec![0f32; ffn]);
    let runs = 20;
    for run in 0..runs + 2 {
        let mut run_secs = [0f64; 4];
        let mut run_bytes = [0f64; 4];
        for l in &ls {
            let steps: [(usize, Vec<&PackedMatrix>, &QuantizedActs); 4] = [
                (0, l.qkv.iter().collect(), &xh),
                (1, vec![&l.o], &xh),
                (2, l.gate_up.iter().collect(), &xh),
                (3, vec![&l.down], &xf),
            ];
            for (k, ws, x) in steps {
                let mut outs: Vec<&mut [f32]> = [&mut o1, &mut o2, &mut o3]
                    .into_iter()
                    .zip(&ws)
                    .map(|(o, w)| &mut o[..w.rows()])
                    .collect();
                let t = Instant::now();
                matmul_packed_many(&pool, &ws, x, &mut outs);
                run_secs[k] += t.elapsed().as_secs_f64();
                run_bytes[k] += ws.iter().map(|w| bytes(w)).sum::<f64>();
            }
        }
        if run >= 2 {
            for k in 0..4 {
                if run_secs[k] < secs[k] {
                    (secs[k], total_bytes[k]) = (run_secs[k], run_bytes[k]);
                }
            }
        }
    }
    for k in 0..4 {
        println!(
            "{:8} {:6.1} GB/s  {:6.2} ms/token",
            names[k],
            total_bytes[k] / secs[k] / 1e9,
            secs[k] * 1e3
        );
    }
    let (b, s): (f64, f64) = (total_bytes.iter().sum(), secs.iter().sum());
    println!(
        "{:8} {:6.1} GB/s  {:6.2} ms/token",
        "all",
        b / s / 1e9,
        s * 1e3
    );
}
