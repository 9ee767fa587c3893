//! The tensor runtime on the GPU: `--device` resolution (host side: errors, never panics,
//! without a GPU), tensors moved between devices bit-exactly, the device copies behind
//! contiguous/cat/pad_into, the host fallback (outputs and gradients land on the device), and a
//! whole pipeline (tiny Stable Diffusion generation) on cuda:0 against the CPU.

use crate::support::*;
use medsyn::cli::device::resolve_device;
use medsyn::io::TensorSet;
use medsyn::ops::device::host_fallbacks;
use medsyn::pipelines::generate::{run_generate, GenerateOptions, PromptSource};
use medsyn::schedulers::SchedulerOptions;
use medsyn::tensor::{DType, Device, Philox, Tensor};
use std::path::{Path, PathBuf};

const CUDA0: Device = Device::Cuda(0);

/// Every dtype a tensor can hold, with values exactly representable in each.
const ALL_DTYPES: [DType; 7] = [
    DType::F64,
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::I64,
    DType::I32,
    DType::U8,
];

fn ramp(shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|i| ((i * 37) % 251) as f64).collect();
    Tensor::from_vec(v, shape).unwrap().to_dtype(dtype).unwrap()
}

fn fallback_count(op: &str) -> usize {
    host_fallbacks()
        .iter()
        .filter(|(n, _)| n.contains(op))
        .map(|(_, c)| c)
        .sum()
}

#[test]
fn device_flags_without_a_gpu_are_errors_not_panics() {
    if gpu().is_some() {
        assert_eq!(resolve_device("auto").unwrap(), CUDA0);
        let e = resolve_device("cuda:99").unwrap_err().to_string();
        assert!(e.contains("cuda:99"), "{e}");
        return;
    }
    // No GPU here (CI): auto falls back to the CPU, an explicit GPU is a clear error.
    assert_eq!(resolve_device("auto").unwrap(), Device::Cpu);
    assert_eq!(resolve_device("cpu").unwrap(), Device::Cpu);
    for flag in ["cuda", "cuda:0", "cuda:3"] {
        let e = resolve_device(flag).unwrap_err().to_string();
        assert!(e.contains(&format!("--device {flag}")), "{e}");
        assert!(e.contains("medsyn doctor") || e.contains("driver"), "{e}");
    }
    let e = resolve_device("gpu0").unwrap_err().to_string();
    assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
    let t = Tensor::ones(&[2, 3], DType::F32).unwrap();
    let e = t.to_device(CUDA0).unwrap_err().to_string();
    assert!(e.contains("cuda:0"), "{e}");
    assert!(t.move_to(CUDA0).is_err());
    assert_eq!(
        t.device(),
        Device::Cpu,
        "a failed move leaves the tensor where it was"
    );
}

#[test]
fn to_device_round_trips_every_dtype_bit_exactly() {
    let Some(_g) = gpu() else { return };
    for dt in ALL_DTYPES {
        let x = ramp(&[3, 5, 7], dt);
        // A permuted, narrowed view: to_device gathers it.
        let view = x.permute(&[2, 0, 1]).unwrap().narrow(0, 1, 5).unwrap();
        let d = view.to_device(CUDA0).unwrap();
        assert_eq!(d.device(), CUDA0);
        assert_eq!(d.shape(), view.shape());
        assert_eq!(d.dtype(), dt);
        let back = d.to_cpu().unwrap();
        assert_eq!(back.device(), Device::Cpu);
        assert_eq!(back.to_vec_f64(), view.to_vec_f64(), "{dt:?}");
        // Reading the device tensor directly (host copy) agrees too.
        assert_eq!(d.to_vec_f64(), view.to_vec_f64(), "{dt:?} host read");
        record(&format!("to_device {dt:?}"), true, 0.0);
    }
}

#[test]
fn device_copies_match_the_cpu() {
    let Some(_g) = gpu() else { return };
    let before = fallback_count("ContiguousBack") + fallback_count("CatBack");
    for dt in ALL_DTYPES {
        let a = ramp(&[4, 6, 5], dt);
        let b = mirrored(ramp(&[4, 3, 5], dt));
        let (da, db) = (a.to_device(CUDA0).unwrap(), b.to_device(CUDA0).unwrap());
        // contiguous of a permuted view
        let want = a.permute(&[2, 0, 1]).unwrap().contiguous().unwrap();
        let got = da.permute(&[2, 0, 1]).unwrap().contiguous().unwrap();
        assert_eq!(got.device(), CUDA0);
        assert_eq!(got.to_vec_f64(), want.to_vec_f64(), "contiguous {dt:?}");
        // cat along the middle dim, one operand a view, one still on the host
        let want = Tensor::cat(&[&a, &b, &a.narrow(1, 2, 3).unwrap()], 1).unwrap();
        let got = Tensor::cat(&[&da, &b, &da.narrow(1, 2, 3).unwrap()], 1).unwrap();
        assert_eq!(got.device(), CUDA0);
        assert_eq!(got.to_vec_f64(), want.to_vec_f64(), "cat {dt:?}");
        // pad_into (narrow's adjoint)
        let want = b.pad_into(&[4, 9, 5], 1, 4).unwrap();
        let got = db.pad_into(&[4, 9, 5], 1, 4).unwrap();
        assert_eq!(got.device(), CUDA0);
        assert_eq!(got.to_vec_f64(), want.to_vec_f64(), "pad_into {dt:?}");
        record(&format!("device copies {dt:?}"), true, 0.0);
    }
    let after = fallback_count("ContiguousBack") + fallback_count("CatBack");
    assert_eq!(before, after, "contiguous/cat took the host fallback");
}

/// A distinct second operand: 250 - x (exact in every dtype; integers stay integers).
fn mirrored(t: Tensor) -> Tensor {
    let dt = t.dtype();
    let v: Vec<f64> = t.to_vec_f64().iter().map(|x| 250.0 - x).collect();
    Tensor::from_vec(v, t.shape())
        .unwrap()
        .to_dtype(dt)
        .unwrap()
}

#[test]
fn host_fallback_outputs_and_gradients_live_on_the_device() {
    let Some(_g) = gpu() else { return };
    // f64 has no CUDA kernels: every op below runs through the host fallback.
    let mut rng = Philox::new(5);
    let x = Tensor::randn(&mut rng, &[7, 3], DType::F64).unwrap();
    let xd = x.to_device(CUDA0).unwrap().into_param().unwrap();
    let y = xd.mul(&xd).unwrap().tanh().unwrap();
    assert_eq!(y.device(), CUDA0);
    y.sum_all().unwrap().backward().unwrap();
    let grad = xd.grad().expect("a gradient for the device leaf");
    assert_eq!(grad.device(), CUDA0, "gradients live where their leaf does");
    let xs = x.to_vec_f64();
    let want: Vec<f64> = xs
        .iter()
        .map(|v| {
            let t = (v * v).tanh();
            2.0 * v * (1.0 - t * t)
        })
        .collect();
    for (g, w) in grad.to_vec_f64().iter().zip(&want) {
        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{g} vs {w}");
    }
    // A CPU leaf moved to the device gets its gradient back on the CPU.
    let c = Tensor::ones(&[4], DType::F32)
        .unwrap()
        .into_param()
        .unwrap();
    let out = c
        .to_device(CUDA0)
        .unwrap()
        .scale(3.0)
        .unwrap()
        .sum_all()
        .unwrap();
    out.backward().unwrap();
    let g = c.grad().unwrap();
    assert_eq!(g.device(), Device::Cpu);
    assert_eq!(g.to_vec_f64(), vec![3.0; 4]);
    record("host fallback + to_device backward", true, 0.0);
}

#[test]
fn move_to_moves_parameters_and_their_views() {
    let Some(_g) = gpu() else { return };
    let w = ramp(&[6, 4], DType::F32).into_param().unwrap();
    let view = w.t().unwrap();
    w.move_to(CUDA0).unwrap();
    assert_eq!(w.device(), CUDA0);
    assert_eq!(view.device(), CUDA0, "views share the moved storage");
    assert_eq!(
        view.to_vec_f64(),
        ramp(&[6, 4], DType::F32).t().unwrap().to_vec_f64()
    );
    assert!(w.requires_grad());
    w.move_to(Device::Cpu).unwrap();
    assert_eq!(w.device(), Device::Cpu);
    assert!(
        view.narrow(0, 1, 2).unwrap().move_to(CUDA0).is_err(),
        "a view cannot move alone"
    );
}

/// The tiny diffusers folder: in the source tree, or (carried binaries on a GPU machine) under
/// the working directory, which scripts/gpu-check.sh sets to the repository root.
fn sd_folder() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_tiny_v1");
    if built.is_dir() {
        built
    } else {
        PathBuf::from("tests/fixtures/sd_tiny_v1")
    }
}

fn generate_on(device: Device, dir: &Path) -> (Tensor, Tensor) {
    let path = dir.join(format!("{device}.safetensors").replace(':', "_"));
    let opts = GenerateOptions {
        model: sd_folder(),
        prompts: PromptSource::List(vec![
            "a small left pleural effusion".into(),
            "normal".into(),
        ]),
        negatives: vec![],
        steps: 4,
        guidance: 7.5,
        scheduler: Some("euler".into()),
        scheduler_options: SchedulerOptions::default(),
        seed: 9,
        height: None,
        width: None,
        batch_size: 2,
        images_per_prompt: 1,
        latents: None,
        save_tensors: Some(path.clone()),
        out: None,
        shard: medsyn::pipelines::work::Shard::all(),
        dtype: DType::F32,
        device,
        quiet: true,
    };
    run_generate(&opts).unwrap();
    let set = TensorSet::open(&path).unwrap();
    (set.load("latents").unwrap(), set.load("images").unwrap())
}

#[test]
fn generation_on_the_gpu_matches_the_cpu() {
    let Some(_g) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("medsyn-gpu-generate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (lat_cpu, img_cpu) = generate_on(Device::Cpu, &dir);
    let (lat_gpu, img_gpu) = generate_on(CUDA0, &dir);
    // f32 end to end; cuBLAS and the fused kernels sum in other orders than the CPU.
    check(
        "pipeline generate latents",
        DType::F32,
        &lat_gpu.to_vec_f32(),
        &lat_cpu.to_vec_f32(),
        1e-3,
        1e-3,
    );
    check(
        "pipeline generate images",
        DType::F32,
        &img_gpu.to_vec_f32(),
        &img_cpu.to_vec_f32(),
        1e-3,
        1e-3,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn device_ops_run_from_a_fresh_thread() {
    let Some(_g) = gpu() else { return };
    // An odd size (f64: 14880 bytes) that other tests are unlikely to take from the cache.
    let b = ramp(&[4, 3, 5], DType::F64);
    let db = b.to_device(CUDA0).unwrap();
    let want = b.pad_into(&[4, 93, 5], 1, 4).unwrap().to_vec_f64();
    // Once here, so that the allocator caches a block of this size: on the new thread the
    // zero-fill then is the first driver call (it needs the thread's current context).
    drop(db.pad_into(&[4, 93, 5], 1, 4).unwrap());
    let got = std::thread::spawn(move || {
        let out = db.pad_into(&[4, 93, 5], 1, 4).unwrap();
        assert_eq!(out.device(), CUDA0);
        out.to_vec_f64()
    })
    .join()
    .expect("device work on a thread that never touched the GPU before");
    assert_eq!(got, want);
    record("device ops from a fresh thread", true, 0.0);
}

/// Records the device of the gradient its backward receives.
struct SeenGrad(std::sync::Arc<std::sync::Mutex<Option<Device>>>);

impl medsyn::autograd::Backward for SeenGrad {
    fn name(&self) -> &'static str {
        "seen_grad"
    }
    fn backward(
        &self,
        g: &Tensor,
        _: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> medsyn::Result<Vec<Option<Tensor>>> {
        *self.0.lock().unwrap() = Some(g.device());
        Ok(vec![Some(g.clone())])
    }
}

#[test]
fn backward_seeds_a_device_loss_on_its_device() {
    let Some(_g) = gpu() else { return };
    let x = Tensor::ones(&[], DType::F32)
        .unwrap()
        .to_device(CUDA0)
        .unwrap()
        .into_param()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let s = seen.clone();
    let host = medsyn::tensor::Storage::Cpu(medsyn::tensor::CpuStorage::F32(vec![1.0]));
    let storage = medsyn::ops::device::place(host, CUDA0).unwrap();
    let loss = medsyn::autograd::op_output(storage, &[], &[&x], move || SeenGrad(s)).unwrap();
    assert_eq!(loss.device(), CUDA0);
    loss.backward().unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        Some(CUDA0),
        "the seed of a device loss lives on its device"
    );
    assert_eq!(x.grad().unwrap().device(), CUDA0);
}
