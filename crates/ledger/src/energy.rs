//! Energy of one request: RAPL counters when the kernel lets us read them, else this process's
//! CPU time × the CPU's configured wattage (an estimate).
//!
//! RAPL (`/sys/class/powercap/intel-rapl:N/energy_uj`, also used by AMD CPUs) counts the
//! microjoules of each CPU package since some point; the counter wraps at
//! `max_energy_range_uj`. Only the top-level package zones are read (their sub-zones, such as
//! `intel-rapl:0:0` for the cores, are part of the package's figure). The counters are for the
//! whole package, so other programs running at the same time are counted too. Recent kernels
//! let only root read them; otherwise the estimate is used.
//!
//! The estimate: CPU seconds of this process (user + system, all threads) × `cpu_watts` ÷ the
//! number of logical CPUs, that is, each busy logical CPU is taken to draw an equal share of
//! the CPU's full-load power. In a server answering several requests at once, each request's
//! reading includes the CPU time of the others.

use crate::{Energy, EnergySource};
use std::path::{Path, PathBuf};

/// The default place of the powercap zones.
pub const POWERCAP_DIR: &str = "/sys/class/powercap";

/// One RAPL package zone.
#[derive(Clone, Debug, PartialEq)]
pub struct RaplZone {
    /// `…/intel-rapl:0/energy_uj`.
    pub energy_file: PathBuf,
    /// Where the counter wraps to zero, in microjoules.
    pub max_range_uj: u64,
}

/// Measures requests; build it once (it looks for RAPL zones) and call [`EnergyMeter::start`]
/// and [`EnergyMeter::finish`] around each request.
#[derive(Clone, Debug)]
pub struct EnergyMeter {
    zones: Vec<RaplZone>,
    cpu_watts: f64,
    n_cpus: usize,
}

/// Counter values at the start of a request.
#[derive(Clone, Debug)]
pub struct EnergyStart {
    rapl_uj: Option<Vec<u64>>,
    cpu_seconds: Option<f64>,
}

impl EnergyMeter {
    /// A meter reading the system's RAPL zones, falling back to CPU time × `cpu_watts` (the
    /// CPU's power at full load, e.g. its TDP).
    pub fn new(cpu_watts: f64) -> EnergyMeter {
        let n_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        EnergyMeter::with_powercap(Path::new(POWERCAP_DIR), cpu_watts, n_cpus)
    }

    /// As [`EnergyMeter::new`], with the powercap directory and the CPU count given (tests).
    pub fn with_powercap(dir: &Path, cpu_watts: f64, n_cpus: usize) -> EnergyMeter {
        EnergyMeter {
            zones: rapl_zones(dir),
            cpu_watts,
            n_cpus: n_cpus.max(1),
        }
    }

    /// The readable RAPL package zones (empty: energy is estimated).
    pub fn zones(&self) -> &[RaplZone] {
        &self.zones
    }

    /// Whether requests are measured (RAPL) rather than estimated.
    pub fn measures(&self) -> bool {
        !self.zones.is_empty()
    }

    pub fn start(&self) -> EnergyStart {
        EnergyStart {
            rapl_uj: self.read_rapl(),
            cpu_seconds: process_cpu_seconds(),
        }
    }

    /// The energy since `start`: measured when both RAPL readings worked, else estimated from
    /// CPU time, else `None` (neither is available on this platform).
    pub fn finish(&self, start: &EnergyStart) -> Option<Energy> {
        if let (Some(before), Some(after)) = (&start.rapl_uj, self.read_rapl()) {
            let uj: u64 = self
                .zones
                .iter()
                .zip(before.iter().zip(&after))
                .map(|(z, (&b, &a))| counter_delta(b, a, z.max_range_uj))
                .sum();
            return Some(Energy {
                joules: uj as f64 / 1e6,
                source: EnergySource::MeasuredRapl,
            });
        }
        let before = start.cpu_seconds?;
        let after = process_cpu_seconds()?;
        Some(Energy {
            joules: self.estimate_joules((after - before).max(0.0)),
            source: EnergySource::EstimatedCpuTime,
        })
    }

    /// Joules for `cpu_seconds` of CPU time at the configured wattage.
    pub fn estimate_joules(&self, cpu_seconds: f64) -> f64 {
        cpu_seconds * self.cpu_watts / self.n_cpus as f64
    }

    fn read_rapl(&self) -> Option<Vec<u64>> {
        if self.zones.is_empty() {
            return None;
        }
        self.zones
            .iter()
            .map(|z| read_u64(&z.energy_file))
            .collect()
    }
}

/// The increase of a counter that wraps at `max` (its largest value before returning to 0).
pub(crate) fn counter_delta(before: u64, after: u64, max: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        // Wrapped once (a request is far shorter than a wrap period, minutes at least).
        max.saturating_sub(before).saturating_add(after)
    }
}

/// Top-level package zones (`intel-rapl:N`) whose counters can be read now.
fn rapl_zones(dir: &Path) -> Vec<RaplZone> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut zones: Vec<RaplZone> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("intel-rapl:")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| {
            let zone = e.path();
            let energy_file = zone.join("energy_uj");
            read_u64(&energy_file)?;
            let max_range_uj = read_u64(&zone.join("max_energy_range_uj")).unwrap_or(u64::MAX);
            Some(RaplZone {
                energy_file,
                max_range_uj,
            })
        })
        .collect();
    zones.sort_by(|a, b| a.energy_file.cmp(&b.energy_file));
    zones
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// User + system CPU seconds of this process, all threads (Linux: `/proc/self/stat`).
pub fn process_cpu_seconds() -> Option<f64> {
    parse_stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Linux reports these times in USER_HZ ticks, 100 per second on every architecture it
/// supports (the value `sysconf(_SC_CLK_TCK)` returns).
const USER_HZ: f64 = 100.0;

/// utime and stime (fields 14 and 15) of a `/proc/PID/stat` line, in seconds. The command
/// name (field 2) is in parentheses and may hold spaces, so fields are counted after the last
/// `)`.
pub(crate) fn parse_stat_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': field 3 (state) is index 0, so utime (14) is index 11 and stime index 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}
