//! The integer product's inner loops, one file per instruction set beside the portable reference, and the
//! direct first convolution (`conv1`): the crate's only `unsafe` code, each kernel behind a safe entry
//! point that checks the CPU features and the shapes. They know nothing of models or files: a kernel sees
//! activation codes and a view of the weights ([`Weights`]).
//!
//! One portable reference ([`Int8Kernel::Scalar`], `scalar.rs`) and one SIMD kernel per instruction set:
//! AVX2 (`avx2.rs`), AVX-512 VNNI (`avx512.rs`), and on aarch64 NEON with and without the dot-product
//! extension (`neon.rs`). [`Int8Kernel::best`] picks the fastest one the CPU runs, once per process, and the
//! environment variable `SACCADE_INT8_KERNEL` (`scalar`, `avx2`, `avx512vnni`, `neondot`, `neon`) overrides
//! it. All kernels compute the same exact i32 sums and the same final float expression
//! `(sum as f32 · (sa · sw)) + bias` (no FMA), so their outputs are bit-identical (`tests.rs` checks every
//! kernel this CPU runs against the reference).
//!
//! The SIMD kernels read the weights in a packed copy: groups of 16 rows, and within a group, for every 4
//! columns, the 16 rows' 4 bytes side by side (64 bytes). Four activation bytes broadcast against one such
//! vector give 16 (AVX-512) or 8 (AVX2 half) or 4 (NEON quarter) output channels' partial sums in column
//! order, so no horizontal reduction is needed, and the kernels block several activation rows against one or
//! two weight groups to reuse every load.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The register-block walk of the AVX2 and NEON kernels, expanded inside each kernel's `#[target_feature]`
/// function so the block stays inlined with that instruction set: weight groups outermost (a group's
/// weights, 16 · kp bytes, stay in L1 while the activation rows stream), then `$rows` activation rows at a
/// time, the last ones one by one. `$block::<R>(codes, scales, w, relu, out, r0, g)` is the kernel's block
/// (`$block::<R, Kind>(…)` with a second type argument, where one block serves several kernels).
macro_rules! row_blocks {
    ($block:ident::<$rows:ident $(, $kind:ty)?>($codes:expr, $scales:expr, $w:expr, $relu:expr, $out:expr)) => {{
        let m = $scales.len();
        for g in 0..$w.np / $crate::kernels::GROUP {
            let mut r = 0;
            while r < m {
                // SAFETY: r + R ≤ m and g < np / 16, and the caller's CPU features and shapes hold.
                if m - r >= $rows {
                    unsafe { $block::<$rows $(, $kind)?>($codes, $scales, $w, $relu, $out, r, g) };
                    r += $rows;
                } else {
                    unsafe { $block::<1 $(, $kind)?>($codes, $scales, $w, $relu, $out, r, g) };
                    r += 1;
                }
            }
        }
    }};
}

pub(crate) mod conv1;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

#[cfg(test)]
mod tests;

/// Inner dimension granularity: one Q8_0 block, and one AVX2 register of bytes.
pub const BLOCK: usize = 32;
/// Weight rows per group of the packed layout (and the row padding): one AVX-512 register of i32 sums.
pub const GROUP: usize = 16;

/// `n` rounded up to whole groups of weight rows.
pub(crate) fn padded_rows(n: usize) -> usize {
    n.div_ceil(GROUP) * GROUP
}

/// Row-major `(np, kp)` codes in the packed layout: for group `g` of 16 rows and column quad `q`, the 64
/// bytes at `g·16·kp + q·64` are rows `16g .. 16g + 16`'s columns `4q .. 4q + 4`, row after row.
pub(crate) fn pack(codes: &[i8], np: usize, kp: usize) -> Vec<i8> {
    debug_assert!(np.is_multiple_of(GROUP) && kp.is_multiple_of(4) && codes.len() == np * kp);
    let mut packed = vec![0i8; np * kp];
    for (dst, src) in packed
        .chunks_exact_mut(GROUP * kp)
        .zip(codes.chunks_exact(GROUP * kp))
    {
        for (q, quad) in dst.chunks_exact_mut(4 * GROUP).enumerate() {
            for (j, row_quad) in quad.chunks_exact_mut(4).enumerate() {
                row_quad.copy_from_slice(&src[j * kp + 4 * q..j * kp + 4 * q + 4]);
            }
        }
    }
    packed
}

/// A weight matrix `(n, k)` as a kernel reads it: i8 codes row-major (`np` rows of `kp`, zero-padded) and in
/// the packed layout, one scale and one bias per row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Weights<'a> {
    pub n: usize,
    pub np: usize,
    pub k: usize,
    pub kp: usize,
    pub codes: &'a [i8],
    pub packed: &'a [i8],
    pub scales: &'a [f32],
    pub bias: &'a [f32],
}

/// Environment variable that overrides the kernel [`Int8Kernel::best`] detects.
pub const KERNEL_ENV: &str = "SACCADE_INT8_KERNEL";

/// One implementation of `int8::matmul`'s inner loop. Every variant exists on every target; the ones for
/// another instruction set are simply never [available](Int8Kernel::is_available).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// Portable Rust: the reference the others are tested against.
    Scalar,
    /// x86-64 AVX2: `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// x86-64 AVX-512 with VNNI (`avx512f`, `avx512bw`, `avx512vnni`): `vpdpbusd`.
    Avx512Vnni,
    /// aarch64 NEON with the dot-product extension: `sdot`.
    NeonDot,
    /// aarch64 NEON without it: `smull`/`smlal` + `sadalp`.
    Neon,
}

impl Int8Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Int8Kernel; 5] = [
        Int8Kernel::Avx512Vnni,
        Int8Kernel::Avx2,
        Int8Kernel::NeonDot,
        Int8Kernel::Neon,
        Int8Kernel::Scalar,
    ];

    /// The name [`KERNEL_ENV`] and the reports use.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Scalar => "scalar",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Avx512Vnni => "avx512vnni",
            Int8Kernel::NeonDot => "neondot",
            Int8Kernel::Neon => "neon",
        }
    }

    /// Whether this CPU runs the kernel (run-time feature detection; std caches it).
    pub fn is_available(self) -> bool {
        match self {
            Int8Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Int8Kernel::NeonDot => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[cfg(target_arch = "aarch64")]
            Int8Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU runs, fastest first ([`Int8Kernel::Scalar`] always, last).
    pub fn available() -> Vec<Int8Kernel> {
        Self::ALL.into_iter().filter(|k| k.is_available()).collect()
    }

    /// The kernel `int8::matmul` uses: the fastest available one, or the one [`KERNEL_ENV`] names when this CPU
    /// runs it. Decided once per process; a value that is unknown or not available here is reported on
    /// stderr (naming it and the available kernels) and ignored.
    pub fn best() -> Int8Kernel {
        static BEST: OnceLock<Int8Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            let requested = std::env::var_os(KERNEL_ENV).map(|v| v.to_string_lossy().into_owned());
            let (kernel, warning) = choose(requested.as_deref(), &Self::available());
            if let Some(warning) = warning {
                eprintln!("saccade: {warning}");
            }
            kernel
        })
    }
}

impl fmt::Display for Int8Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel name that is none of [`Int8Kernel::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown int8 kernel {name:?} (known: {known})")]
pub struct UnknownKernel {
    pub name: String,
    pub known: String,
}

impl FromStr for Int8Kernel {
    type Err = UnknownKernel;

    /// A kernel by [name](Int8Kernel::name), case and surrounding blanks ignored.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.name() == wanted)
            .ok_or_else(|| UnknownKernel {
                name: s.to_string(),
                known: names(&Self::ALL),
            })
    }
}

pub(crate) fn names(kernels: &[Int8Kernel]) -> String {
    kernels
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kernel to use given the override's value (`None` or blank: no override) and the available kernels
/// (fastest first, never empty in practice: scalar is always there), and a warning when the override was
/// refused. Never fails: a bad override falls back to the fastest kernel.
pub fn choose(requested: Option<&str>, available: &[Int8Kernel]) -> (Int8Kernel, Option<String>) {
    let best = available.first().copied().unwrap_or(Int8Kernel::Scalar);
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return (best, None);
    };
    let refused = |why: String| {
        Some(format!(
            "{KERNEL_ENV}={requested:?} ignored: {why}; available here: {}; using {best}",
            names(available)
        ))
    };
    match requested.parse::<Int8Kernel>() {
        Ok(kernel) if available.contains(&kernel) => (kernel, None),
        Ok(kernel) => (
            best,
            refused(format!("this CPU does not run the {kernel} kernel")),
        ),
        Err(e) => (best, refused(e.to_string())),
    }
}

/// `scales.len()` activation rows (`codes`, `w.kp` each) against all of `w`'s rows into `out` (`w.n` per
/// row), on `kernel`; `relu` clamps negatives to zero.
pub(crate) fn rows(
    kernel: Int8Kernel,
    codes: &[u8],
    scales: &[f32],
    w: &Weights<'_>,
    relu: bool,
    out: &mut [f32],
) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => avx2::rows(codes, scales, w, relu, out),
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni => avx512::rows(codes, scales, w, relu, out),
        #[cfg(target_arch = "aarch64")]
        Int8Kernel::NeonDot => neon::rows_dot(codes, scales, w, relu, out),
        #[cfg(target_arch = "aarch64")]
        Int8Kernel::Neon => neon::rows(codes, scales, w, relu, out),
        // Scalar, and (never reached: `check` refused them) the other architectures' kernels.
        _ => scalar::rows(codes, scales, w, relu, out),
    }
}

/// What every SIMD kernel's safe entry point asserts before its `unsafe` body: that this CPU runs `kernel`,
/// and the shapes its pointer arithmetic relies on ([`check_kernel_shapes`]).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
fn check_entry(kernel: Int8Kernel, codes: &[u8], scales: &[f32], w: &Weights<'_>, out: &[f32]) {
    assert!(
        kernel.is_available(),
        "{kernel} kernel on a CPU without its instruction set"
    );
    check_kernel_shapes(codes, scales, w, out);
}

/// The shapes every kernel's pointer arithmetic relies on, asserted by each kernel's safe entry point.
fn check_kernel_shapes(codes: &[u8], scales: &[f32], w: &Weights<'_>, out: &[f32]) {
    assert!(
        w.kp.is_multiple_of(BLOCK)
            && w.np.is_multiple_of(GROUP)
            && w.n <= w.np
            && w.np < w.n + GROUP
            && w.packed.len() == w.np * w.kp
            && w.scales.len() == w.np
            && w.bias.len() == w.np,
        "int8 weights ({}, {}) padded to ({}, {}) with {} codes, {} scales, {} biases",
        w.n,
        w.k,
        w.np,
        w.kp,
        w.packed.len(),
        w.scales.len(),
        w.bias.len()
    );
    assert!(
        codes.len() == scales.len() * w.kp && out.len() == scales.len() * w.n,
        "int8 kernel on {} codes, {} scales, {} outputs for kp {} and n {}",
        codes.len(),
        scales.len(),
        out.len(),
        w.kp,
        w.n
    );
}
