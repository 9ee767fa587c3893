//! The op-test harness of tests/gpu/ops_*.rs: an op on random inputs on the CPU and on cuda:0,
//! outputs and gradients compared, the gradients handed on by the backward probed for their device.

use crate::support::{check, rtol, uniform};
use medsyn::autograd::{op_output, Backward};
use medsyn::ops::cuda::OnCuda;
use medsyn::ops::device::host_fallbacks;
use medsyn::tensor::{DType, Device, Tensor};
use medsyn::Result;
use std::sync::{Arc, Mutex};

pub const DEV: Device = Device::Cuda(0);

/// One input of an op under test: shape, value range, dtype (None: the case's), trainable,
/// given as a view with its last two dims transposed.
#[derive(Clone)]
pub struct In {
    pub shape: Vec<usize>,
    pub lo: f32,
    pub hi: f32,
    pub dtype: Option<DType>,
    pub grad: bool,
    pub transposed: bool,
}

pub fn arg(shape: &[usize], lo: f32, hi: f32) -> In {
    In {
        shape: shape.to_vec(),
        lo,
        hi,
        dtype: None,
        grad: true,
        transposed: false,
    }
}

impl In {
    /// Of this dtype instead of the case's.
    pub fn of(mut self, dtype: DType) -> In {
        self.dtype = Some(dtype);
        self
    }
    /// Not trainable (its gradient must stay None).
    pub fn frozen(mut self) -> In {
        self.grad = false;
        self
    }
    /// Given to the op as a transposed view (last two dims) of a contiguous leaf.
    pub fn transposed(mut self) -> In {
        self.transposed = true;
        self
    }
    /// Values drawn from [lo, hi).
    pub fn range(mut self, lo: f32, hi: f32) -> In {
        (self.lo, self.hi) = (lo, hi);
        self
    }
}

/// How `run` compares. Default: the tolerance of the result's dtype relative to want's scale.
/// Always: every gradient a backward rule hands on must be a device tensor.
#[derive(Clone, Copy)]
pub struct Check {
    /// Factor on the absolute bound (tolerance × scale).
    pub slack: f64,
    /// The tolerance is also at least that of the inputs' dtype (both sides compute from the
    /// same rounded inputs), and 10× looser for a single value.
    pub input_tol: bool,
}

impl Default for Check {
    fn default() -> Check {
        Check {
            slack: 1.0,
            input_tol: false,
        }
    }
}

impl Check {
    /// At the inputs' dtype's tolerance, times `slack`.
    pub fn inputs(slack: f64) -> Check {
        Check {
            slack,
            input_tol: true,
        }
    }
}

/// Identity whose backward records the device of the gradient the op under test hands on.
struct Probe(Arc<Mutex<Vec<Device>>>);

impl Backward for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn backward(
        &self,
        g: &Tensor,
        _: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        self.0.lock().unwrap().push(g.device());
        Ok(vec![Some(g.clone())])
    }
}

fn probe(t: &Tensor, seen: &Arc<Mutex<Vec<Device>>>) -> Result<Tensor> {
    let cx = OnCuda::of(&[t])?.expect("a device tensor");
    let copy = medsyn::ops::cuda::unary::affine(&cx, t, 1.0, 0.0)?;
    op_output(copy, t.shape(), &[t], || Probe(seen.clone()))
}

/// got vs want (same shape and dtype) with the tolerance `how` says relative to want's scale;
/// `tol_dtype` is the inputs' dtype.
fn compare(name: &str, got: &Tensor, want: &Tensor, tol_dtype: DType, how: Check) {
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{name}: dtype");
    let (g, w) = (got.to_vec_f32(), want.to_vec_f32());
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let (tol, slack) = if how.input_tol {
        // A single value (a loss, d logit-scale) sums many terms that partly cancel: a looser
        // bound relative to its size (a wrong factor or sign is still far outside it).
        let slack = if w.len() == 1 {
            10.0 * how.slack
        } else {
            how.slack
        };
        (rtol(tol_dtype).max(rtol(got.dtype())), slack)
    } else {
        (rtol(got.dtype()), how.slack)
    };
    check(name, got.dtype(), &g, &w, slack * tol * scale, tol);
}

/// Runs `f` on the same inputs on the CPU and on cuda:0 and compares the outputs and the
/// gradients of sum(out·w) (w a fixed random weighting) as `how` says.
pub fn run(
    name: &str,
    dtype: DType,
    seed: u64,
    ins: &[In],
    how: Check,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) {
    let name = format!("{name} {dtype:?}");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut outs = Vec::new();
    let mut leaves_on = Vec::new();
    for device in [Device::Cpu, DEV] {
        let (mut leaves, mut args) = (Vec::new(), Vec::new());
        for (i, a) in ins.iter().enumerate() {
            let mut shape = a.shape.clone();
            if a.transposed {
                let r = shape.len();
                shape.swap(r - 2, r - 1);
            }
            let n = shape.iter().product();
            let vals = uniform(seed * 131 + i as u64, n, a.lo, a.hi);
            let dt = a.dtype.unwrap_or(dtype);
            let leaf = Tensor::from_values(vals, &shape, dt)
                .and_then(|t| t.to_device(device))
                .unwrap();
            let leaf = if a.grad {
                leaf.into_param().unwrap()
            } else {
                leaf
            };
            let mut x = leaf.clone();
            if device == DEV && a.grad {
                x = probe(&x, &seen).unwrap();
            }
            if a.transposed {
                x = x.transpose(-2, -1).unwrap();
            }
            leaves.push(leaf);
            args.push(x);
        }
        let out = f(&args).unwrap_or_else(|e| panic!("{name} on {device}: {e}"));
        if out.requires_grad() {
            let w = Tensor::from_values(
                uniform(seed + 7, out.numel(), -1.0, 1.0),
                out.shape(),
                out.dtype(),
            )
            .and_then(|w| w.to_device(device))
            .unwrap();
            out.mul(&w)
                .and_then(|l| l.sum_all())
                .and_then(|l| l.backward())
                .unwrap_or_else(|e| panic!("{name} backward on {device}: {e}"));
        }
        outs.push(out);
        leaves_on.push(leaves);
    }
    let (want, got) = (&outs[0], &outs[1]);
    assert_eq!(got.device(), DEV, "{name}: output device");
    compare(&name, got, want, dtype, how);
    for (i, (lc, lg)) in leaves_on[0].iter().zip(&leaves_on[1]).enumerate() {
        match (lc.grad(), lg.grad()) {
            (Some(want), Some(got)) => {
                assert_eq!(got.device(), DEV, "{name}: d{i} device");
                let dt = ins[i].dtype.unwrap_or(dtype);
                compare(&format!("{name} d{i}"), &got, &want, dt, how);
            }
            (None, None) => assert!(!ins[i].grad || !want.requires_grad(), "{name}: no d{i}"),
            (c, g) => panic!(
                "{name}: d{i} is {} on the CPU but {} on the GPU",
                c.is_some(),
                g.is_some()
            ),
        }
    }
    for d in seen.lock().unwrap().iter() {
        assert_eq!(
            *d, DEV,
            "{name}: a backward rule handed on a gradient on {d}"
        );
    }
}

/// None of `types` (struct names of Backward rules) ran on the host fallback.
pub fn assert_native(types: &[&str]) {
    for (name, count) in host_fallbacks() {
        let last = name.rsplit("::").next().unwrap_or(name);
        assert!(
            !types.contains(&last),
            "{name} took the host fallback {count} times"
        );
    }
}
