//! What this machine has: CPU, SIMD, memory, GPUs and disk. Everything is read from the
//! operating system's own reports (`/proc`, `sysctl`, `nvidia-smi`, `df`); what cannot be told
//! is `None`, never a guess.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Serialize)]
pub struct Cpu {
    /// The model name the OS reports (`/proc/cpuinfo` "model name", `machdep.cpu.brand_string`).
    pub model: Option<String>,
    pub arch: &'static str,
    /// Physical cores (distinct physical id / core id pairs).
    pub cores: Option<usize>,
    /// Logical CPUs (hardware threads) of the machine.
    pub threads: Option<usize>,
    /// Threads this process may use (affinity and cgroup limits applied): hearth's default.
    pub usable_threads: usize,
}

/// SIMD features of the CPU itself (before the HEARTH_* restrictions).
#[derive(Debug, Default, Serialize)]
pub struct Simd {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512_vnni: bool,
    pub avx_vnni: bool,
    pub neon: bool,
    pub dotprod: bool,
}

/// Which kernels hearth runs here.
#[derive(Debug, Serialize)]
pub struct KernelPath {
    /// `kernels::simd` short name: avx512-vnni, avx512, avx-vnni, avx2, neon-dotprod, neon or
    /// scalar.
    pub name: &'static str,
    pub description: String,
    /// The environment variables that narrowed the choice.
    pub restricted_by: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Gpu {
    pub name: String,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Disk {
    /// The store directory (HEARTH_HOME), or the nearest existing directory above it.
    pub path: PathBuf,
    pub free_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Hardware {
    pub cpu: Cpu,
    pub simd: Simd,
    pub kernels: KernelPath,
    pub memory: Memory,
    pub gpus: Vec<Gpu>,
    pub disk: Option<Disk>,
}

impl Hardware {
    pub fn probe() -> Hardware {
        Hardware {
            cpu: cpu(),
            simd: simd(),
            kernels: kernel_path(),
            memory: memory(),
            gpus: gpus(),
            disk: disk(),
        }
    }
}

/// Output of a command, when it runs and succeeds.
fn command_stdout(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(target_os = "macos")]
fn sysctl(key: &str) -> Option<String> {
    command_stdout("sysctl", &["-n", key]).map(|s| s.trim().to_owned())
}

/// Logical CPUs and physical cores in `/proc/cpuinfo` text.
pub fn parse_cpuinfo(text: &str) -> (Option<String>, usize, Option<usize>) {
    let mut model = None;
    let mut threads = 0;
    let mut pairs = std::collections::BTreeSet::new();
    let (mut phys, mut core) = (None, None);
    let mut flush = |phys: &mut Option<String>, core: &mut Option<String>| {
        if let (Some(p), Some(c)) = (phys.take(), core.take()) {
            pairs.insert((p, c));
        }
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            flush(&mut phys, &mut core);
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => threads += 1,
            "model name" | "Model" | "cpu model" if model.is_none() && !value.is_empty() => {
                model = Some(value.to_owned())
            }
            "physical id" => phys = Some(value.to_owned()),
            "core id" => core = Some(value.to_owned()),
            _ => {}
        }
    }
    flush(&mut phys, &mut core);
    let cores = (!pairs.is_empty()).then_some(pairs.len());
    (model, threads, cores)
}

fn cpu() -> Cpu {
    let usable_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[allow(unused_mut)]
    let mut cpu = Cpu {
        model: None,
        arch: std::env::consts::ARCH,
        cores: None,
        threads: None,
        usable_threads,
    };
    if let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") {
        let (model, threads, cores) = parse_cpuinfo(&text);
        cpu.model = model;
        cpu.threads = (threads > 0).then_some(threads);
        // Without core ids (many ARM kernels), each logical CPU is taken as a core.
        cpu.cores = cores.or(cpu.threads);
    }
    #[cfg(target_os = "macos")]
    {
        cpu.model = sysctl("machdep.cpu.brand_string");
        cpu.cores = sysctl("hw.physicalcpu").and_then(|s| s.parse().ok());
        cpu.threads = sysctl("hw.logicalcpu").and_then(|s| s.parse().ok());
    }
    cpu
}

fn simd() -> Simd {
    #[allow(unused_mut)]
    let mut s = Simd::default();
    #[cfg(target_arch = "x86_64")]
    {
        s.avx2 = std::arch::is_x86_feature_detected!("avx2");
        s.fma = std::arch::is_x86_feature_detected!("fma");
        s.f16c = std::arch::is_x86_feature_detected!("f16c");
        s.avx512f = std::arch::is_x86_feature_detected!("avx512f");
        s.avx512_vnni = std::arch::is_x86_feature_detected!("avx512vnni");
        s.avx_vnni = std::arch::is_x86_feature_detected!("avxvnni");
    }
    #[cfg(target_arch = "aarch64")]
    {
        s.neon = std::arch::is_aarch64_feature_detected!("neon");
        s.dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
    }
    s
}

pub(crate) fn kernel_path() -> KernelPath {
    let f = kernels::simd::features();
    let detected = kernels::simd::detected();
    let name = f.describe();
    // The packed kernel the products dispatch to, rather than a second reading of the flags.
    let packed = kernels::packed::Kernel::best();
    let description = if packed != kernels::packed::Kernel::Scalar {
        let rows = packed.group().unwrap_or(kernels::packed::GROUP);
        format!("{name} (packed {rows}-row kernels: {})", packed.name())
    } else if f.neon {
        format!("{name} (per-format dot products)")
    } else {
        "scalar (portable reference kernels)".to_owned()
    };
    let mut restricted_by = Vec::new();
    if f != detected {
        for var in [
            "HEARTH_FORCE_SCALAR",
            "HEARTH_NO_AVX512",
            "HEARTH_NO_AVX_VNNI",
        ] {
            if std::env::var_os(var).is_some_and(|v| v == "1") {
                restricted_by.push(var);
            }
        }
    }
    KernelPath {
        name,
        description,
        restricted_by,
    }
}

/// `MemTotal` and `MemAvailable` in `/proc/meminfo` text, in bytes.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    (field("MemTotal"), field("MemAvailable"))
}

pub fn memory() -> Memory {
    if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
        let (total_bytes, available_bytes) = parse_meminfo(&text);
        return Memory {
            total_bytes,
            available_bytes,
        };
    }
    #[cfg(target_os = "macos")]
    {
        return Memory {
            total_bytes: sysctl("hw.memsize").and_then(|s| s.parse().ok()),
            available_bytes: None,
        };
    }
    #[allow(unreachable_code)]
    Memory {
        total_bytes: None,
        available_bytes: None,
    }
}

/// `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader` lines (`NAME, 81559 MiB`).
pub fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|l| {
            let (name, mem) = l.rsplit_once(',')?;
            let mut it = mem.split_whitespace();
            let n: u64 = it.next()?.parse().ok()?;
            let scale = match it.next() {
                Some("MiB") => 1 << 20,
                Some("GiB") => 1 << 30,
                Some("KiB") => 1 << 10,
                _ => 1,
            };
            Some(Gpu {
                name: name.trim().to_owned(),
                memory_bytes: Some(n * scale),
            })
        })
        .collect()
}

fn gpus() -> Vec<Gpu> {
    let smi = command_stdout(
        "nvidia-smi",
        &["--query-gpu=name,memory.total", "--format=csv,noheader"],
    );
    if let Some(text) = smi {
        let found = parse_nvidia_smi(&text);
        if !found.is_empty() {
            return found;
        }
    }
    // The driver's own listing names the GPUs, without their memory.
    let Ok(dirs) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = dirs.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p.join("information")).ok())
        .filter_map(|info| {
            let name = info
                .lines()
                .find_map(|l| l.strip_prefix("Model:"))?
                .trim()
                .to_owned();
            Some(Gpu {
                name,
                memory_bytes: None,
            })
        })
        .collect()
}

/// Free bytes on the file system holding `path` (POSIX `df -Pk`), from its nearest existing
/// ancestor.
pub fn free_disk(path: &Path) -> (PathBuf, Option<u64>) {
    let mut dir = path.to_path_buf();
    while !dir.exists() {
        match dir.parent() {
            Some(p) => dir = p.to_path_buf(),
            None => break,
        }
    }
    let free = command_stdout("df", &["-Pk", &dir.to_string_lossy()]).and_then(|out| {
        let line = out.lines().nth(1)?;
        let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
        Some(kib * 1024)
    });
    (dir, free)
}

fn disk() -> Option<Disk> {
    let root = store::Store::default_root().ok()?;
    let (_, free_bytes) = free_disk(&root);
    Some(Disk {
        path: root,
        free_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_counts_cores_and_threads() {
        // Two cores with two hardware threads each.
        let mut text = String::new();
        for (cpu, core) in [(0, 0), (1, 1), (2, 0), (3, 1)] {
            text.push_str(&format!(
                "processor\t: {cpu}\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: {core}\n\n"
            ));
        }
        assert_eq!(
            parse_cpuinfo(&text),
            (Some("Test CPU".to_owned()), 4, Some(2))
        );
        // No core ids (many ARM kernels): cores unknown here, taken as threads by the caller.
        assert_eq!(
            parse_cpuinfo("processor\t: 0\n\nprocessor\t: 1\n"),
            (None, 2, None)
        );
    }

    #[test]
    fn meminfo_fields_in_bytes() {
        let text = "MemTotal:       24684096 kB\nMemFree:  1 kB\nMemAvailable:   24033312 kB\n";
        assert_eq!(
            parse_meminfo(text),
            (Some(24684096 * 1024), Some(24033312 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 8 kB\n"), (Some(8192), None));
    }

    #[test]
    fn nvidia_smi_lines() {
        let gpus = parse_nvidia_smi("NVIDIA H200, 143771 MiB\nNVIDIA A10G, 23028 MiB\n\n");
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA H200");
        assert_eq!(gpus[0].memory_bytes, Some(143771 << 20));
        assert_eq!(gpus[1].name, "NVIDIA A10G");
        assert!(parse_nvidia_smi("No devices were found\n").is_empty());
    }
}
