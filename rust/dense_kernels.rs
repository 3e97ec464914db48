//! Dense layers for scoring: `y[r] += x[r] · Wᵀ` over a chunk of rows, with `W` packed once per
//! call for the CPU's widest multiply (docs/performance.md, "The scoring pass").
//!
//! The scoring MLP's layers are small (`[128, 24]`, `[64, 128]`, `[24, 64]`) and its chunks
//! short (256 pairs), so a general GEMM spends much of a call packing its operands; here the
//! weights are packed once per call and the rows are read where they lie. With AVX-512 the
//! kernels keep 6 rows × 64 columns of sums in registers: in float32 with FMA, and in
//! bfloat16 with `vdpbf16ps` (AVX-512 BF16: twice the multiplies per instruction, sums in
//! float32). Elsewhere `matrixmultiply` computes the same, on operands rounded to bfloat16
//! where that was asked, so a model scores alike on every CPU up to the sums' order.
//!
//! Every row goes through the same instructions whatever rows share its chunk: a row's
//! result does not depend on the batch it came in.

use crate::fused_mlp::gemm;

#[cfg(target_arch = "x86_64")]
mod amx;

/// The arithmetic of the multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Float32,
    /// Operands rounded to bfloat16 (to nearest, ties to even), sums in float32.
    BFloat16,
}

/// Rows of a matrix, in place or gathered: row `r` is `data[i * width..(i + 1) * width]` with
/// `i = index[r]`, or `i = r` without an index.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub index: Option<&'a [i64]>,
}

impl<'a> Rows<'a> {
    pub fn dense(data: &'a [f32]) -> Self {
        Rows { data, index: None }
    }

    fn at(&self, r: usize) -> usize {
        self.index.map_or(r, |ix| ix[r] as usize)
    }

    /// Every row the index names lies inside `data`.
    fn fits(&self, rows: usize, width: usize) -> bool {
        let n_rows = self.data.len() / width.max(1);
        match self.index {
            None => rows <= n_rows,
            Some(ix) => {
                ix.len() >= rows && ix[..rows].iter().all(|&i| i >= 0 && (i as usize) < n_rows)
            }
        }
    }
}

/// Asks the CPU to bring rows `index` of `data` (rows of `width`) into cache: for the next
/// chunk's node embeddings, random rows of a table far larger than the cache, while the
/// current chunk computes.
pub fn prefetch_rows(data: &[f32], index: &[i64], width: usize) {
    #[cfg(target_arch = "x86_64")]
    for &i in index {
        let lo = i as usize * width;
        if i >= 0 && lo + width <= data.len() {
            let row = data[lo..lo + width].as_ptr() as *const i8;
            for line in (0..width * 4)
                .step_by(64)
                .chain(std::iter::once(width * 4 - 1))
            {
                // SAFETY: a prefetch of an address inside `data` (it cannot fault anyway).
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        row.add(line),
                    )
                };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, index, width);
}

/// What a layer's sums start from: its bias, or rows of a matrix of the output's width (the
/// first layer's user share).
#[derive(Clone, Copy, Debug)]
pub enum Init<'a> {
    Bias(&'a [f32]),
    Rows(Rows<'a>),
}

/// Where a layer's outputs go: float32 rows of `n`, or bfloat16 bits in rows of
/// [`Packed::bf16_row`]`(n)` (the next layer's input as the native bfloat16 kernels read it,
/// so a chain of layers converts each output as it leaves the registers, not in a pass of its
/// own).
#[derive(Debug)]
pub enum Out<'a> {
    F32(&'a mut [f32]),
    BF16(&'a mut [u16]),
}

/// A row of `k` values as the AVX-512 bfloat16 kernels read it: `k` rounded up to even.
fn pair_row_len(k: usize) -> usize {
    k.div_ceil(2) * 2
}

/// Rows of a tile the AVX-512 kernels hold in registers (6 × 4 vectors of sums).
const TILE_ROWS: usize = 6;
/// Columns of a tile: 4 vectors of 16 floats.
const TILE_COLS: usize = 64;

/// Whether this CPU runs the AVX-512 kernels of `precision`.
pub fn native(precision: Precision) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let f = std::arch::is_x86_feature_detected!("avx512f");
        match precision {
            Precision::Float32 => f,
            Precision::BFloat16 => {
                f && std::arch::is_x86_feature_detected!("avx512bf16")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = precision;
        false
    }
}

/// Whether the bfloat16 layers run on AMX tiles in this process (`amx` module; `JTM_RS_AMX=0`
/// keeps the AVX-512 kernels).
pub fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether bfloat16 scoring beats float32 on this CPU: the native kernels on AMX tiles, or
/// where `vdpbf16ps` does twice the multiplies of a float32 FMA (AMD's CPUs). On Intel's it
/// does as many, and without AMX the conversions made bfloat16 0.65× float32
/// (docs/performance.md, "AMX tiles on Intel CPUs").
pub fn bf16_faster() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        #[allow(unused_unsafe)] // an unsafe fn before Rust 1.87
        // SAFETY: CPUID is on every x86-64 CPU.
        let vendor = unsafe { std::arch::x86_64::__cpuid(0) };
        let intel = (vendor.ebx, vendor.edx, vendor.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
        native(Precision::BFloat16) && (amx_available() || !intel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out` `[rows, width]` bfloat16: row `r` is `PReLU(a[r] + b[r])` of the rows of `n` values
/// of `a` and `b`, rounded to nearest even and zero past `n` — a first layer's activation from
/// its user and node shares, straight into the bfloat16 row the next layer reads.
pub fn add_prelu_bf16(
    a: Rows<'_>,
    b: Rows<'_>,
    n: usize,
    slope: f32,
    width: usize,
    out: &mut [u16],
) {
    let rows = out.len().checked_div(width).unwrap_or(0);
    assert!(
        width >= n && a.fits(rows, n) && b.fits(rows, n),
        "rows outside their tables"
    );
    #[cfg(target_arch = "x86_64")]
    if native(Precision::BFloat16) {
        // SAFETY: the CPU has the features (checked above); every row read lies in its table
        // and every write in `out` (asserted).
        unsafe { x86::add_prelu_bf16(a, b, n, slope, width, out) };
        return;
    }
    add_prelu_bf16_scalar(a, b, n, slope, width, out);
}

fn add_prelu_bf16_scalar(
    a: Rows<'_>,
    b: Rows<'_>,
    n: usize,
    slope: f32,
    width: usize,
    out: &mut [u16],
) {
    for (r, row) in out.chunks_exact_mut(width).enumerate() {
        let (x, y) = (a.at(r) * n, b.at(r) * n);
        for (j, o) in row[..n].iter_mut().enumerate() {
            let s = a.data[x + j] + b.data[y + j];
            *o = bf16_bits(if s > 0.0 { s } else { s * slope });
        }
        row[n..].fill(0);
    }
}

/// `f32` to bfloat16 bits, to nearest with ties to even (what `vcvtneps2bf16` does).
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

fn bf16_round(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// A layer's weight `[n, k]` (row-major, as torch stores a `Linear`'s), packed.
pub struct Packed {
    pub n: usize,
    pub k: usize,
    precision: Precision,
    native: bool,
    /// bfloat16 on AMX tiles (`amx` module) rather than the AVX-512 kernels.
    amx: bool,
    /// Columns rounded up to whole vectors.
    n_pad: usize,
    /// float32, native: `[k][n_pad]`; otherwise the weight as given (rounded to bfloat16 for
    /// that precision), `[n, k]`.
    f32s: Vec<f32>,
    /// bfloat16, native: `[k_pad / 2][n_pad][2]` (pairs along `k`, as `vdpbf16ps` reads them).
    bf16s: Vec<u16>,
}

impl Packed {
    pub fn new(weight: &[f32], n: usize, k: usize, precision: Precision) -> Packed {
        Packed::with(weight, n, k, precision, native(precision))
    }

    /// [`Packed::new`] with the kernels chosen: `native` only where the CPU has them.
    fn with(weight: &[f32], n: usize, k: usize, precision: Precision, native: bool) -> Packed {
        assert_eq!(weight.len(), n * k, "a weight of [{n}, {k}]");
        let n_pad = n.div_ceil(16) * 16;
        let mut p = Packed {
            n,
            k,
            precision,
            native,
            amx: native && precision == Precision::BFloat16 && amx_available(),
            n_pad,
            f32s: Vec::new(),
            bf16s: Vec::new(),
        };
        match (native, precision) {
            (true, Precision::Float32) => {
                p.f32s = vec![0.0; k * n_pad];
                for (col, w) in weight.chunks_exact(k).enumerate() {
                    for (kk, &v) in w.iter().enumerate() {
                        p.f32s[kk * n_pad + col] = v;
                    }
                }
            }
            (true, Precision::BFloat16) => {
                p.bf16s = vec![0; p.bf16_row(k) / 2 * n_pad * 2];
                for (col, w) in weight.chunks_exact(k).enumerate() {
                    for (kk, &v) in w.iter().enumerate() {
                        p.bf16s[((kk / 2) * n_pad + col) * 2 + kk % 2] = bf16_bits(v);
                    }
                }
            }
            (false, Precision::Float32) => p.f32s = weight.to_vec(),
            (false, Precision::BFloat16) => {
                p.f32s = weight.iter().map(|&v| bf16_round(v)).collect()
            }
        }
        p
    }

    /// `y[r] = act(init[r] + x[r] · Wᵀ)` for `rows` rows: `x` rows of `k`, `y` `[rows, n]`
    /// row-major, `act` a PReLU of slope `slope` (none: the identity). `scratch` holds the
    /// rows' bfloat16 copy between calls.
    pub fn apply(
        &self,
        x: Rows<'_>,
        rows: usize,
        init: Init<'_>,
        slope: Option<f32>,
        y: &mut [f32],
        scratch: &mut Scratch,
    ) {
        self.apply_to(x, rows, init, slope, Out::F32(y), scratch)
    }

    /// The length of a bfloat16 row of `width` values as this layer's native kernel reads and
    /// writes it, zero-padded: to a multiple of 32 on AMX (a tile step), else of 2 (a pair).
    pub fn bf16_row(&self, width: usize) -> usize {
        if self.amx {
            width.div_ceil(32) * 32
        } else {
            pair_row_len(width)
        }
    }

    /// Whether this layer runs the native bfloat16 kernels, which take bfloat16 rows
    /// ([`Packed::apply_bf16`]) and give [`Out::BF16`].
    pub fn bf16_native(&self) -> bool {
        self.native && self.precision == Precision::BFloat16
    }

    /// [`Packed::apply`] into `y`, which may be [`Out::BF16`] where [`Packed::bf16_native`]:
    /// the same bits as converting the float32 outputs.
    pub fn apply_to(
        &self,
        x: Rows<'_>,
        rows: usize,
        init: Init<'_>,
        slope: Option<f32>,
        y: Out<'_>,
        scratch: &mut Scratch,
    ) {
        let (n, k) = (self.n, self.k);
        assert!(x.fits(rows, k), "a layer's inputs do not fit [{n}, {k}]");
        self.check(rows, init, &y);
        if rows == 0 || n == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.native {
            // SAFETY: `native` said the CPU has the features; the asserts above and the packed
            // shapes bound every access (`x86` module).
            unsafe {
                match self.precision {
                    Precision::Float32 => x86::f32_layer(self, x, rows, init, slope, f32_out(y)),
                    Precision::BFloat16 => {
                        let k_pad = self.bf16_row(k);
                        scratch.bf16.resize(rows * k_pad, 0);
                        x86::to_bf16_rows(x, rows, k, k_pad, &mut scratch.bf16);
                        self.bf16_layer(&scratch.bf16, rows, init, slope, y)
                    }
                }
            }
            return;
        }
        let y = f32_out(y);
        let y = &mut y[..rows * n];
        for (r, out) in y.chunks_exact_mut(n).enumerate() {
            match init {
                Init::Bias(b) => out.copy_from_slice(b),
                Init::Rows(m) => out.copy_from_slice(&m.data[m.at(r) * n..(m.at(r) + 1) * n]),
            }
        }
        let round = |v: f32| {
            if self.precision == Precision::BFloat16 {
                bf16_round(v)
            } else {
                v
            }
        };
        scratch.f32.clear();
        for r in 0..rows {
            scratch.f32.extend(
                x.data[x.at(r) * k..(x.at(r) + 1) * k]
                    .iter()
                    .map(|&v| round(v)),
            );
        }
        gemm(rows, k, n, &scratch.f32, (k, 1), &self.f32s, (1, k), 1.0, y);
        if let Some(a) = slope {
            y.iter_mut()
                .for_each(|v| *v = if *v > 0.0 { *v } else { *v * a });
        }
    }

    /// [`Packed::apply_to`] on rows already in bfloat16 (`x` `[rows, self.bf16_row(k)]`, a
    /// previous layer's [`Out::BF16`]); only where [`Packed::bf16_native`].
    pub fn apply_bf16(
        &self,
        x: &[u16],
        rows: usize,
        init: Init<'_>,
        slope: Option<f32>,
        y: Out<'_>,
    ) {
        assert!(
            self.bf16_native() && x.len() >= rows * self.bf16_row(self.k),
            "bfloat16 rows for [{}, {}] on the native kernels",
            self.n,
            self.k
        );
        self.check(rows, init, &y);
        if rows == 0 || self.n == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `apply_to`; `bf16_native` said the CPU has the features.
        unsafe {
            self.bf16_layer(x, rows, init, slope, y)
        }
    }

    /// The native bfloat16 layer on bfloat16 rows: AMX tiles where granted, else AVX-512.
    ///
    /// # Safety
    /// As the `x86` and `amx` kernels: the CPU has the features, the operands fit.
    #[cfg(target_arch = "x86_64")]
    unsafe fn bf16_layer(
        &self,
        x: &[u16],
        rows: usize,
        init: Init<'_>,
        slope: Option<f32>,
        y: Out<'_>,
    ) {
        if self.amx {
            amx::layer(self, x, rows, init, slope, y)
        } else {
            x86::bf16_layer(self, x, rows, init, slope, y)
        }
    }

    /// The init and outputs fit `rows` rows; bfloat16 outputs only from the native kernels.
    fn check(&self, rows: usize, init: Init<'_>, y: &Out<'_>) {
        let n = self.n;
        let fits = match init {
            Init::Bias(b) => b.len() == n,
            Init::Rows(r) => r.fits(rows, n),
        } && match y {
            Out::F32(y) => y.len() >= rows * n,
            Out::BF16(y) => self.bf16_native() && y.len() >= rows * self.bf16_row(n),
        };
        assert!(fits, "a layer's operands do not fit [{n}, {}]", self.k);
    }
}

/// The float32 outputs of a layer that gives no others.
fn f32_out(y: Out<'_>) -> &mut [f32] {
    match y {
        Out::F32(y) => y,
        Out::BF16(_) => {
            unreachable!("bfloat16 outputs are checked to come from the native kernels")
        }
    }
}

/// A thread's buffers for [`Packed::apply`].
#[derive(Default)]
pub struct Scratch {
    bf16: Vec<u16>,
    f32: Vec<f32>,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{pair_row_len, Init, Out, Packed, Rows, TILE_COLS, TILE_ROWS};
    use std::arch::x86_64::*;

    /// Calls `$tile::<R, V>` for `R = $r` rows (1..=6) and `V = $v` vectors (1..=4) of columns.
    macro_rules! tiles {
        ($tile:ident, $r:expr, $v:expr, ($($arg:expr),*)) => {
            tiles!(@rows $tile, $r, $v, ($($arg),*), 1 2 3 4 5 6)
        };
        (@rows $tile:ident, $r:expr, $v:expr, $args:tt, $($rr:literal)*) => {
            match ($r, $v) {
                $( ($rr, 4) => tiles!(@call $tile, $rr, 4, $args),
                   ($rr, 3) => tiles!(@call $tile, $rr, 3, $args),
                   ($rr, 2) => tiles!(@call $tile, $rr, 2, $args),
                   ($rr, _) => tiles!(@call $tile, $rr, 1, $args), )*
                _ => unreachable!(),
            }
        };
        (@call $tile:ident, $rr:literal, $vv:literal, ($($arg:expr),*)) => {
            $tile::<$rr, $vv>($($arg),*)
        };
    }

    /// The first `cols` lanes of a vector (all 16 from 16 on).
    pub(super) fn mask(cols: usize) -> __mmask16 {
        if cols >= 16 {
            0xffff
        } else {
            ((1u32 << cols) - 1) as __mmask16
        }
    }

    /// Rows to bfloat16 bits, zero-padded from `k` to `k_pad` values: `out` `[rows, k_pad]`.
    #[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
    pub unsafe fn to_bf16_rows(x: Rows<'_>, rows: usize, k: usize, k_pad: usize, out: &mut [u16]) {
        for r in 0..rows {
            let i = x.at(r);
            let (src, dst) = (
                &x.data[i * k..(i + 1) * k],
                &mut out[r * k_pad..(r + 1) * k_pad],
            );
            for c in (0..k_pad).step_by(16) {
                // The last vector masked: its lanes past `k` read nothing and write zeros.
                let v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(
                    mask(k.saturating_sub(c)),
                    src.as_ptr().add(c),
                ));
                let bits = std::mem::transmute::<__m256bh, __m256i>(v);
                _mm256_mask_storeu_epi16(
                    dst.as_mut_ptr().add(c) as *mut i16,
                    mask(k_pad - c),
                    bits,
                );
            }
        }
    }

    /// [`super::add_prelu_bf16`] on AVX-512.
    #[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
    pub unsafe fn add_prelu_bf16(
        a: Rows<'_>,
        b: Rows<'_>,
        n: usize,
        slope: f32,
        width: usize,
        out: &mut [u16],
    ) {
        let slope = _mm512_set1_ps(slope);
        for (r, row) in out.chunks_exact_mut(width).enumerate() {
            let (x, y) = (
                a.data.as_ptr().add(a.at(r) * n),
                b.data.as_ptr().add(b.at(r) * n),
            );
            for c in (0..width).step_by(16) {
                // Lanes past `n` read nothing and write zeros.
                let m = mask(n.saturating_sub(c));
                let s = _mm512_add_ps(
                    _mm512_maskz_loadu_ps(m, x.add(c)),
                    _mm512_maskz_loadu_ps(m, y.add(c)),
                );
                let bits =
                    std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(prelu(slope, s)));
                _mm256_mask_storeu_epi16(
                    row.as_mut_ptr().add(c) as *mut i16,
                    mask(width - c),
                    bits,
                );
            }
        }
    }

    /// A tile's sums at the start: the bias, or the init rows.
    #[inline(always)]
    unsafe fn start<const R: usize, const V: usize>(
        n: usize,
        c0: usize,
        r0: usize,
        init: Init<'_>,
    ) -> [[__m512; V]; R] {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, a) in row.iter_mut().enumerate() {
                let col = c0 + 16 * v;
                let m = mask(n.saturating_sub(col));
                *a = match init {
                    Init::Bias(b) => _mm512_maskz_loadu_ps(m, b.as_ptr().add(col)),
                    Init::Rows(rows) => {
                        _mm512_maskz_loadu_ps(m, rows.data.as_ptr().add(rows.at(r0 + r) * n + col))
                    }
                };
            }
        }
        acc
    }

    /// The PReLU of slope `a`: max(s, 0) + a · min(s, 0), the identity for a = 1.
    #[inline(always)]
    pub(super) unsafe fn prelu(a: __m512, s: __m512) -> __m512 {
        _mm512_fmadd_ps(
            a,
            _mm512_min_ps(s, _mm512_setzero_ps()),
            _mm512_max_ps(s, _mm512_setzero_ps()),
        )
    }

    /// A layer's outputs as the kernels write them: float32 rows of `n`, or bfloat16 rows of
    /// the padded `width` the next layer reads (zero past `n`).
    #[derive(Clone, Copy)]
    pub(super) enum Dst {
        F32(*mut f32),
        BF16(*mut u16),
    }

    impl Dst {
        pub(super) fn of(y: Out<'_>) -> Dst {
            match y {
                Out::F32(y) => Dst::F32(y.as_mut_ptr()),
                Out::BF16(y) => Dst::BF16(y.as_mut_ptr()),
            }
        }

        /// The outputs from row `r` on.
        pub(super) unsafe fn at_row(self, r: usize, n: usize, width: usize) -> Dst {
            match self {
                Dst::F32(y) => Dst::F32(y.add(r * n)),
                Dst::BF16(y) => Dst::BF16(y.add(r * width)),
            }
        }

        /// `v` into row `r` from column `col`: float32 lanes up to `n`, or bfloat16 lanes up to
        /// `width` (rounded as `vcvtneps2bf16` does; lanes past `n` hold zero sums).
        #[inline(always)]
        pub(super) unsafe fn put(self, v: __m512, r: usize, col: usize, n: usize, width: usize) {
            match self {
                Dst::F32(y) => {
                    _mm512_mask_storeu_ps(y.add(r * n + col), mask(n.saturating_sub(col)), v)
                }
                Dst::BF16(y) => {
                    let bits = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
                    let at = y.add(r * width + col) as *mut i16;
                    _mm256_mask_storeu_epi16(at, mask(width.saturating_sub(col)), bits);
                }
            }
        }
    }

    /// A tile's sums through the PReLU into `y` (the tile's first row; bfloat16 rows of
    /// `pair_row_len(n)`).
    #[inline(always)]
    unsafe fn finish<const R: usize, const V: usize>(
        acc: [[__m512; V]; R],
        n: usize,
        c0: usize,
        slope: Option<f32>,
        y: Dst,
    ) {
        let (a, width) = (_mm512_set1_ps(slope.unwrap_or(1.0)), pair_row_len(n));
        for (r, row) in acc.iter().enumerate() {
            for (v, &s) in row.iter().enumerate() {
                y.put(prelu(a, s), r, c0 + 16 * v, n, width);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn f32_layer(
        p: &Packed,
        x: Rows<'_>,
        rows: usize,
        init: Init<'_>,
        slope: Option<f32>,
        y: &mut [f32],
    ) {
        for c0 in (0..p.n_pad).step_by(TILE_COLS) {
            let vecs = ((p.n_pad - c0) / 16).min(4);
            let mut r0 = 0;
            while r0 < rows {
                let r = (rows - r0).min(TILE_ROWS);
                let ys = y.as_mut_ptr().add(r0 * p.n);
                tiles!(f32_tile, r, vecs, (p, x, r0, c0, init, slope, ys));
                r0 += r;
            }
        }
    }

    /// `R` rows from `r0` × `V` vectors of columns from `c0`: sums in registers over all of `k`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn f32_tile<const R: usize, const V: usize>(
        p: &Packed,
        x: Rows<'_>,
        r0: usize,
        c0: usize,
        init: Init<'_>,
        slope: Option<f32>,
        y: *mut f32,
    ) {
        let mut acc = start::<R, V>(p.n, c0, r0, init);
        let xs: [*const f32; R] = std::array::from_fn(|r| x.data.as_ptr().add(x.at(r0 + r) * p.k));
        let w = p.f32s.as_ptr().add(c0);
        for kk in 0..p.k {
            let mut wv = [_mm512_setzero_ps(); V];
            for (v, slot) in wv.iter_mut().enumerate() {
                *slot = _mm512_loadu_ps(w.add(kk * p.n_pad + 16 * v));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*xs[r].add(kk));
                for (v, s) in row.iter_mut().enumerate() {
                    *s = _mm512_fmadd_ps(a, wv[v], *s);
                }
            }
        }
        finish::<R, V>(acc, p.n, c0, slope, Dst::F32(y));
    }

    #[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
    pub unsafe fn bf16_layer(
        p: &Packed,
        x: &[u16],
        rows: usize,
        init: Init<'_>,
        slope: Option<f32>,
        y: Out<'_>,
    ) {
        let k_pad = pair_row_len(p.k);
        assert!(x.len() >= rows * k_pad);
        let y = Dst::of(y);
        for c0 in (0..p.n_pad).step_by(TILE_COLS) {
            let vecs = ((p.n_pad - c0) / 16).min(4);
            let mut r0 = 0;
            while r0 < rows {
                let r = (rows - r0).min(TILE_ROWS);
                let xs = x.as_ptr().add(r0 * k_pad);
                let ys = y.at_row(r0, p.n, pair_row_len(p.n));
                tiles!(bf16_tile, r, vecs, (p, xs, r0, c0, init, slope, ys));
                r0 += r;
            }
        }
    }

    /// As [`f32_tile`], `k` two at a time: each `vdpbf16ps` adds a pair of products per lane.
    #[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn bf16_tile<const R: usize, const V: usize>(
        p: &Packed,
        x: *const u16,
        r0: usize,
        c0: usize,
        init: Init<'_>,
        slope: Option<f32>,
        y: Dst,
    ) {
        let k_pad = pair_row_len(p.k);
        let mut acc = start::<R, V>(p.n, c0, r0, init);
        let w = p.bf16s.as_ptr().add(c0 * 2);
        for kp in 0..k_pad / 2 {
            let mut wv = [_mm512_setzero_si512(); V];
            for (v, slot) in wv.iter_mut().enumerate() {
                *slot = _mm512_loadu_si512(w.add((kp * p.n_pad + 16 * v) * 2) as *const __m512i);
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let pair = (x.add(r * k_pad + 2 * kp) as *const i32).read_unaligned();
                let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                for (v, s) in row.iter_mut().enumerate() {
                    *s = _mm512_dpbf16_ps(*s, a, std::mem::transmute::<__m512i, __m512bh>(wv[v]));
                }
            }
        }
        finish::<R, V>(acc, p.n, c0, slope, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 1.7)
            .collect()
    }

    /// `act(init + x · Wᵀ)` with the operands as the precision rounds them, summed in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        w: &[f32],
        init: &[f32],
        rows: usize,
        n: usize,
        k: usize,
        p: Precision,
        slope: Option<f32>,
    ) -> Vec<f32> {
        let r = |v: f32| {
            if p == Precision::BFloat16 {
                bf16_round(v)
            } else {
                v
            }
        };
        (0..rows * n)
            .map(|i| {
                let (row, col) = (i / n, i % n);
                init[i] as f64
                    + (0..k)
                        .map(|kk| r(x[row * k + kk]) as f64 * r(w[col * k + kk]) as f64)
                        .sum::<f64>()
            })
            .map(|v| v as f32)
            .map(|v| match slope {
                Some(a) if v < 0.0 => a * v,
                _ => v,
            })
            .collect()
    }

    /// Every kernel this CPU runs: `(precision, native, amx)`.
    fn kernels() -> Vec<(Precision, bool, bool)> {
        let bf16 = native(Precision::BFloat16);
        let mut all = vec![
            (Precision::Float32, native(Precision::Float32), false),
            (Precision::BFloat16, bf16, false),
            (Precision::Float32, false, false),
            (Precision::BFloat16, false, false),
        ];
        if bf16 && amx_available() {
            all.push((Precision::BFloat16, true, true));
        }
        all
    }

    fn packed(w: &[f32], n: usize, k: usize, (p, native, amx): (Precision, bool, bool)) -> Packed {
        let mut packed = Packed::with(w, n, k, p, native);
        packed.amx = amx;
        packed
    }

    #[test]
    fn add_prelu_bf16_rounds_the_activation_and_zeroes_the_padding() {
        let (n, width, rows) = (21, 32, 7);
        let a: Vec<f32> = (0..5 * n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.3)
            .collect();
        let b: Vec<f32> = (0..3 * n)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 3.1)
            .collect();
        let (ia, ib): (Vec<i64>, Vec<i64>) =
            (0..rows as i64).map(|r| ((r * 3) % 5, (r * 2) % 3)).unzip();
        let (ra, rb) = (
            Rows {
                data: &a,
                index: Some(&ia),
            },
            Rows {
                data: &b,
                index: Some(&ib),
            },
        );
        let mut want = vec![0u16; rows * width];
        for r in 0..rows {
            for j in 0..n {
                let s = a[ia[r] as usize * n + j] + b[ib[r] as usize * n + j];
                want[r * width + j] = bf16_bits(if s > 0.0 { s } else { 0.25 * s });
            }
        }
        let mut scalar = vec![7u16; rows * width];
        add_prelu_bf16_scalar(ra, rb, n, 0.25, width, &mut scalar);
        assert_eq!(scalar, want);
        let mut got = vec![7u16; rows * width];
        add_prelu_bf16(ra, rb, n, 0.25, width, &mut got);
        assert_eq!(got, want, "the kernel this CPU runs");
    }

    #[test]
    fn layers_match_the_reference_in_both_precisions() {
        for kernel @ (p, native, amx) in kernels() {
            for &(n, k) in &[
                (128, 24),
                (64, 128),
                (24, 64),
                (1, 24),
                (5, 3),
                (70, 17),
                (33, 100),
            ] {
                for rows in [1, 5, 6, 7, 13, 16, 17, 256] {
                    let (x, w, init) = (values(rows * k, 1), values(n * k, 2), values(rows * n, 3));
                    let packed = packed(&w, n, k, kernel);
                    for slope in [None, Some(0.25)] {
                        let mut y = vec![f32::NAN; rows * n];
                        let init = Init::Rows(Rows::dense(&init));
                        packed.apply(
                            Rows::dense(&x),
                            rows,
                            init,
                            slope,
                            &mut y,
                            &mut Scratch::default(),
                        );
                        let want = reference(&x, &w, &values(rows * n, 3), rows, n, k, p, slope);
                        for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                            assert!(
                                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                "{p:?} (native {native}, amx {amx}) [{n}, {k}] {rows} rows, {slope:?}, {i}: {a} against {b}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gathered_rows_and_a_bias_give_the_gathered_matrix_results() {
        let (n, k, rows, table_rows) = (24, 64, 9, 5);
        let index: Vec<i64> = (0..rows as i64)
            .map(|r| (r * 3) % table_rows as i64)
            .collect();
        let (table, w, bias) = (values(table_rows * k, 4), values(n * k, 5), values(n, 6));
        let gathered: Vec<f32> = index
            .iter()
            .flat_map(|&i| table[i as usize * k..(i as usize + 1) * k].to_vec())
            .collect();
        for kernel in kernels() {
            let packed = packed(&w, n, k, kernel);
            let (mut a, mut b) = (vec![0.0; rows * n], vec![0.0; rows * n]);
            let x = Rows {
                data: &table,
                index: Some(&index),
            };
            packed.apply(
                x,
                rows,
                Init::Bias(&bias),
                Some(0.1),
                &mut a,
                &mut Scratch::default(),
            );
            let init: Vec<f32> = (0..rows).flat_map(|_| bias.clone()).collect();
            packed.apply(
                Rows::dense(&gathered),
                rows,
                Init::Rows(Rows::dense(&init)),
                Some(0.1),
                &mut b,
                &mut Scratch::default(),
            );
            assert_eq!(a, b, "{kernel:?}");
        }
    }

    #[test]
    fn a_row_does_not_depend_on_its_neighbours() {
        for kernel in kernels() {
            let (n, k, rows) = (64, 128, 37);
            let (x, w) = (values(rows * k, 4), values(n * k, 5));
            let bias = values(n, 7);
            let packed = packed(&w, n, k, kernel);
            let mut all = vec![0.0; rows * n];
            packed.apply(
                Rows::dense(&x),
                rows,
                Init::Bias(&bias),
                Some(0.2),
                &mut all,
                &mut Scratch::default(),
            );
            for r in 0..rows {
                let mut one = vec![0.0; n];
                let x1 = Rows::dense(&x[r * k..(r + 1) * k]);
                packed.apply(
                    x1,
                    1,
                    Init::Bias(&bias),
                    Some(0.2),
                    &mut one,
                    &mut Scratch::default(),
                );
                assert_eq!(one[..], all[r * n..(r + 1) * n], "{kernel:?} row {r}");
            }
        }
    }

    #[test]
    fn bfloat16_outputs_are_the_converted_float32_outputs_and_chain() {
        if !native(Precision::BFloat16) {
            return; // only the native kernels give bfloat16 outputs
        }
        let bf16 = kernels()
            .into_iter()
            .filter(|&(p, native, _)| native && p == Precision::BFloat16);
        for kernel in bf16.collect::<Vec<_>>() {
            for &(n, k) in &[(5, 3), (24, 64), (1, 24), (70, 17)] {
                for rows in [1, 7, 13, 40] {
                    let (x, w, bias) = (values(rows * k, 1), values(n * k, 2), values(n, 3));
                    let layer = packed(&w, n, k, kernel);
                    let mut y = vec![0.0; rows * n];
                    let mut y16 = vec![u16::MAX; rows * layer.bf16_row(n)];
                    let mut s = Scratch::default();
                    layer.apply(
                        Rows::dense(&x),
                        rows,
                        Init::Bias(&bias),
                        Some(0.3),
                        &mut y,
                        &mut s,
                    );
                    let y16_out = Out::BF16(&mut y16);
                    layer.apply_to(
                        Rows::dense(&x),
                        rows,
                        Init::Bias(&bias),
                        Some(0.3),
                        y16_out,
                        &mut s,
                    );
                    let want: Vec<u16> = y
                        .chunks_exact(n)
                        .flat_map(|r| {
                            r.iter()
                                .map(|&v| bf16_bits(v))
                                .chain((n..layer.bf16_row(n)).map(|_| 0))
                        })
                        .collect();
                    assert_eq!(y16, want, "[{n}, {k}], {rows} rows");
                    // The next layer reads those bits as apply would read the float32 outputs.
                    let (w2, b2) = (values(4 * n, 5), values(4, 6));
                    let next = packed(&w2, 4, n, kernel);
                    let (mut a, mut b) = (vec![0.0; rows * 4], vec![0.0; rows * 4]);
                    next.apply(Rows::dense(&y), rows, Init::Bias(&b2), None, &mut a, &mut s);
                    next.apply_bf16(&y16, rows, Init::Bias(&b2), None, Out::F32(&mut b));
                    assert_eq!(a, b, "[{n}, {k}], {rows} rows, the next layer");
                }
            }
        }
    }

    #[test]
    fn bfloat16_is_faster_only_where_native_and_always_on_amx() {
        assert!(!bf16_faster() || native(Precision::BFloat16));
        assert!(!amx_available() || bf16_faster());
    }

    #[test]
    fn rounding_to_bfloat16_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        assert_eq!(bf16_round(1.0 + 1.0 / 256.0), 1.0); // a tie: down to even
        assert_eq!(bf16_round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0); // a tie: up to even
        assert_eq!(bf16_round(-2.5), -2.5);
    }
}
