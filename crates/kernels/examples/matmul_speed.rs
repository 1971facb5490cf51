//! Micro-benchmark: the per-row dot-product matmul against the packed ones (8-row records, and
//! 16-row records where the CPU runs their kernel), for one weight type and shape.
//! `cargo run --release -p kernels --example matmul_speed -- Q4_1 1536 576 512 1`
//! (type, rows, cols, tokens, threads). Prints the best of 9 runs of each, in GMAC/s (the
//! best, not the median: on a shared machine the others' load only ever slows a run down).
//!
//! `HEARTH_BENCH_CPU_TIME=1` (one thread only) times each run by the thread's CPU time instead
//! of the wall clock: on a machine whose cores other jobs keep busy, a run is preempted for
//! longer than it runs, and even the best of 9 wall times measures their load; CPU time leaves
//! out the time the thread waits (not what they do to the caches).

use ggml_type::GgmlType;
use kernels::matmul::{matmul, QMatrix, QuantizedActs};
use kernels::packed::{matmul_packed, PackedMatrix, GROUP, WIDE_GROUP};
use kernels::pool::ThreadPool;
use kernels::quant::format;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let ty = match arg(0, "Q4_1").as_str() {
        "Q4_0" => GgmlType::Q4_0,
        "Q5_0" => GgmlType::Q5_0,
        "Q5_1" => GgmlType::Q5_1,
        "Q8_0" => GgmlType::Q8_0,
        "Q2_K" => GgmlType::Q2_K,
        "Q3_K" => GgmlType::Q3_K,
        "Q4_K" => GgmlType::Q4_K,
        "Q5_K" => GgmlType::Q5_K,
        "Q6_K" => GgmlType::Q6_K,
        "IQ4_NL" => GgmlType::IQ4_NL,
        "IQ4_XS" => GgmlType::IQ4_XS,
        "MXFP4" => GgmlType::MXFP4,
        _ => GgmlType::Q4_1,
    };
    let num = |i: usize, d: &str| arg(i, d).parse::<usize>().expect("a number");
    let (rows, cols, n_tokens, threads) =
        (num(1, "1536"), num(2, "576"), num(3, "512"), num(4, "1"));
    let f = format(ty).expect("kernels");
    let src: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let mut w = vec![0u8; rows * cols / ty.block_size() * ty.block_bytes()];
    f.quantize_row(&src, &mut w);
    let xf: Vec<f32> = (0..n_tokens * cols)
        .map(|i| ((i * 104729 % 997) as f32 / 498.0) - 1.0)
        .collect();
    let mut x = QuantizedActs::new();
    x.quantize(f.act_type(), &xf, n_tokens, cols);
    let pool = ThreadPool::new(threads);
    let qm = QMatrix::new(ty, rows, cols, &w).expect("shape");
    let packed = PackedMatrix::from_rows_with_group(ty, rows, cols, GROUP, &w).expect("packable");
    let wide = (kernels::packed::Kernel::best().group() == Some(WIDE_GROUP))
        .then(|| PackedMatrix::from_rows_with_group(ty, rows, cols, WIDE_GROUP, &w))
        .flatten();
    let mut out = vec![0f32; rows * n_tokens];
    let macs = (rows * cols * n_tokens) as f64;
    let cpu_time = std::env::var_os("HEARTH_BENCH_CPU_TIME").is_some_and(|v| v == "1");
    if cpu_time && threads != 1 {
        eprintln!("HEARTH_BENCH_CPU_TIME=1 measures one thread: run with 1 thread");
        std::process::exit(2);
    }
    let mut time = |f: &mut dyn FnMut(&mut [f32])| {
        let mut ts: Vec<f64> = (0..9)
            .map(|_| {
                if cpu_time {
                    let t = thread_cpu_seconds();
                    f(&mut out);
                    return thread_cpu_seconds() - t;
                }
                let t = Instant::now();
                f(&mut out);
                t.elapsed().as_secs_f64()
            })
            .collect();
        ts.sort_by(|a, b| a.total_cmp(b));
        macs / ts[0] / 1e9
    };
    let old = time(&mut |o| matmul(&pool, &qm, &x, o));
    let new = time(&mut |o| matmul_packed(&pool, &packed, &x, o));
    if cpu_time {
        print!("(CPU time) ");
    }
    print!("{ty} {rows}x{cols} x{n_tokens} t{threads}: dot {old:.1} GMAC/s, packed {new:.1} GMAC/s ({:.2}x)", new / old);
    if let Some(wide) = wide {
        let w16 = time(&mut |o| matmul_packed(&pool, &wide, &x, o));
        print!(", 16-row {w16:.1} GMAC/s ({:.2}x the 8-row)", w16 / new);
    }
    println!();
}

/// The calling thread's CPU time in seconds (where the product runs with one thread).
#[cfg(target_os = "linux")]
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> f64 {
    eprintln!("HEARTH_BENCH_CPU_TIME=1 needs Linux");
    std::process::exit(2);
}
