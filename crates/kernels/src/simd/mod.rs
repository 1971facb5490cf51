//! CPU feature detection (once per process) and SIMD helpers shared by the format kernels.
//!
//! Kernels pick their variant from [`features`]: what the CPU can run, restricted by the
//! environment variables `HEARTH_FORCE_SCALAR=1` (scalar kernels only), `HEARTH_NO_AVX512=1`
//! (no AVX-512 even where the CPU has it) and `HEARTH_NO_AVX_VNNI=1` (no AVX-VNNI); with the
//! last two set, an x86-64 CPU runs the AVX2 kernels a laptop without either would.
//! [`detected`] reports the CPU's own capabilities, without those restrictions: tests and
//! benchmarks use it to list every variant.
//!
//! On AArch64 (little-endian) the kernels use NEON, and SDOT where the CPU has the `dotprod`
//! extension (ARMv8.2: Apple M1 and later, Cortex-A76 and later, Neoverse).

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
pub mod x86;

#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
pub mod neon;

/// What SIMD the kernels may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// AVX2 together with FMA and F16C (every CPU with AVX2 that we know of has all three).
    pub avx2: bool,
    /// AVX-512 F, BW and VL.
    pub avx512: bool,
    /// AVX-512 VNNI (implies `avx512`).
    pub avx512_vnni: bool,
    /// AVX-VNNI: the same int8 dot product in VEX encoding, without AVX-512 (Intel Alder Lake
    /// and later, AMD Zen 5; implies `avx2`).
    pub avx_vnni: bool,
    /// AArch64 NEON (Advanced SIMD), little-endian only.
    pub neon: bool,
    /// The AArch64 dot product instructions (SDOT/UDOT; implies `neon`).
    pub dotprod: bool,
}

impl CpuFeatures {
    fn detect() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c");
            let avx512 = avx2
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl");
            let avx512_vnni = avx512 && std::arch::is_x86_feature_detected!("avx512vnni");
            let avx_vnni = avx2 && std::arch::is_x86_feature_detected!("avxvnni");
            CpuFeatures {
                avx2,
                avx512,
                avx512_vnni,
                avx_vnni,
                ..CpuFeatures::default()
            }
        }
        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
        {
            let neon = std::arch::is_aarch64_feature_detected!("neon");
            let dotprod = neon && std::arch::is_aarch64_feature_detected!("dotprod");
            CpuFeatures {
                neon,
                dotprod,
                ..CpuFeatures::default()
            }
        }
        #[cfg(not(any(
            target_arch = "x86_64",
            all(target_arch = "aarch64", target_endian = "little")
        )))]
        {
            CpuFeatures::default()
        }
    }

    /// `self` restricted by the environment variables (see the module documentation).
    fn restricted(self, force_scalar: bool, no_avx512: bool, no_avx_vnni: bool) -> CpuFeatures {
        if force_scalar {
            return CpuFeatures::default();
        }
        let mut f = self;
        if no_avx512 {
            f.avx512 = false;
            f.avx512_vnni = false;
        }
        if no_avx_vnni {
            f.avx_vnni = false;
        }
        f
    }

    /// A short description such as `"avx2"`, for logs and `--version` output.
    pub fn describe(&self) -> &'static str {
        if self.avx512_vnni {
            "avx512-vnni"
        } else if self.avx512 {
            "avx512"
        } else if self.avx_vnni {
            "avx-vnni"
        } else if self.avx2 {
            "avx2"
        } else if self.dotprod {
            "neon-dotprod"
        } else if self.neon {
            "neon"
        } else {
            "scalar"
        }
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// What this CPU can run, ignoring the environment restrictions. Detected once.
pub fn detected() -> CpuFeatures {
    static DETECTED: OnceLock<CpuFeatures> = OnceLock::new();
    *DETECTED.get_or_init(CpuFeatures::detect)
}

/// What the kernels may use: [`detected`] restricted by `HEARTH_FORCE_SCALAR`,
/// `HEARTH_NO_AVX512` and `HEARTH_NO_AVX_VNNI`. Decided once, on first use.
pub fn features() -> CpuFeatures {
    static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
    *FEATURES.get_or_init(|| {
        detected().restricted(
            env_flag("HEARTH_FORCE_SCALAR"),
            env_flag("HEARTH_NO_AVX512"),
            env_flag("HEARTH_NO_AVX_VNNI"),
        )
    })
}

/// Asks for the cache lines of `bytes` to be brought into the L2 cache ahead of their use: a
/// hint, which reads nothing into registers and cannot fault. Does nothing off x86-64.
#[inline]
pub fn prefetch_l2(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        // SAFETY: SSE is part of x86-64; a prefetch only hints the cache.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrictions() {
        let all = CpuFeatures {
            avx2: true,
            avx512: true,
            avx512_vnni: true,
            avx_vnni: true,
            ..CpuFeatures::default()
        };
        assert_eq!(all.restricted(true, false, false), CpuFeatures::default());
        let avx2_only = CpuFeatures {
            avx2: true,
            ..CpuFeatures::default()
        };
        assert_eq!(
            all.restricted(false, true, false),
            CpuFeatures {
                avx_vnni: true,
                ..avx2_only
            }
        );
        assert_eq!(all.restricted(false, true, true), avx2_only);
        assert_eq!(all.restricted(false, true, false).describe(), "avx-vnni");
        assert_eq!(all.restricted(false, false, false), all);
        assert_eq!(all.describe(), "avx512-vnni");
        let arm = CpuFeatures {
            neon: true,
            dotprod: true,
            ..CpuFeatures::default()
        };
        assert_eq!(arm.restricted(true, false, false), CpuFeatures::default());
        assert_eq!(arm.restricted(false, true, true), arm);
        assert_eq!(arm.describe(), "neon-dotprod");
        // What the crate was built for has its SIMD detected (NEON is part of every AArch64
        // CPU; AVX2 is not part of every x86-64 one).
        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
        assert!(detected().neon);
        // Detection is stable.
        assert_eq!(detected(), detected());
        assert_eq!(features(), features());
    }
}
