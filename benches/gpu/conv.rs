//! bf16 3x3 pad-1 convs of benches/gpu_torch_reference.py's CONV_CASES through kernels/conv.cu's
//! NHWC fast path (layout conversions + conv2d_fwd_nhwc[_n64] + split-depth finish, all timed)
//! beside torch's F.conv2d (cuDNN, benchmark mode) on the same card.

use crate::common::{Limits, Row, TorchRef};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute_enum};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::tensor::DType;

/// (name, batch, cin, cout, hw): the same list as CONV_CASES in gpu_torch_reference.py.
const CASES: [(&str, usize, usize, usize, usize); 5] = [
    ("unet_c320_64", 2, 320, 320, 64),
    ("unet_c640_32", 2, 640, 640, 32),
    ("unet_c1280_16", 2, 1280, 1280, 16),
    ("resnet_c64_56", 32, 64, 64, 56),
    ("resnet_c256_14", 32, 256, 256, 14),
];

/// Deterministic values in [-1, 1) (xorshift; the values do not matter for timing).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// One case's device buffers and launch choices (the launch contract's "Choice").
struct Conv {
    n: usize,
    c: usize,
    o: usize,
    hw: usize,
    tbn: usize,
    splits: usize,
    x: DevBuf,
    w: DevBuf,
    xt: DevBuf,
    wt: DevBuf,
    y: DevBuf,
    ws: CudaSlice<f32>,
    to_nhwc: CudaFunction,
    to_ohwi: CudaFunction,
    conv: CudaFunction,
    finish: CudaFunction,
}

fn err(e: impl std::fmt::Display) -> medsyn::Error {
    medsyn::Error::msg(e.to_string())
}

impl Conv {
    fn new(
        g: &Gpu,
        seed: u64,
        (n, c, o, hw): (usize, usize, usize, usize),
    ) -> medsyn::Result<Conv> {
        let sms = g
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(err)? as usize;
        let tbn = if o <= 64 { 64 } else { 128 };
        let blocks = (n * hw * hw).div_ceil(128) * o.div_ceil(tbn);
        let kt = (c * 9).div_ceil(32);
        let splits = (2 * sms / blocks).clamp(1, (kt / 4).clamp(1, 8));
        let (name, smem) = if tbn == 128 {
            ("conv2d_fwd_nhwc_bf16", 81920)
        } else {
            ("conv2d_fwd_nhwc_n64_bf16", 61440)
        };
        let conv = g.function("conv", name)?;
        conv.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem,
        )
        .map_err(err)?;
        Ok(Conv {
            n,
            c,
            o,
            hw,
            tbn,
            splits,
            x: g.upload_as(&values(seed, n * c * hw * hw), DType::BF16)?,
            w: g.upload_as(&values(seed + 1, o * c * 9), DType::BF16)?,
            xt: g.poisoned_as(n * c * hw * hw, DType::BF16)?,
            wt: g.poisoned_as(o * c * 9, DType::BF16)?,
            y: g.poisoned_as(n * o * hw * hw, DType::BF16)?,
            ws: g.zeros::<f32>(if splits > 1 { n * o * hw * hw } else { 1 })?,
            to_nhwc: g.function("conv", "conv2d_nchw_to_nhwc_bf16")?,
            to_ohwi: g.function("conv", "conv2d_weight_to_ohwi_bf16")?,
            conv,
            finish: g.function("conv", "conv2d_splitk_finish_bf16")?,
        })
    }

    /// The whole forward: x -> NHWC, w -> OHWI, (zero ws), conv, (finish), no bias.
    fn run(&mut self, g: &Gpu) -> medsyn::Result<()> {
        let (n, c, o, hw) = (self.n, self.c, self.o, self.hw);
        let stream = g.stream();
        let null = 0u64;
        let (ci, hw2) = (c as i32, (hw * hw) as i64);
        let cfg = LaunchConfig {
            grid_dim: (
                (hw * hw).div_ceil(32) as u32,
                c.div_ceil(32) as u32,
                n as u32,
            ),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 33 * 32 * 2,
        };
        unsafe {
            stream
                .launch_builder(&self.to_nhwc)
                .arg(&self.x.bytes)
                .arg(&mut self.xt.bytes)
                .arg(&ci)
                .arg(&hw2)
                .launch(cfg)
        }
        .map_err(err)?;
        let (oi, k9) = (o as i32, 9i32);
        let wblocks = (o * c * 9).div_ceil(256).min(4096) as u32;
        unsafe {
            stream
                .launch_builder(&self.to_ohwi)
                .arg(&self.w.bytes)
                .arg(&mut self.wt.bytes)
                .arg(&oi)
                .arg(&ci)
                .arg(&k9)
                .launch(LaunchConfig {
                    grid_dim: (wblocks, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                })
        }
        .map_err(err)?;
        if self.splits > 1 {
            stream.memset_zeros(&mut self.ws).map_err(err)?;
        }
        let smem = if self.tbn == 128 { 81920 } else { 61440 };
        let cfg = LaunchConfig {
            grid_dim: (
                (n * hw * hw).div_ceil(128) as u32,
                o.div_ceil(self.tbn) as u32,
                self.splits as u32,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: smem,
        };
        let (ni, hwi, k3, one, sp) = (n as i32, hw as i32, 3i32, 1i32, self.splits as i32);
        let mut lb = stream.launch_builder(&self.conv);
        lb.arg(&self.xt.bytes)
            .arg(&self.wt.bytes)
            .arg(&null)
            .arg(&mut self.y.bytes);
        // N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups
        lb.arg(&ni)
            .arg(&ci)
            .arg(&hwi)
            .arg(&hwi)
            .arg(&oi)
            .arg(&k3)
            .arg(&k3)
            .arg(&hwi)
            .arg(&hwi);
        lb.arg(&one)
            .arg(&one)
            .arg(&one)
            .arg(&one)
            .arg(&one)
            .arg(&one)
            .arg(&one);
        if self.splits > 1 {
            lb.arg(&self.ws);
        } else {
            lb.arg(&null);
        }
        lb.arg(&sp);
        unsafe { lb.launch(cfg) }.map_err(err)?;
        if self.splits > 1 {
            let total = n * o * hw * hw;
            let (tot, p) = (total as i64, (hw * hw) as i64);
            unsafe {
                stream
                    .launch_builder(&self.finish)
                    .arg(&self.ws)
                    .arg(&null)
                    .arg(&mut self.y.bytes)
                    .arg(&tot)
                    .arg(&oi)
                    .arg(&p)
                    .launch(LaunchConfig {
                        grid_dim: (total.div_ceil(256).min(8192) as u32, 1, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    })
            }
            .map_err(err)?;
        }
        Ok(())
    }
}

pub fn run(g: &Gpu, torch: &TorchRef, limits: &Limits) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, &(name, n, c, o, hw)) in CASES.iter().enumerate() {
        let mut conv = match Conv::new(g, 10 + 2 * i as u64, (n, c, o, hw)) {
            Ok(conv) => conv,
            Err(e) => {
                eprintln!("conv3x3 {name}: {e}");
                continue;
            }
        };
        let case = format!("conv3x3 {name} bf16 n{} s{}", conv.tbn, conv.splits);
        if let Err(e) = conv.run(g).and_then(|_| g.sync()) {
            eprintln!("{case}: {e}");
            continue;
        }
        let ms = match g.time_ms(3, 20, || conv.run(g)) {
            Ok((ms, _)) => ms,
            Err(e) => {
                eprintln!("{case}: {e}");
                continue;
            }
        };
        let flops = 2.0 * (n * o * hw * hw * c * 9) as f64;
        let rate = |ms: f64| format!("{:.1} TFLOP/s", flops / (ms * 1e-3) / 1e12);
        let torch_ms = torch.get(&format!("conv3x3_ms/{name}"));
        rows.push(Row {
            case,
            medsyn_ms: ms,
            medsyn_rate: rate(ms),
            torch_ms,
            torch_rate: torch_ms.map(rate).unwrap_or_else(|| "-".into()),
            limit_fraction: limits.compute_fraction(flops, ms),
            target: torch_ms.map(|t| (ms <= 1.3 * t, "within 1.3x of cuDNN".to_string())),
        });
    }
    rows
}
