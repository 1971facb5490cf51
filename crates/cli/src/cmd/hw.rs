//! `hearth hw`: the CPU, SIMD features and kernel path, memory, GPUs and free disk space; with
//! `--bandwidth`, how fast memory reads.

use crate::insight::bandwidth::{self, MemoryRead};
use crate::insight::{human, system::Hardware};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Also measure how fast memory reads, on one thread and on all usable ones (a few
    /// seconds): the ceiling of generation, which reads every weight once per token.
    #[arg(long)]
    bandwidth: bool,
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    hw: Hardware,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    memory_read: Vec<MemoryRead>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let hw = Hardware::probe();
    let mut memory_read = Vec::new();
    if a.bandwidth {
        memory_read.push(bandwidth::probe(1)?);
        if hw.cpu.usable_threads > 1 {
            memory_read.push(bandwidth::probe(hw.cpu.usable_threads)?);
        }
    }
    if a.json {
        let report = Report { hw, memory_read };
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    let unknown = || "unknown".to_owned();
    let count = |n: Option<usize>| n.map_or_else(unknown, |n| n.to_string());
    let bytes = |b: Option<u64>| b.map_or_else(unknown, human);
    let c = &hw.cpu;
    let s = &hw.simd;
    let mut out = String::new();
    out.push_str(&format!(
        "cpu        {} ({})\n",
        c.model.clone().unwrap_or_else(unknown),
        c.arch
    ));
    out.push_str(&format!(
        "cores      {} physical, {} threads ({} usable)\n",
        count(c.cores),
        count(c.threads),
        c.usable_threads
    ));
    let flags: Vec<&str> = [
        (s.avx2, "AVX2"),
        (s.fma, "FMA"),
        (s.f16c, "F16C"),
        (s.avx512f, "AVX-512F"),
        (s.avx512_vnni, "AVX-512 VNNI"),
        (s.avx_vnni, "AVX-VNNI"),
        (s.neon, "NEON"),
        (s.dotprod, "dotprod"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    let flags = if flags.is_empty() {
        "none".to_owned()
    } else {
        flags.join(" ")
    };
    out.push_str(&format!("simd       {flags}\n"));
    out.push_str(&format!("kernels    {}", hw.kernels.description));
    if !hw.kernels.restricted_by.is_empty() {
        out.push_str(&format!(
            " (restricted by {})",
            hw.kernels.restricted_by.join(", ")
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "memory     {} total, {} available\n",
        bytes(hw.memory.total_bytes),
        bytes(hw.memory.available_bytes)
    ));
    if let Some(first) = memory_read.first() {
        let rates: Vec<String> = memory_read
            .iter()
            .map(|m| {
                let threads = if m.threads == 1 { "thread" } else { "threads" };
                format!(
                    "{} on {} {threads}",
                    bandwidth::rate_text(m.bytes_per_second),
                    m.threads
                )
            })
            .collect();
        out.push_str(&format!(
            "bandwidth  memory reads {} (best of 5 passes over {})\n",
            rates.join(", "),
            human(first.buffer_bytes as u64)
        ));
    }
    if hw.gpus.is_empty() {
        out.push_str("gpus       none found (hearth runs on the CPU)\n");
    }
    for g in &hw.gpus {
        out.push_str(&format!(
            "gpu        {} ({})\n",
            g.name,
            bytes(g.memory_bytes)
        ));
    }
    match &hw.disk {
        Some(d) => out.push_str(&format!(
            "disk       {} free under {}\n",
            bytes(d.free_bytes),
            d.path.display()
        )),
        None => out.push_str("disk       unknown (no store directory: set HEARTH_HOME)\n"),
    }
    crate::outln!("{}", out.trim_end())?;
    Ok(())
}
