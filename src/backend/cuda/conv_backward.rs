//! Launches of kernels/conv_backward.cu and conv2d's backward on the GPU: im2col / col2im in
//! the [C·KH·KW, N·OH·OW] "col" layout plus cuBLAS GEMMs over groups (CPU twin:
//! backend::cpu::conv::conv2d_backward).

use super::check;
use super::copy::strided_copy;
use super::gemm::{gemm, GemmShape};
use crate::backend::cpu::conv::Conv2dGeom;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::{Error, Result};
use crate::tensor::Layout;
use cudarc::driver::{LaunchConfig, PushKernelArg};

const OP: &str = "conv2d backward";

/// The largest im2col buffer the backward allocates (4 GiB).
pub const MAX_COL_BYTES: usize = 4 << 30;

/// Rows of the col layout: C·KH·KW.
fn col_rows(geom: &Conv2dGeom) -> usize {
    geom.c * geom.kh * geom.kw
}

/// Columns of the col layout: N·OH·OW.
fn col_cols(geom: &Conv2dGeom) -> usize {
    geom.n * geom.p()
}

/// Elements of the col buffer [C·KH·KW, N·OH·OW].
pub fn col_len(geom: &Conv2dGeom) -> usize {
    col_rows(geom) * col_cols(geom)
}

/// The geometry's own consistency (groups divide C and O, kernel/stride/dilation >= 1, OH/OW
/// as PyTorch computes them) and the kernels' 32-bit limits.
fn validate(geom: &Conv2dGeom) -> Result<()> {
    super::conv::validate_geometry(OP, geom)?;
    for (what, v) in [
        ("H*W", geom.h * geom.w),
        ("OH*OW", geom.p()),
        ("C*KH*KW", col_rows(geom)),
        ("H + 2*padding", geom.h + 2 * geom.padding.0),
        ("W + 2*padding", geom.w + 2 * geom.padding.1),
        ("O", geom.o),
        ("N", geom.n),
    ] {
        check::int(OP, what, v)?;
    }
    Ok(())
}

/// The kernels' geometry arguments (N, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW).
fn geom_args(geom: &Conv2dGeom) -> Result<[i32; 14]> {
    let vals = [
        ("N", geom.n),
        ("C", geom.c),
        ("H", geom.h),
        ("W", geom.w),
        ("KH", geom.kh),
        ("KW", geom.kw),
        ("stride h", geom.stride.0),
        ("stride w", geom.stride.1),
        ("padding h", geom.padding.0),
        ("padding w", geom.padding.1),
        ("dilation h", geom.dilation.0),
        ("dilation w", geom.dilation.1),
        ("OH", geom.oh),
        ("OW", geom.ow),
    ];
    let mut out = [0i32; 14];
    for (o, (what, v)) in out.iter_mut().zip(vals) {
        *o = check::int(OP, what, v)?;
    }
    Ok(out)
}

/// One launch of im2col_cn / col2im_cn over `work` elements.
fn launch(g: &Gpu, name: &str, geom: &Conv2dGeom, src: Ptr, dst: Ptr, work: usize) -> Result<()> {
    let kernel = format!("{name}_{}", suffix(dst.dtype)?);
    let ga = geom_args(geom)?;
    let f = g.function("conv_backward", &kernel)?;
    let cfg = LaunchConfig {
        grid_dim: (check::blocks(work, 256, 32 * g.sm_count()?), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = g.stream().launch_builder(&f);
    b.arg(&src.addr).arg(&dst.addr);
    for v in &ga {
        b.arg(v);
    }
    // SAFETY: arguments follow NAME_T(const T*, T*, int x 14); the caller checked both
    // buffers' lengths and dtypes for this geometry.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// col [C·KH·KW, N·OH·OW] = im2col of x [N, C, H, W] (contiguous; f32, bf16 or f16, one dtype):
/// col[c·KH·KW + ki·KW + kj, n·OH·OW + oy·OW + ox] = x[n, c, oy·sh − ph + ki·dh,
/// ox·sw − pw + kj·dw], 0 outside the image. Every element of col is written.
pub fn im2col(g: &Gpu, geom: &Conv2dGeom, x: Ptr, col: Ptr) -> Result<()> {
    validate(geom)?;
    check::dtype(OP, "x", x, col.dtype)?;
    check::need(OP, "x", x, geom.n * geom.c * geom.h * geom.w)?;
    check::need(OP, "col", col, col_len(geom))?;
    suffix(col.dtype)?;
    if col_len(geom) == 0 {
        return Ok(());
    }
    launch(g, "im2col_cn", geom, x, col, col_len(geom))
}

/// dx [N, C, H, W] = col2im of dcol [C·KH·KW, N·OH·OW] (the adjoint of [`im2col`]): each dx
/// element is the f32 sum of the dcol entries its windows read, rounded once to the dtype
/// (f32, bf16 or f16). Every element of dx is written (0 where no window covers it).
pub fn col2im(g: &Gpu, geom: &Conv2dGeom, dcol: Ptr, dx: Ptr) -> Result<()> {
    validate(geom)?;
    let len = geom.n * geom.c * geom.h * geom.w;
    check::dtype(OP, "dcol", dcol, dx.dtype)?;
    check::need(OP, "dcol", dcol, col_len(geom))?;
    check::need(OP, "dx", dx, len)?;
    suffix(dx.dtype)?;
    if len == 0 {
        return Ok(());
    }
    launch(g, "col2im_cn", geom, dcol, dx, len)
}

/// The layouts of the first step: dy [N, O, OH·OW] read as [O, N, OH·OW] (source, over dy's
/// storage) and the contiguous dyP [O, N·OH·OW] written in that order (destination).
pub fn dy_permute_layouts(geom: &Conv2dGeom) -> (Layout, Layout) {
    let (n, o, p) = (geom.n, geom.o, geom.p());
    let src = Layout::new(vec![o, n, p], vec![p, o * p, 1], 0);
    (src, Layout::contiguous(&[o, n, p]))
}

/// The grad-weight GEMM, per group g (batch = groups): dw_g [O/g, Cg·KH·KW] = dyP_g
/// [O/g, N·P] · col_gᵀ, A = dyP (row stride N·P), B = col stored [Cg·KH·KW, N·P] (trans_b),
/// C = dw [O, Cg, KH, KW].
pub fn dw_gemm_shape(geom: &Conv2dGeom) -> GemmShape {
    let (og, kg, np) = (geom.og(), geom.kg(), col_cols(geom));
    GemmShape {
        m: og,
        n: kg,
        k: np,
        trans_a: false,
        trans_b: true,
        lda: np,
        ldb: np,
        ldc: kg,
        batch: geom.groups,
        stride_a: og * np,
        stride_b: kg * np,
        stride_c: og * kg,
        alpha: 1.0,
        beta: 0.0,
    }
}

/// The grad-input GEMM, per group g (batch = groups): dcol_g [Cg·KH·KW, N·P] = W_gᵀ · dyP_g,
/// A = w stored [O/g, Cg·KH·KW] (trans_a), B = dyP_g [O/g, N·P], C = dcol (row stride N·P).
pub fn dx_gemm_shape(geom: &Conv2dGeom) -> GemmShape {
    let (og, kg, np) = (geom.og(), geom.kg(), col_cols(geom));
    GemmShape {
        m: kg,
        n: np,
        k: og,
        trans_a: true,
        trans_b: false,
        lda: kg,
        ldb: np,
        ldc: np,
        batch: geom.groups,
        stride_a: og * kg,
        stride_b: og * np,
        stride_c: kg * np,
        alpha: 1.0,
        beta: 0.0,
    }
}

/// The size limits of the backward's buffers: cuBLAS takes N·OH·OW and C·KH·KW as int32, and
/// the im2col buffer must stay under [`MAX_COL_BYTES`].
fn check_sizes(geom: &Conv2dGeom, elem_bytes: usize) -> Result<()> {
    let bytes = col_len(geom).saturating_mul(elem_bytes);
    if bytes > MAX_COL_BYTES {
        return Err(Error::msg(format!(
            "{OP}: the im2col buffer would need {bytes} bytes; lower the batch size"
        )));
    }
    for (what, v) in [
        ("N*OH*OW (im2col columns)", col_cols(geom)),
        ("C*KH*KW (im2col rows)", col_rows(geom)),
    ] {
        check::int(OP, what, v)?;
    }
    Ok(())
}

/// conv2d's gradients from dy [N, O, OH, OW]: dx [N, C, H, W] when `dx` is not null (needs the
/// weight `w` [O, C/groups, KH, KW]) and dw [O, C/groups, KH, KW] when `dw` is not null (needs
/// the input `x` [N, C, H, W]); pass null for what is not wanted (and for its operand). All
/// contiguous, one dtype (f32, bf16, f16). Plan: dyP [O, N·P] = dy permuted (strided_copy;
/// skipped when N = 1), then dw = one strided-batched GEMM over groups against im2col(x)
/// ([`dw_gemm_shape`], the whole N·P depth in one f32-accumulated GEMM) and dx = col2im of the
/// GEMM [`dx_gemm_shape`]; dyP and the col buffer (shared by both, in stream order) are
/// scratch from `g.allocator()`. Errors when the col buffer exceeds int32 / 4 GiB limits.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    g: &Gpu,
    geom: &Conv2dGeom,
    x: Ptr,
    w: Ptr,
    dy: Ptr,
    dx: Ptr,
    dw: Ptr,
) -> Result<()> {
    validate(geom)?;
    let dtype = dy.dtype;
    suffix(dtype)?;
    let (want_dx, want_dw) = (!dx.is_null(), !dw.is_null());
    let (in_len, out_len) = (
        geom.n * geom.c * geom.h * geom.w,
        geom.n * geom.o * geom.p(),
    );
    check::need(OP, "dy", dy, out_len)?;
    for (what, p) in [("x", x), ("w", w), ("dx", dx), ("dw", dw)] {
        check::dtype(OP, what, p, dtype)?;
    }
    if want_dw {
        check::need(OP, "x", x, in_len)?;
        check::need(OP, "dw", dw, geom.weight_len())?;
    }
    if want_dx {
        check::need(OP, "w", w, geom.weight_len())?;
        check::need(OP, "dx", dx, in_len)?;
    }
    if !want_dx && !want_dw {
        return Ok(());
    }
    check_sizes(geom, dtype.size_in_bytes())?;
    if col_cols(geom) == 0 {
        // No output pixels: dw is a sum over nothing, dx is empty.
        if want_dw && geom.weight_len() > 0 {
            let bytes = geom.weight_len() * dtype.size_in_bytes();
            // A raw driver call: the context must be current on this thread (the backward may
            // run on another thread than the one that opened the device).
            g.context().bind_to_thread().map_err(|e| {
                crate::cuda::modules::driver_error(e, "binding the context to zero conv2d's dw")
            })?;
            // SAFETY: dw holds weight_len elements (checked above); queued on g's stream.
            unsafe {
                cudarc::driver::result::memset_d8_async(dw.addr, 0, bytes, g.stream().cu_stream())
            }
            .map_err(|e| crate::cuda::modules::driver_error(e, "zeroing conv2d's grad weight"))?;
        }
        return Ok(());
    }
    // 1. dyP [O, N·P].
    let dyp_scratch = if geom.n == 1 {
        None
    } else {
        Some(g.scratch(out_len, dtype)?)
    };
    let dyp = match &dyp_scratch {
        None => dy,
        Some((_, p)) => {
            let (src, dst) = dy_permute_layouts(geom);
            strided_copy(g, dy, &src, *p, &dst)?;
            *p
        }
    };
    let (col_block, col) = g.scratch(col_len(geom), dtype)?;
    // 2. dw = dyP · im2col(x)ᵀ per group.
    if want_dw {
        im2col(g, geom, x, col)?;
        gemm(g, dyp, col, dw, &dw_gemm_shape(geom))?;
    }
    // 3. dcol = Wᵀ · dyP per group (overwrites col after the dw GEMM, in stream order), dx.
    if want_dx {
        gemm(g, w, dyp, col, &dx_gemm_shape(geom))?;
        col2im(g, geom, col, dx)?;
    }
    drop(col_block);
    drop(dyp_scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The whole plan simulated on the host in f64 (im2col / col2im as the kernels index, the
    //! GEMMs as GemmShape documents them, with exactly the shapes the launch uses) against the
    //! CPU backend's conv2d_backward.

    use super::*;
    use crate::backend::cpu::conv::conv2d_backward as cpu_backward;

    /// C_i = alpha·op(A_i)·op(B_i) + beta·C_i as gemm.rs documents GemmShape.
    fn sim_gemm(a: &[f64], b: &[f64], c: &mut [f64], s: &GemmShape) {
        for bi in 0..s.batch {
            let (a0, b0, c0) = (bi * s.stride_a, bi * s.stride_b, bi * s.stride_c);
            for i in 0..s.m {
                for j in 0..s.n {
                    let mut acc = 0.0;
                    for l in 0..s.k {
                        let av = if s.trans_a {
                            a[a0 + l * s.lda + i]
                        } else {
                            a[a0 + i * s.lda + l]
                        };
                        let bv = if s.trans_b {
                            b[b0 + j * s.ldb + l]
                        } else {
                            b[b0 + l * s.ldb + j]
                        };
                        acc += av * bv;
                    }
                    let cv = &mut c[c0 + i * s.ldc + j];
                    let old = if s.beta == 0.0 { 0.0 } else { *cv };
                    *cv = s.alpha as f64 * acc + s.beta as f64 * old;
                }
            }
        }
    }

    /// What strided_copy does with the two layouts.
    fn sim_copy(src: &[f64], sl: &Layout, dl: &Layout) -> Vec<f64> {
        let shape = sl.shape();
        let mut out = vec![f64::NAN; dl.storage_extent()];
        let n: usize = shape.iter().product();
        for i in 0..n {
            let (mut rem, mut so, mut doff) = (i, sl.offset(), dl.offset());
            for k in (0..shape.len()).rev() {
                let c = rem % shape[k];
                rem /= shape[k];
                so += c * sl.strides()[k];
                doff += c * dl.strides()[k];
            }
            out[doff] = src[so];
        }
        out
    }

    /// im2col_cn's index math.
    fn sim_im2col(g: &Conv2dGeom, x: &[f64]) -> Vec<f64> {
        let (p, np, khw) = (g.p(), col_cols(g), g.kh * g.kw);
        let mut col = vec![f64::NAN; col_len(g)];
        for (i, v) in col.iter_mut().enumerate() {
            let (r, j) = (i / np, i % np);
            let (img, q) = (j / p, j % p);
            let (oy, ox) = ((q / g.ow) as i64, (q % g.ow) as i64);
            let (ch, k) = (r / khw, r % khw);
            let (ki, kj) = ((k / g.kw) as i64, (k % g.kw) as i64);
            let iy = oy * g.stride.0 as i64 - g.padding.0 as i64 + ki * g.dilation.0 as i64;
            let ix = ox * g.stride.1 as i64 - g.padding.1 as i64 + kj * g.dilation.1 as i64;
            *v = if iy >= 0 && iy < g.h as i64 && ix >= 0 && ix < g.w as i64 {
                x[((img * g.c + ch) * g.h + iy as usize) * g.w + ix as usize]
            } else {
                0.0
            };
        }
        col
    }

    /// col2im_cn's index math.
    fn sim_col2im(g: &Conv2dGeom, dcol: &[f64]) -> Vec<f64> {
        let (p, np) = (g.p(), col_cols(g));
        let (sh, sw) = (g.stride.0 as i64, g.stride.1 as i64);
        let mut dx = vec![f64::NAN; g.n * g.c * g.h * g.w];
        for (i, v) in dx.iter_mut().enumerate() {
            let xx = (i % g.w) as i64;
            let y = ((i / g.w) % g.h) as i64;
            let ch = (i / (g.h * g.w)) % g.c;
            let img = i / (g.h * g.w * g.c);
            let mut s = 0.0;
            for ki in 0..g.kh {
                let ty = y + g.padding.0 as i64 - (ki * g.dilation.0) as i64;
                if ty < 0 || ty % sh != 0 || ty / sh >= g.oh as i64 {
                    continue;
                }
                let oy = (ty / sh) as usize;
                for kj in 0..g.kw {
                    let tx = xx + g.padding.1 as i64 - (kj * g.dilation.1) as i64;
                    if tx < 0 || tx % sw != 0 || tx / sw >= g.ow as i64 {
                        continue;
                    }
                    let ox = (tx / sw) as usize;
                    let r = (ch * g.kh + ki) * g.kw + kj;
                    s += dcol[r * np + img * p + oy * g.ow + ox];
                }
            }
            *v = s;
        }
        dx
    }

    /// The launch plan of [`conv2d_backward`] on host vectors: (dx, dw).
    fn sim_backward(g: &Conv2dGeom, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (sl, dl) = dy_permute_layouts(g);
        let dyp = if g.n == 1 {
            dy.to_vec()
        } else {
            sim_copy(dy, &sl, &dl)
        };
        let col = sim_im2col(g, x);
        let mut dw = vec![f64::NAN; g.weight_len()];
        sim_gemm(&dyp, &col, &mut dw, &dw_gemm_shape(g));
        let mut dcol = vec![f64::NAN; col_len(g)];
        sim_gemm(w, &dyp, &mut dcol, &dx_gemm_shape(g));
        (sim_col2im(g, &dcol), dw)
    }

    #[allow(clippy::too_many_arguments)]
    fn geom(
        n: usize,
        c: usize,
        (h, w): (usize, usize),
        o: usize,
        (kh, kw): (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
    ) -> Conv2dGeom {
        let out = |len: usize, p: usize, d: usize, k: usize, s: usize| {
            (len + 2 * p - d * (k - 1) - 1) / s + 1
        };
        Conv2dGeom {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            padding,
            dilation,
            groups,
            oh: out(h, padding.0, dilation.0, kh, stride.0),
            ow: out(w, padding.1, dilation.1, kw, stride.1),
        }
    }

    fn randv(seed: &mut u64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn conv_backward_plan_matches_the_cpu_twin() {
        let cases = [
            geom(2, 3, (5, 6), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
            geom(3, 4, (7, 5), 6, (3, 2), (2, 2), (1, 0), (1, 1), 2),
            geom(2, 6, (9, 8), 6, (3, 3), (1, 2), (2, 1), (2, 2), 3),
            geom(1, 4, (6, 7), 8, (2, 3), (2, 1), (0, 2), (2, 1), 4),
            geom(2, 5, (4, 4), 3, (1, 1), (1, 1), (0, 0), (1, 1), 1),
            geom(3, 4, (5, 5), 4, (3, 3), (2, 2), (3, 3), (1, 1), 4),
            geom(2, 2, (8, 3), 4, (5, 1), (3, 1), (2, 0), (1, 1), 2),
        ];
        let mut seed = 7u64;
        for g in cases {
            let x = randv(&mut seed, g.n * g.c * g.h * g.w);
            let w = randv(&mut seed, g.weight_len());
            let dy = randv(&mut seed, g.n * g.o * g.p());
            let (dx, dw) = sim_backward(&g, &x, &w, &dy);
            let (want_dx, want_dw) = cpu_backward::<f64>(&g, Some(&x), Some(&w), &dy);
            for (what, got, want) in [("dx", &dx, want_dx.unwrap()), ("dw", &dw, want_dw.unwrap())]
            {
                assert_eq!(got.len(), want.len(), "{what} {g:?}");
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() < 1e-10, "{what}[{i}] {a} vs {b} for {g:?}");
                }
            }
        }
    }

    #[test]
    fn conv_backward_shapes_check_the_limits() {
        let g = geom(1 << 16, 64, (64, 64), 64, (3, 3), (1, 1), (1, 1), (1, 1), 1);
        let err = check_sizes(&g, 2).unwrap_err().to_string();
        assert!(err.contains("lower the batch size"), "{err}");
        let ok = geom(2, 8, (16, 16), 8, (3, 3), (1, 1), (1, 1), (1, 1), 2);
        check_sizes(&ok, 4).unwrap();
        validate(&ok).unwrap();
        let bad = Conv2dGeom { oh: 15, ..ok };
        assert!(validate(&bad).is_err());
        // The GEMM shapes span exactly the buffers the launch allocates.
        let s = dw_gemm_shape(&ok);
        assert_eq!(
            (s.batch - 1) * s.stride_c + (s.m - 1) * s.ldc + s.n,
            ok.weight_len()
        );
        assert_eq!(
            (s.batch - 1) * s.stride_b + (s.n - 1) * s.ldb + s.k,
            col_len(&ok)
        );
        let s = dx_gemm_shape(&ok);
        assert_eq!(
            (s.batch - 1) * s.stride_c + (s.m - 1) * s.ldc + s.n,
            col_len(&ok)
        );
        assert_eq!(
            (s.batch - 1) * s.stride_a + (s.k - 1) * s.lda + s.m,
            ok.weight_len()
        );
    }
}
