//! What this machine can run: hardware probing (`hearth hw`) and memory estimates for a model
//! at a context size (`hearth fit`); what running models here used and cost (the usage ledger,
//! `hearth usage`).

pub mod bandwidth;
pub mod estimate;
pub mod server_usage;
pub mod system;
pub mod usage_log;

/// Bytes as MiB or GiB with one decimal, for people.
pub fn human(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    const GIB: f64 = (1u64 << 30) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}
