//! bf16 3x3 pad-1 convs of benches/gpu_torch_reference.py's CONV_CASES through kernels/conv.cu's
//! NHWC fast path through backend::cuda::conv (layout conversions + conv2d_fwd_nhwc[_n64] +
//! split-depth finish, all timed)
//! beside torch's F.conv2d (cuDNN, benchmark mode) on the same card.

use crate::common::{values, Limits, Row, TorchRef};
use cudarc::driver::CudaSlice;
use medsyn::backend::cpu::conv::Conv2dGeom;
use medsyn::backend::cuda::conv::{self, NhwcLaunch};
use medsyn::cuda::gpu::Ptr;
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

/// One case's device buffers and launch choices (the launch contract's "Choice").
struct Conv {
    geom: Conv2dGeom,
    launch: NhwcLaunch,
    x: DevBuf,
    w: DevBuf,
    xt: DevBuf,
    wt: DevBuf,
    y: DevBuf,
    ws: Option<CudaSlice<f32>>,
}

impl Conv {
    fn new(
        g: &Gpu,
        seed: u64,
        (n, c, o, hw): (usize, usize, usize, usize),
    ) -> medsyn::Result<Conv> {
        let geom = Conv2dGeom {
            n,
            c,
            h: hw,
            w: hw,
            o,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            padding: (1, 1),
            dilation: (1, 1),
            groups: 1,
            oh: hw,
            ow: hw,
        };
        let launch = NhwcLaunch::for_gpu(g, &geom)?;
        Ok(Conv {
            geom,
            launch,
            x: g.upload_as(&values(seed, n * c * hw * hw), DType::BF16)?,
            w: g.upload_as(&values(seed + 1, o * c * 9), DType::BF16)?,
            xt: g.poisoned_as(n * c * hw * hw, DType::BF16)?,
            wt: g.poisoned_as(o * c * 9, DType::BF16)?,
            y: g.poisoned_as(n * o * hw * hw, DType::BF16)?,
            ws: if launch.splits > 1 {
                Some(g.zeros::<f32>(n * o * hw * hw)?)
            } else {
                None
            },
        })
    }

    /// The whole forward: x -> NHWC, w -> OHWI, (zero ws), conv, (finish), no bias.
    fn run(&mut self, g: &Gpu) -> medsyn::Result<()> {
        let geom = &self.geom;
        conv::conv2d_nchw_to_nhwc(g, geom, self.x.ptr(), self.xt.ptr())?;
        conv::conv2d_weight_to_ohwi(g, geom, self.w.ptr(), self.wt.ptr(), None)?;
        let ws = self
            .ws
            .as_ref()
            .map_or(Ptr::null(DType::F32), |ws| g.ptr_of(ws, DType::F32));
        let none = Ptr::null(DType::BF16);
        let (xt, wt, y) = (self.xt.ptr(), self.wt.ptr(), self.y.ptr());
        conv::conv2d_fwd_nhwc(g, geom, xt, wt, none, y, ws, self.launch)
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
        let case = format!(
            "conv3x3 {name} bf16 n{} s{}",
            conv.launch.tbn, conv.launch.splits
        );
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
