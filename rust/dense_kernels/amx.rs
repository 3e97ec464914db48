//! The bfloat16 layers on AMX tiles (Intel Advanced Matrix Extensions, AMX-BF16), where the
//! CPU has them and the OS grants them.
//!
//! On such CPUs (Xeon since Sapphire Rapids) `vdpbf16ps` adds no multiplies over float32
//! FMAs, so the AVX-512 bfloat16 kernels ran *slower* than float32 (the conversions cost and
//! nothing paid for them); a tile product (`tdpbf16ps`: 16 rows × 16 columns × 32 products)
//! runs about 5× the float32 rate (torch's bfloat16 GEMM through oneDNN: 769 against 159
//! GFLOP/s on one core of the development machine, docs/performance.md). Rust's AMX
//! intrinsics are unstable, so the few tile instructions are inline assembly.
//!
//! A block of 32 rows × 32 columns is summed in four tiles over `k` in steps of 32 (bfloat16
//! rows and packed weights are zero-padded to a multiple of 32 for it); the sums leave through
//! an AVX-512 epilogue — init, PReLU, float32 or bfloat16 — like the other kernels'. Each
//! row's sums come from its own inputs only, in a fixed order: a row's result does not
//! depend on the rows beside it.

use super::x86::{mask, prelu, Dst};
use super::{native, Init, Out, Packed, Precision};
use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Whether this process runs the bfloat16 layers on AMX tiles: the CPU has AMX-BF16, the OS
/// keeps the tile state (XCR0) and granted it to this process (Linux asks each process to
/// request it), and `JTM_RS_AMX` is not `0` (the AVX-512 kernels then, for comparison).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("JTM_RS_AMX").is_ok_and(|v| v.trim() == "0") {
            return false;
        }
        #[allow(unused_unsafe)] // an unsafe fn before Rust 1.87
        // SAFETY: CPUID is on every x86-64 CPU.
        let leaf7 = unsafe { __cpuid_count(7, 0) };
        let cpu = (leaf7.edx >> 22) & 1 == 1 && (leaf7.edx >> 24) & 1 == 1;
        // SAFETY: AVX-512 (checked by `native`) implies XSAVE enabled by the OS.
        cpu && native(Precision::BFloat16) && unsafe { tile_state_enabled() } && granted()
    })
}

#[target_feature(enable = "xsave")]
unsafe fn tile_state_enabled() -> bool {
    (_xgetbv(0) >> 17) & 3 == 3 // XTILECFG and XTILEDATA
}

#[cfg(target_os = "linux")]
fn granted() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a request for a permission; it changes nothing else.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn granted() -> bool {
    false
}

/// Rows of a tile: a block is two tiles' rows.
const TILE_ROWS: usize = 16;
/// Columns of a sum tile (float32); a block is two tiles' columns.
const TILE_COLS: usize = 16;
/// bfloat16 values of `k` per tile product (64 bytes a row): rows are padded to a multiple.
const STEP_K: usize = 32;

/// The tile configuration: tiles 0–3 the sums of a block (2 × 2 tiles of 16 rows × 16
/// floats), 4 and 5 its two row tiles, 6 and 7 its two weight tiles (16 pairs of `k` × 16
/// columns), every tile 16 rows of 64 bytes.
fn config() -> [u8; 64] {
    let mut cfg = [0u8; 64];
    cfg[0] = 1; // palette 1
    for tile in 0..8 {
        cfg[16 + 2 * tile..18 + 2 * tile].copy_from_slice(&64u16.to_le_bytes());
        cfg[48 + tile] = TILE_ROWS as u8;
    }
    cfg
}

/// `y = act(init + x · Wᵀ)` for `rows` rows of bfloat16 `x` (`[rows, p.bf16_row(k)]`, zero
/// past `k`); `p` packed with `k` padded alike.
///
/// Blocks of 32 rows × 32 columns: per step of `k`, two row tiles and two weight tiles give
/// four products, each tile loaded once for two (a last block of fewer rows is copied into
/// 32 zero-padded rows, a last column group of 16 uses half the tiles).
///
/// # Safety
/// [`available`] is true and `x`, `init` and `y` hold `rows` rows (the callers in
/// `dense_kernels` check it).
#[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
pub unsafe fn layer(
    p: &Packed,
    x: &[u16],
    rows: usize,
    init: Init<'_>,
    slope: Option<f32>,
    y: Out<'_>,
) {
    let k_pad = p.bf16_row(p.k);
    let steps = k_pad / STEP_K;
    let cfg = config();
    asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly));
    let (x_stride, w_stride) = (2 * k_pad, 4 * p.n_pad); // bytes between rows
    let w = p.bf16s.as_ptr();
    const BLOCK: usize = 2 * TILE_ROWS;
    let mut sums = [0f32; BLOCK * 2 * TILE_COLS];
    let mut tail: Vec<u16> = Vec::new();
    let y = Dst::of(y);
    for r0 in (0..rows).step_by(BLOCK) {
        let r = (rows - r0).min(BLOCK);
        let xs = if r == BLOCK {
            x.as_ptr().add(r0 * k_pad)
        } else {
            tail.clear();
            tail.extend_from_slice(&x[r0 * k_pad..(r0 + r) * k_pad]);
            tail.resize(BLOCK * k_pad, 0);
            tail.as_ptr()
        };
        let xs2 = xs.add(TILE_ROWS * k_pad);
        for c0 in (0..p.n_pad).step_by(2 * TILE_COLS) {
            let both = p.n_pad - c0 > TILE_COLS; // a second column tile
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for s in 0..steps {
                let (a0, a1) = (xs.add(STEP_K * s), xs2.add(STEP_K * s));
                let b0 = w.add(((STEP_K / 2 * s) * p.n_pad + c0) * 2);
                if both {
                    asm!(
                        "tileloadd tmm4, [{a0} + {xs}*1]",
                        "tileloadd tmm6, [{b0} + {ws}*1]",
                        "tileloadd tmm5, [{a1} + {xs}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {ws}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b0.add(2 * TILE_COLS),
                        xs = in(reg) x_stride, ws = in(reg) w_stride,
                        options(nostack, readonly)
                    );
                } else {
                    asm!(
                        "tileloadd tmm4, [{a0} + {xs}*1]",
                        "tileloadd tmm6, [{b0} + {ws}*1]",
                        "tileloadd tmm5, [{a1} + {xs}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0,
                        xs = in(reg) x_stride, ws = in(reg) w_stride,
                        options(nostack, readonly)
                    );
                }
            }
            // sums[row][col]: rows 0–15 from tiles 0 and 1, rows 16–31 from 2 and 3.
            let out = sums.as_mut_ptr() as *mut u8;
            asm!(
                "tilestored [{o} + {st}*1], tmm0",
                "tilestored [{o} + {st}*1 + 64], tmm1",
                "tilestored [{o2} + {st}*1], tmm2",
                "tilestored [{o2} + {st}*1 + 64], tmm3",
                o = in(reg) out,
                o2 = in(reg) out.add(TILE_ROWS * 128),
                st = in(reg) 128usize,
                options(nostack)
            );
            let groups = if both { 2 } else { 1 };
            epilogue(p, &sums, r, r0, c0, groups, init, slope, y);
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// A block's sums (`[32][32]`, `r` rows, `groups` vectors from column `c0`) plus the init,
/// through the PReLU, into `y` (bfloat16 rows of `p.bf16_row(n)`).
#[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
#[allow(clippy::too_many_arguments)]
unsafe fn epilogue(
    p: &Packed,
    sums: &[f32; 2 * TILE_ROWS * 2 * TILE_COLS],
    r: usize,
    r0: usize,
    c0: usize,
    groups: usize,
    init: Init<'_>,
    slope: Option<f32>,
    y: Dst,
) {
    let n = p.n;
    let (a, width) = (_mm512_set1_ps(slope.unwrap_or(1.0)), p.bf16_row(n));
    // bfloat16 rows are written to their padded width (a multiple of 32, the block's): zeros
    // past the columns, which the next layer's tiles read.
    let vectors = if matches!(y, Dst::F32(_)) { groups } else { 2 };
    for row in 0..r {
        for g in 0..vectors {
            let col = c0 + TILE_COLS * g;
            let v = if g < groups {
                let m = mask(n.saturating_sub(col));
                let start = match init {
                    Init::Bias(b) => _mm512_maskz_loadu_ps(m, b.as_ptr().add(col)),
                    Init::Rows(rows) => _mm512_maskz_loadu_ps(
                        m,
                        rows.data.as_ptr().add(rows.at(r0 + row) * n + col),
                    ),
                };
                let sum = _mm512_loadu_ps(sums.as_ptr().add(row * 2 * TILE_COLS + TILE_COLS * g));
                prelu(a, _mm512_add_ps(start, sum))
            } else {
                _mm512_setzero_ps()
            };
            y.put(v, r0 + row, col, n, width);
        }
    }
}
