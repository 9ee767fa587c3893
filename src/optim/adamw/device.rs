//! AdamW on a GPU (feature `cuda`): moments, fp32 masters and step counters in private device
//! buffers that kernels/adamw.cu updates in place; each step writes the parameter into fresh
//! device memory and installs it with `Tensor::replace_storage`, without host sync.

use super::{master_matches, Buf, Bufs, ParamState};
use crate::backend::cuda::adamw::{self as k, AdamwScalars, HYPER_BYTES};
use crate::backend::cuda::elementwise::{cast, Launch};
use crate::bail;
use crate::cuda::gpu::Ptr;
use crate::error::Result;
use crate::ops::cuda::optim::{copy, whole, StateBuf};
use crate::ops::cuda::OnCuda;
use crate::tensor::{CpuStorage, DType, Tensor};
use std::sync::{Arc, Weak};

/// One parameter's AdamW state on its GPU.
pub(super) struct DevBufs {
    exp_avg: StateBuf,
    exp_avg_sq: StateBuf,
    /// fp32 master of a bf16/f16 parameter.
    master: Option<StateBuf>,
    /// i64 [1]: the device's copy of `ParamState::step` (adamw_hyper increments both).
    steps: StateBuf,
    /// The AdamwHyper record adamw_hyper writes for the step's adamw_step.
    hyper: StateBuf,
}

impl DevBufs {
    /// Fresh state for `p`: zero moments, the master cast from `p` (exact), step 0.
    fn fresh(cx: &OnCuda, p: &Tensor) -> Result<DevBufs> {
        let n = p.numel();
        Ok(DevBufs {
            exp_avg: StateBuf::zeros(cx, n, DType::F32)?,
            exp_avg_sq: StateBuf::zeros(cx, n, DType::F32)?,
            master: match p.dtype().is_half() {
                true => Some(StateBuf::f32_of(cx, p)?),
                false => None,
            },
            steps: StateBuf::zeros(cx, 1, DType::I64)?,
            hyper: StateBuf::zeros(cx, HYPER_BYTES, DType::U8)?,
        })
    }

    /// Host state uploaded for `p` (a resumed or CPU-started run moving onto the GPU).
    fn upload(
        cx: &OnCuda,
        p: &Tensor,
        step: u64,
        exp_avg: &Buf,
        exp_avg_sq: &Buf,
        master: &Option<Vec<f32>>,
    ) -> Result<DevBufs> {
        let n = p.numel();
        let up = |b: &Buf, what: &str| -> Result<StateBuf> {
            match b {
                Buf::F32(v) if v.len() == n => StateBuf::upload(cx, &CpuStorage::F32(v.clone())),
                Buf::F32(v) => bail!(
                    "AdamW: {what} holds {} values for a parameter of {n}",
                    v.len()
                ),
                Buf::F64(_) => bail!("AdamW: f64 {what} for a {} parameter", p.dtype()),
            }
        };
        let master = match (p.dtype().is_half(), master) {
            (false, _) => None,
            (true, Some(m)) => Some(up(&Buf::F32(m.clone()), "master")?),
            (true, None) => Some(StateBuf::f32_of(cx, p)?),
        };
        Ok(DevBufs {
            exp_avg: up(exp_avg, "exp_avg")?,
            exp_avg_sq: up(exp_avg_sq, "exp_avg_sq")?,
            master,
            steps: StateBuf::upload(cx, &CpuStorage::I64(vec![step as i64]))?,
            hyper: StateBuf::zeros(cx, HYPER_BYTES, DType::U8)?,
        })
    }

    pub(super) fn ordinal(&self) -> usize {
        self.steps.ordinal()
    }

    /// The state read back to the host (a sync).
    pub(super) fn download(&self) -> Result<Bufs> {
        Ok(Bufs::Host {
            exp_avg: Buf::F32(self.exp_avg.download()?),
            exp_avg_sq: Buf::F32(self.exp_avg_sq.download()?),
            master: match &self.master {
                Some(m) => Some(m.download()?),
                None => None,
            },
        })
    }

    /// (exp_avg, exp_avg_sq, master) as CPU f32 tensors of `shape` (a sync; checkpoints).
    pub(super) fn tensors(&self, shape: &[usize]) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        Ok((
            self.exp_avg.to_cpu_tensor(shape)?,
            self.exp_avg_sq.to_cpu_tensor(shape)?,
            self.master_tensor(shape)?,
        ))
    }

    /// The fp32 master as a CPU tensor of `shape` (a sync), for half parameters.
    pub(super) fn master_tensor(&self, shape: &[usize]) -> Result<Option<Tensor>> {
        self.master
            .as_ref()
            .map(|m| m.to_cpu_tensor(shape))
            .transpose()
    }
}

/// Puts `st` on `cx`'s device for `p` (uploads host state, or moves it from another GPU).
pub(super) fn place(cx: &OnCuda, p: &Tensor, st: &mut ParamState) -> Result<()> {
    if matches!(&st.bufs, Bufs::Cuda(d) if d.ordinal() == cx.ordinal) {
        return Ok(());
    }
    st.move_to_host()?;
    let Bufs::Host {
        exp_avg,
        exp_avg_sq,
        master,
    } = &st.bufs
    else {
        bail!("AdamW: internal: state not on the host after move_to_host");
    };
    st.bufs = Bufs::Cuda(Box::new(DevBufs::upload(
        cx, p, st.step, exp_avg, exp_avg_sq, master,
    )?));
    Ok(())
}

/// One AdamW step of `p` (f32, bf16 or f16 on `cx`'s device) from `grad`, as `step_param` on
/// the CPU: adamw_hyper (the step's scalars from the device step count) then adamw_step (f32
/// parameters updated in a fresh copy of themselves; half ones through the fp32 master into a
/// fresh half buffer), installed with `replace_storage`. The only host sync: a half parameter
/// written outside the optimizer since its last step (or after a state load) has its master
/// checked against it on the host, as on the CPU.
pub(super) fn step_param(
    cx: &OnCuda,
    p: &Tensor,
    grad: &Tensor,
    slot: &mut Option<ParamState>,
    scalars: &AdamwScalars,
) -> Result<()> {
    let n = p.numel();
    let pin = whole(cx, p)?;
    let st = match slot {
        Some(st) => st,
        None => slot.insert(ParamState {
            step: 0,
            bufs: Bufs::Cuda(Box::new(DevBufs::fresh(cx, p)?)),
            // The master was just cast from this storage.
            written: Arc::downgrade(&p.storage()),
        }),
    };
    place(cx, p, st)?;
    let Bufs::Cuda(d) = &st.bufs else {
        bail!("AdamW: internal: state not on the device after place");
    };
    let grad = match grad.dtype() {
        DType::F32 => grad.clone(),
        _ => grad.to_dtype(DType::F32)?,
    };
    let g = cx.input(&grad)?;
    if let Some(master) = &d.master {
        let current = p.storage();
        if !std::ptr::eq(Weak::as_ptr(&st.written), Arc::as_ptr(&current)) && n > 0 {
            // Written outside the optimizer (or freshly loaded): keep the master only if it
            // still rounds to the parameter (read back once, as the CPU's check).
            let pv = p.to_vec::<f32>();
            if !master_matches(&master.download::<f32>()?, &pv, p.dtype()) {
                cast(&cx.gpu, pin.ptr, master.ptr(), n, Launch::default())?;
            }
        }
    }
    k::adamw_hyper(
        &cx.gpu,
        Ptr::null(DType::I32),
        d.steps.ptr(),
        d.hyper.ptr(),
        1,
        scalars,
    )?;
    st.step += 1;
    let null = Ptr::null(DType::F32);
    let (m, v) = (d.exp_avg.ptr(), d.exp_avg_sq.ptr());
    match &d.master {
        None => {
            let (storage, out) = cx.output(n, DType::F32)?;
            copy(&cx.gpu, pin.ptr, out, n)?;
            k::adamw_step(&cx.gpu, d.hyper.ptr(), out, null, g.ptr, m, v, null, n)?;
            p.replace_storage(storage)?;
        }
        Some(master) => {
            let (storage, out) = cx.output(n, p.dtype())?;
            k::adamw_step(
                &cx.gpu,
                d.hyper.ptr(),
                master.ptr(),
                out,
                g.ptr,
                m,
                v,
                null,
                n,
            )?;
            p.replace_storage(storage)?;
            st.written = Arc::downgrade(&p.storage());
        }
    }
    Ok(())
}
