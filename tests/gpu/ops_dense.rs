//! Op-level CUDA paths of the dense family (matmul / linear, LayerNorm, GroupNorm (+SiLU),
//! BatchNorm, attention, embedding): each op on random inputs on the CPU and on cuda:0,
//! forward values and gradients compared, frozen inputs left without a gradient, the output
//! on cuda:0 and the op not on the host fallback.

use crate::op_harness::{self, In, DEV};
use crate::support::{check, finish, gpu, soft, uniform, DTYPES};
use medsyn::ops::attention::AttentionMask;
use medsyn::ops::device::host_fallbacks;
use medsyn::tensor::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use medsyn::Result;

/// An input with values in [-1, 1) (`.range` for others), trainable unless `.frozen()`.
fn arg(shape: &[usize]) -> In {
    op_harness::arg(shape, -1.0, 1.0)
}

/// Tolerance relative to a tensor's scale (max |want|), also the rtol: bf16 / f16 outputs and
/// the tensor-core roundings of half attention; f32 differs in summation order only.
fn tol(dt: DType) -> f64 {
    match dt {
        DType::BF16 => 3e-2,
        DType::F16 => 5e-3,
        _ => 1e-4,
    }
}

fn compare(name: &str, dt: DType, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3) as f64;
    check(name, dt, got, want, tol(dt) * scale, tol(dt));
}

/// The op's outputs and the inputs' gradients (None for frozen ones) on `dev`.
struct Run {
    out: Vec<f32>,
    device: Device,
    grads: Vec<Option<Vec<f32>>>,
}

/// The inputs as leaves in `dt` (of the harness's `In`, shape, range and `grad` only).
fn leaves(inputs: &[In], dt: DType, dev: Device) -> Result<Vec<Tensor>> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let n = x.shape.iter().product();
            let vals = uniform(1000 + i as u64, n, x.lo, x.hi);
            let t = Tensor::from_values(vals, &x.shape, dt)?.to_device(dev)?;
            if x.grad {
                t.into_param()
            } else {
                Ok(t)
            }
        })
        .collect()
}

fn run(
    inputs: &[In],
    dt: DType,
    dev: Device,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<Run> {
    let xs = leaves(inputs, dt, dev)?;
    let out = f(&xs)?;
    if inputs.iter().any(|x| x.grad) {
        let w = uniform(7, out.numel(), -1.0, 1.0);
        let w = Tensor::from_values(w, out.shape(), out.dtype())?.to_device(dev)?;
        out.mul(&w)?.sum_all()?.backward()?;
    }
    Ok(Run {
        out: out.to_vec_f32(),
        device: out.device(),
        grads: xs
            .iter()
            .map(|x| x.grad().map(|g| g.to_vec_f32()))
            .collect(),
    })
}

/// Runs `f` on both devices in every dtype and compares; `back` is the op's Backward type
/// (its path, e.g. "ops::matmul::MatmulBack"), which must not show in the host fallbacks.
fn case(
    fails: &mut Vec<String>,
    name: &str,
    back: &str,
    inputs: &[In],
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) {
    for dt in DTYPES {
        soft(fails, format!("{name} {dt:?}"), || {
            let want = run(inputs, dt, Device::Cpu, f).unwrap();
            let got = run(inputs, dt, DEV, f).unwrap();
            assert_eq!(got.device, DEV, "{name}: output not on cuda:0");
            compare(&format!("{name} fwd"), dt, &got.out, &want.out);
            for (i, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
                match (g, w) {
                    (Some(g), Some(w)) => compare(&format!("{name} grad{i}"), dt, g, w),
                    (None, None) => {}
                    _ => panic!("{name}: input {i} gradient presence differs between devices"),
                }
                assert_eq!(
                    g.is_some(),
                    inputs[i].grad,
                    "{name}: input {i} gradient presence"
                );
            }
            let fb = host_fallbacks();
            assert!(
                !fb.iter().any(|(n, _)| n.contains(back)),
                "{name}: {back} took the host fallback ({fb:?})"
            );
        });
    }
}

#[test]
fn ops_dense_matmul() {
    let Some(_g) = gpu() else { return };
    let back = "ops::matmul::MatmulBack";
    let mut fails = Vec::new();
    let mm = |x: &[Tensor]| x[0].matmul(&x[1]);
    case(
        &mut fails,
        "matmul 2d",
        back,
        &[arg(&[3, 5]), arg(&[5, 7])],
        &mm,
    );
    case(
        &mut fails,
        "matmul broadcast batch",
        back,
        &[arg(&[2, 1, 4, 6]), arg(&[3, 6, 5])],
        &mm,
    );
    case(
        &mut fails,
        "matmul mixed broadcast",
        back,
        &[arg(&[2, 1, 3, 4]), arg(&[1, 3, 4, 5])],
        &mm,
    );
    case(
        &mut fails,
        "matmul transposed views",
        back,
        &[arg(&[2, 6, 4]), arg(&[5, 6])],
        &|x| x[0].transpose(-1, -2)?.matmul(&x[1].t()?),
    );
    case(
        &mut fails,
        "matmul batched transposed",
        back,
        &[arg(&[2, 3, 9, 33]), arg(&[2, 3, 17, 33])],
        &|x| x[0].matmul(&x[1].transpose(-1, -2)?),
    );
    case(
        &mut fails,
        "matmul rank3 @ rank2",
        back,
        &[arg(&[2, 5, 8]), arg(&[8, 3])],
        &mm,
    );
    case(
        &mut fails,
        "matmul frozen weight",
        back,
        &[arg(&[4, 7]), arg(&[7, 3]).frozen()],
        &mm,
    );
    case(
        &mut fails,
        "matmul broadcast rows",
        back,
        &[arg(&[1, 6]), arg(&[6, 5])],
        &|x| x[0].broadcast_as(&[4, 6])?.matmul(&x[1]),
    );
    case(
        &mut fails,
        "matmul narrowed views (offsets, row strides)",
        back,
        &[arg(&[4, 9]), arg(&[8, 6])],
        &|x| {
            x[0].narrow(-1, 2, 5)?
                .matmul(&x[1].narrow(0, 3, 5)?.narrow(1, 1, 4)?)
        },
    );
    case(
        &mut fails,
        "matmul batched narrowed views",
        back,
        &[arg(&[2, 3, 10]), arg(&[2, 9, 4])],
        &|x| x[0].narrow(-1, 1, 7)?.matmul(&x[1].narrow(1, 2, 7)?),
    );
    case(
        &mut fails,
        "linear",
        back,
        &[arg(&[2, 3, 10]), arg(&[7, 10]), arg(&[7])],
        &|x| x[0].linear(&x[1], Some(&x[2])),
    );
    case(
        &mut fails,
        "linear frozen",
        back,
        &[arg(&[5, 10]), arg(&[7, 10]).frozen(), arg(&[7]).frozen()],
        &|x| x[0].linear(&x[1], Some(&x[2])),
    );
    // k = 0: zeros.
    soft(&mut fails, "matmul k=0".into(), || {
        let a = Tensor::zeros(&[3, 0], DType::F32)
            .unwrap()
            .to_device(DEV)
            .unwrap();
        let b = Tensor::zeros(&[0, 4], DType::F32)
            .unwrap()
            .to_device(DEV)
            .unwrap();
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.shape(), [3, 4]);
        assert_eq!(c.to_vec_f32(), vec![0.0; 12]);
    });
    finish(fails);
}

#[test]
fn ops_dense_norms() {
    let Some(_g) = gpu() else { return };
    let back = "ops::norm::NormBack";
    let mut fails = Vec::new();
    case(
        &mut fails,
        "layer_norm affine",
        back,
        &[arg(&[3, 5, 37]), arg(&[37]), arg(&[37])],
        &|x| x[0].layer_norm(1, Some(&x[1]), Some(&x[2]), 1e-5),
    );
    case(
        &mut fails,
        "layer_norm 2 dims weight only",
        back,
        &[arg(&[2, 3, 4, 5]), arg(&[4, 5])],
        &|x| x[0].layer_norm(2, Some(&x[1]), None, 1e-5),
    );
    case(
        &mut fails,
        "layer_norm wide frozen params",
        back,
        &[arg(&[3, 1500]), arg(&[1500]).frozen(), arg(&[1500])],
        &|x| x[0].layer_norm(1, Some(&x[1]), Some(&x[2]), 1e-6),
    );
    case(
        &mut fails,
        "layer_norm plain",
        back,
        &[arg(&[4, 9]).range(2.0, 3.0)],
        &|x| x[0].layer_norm(1, None, None, 1e-5),
    );
    case(
        &mut fails,
        "layer_norm transposed input",
        back,
        &[arg(&[3, 37, 5]), arg(&[37]), arg(&[37])],
        &|x| {
            x[0].transpose(-1, -2)?
                .layer_norm(1, Some(&x[1]), Some(&x[2]), 1e-5)
        },
    );
    for silu in [false, true] {
        let gn = move |x: &[Tensor]| {
            if silu {
                x[0].group_norm_silu(3, Some(&x[1]), Some(&x[2]), 1e-5)
            } else {
                x[0].group_norm(3, Some(&x[1]), Some(&x[2]), 1e-5)
            }
        };
        case(
            &mut fails,
            &format!("group_norm silu={silu}"),
            back,
            &[arg(&[2, 6, 5, 3]), arg(&[6]), arg(&[6])],
            &gn,
        );
        case(
            &mut fails,
            &format!("group_norm silu={silu} large spatial"),
            back,
            &[arg(&[1, 4, 40, 41]), arg(&[4]), arg(&[4])],
            &move |x: &[Tensor]| {
                if silu {
                    x[0].group_norm_silu(2, Some(&x[1]), Some(&x[2]), 1e-5)
                } else {
                    x[0].group_norm(2, Some(&x[1]), Some(&x[2]), 1e-5)
                }
            },
        );
    }
    case(
        &mut fails,
        "group_norm plain",
        back,
        &[arg(&[1, 4, 7])],
        &|x| x[0].group_norm(2, None, None, 1e-5),
    );
    case(
        &mut fails,
        "group_norm frozen x",
        back,
        &[arg(&[2, 4, 7]).frozen(), arg(&[4]), arg(&[4])],
        &|x| x[0].group_norm_silu(4, Some(&x[1]), Some(&x[2]), 1e-5),
    );
    finish(fails);
}

/// f32 running statistics [c] on `dev`.
fn stats(c: usize, dev: Device) -> (Tensor, Tensor) {
    let m = Tensor::from_values(uniform(5, c, -0.5, 0.5), &[c], DType::F32).unwrap();
    let v = Tensor::from_values(uniform(6, c, 0.5, 1.5), &[c], DType::F32).unwrap();
    (m.to_device(dev).unwrap(), v.to_device(dev).unwrap())
}

#[test]
fn ops_dense_batch_norm() {
    let Some(_g) = gpu() else { return };
    let back = "ops::norm::NormBack";
    let mut fails = Vec::new();
    case(
        &mut fails,
        "batch_norm train no running",
        back,
        &[arg(&[3, 5, 4, 3]), arg(&[5]), arg(&[5])],
        &|x| x[0].batch_norm(None, None, Some(&x[1]), Some(&x[2]), true, 0.1, 1e-5),
    );
    // Eval with device stats, also on an empty batch.
    for (name, n) in [("batch_norm eval", 2), ("batch_norm eval empty batch", 0)] {
        case(
            &mut fails,
            name,
            back,
            &[arg(&[n, 5, 6]), arg(&[5]), arg(&[5])],
            &|x| {
                let (m, v) = stats(5, x[0].device());
                x[0].batch_norm(
                    Some(&m),
                    Some(&v),
                    Some(&x[1]),
                    Some(&x[2]),
                    false,
                    0.1,
                    1e-5,
                )
            },
        );
    }
    case(
        &mut fails,
        "batch_norm eval host stats",
        back,
        &[arg(&[2, 5, 6]), arg(&[5]).frozen()],
        &|x| {
            let (m, v) = stats(5, Device::Cpu);
            x[0].batch_norm(Some(&m), Some(&v), Some(&x[1]), None, false, 0.1, 1e-5)
        },
    );
    // Training with running statistics on the device: they are updated there.
    for dt in DTYPES {
        soft(
            &mut fails,
            format!("batch_norm running update {dt:?}"),
            || {
                let mut got = Vec::new();
                for dev in [Device::Cpu, DEV] {
                    let x = Tensor::from_values(uniform(9, 2 * 3 * 10, -1.0, 2.0), &[2, 3, 10], dt)
                        .unwrap()
                        .to_device(dev)
                        .unwrap();
                    let (m, v) = stats(3, dev);
                    let y = x
                        .batch_norm(Some(&m), Some(&v), None, None, true, 0.3, 1e-5)
                        .unwrap();
                    assert_eq!(y.device(), dev);
                    assert_eq!(m.device(), dev);
                    got.push((y.to_vec_f32(), m.to_vec_f32(), v.to_vec_f32()));
                }
                let (cpu, gpu_) = (&got[0], &got[1]);
                compare("batch_norm train y", dt, &gpu_.0, &cpu.0);
                check("batch_norm running_mean", dt, &gpu_.1, &cpu.1, 1e-5, 1e-5);
                check("batch_norm running_var", dt, &gpu_.2, &cpu.2, 1e-5, 1e-5);
                let fb = host_fallbacks();
                assert!(!fb.iter().any(|(n, _)| n.contains(back)), "{fb:?}");
            },
        );
    }
    finish(fails);
}

/// [B, L, H, D] storage seen as [B, H, L, D] (a permuted view, read in place).
fn bhld(t: &Tensor) -> Result<Tensor> {
    t.permute(&[0, 2, 1, 3])
}

#[test]
fn ops_dense_attention() {
    let Some(_g) = gpu() else { return };
    let cpu_back = "ops::attention::AttnBack";
    let mut fails = Vec::new();
    let plain = |x: &[Tensor]| x[0].attention(&x[1], &x[2], AttentionMask::none(), None);
    case(
        &mut fails,
        "attention d64",
        cpu_back,
        &[
            arg(&[2, 3, 17, 64]),
            arg(&[2, 3, 17, 64]),
            arg(&[2, 3, 17, 64]),
        ],
        &plain,
    );
    case(
        &mut fails,
        "attention d40 causal Lq!=Lk",
        cpu_back,
        &[
            arg(&[1, 2, 5, 40]),
            arg(&[1, 2, 70, 40]),
            arg(&[1, 2, 70, 40]),
        ],
        &|x| x[0].attention(&x[1], &x[2], AttentionMask::causal(), Some(0.3)),
    );
    case(
        &mut fails,
        "attention permuted views d80",
        cpu_back,
        &[
            arg(&[2, 9, 2, 80]),
            arg(&[2, 33, 2, 80]),
            arg(&[2, 33, 2, 80]),
        ],
        &|x| bhld(&x[0])?.attention(&bhld(&x[1])?, &bhld(&x[2])?, AttentionMask::none(), None),
    );
    case(
        &mut fails,
        "attention fused qkv narrowed views d64",
        cpu_back,
        &[arg(&[2, 7, 6, 64])],
        &|x| {
            // [B, L, 3·H, D] storage: q, k, v are narrowed (offset) permuted views of it.
            let part = |i: usize| -> Result<Tensor> { bhld(&x[0].narrow(2, 2 * i, 2)?) };
            part(0)?.attention(&part(1)?, &part(2)?, AttentionMask::causal(), None)
        },
    );
    case(
        &mut fails,
        "attention key padding d128",
        cpu_back,
        &[
            arg(&[2, 1, 6, 128]),
            arg(&[2, 1, 11, 128]),
            arg(&[2, 1, 11, 128]).frozen(),
        ],
        &|x| {
            let keep: Vec<i64> = (0..22)
                .map(|i| i64::from(i % 11 < 4 + 5 * (i / 11)))
                .collect();
            let keep = Tensor::from_i64(keep, &[2, 11])?;
            x[0].attention(&x[1], &x[2], AttentionMask::key_padding(&keep), None)
        },
    );
    case(
        &mut fails,
        "attention u8 device mask d160 fully masked row",
        cpu_back,
        &[
            arg(&[2, 2, 4, 160]),
            arg(&[2, 2, 5, 160]),
            arg(&[2, 2, 5, 160]),
        ],
        &|x| {
            let bytes: Vec<u8> = vec![1, 0, 1, 1, 0, 0, 0, 0, 0, 0];
            let keep = Tensor::from_storage(
                Storage::Cpu(CpuStorage::U8(bytes)),
                Layout::contiguous(&[2, 5]),
            )?
            .to_device(x[0].device())?;
            x[0].attention(
                &x[1],
                &x[2],
                AttentionMask::key_padding(&keep).with_causal(),
                None,
            )
        },
    );
    // Lq = 0 with Lk > 0: dk, dv are zeros.
    soft(&mut fails, "attention Lq=0".into(), || {
        let mk = |shape: &[usize]| {
            let n = shape.iter().product();
            Tensor::from_values(uniform(3, n, -1.0, 1.0), shape, DType::F32)
                .unwrap()
                .to_device(DEV)
                .unwrap()
                .into_param()
                .unwrap()
        };
        let (q, k, v) = (mk(&[1, 2, 0, 64]), mk(&[1, 2, 7, 64]), mk(&[1, 2, 7, 64]));
        let o = q.attention(&k, &v, AttentionMask::none(), None).unwrap();
        assert_eq!(o.shape(), [1, 2, 0, 64]);
        assert_eq!(o.device(), DEV);
        o.sum_all().unwrap().backward().unwrap();
        for t in [&k, &v] {
            let g = t.grad().expect("a gradient");
            assert!(g.to_vec_f32().iter().all(|&x| x == 0.0));
        }
    });
    finish(fails);
}

#[test]
fn ops_dense_embedding() {
    let Some(_g) = gpu() else { return };
    let back = "ops::embedding::EmbeddingBack";
    let mut fails = Vec::new();
    let ids: Vec<i64> = vec![3, 0, 10, 3, 7, 3, 1, 10, 2, 5];
    for (name, dtype, on_dev) in [
        ("host i64 ids", DType::I64, false),
        ("device i64 ids", DType::I64, true),
        ("host i32 ids", DType::I32, false),
    ] {
        let ids = ids.clone();
        case(
            &mut fails,
            &format!("embedding {name}"),
            back,
            &[arg(&[11, 24])],
            &move |x: &[Tensor]| {
                let mut t = Tensor::from_i64(ids.clone(), &[2, 5])?.to_dtype(dtype)?;
                if on_dev {
                    t = t.to_device(x[0].device())?;
                }
                Tensor::embedding(&t, &x[0])
            },
        );
    }
    case(
        &mut fails,
        "embedding odd width, transposed table",
        back,
        &[arg(&[5, 7])],
        &|x| {
            let t = Tensor::from_i64(vec![4, 1, 1, 0], &[4])?;
            Tensor::embedding(&t, &x[0].t()?.contiguous()?.t()?)
        },
    );
    for (start, width) in [(8, 24), (3, 21)] {
        case(
            &mut fails,
            &format!("embedding narrowed table [:, {start}..+{width}] (row stride, offset)"),
            back,
            &[arg(&[11, 40])],
            &move |x: &[Tensor]| {
                let t = Tensor::from_i64(vec![10, 0, 3, 3, 7], &[5])?;
                Tensor::embedding(&t, &x[0].narrow(1, start, width)?)
            },
        );
    }
    soft(&mut fails, "embedding host id out of range".into(), || {
        let w = Tensor::zeros(&[4, 8], DType::F32)
            .unwrap()
            .to_device(DEV)
            .unwrap();
        let t = Tensor::from_i64(vec![1, 4], &[2]).unwrap();
        let e = Tensor::embedding(&t, &w).unwrap_err().to_string();
        assert!(e.contains("id 4 is out of range"), "{e}");
    });
    finish(fails);
}
