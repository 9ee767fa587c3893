//! Normalisation ops: LayerNorm, GroupNorm, GroupNorm+SiLU (fused) and BatchNorm,
//! each one fused forward kernel (saving mean/rstd) and one fused backward.

use crate::autograd::{op_output, Backward};
use crate::backend::cpu::{
    self,
    norm::{self as kernels, Affine, GroupShape, Needs, NormGrads},
};
use crate::error::{Context, Result};
use crate::tensor::{DType, Tensor};
use crate::{bail, ensure};

/// Which normalisation a saved node belongs to, with its geometry.
#[derive(Clone, Copy)]
enum Kind {
    Layer {
        n: usize,
    },
    Group {
        shape: GroupShape,
        silu: bool,
    },
    Batch {
        batch: usize,
        channels: usize,
        spatial: usize,
        batch_stats: bool,
    },
}

/// Backward of every norm: inputs are [x, weight?, bias?]; mean and rstd are
/// saved in the compute dtype (f32, or f64 for f64 inputs).
struct NormBack {
    kind: Kind,
    has_w: bool,
    has_b: bool,
    mean: Tensor,
    rstd: Tensor,
}

impl Backward for NormBack {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Layer { .. } => "layer_norm",
            Kind::Group { silu: false, .. } => "group_norm",
            Kind::Group { silu: true, .. } => "group_norm_silu",
            Kind::Batch { .. } => "batch_norm",
        }
    }

    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let w = self.has_w.then(|| &inputs[1]);
        let b_at = 1 + self.has_w as usize;
        let b = self.has_b.then(|| &inputs[b_at]);
        let need = Needs {
            x: needs[0],
            weight: self.has_w && needs[1],
            bias: self.has_b && needs[b_at],
        };
        #[cfg(feature = "cuda")]
        if let Some(grads) = self.backward_cuda(g, x, w, b, need)? {
            return Ok(grads);
        }
        crate::with_real!(x.dtype(), T => {
            let (xv, gv) = (x.to_vec::<T>(), g.to_vec::<T>());
            let (mean, rstd) = (self.mean.to_vec::<T>(), self.rstd.to_vec::<T>());
            let (wv, bv) = (w.map(|t| t.to_vec::<T>()), b.map(|t| t.to_vec::<T>()));
            let affine = Affine { weight: wv.as_deref(), bias: bv.as_deref() };
            let NormGrads { dx, dweight, dbias } = match self.kind {
                Kind::Layer { n } => kernels::layer_norm_backward(&xv, &gv, n, &mean, &rstd, affine, need),
                Kind::Group { shape, silu } => {
                    kernels::group_norm_backward(&xv, &gv, shape, &mean, &rstd, affine, silu, need)
                }
                Kind::Batch { batch, channels, spatial, batch_stats } => kernels::batch_norm_backward(
                    &xv, &gv, batch, channels, spatial, &mean, &rstd, affine, batch_stats, need,
                ),
            };
            let wrap = |v: Option<Vec<T>>, like: Option<&Tensor>| -> Result<Option<Tensor>> {
                match (v, like) {
                    (Some(v), Some(t)) => Ok(Some(Tensor::from_values(v, t.shape(), t.dtype())?)),
                    _ => Ok(None),
                }
            };
            let mut grads = vec![wrap(dx, Some(x))?];
            if self.has_w {
                grads.push(wrap(dweight, w)?);
            }
            if self.has_b {
                grads.push(wrap(dbias, b)?);
            }
            Ok(grads)
        })
    }
}

#[cfg(feature = "cuda")]
impl NormBack {
    /// The device backward when the forward ran on a GPU (its statistics live there).
    fn backward_cuda(
        &self,
        g: &Tensor,
        x: &Tensor,
        w: Option<&Tensor>,
        b: Option<&Tensor>,
        need: Needs,
    ) -> Result<Option<Vec<Option<Tensor>>>> {
        use crate::ops::cuda::norm as dev;
        if !dev::on_device(&self.mean) {
            return Ok(None);
        }
        let Some(cx) = crate::ops::cuda::OnCuda::of(&[x, g, &self.mean])? else {
            return Ok(None);
        };
        let want = dev::Want {
            x: need.x,
            weight: need.weight,
            bias: need.bias,
        };
        let (mean, rstd) = (&self.mean, &self.rstd);
        let (dx, dw, db) = match self.kind {
            Kind::Layer { n } => dev::layer_norm_backward(&cx, x, g, w, b, mean, rstd, n, want)?,
            Kind::Group { shape, silu } => {
                let dims = (x.shape()[0], shape.channels, shape.spatial, shape.groups);
                dev::group_norm_backward(&cx, x, g, w, b, mean, rstd, dims, silu, want)?
            }
            Kind::Batch {
                batch,
                channels,
                spatial,
                batch_stats,
            } => dev::batch_norm_backward(
                &cx,
                x,
                g,
                w,
                b,
                mean,
                rstd,
                (batch, channels, spatial),
                batch_stats,
                want,
            )?,
        };
        let mut grads = vec![dx];
        if self.has_w {
            grads.push(dw);
        }
        if self.has_b {
            grads.push(db);
        }
        Ok(Some(grads))
    }
}

/// A norm computed on the device: its output with the saved device statistics.
#[cfg(feature = "cuda")]
fn device_output(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    kind: Kind,
    o: crate::ops::cuda::norm::NormOut,
) -> Result<Tensor> {
    op_output(o.y, x.shape(), &inputs(x, w, b), || NormBack {
        kind,
        has_w: w.is_some(),
        has_b: b.is_some(),
        mean: o.mean,
        rstd: o.rstd,
    })
}

/// The op's GPU when it runs on one and the kernels take its dtypes.
#[cfg(feature = "cuda")]
fn on_cuda(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
) -> Result<Option<crate::ops::cuda::OnCuda>> {
    if !crate::ops::cuda::norm::supported(x, w, b) {
        return Ok(None);
    }
    crate::ops::cuda::OnCuda::of(&inputs(x, w, b))
}

/// Check an optional weight/bias: float, of `shape`.
fn check_param(p: Option<&Tensor>, shape: &[usize], what: &str, op: &str) -> Result<()> {
    if let Some(p) = p {
        ensure!(
            p.dtype().is_float(),
            "{op}: {what} must be a float tensor, got {}",
            p.dtype()
        );
        ensure!(
            p.shape() == shape,
            "{op}: {what} has shape {:?}, expected {shape:?}",
            p.shape()
        );
    }
    Ok(())
}

/// [x, weight?, bias?] as graph inputs.
fn inputs<'a>(x: &'a Tensor, w: Option<&'a Tensor>, b: Option<&'a Tensor>) -> Vec<&'a Tensor> {
    std::iter::once(x).chain(w).chain(b).collect()
}

fn stats_tensor<T: crate::tensor::Real>(v: Vec<T>) -> Result<Tensor> {
    let n = v.len();
    Tensor::from_vec(v, &[n])
}

/// Run a norm forward: `kernel(x, affine)` gives (y, mean, rstd); records `kind`.
fn norm_forward(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    kind: Kind,
    kernel: impl FnOnce(
        &Tensor,
        Option<&Tensor>,
        Option<&Tensor>,
    ) -> Result<(crate::tensor::Storage, Tensor, Tensor)>,
) -> Result<Tensor> {
    let (storage, mean, rstd) = kernel(x, w, b)?;
    op_output(storage, x.shape(), &inputs(x, w, b), || NormBack {
        kind,
        has_w: w.is_some(),
        has_b: b.is_some(),
        mean,
        rstd,
    })
}

fn ensure_float(x: &Tensor, op: &str) -> Result<()> {
    ensure!(
        x.dtype().is_float(),
        "{op} needs a float tensor, got {}",
        x.dtype()
    );
    Ok(())
}

/// [N, C, spatial...] → (N, C, product of spatial dims).
fn ncs(x: &Tensor, op: &str) -> Result<(usize, usize, usize)> {
    ensure!(
        x.rank() >= 2,
        "{op} needs an input of shape [N, C, ...], got {:?}",
        x.shape()
    );
    Ok((x.shape()[0], x.shape()[1], x.shape()[2..].iter().product()))
}

impl Tensor {
    /// LayerNorm over the trailing `normalized_dims` dimensions (PyTorch's
    /// `layer_norm(x, x.shape[-normalized_dims:], weight, bias, eps)`); weight and
    /// bias, when given, have exactly those trailing dims.
    pub fn layer_norm(
        &self,
        normalized_dims: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        const OP: &str = "layer_norm";
        ensure_float(self, OP)?;
        ensure!(
            (1..=self.rank()).contains(&normalized_dims),
            "{OP}: cannot normalise the last {normalized_dims} dims of shape {:?}",
            self.shape()
        );
        let nshape = &self.shape()[self.rank() - normalized_dims..];
        let n: usize = nshape.iter().product();
        ensure!(n > 0, "{OP}: empty normalized shape {nshape:?}");
        check_param(weight, nshape, "weight", OP)?;
        check_param(bias, nshape, "bias", OP)?;
        #[cfg(feature = "cuda")]
        if let Some(cx) = on_cuda(self, weight, bias)? {
            let o = crate::ops::cuda::norm::layer_norm(&cx, self, weight, bias, n, eps)?;
            return device_output(self, weight, bias, Kind::Layer { n }, o);
        }
        norm_forward(self, weight, bias, Kind::Layer { n }, |x, w, b| {
            crate::with_real!(x.dtype(), T => {
                let (wv, bv) = (w.map(|t| t.to_vec::<T>()), b.map(|t| t.to_vec::<T>()));
                let affine = Affine { weight: wv.as_deref(), bias: bv.as_deref() };
                let (y, m, r) = x.with_values::<T, _>(|xv| kernels::layer_norm(xv, n, affine, eps));
                Ok((cpu::storage_from(y, x.dtype()), stats_tensor(m)?, stats_tensor(r)?))
            })
        })
    }

    /// GroupNorm of x [N, C, ...] with `groups` groups and per-channel weight/bias [C].
    pub fn group_norm(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        group_norm_impl(self, groups, weight, bias, eps, false)
    }

    /// SiLU(GroupNorm(x)) in one kernel (Stable Diffusion's ResNet blocks), with a
    /// fused backward through both.
    pub fn group_norm_silu(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        group_norm_impl(self, groups, weight, bias, eps, true)
    }

    /// BatchNorm of x [N, C, ...] (PyTorch's `F.batch_norm`). Training: normalise with
    /// the batch mean and biased variance, and (when given) update the running stats in
    /// place: mean ← (1−momentum)·mean + momentum·batch_mean, var likewise with the
    /// unbiased batch variance. Eval: normalise with the running stats (required).
    /// Running stats never get gradients.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm(
        &self,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        training: bool,
        momentum: f64,
        eps: f64,
    ) -> Result<Tensor> {
        const OP: &str = "batch_norm";
        ensure_float(self, OP)?;
        let (batch, channels, spatial) = ncs(self, OP)?;
        let cshape = [channels];
        check_param(weight, &cshape, "weight", OP)?;
        check_param(bias, &cshape, "bias", OP)?;
        check_param(running_mean, &cshape, "running_mean", OP)?;
        check_param(running_var, &cshape, "running_var", OP)?;
        let running = match (running_mean, running_var) {
            (Some(m), Some(v)) => Some((m, v)),
            (None, None) => None,
            _ => bail!("{OP}: give both running_mean and running_var, or neither"),
        };
        let count = batch * spatial;
        if training {
            ensure!(
                count > 1,
                "{OP}: expected more than 1 value per channel when training, got input shape {:?}",
                self.shape()
            );
        } else {
            ensure!(
                running.is_some(),
                "{OP}: eval mode needs running_mean and running_var"
            );
        }
        let kind = Kind::Batch {
            batch,
            channels,
            spatial,
            batch_stats: training,
        };
        #[cfg(feature = "cuda")]
        if let Some(cx) = on_cuda(self, weight, bias)? {
            if crate::ops::cuda::norm::batch_norm_running_ok(&cx, running, training) {
                let o = crate::ops::cuda::norm::batch_norm(
                    &cx,
                    self,
                    weight,
                    bias,
                    running,
                    (batch, channels, spatial),
                    training,
                    momentum,
                    eps,
                )?;
                return device_output(self, weight, bias, kind, o);
            }
        }
        norm_forward(self, weight, bias, kind, |x, w, b| {
            crate::with_real!(x.dtype(), T => {
                let xv = x.to_vec::<T>();
                let (mean, rstd): (Vec<T>, Vec<T>) = match (training, running) {
                    (true, _) => {
                        let (mean, var) = kernels::channel_moments(&xv, batch, channels, spatial);
                        if let Some((rm, rv)) = running {
                            update_running(rm, &mean, momentum, 1.0)?;
                            update_running(rv, &var, momentum, count as f64 / (count - 1) as f64)?;
                        }
                        (
                            mean.iter().map(|&m| T::from_f64(m)).collect(),
                            var.iter().map(|&v| T::from_f64(1.0 / (v + eps).sqrt())).collect(),
                        )
                    }
                    (false, Some((rm, rv))) => (
                        rm.to_vec::<T>(),
                        rv.to_vec_f64().iter().map(|&v| T::from_f64(1.0 / (v + eps).sqrt())).collect(),
                    ),
                    (false, None) => unreachable!("checked above"),
                };
                let (wv, bv) = (w.map(|t| t.to_vec::<T>()), b.map(|t| t.to_vec::<T>()));
                let affine = Affine { weight: wv.as_deref(), bias: bv.as_deref() };
                let y = kernels::channel_normalize(&xv, channels, spatial, &mean, &rstd, affine);
                Ok((cpu::storage_from(y, x.dtype()), stats_tensor(mean)?, stats_tensor(rstd)?))
            })
        })
    }
}

/// stat ← (1 − momentum)·stat + momentum·correction·batch_value, in place.
fn update_running(
    stat: &Tensor,
    batch_value: &[f64],
    momentum: f64,
    correction: f64,
) -> Result<()> {
    let old = stat.to_vec_f64();
    let new: Vec<f64> = old
        .iter()
        .zip(batch_value)
        .map(|(&s, &v)| (1.0 - momentum) * s + momentum * correction * v)
        .collect();
    stat.set_data(&Tensor::from_values(new, stat.shape(), DType::F64)?)
        .context("batch_norm: updating running statistics")
}

fn group_norm_impl(
    x: &Tensor,
    groups: usize,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let op = if silu {
        "group_norm_silu"
    } else {
        "group_norm"
    };
    ensure_float(x, op)?;
    let (_, channels, spatial) = ncs(x, op)?;
    ensure!(
        groups > 0 && channels % groups == 0,
        "{op}: {channels} channels are not divisible by {groups} groups"
    );
    ensure!(
        channels > 0 && spatial > 0,
        "{op}: empty groups for input shape {:?}",
        x.shape()
    );
    check_param(w, &[channels], "weight", op)?;
    check_param(b, &[channels], "bias", op)?;
    let shape = GroupShape {
        channels,
        spatial,
        groups,
    };
    #[cfg(feature = "cuda")]
    if let Some(cx) = on_cuda(x, w, b)? {
        let dims = (x.shape()[0], channels, spatial, groups);
        let o = crate::ops::cuda::norm::group_norm(&cx, x, w, b, dims, eps, silu)?;
        return device_output(x, w, b, Kind::Group { shape, silu }, o);
    }
    norm_forward(x, w, b, Kind::Group { shape, silu }, |x, w, b| {
        crate::with_real!(x.dtype(), T => {
            let (wv, bv) = (w.map(|t| t.to_vec::<T>()), b.map(|t| t.to_vec::<T>()));
            let affine = Affine { weight: wv.as_deref(), bias: bv.as_deref() };
            let (y, m, r) = x.with_values::<T, _>(|xv| kernels::group_norm(xv, shape, affine, eps, silu));
            Ok((cpu::storage_from(y, x.dtype()), stats_tensor(m)?, stats_tensor(r)?))
        })
    })
}
