//! Tensors across devices: `to_device` (differentiable: the gradient goes back to the source
//! device), where an op runs (`op_device`), and the host fallback — an op without a CUDA path
//! yet reads its device inputs back, runs on the CPU, and its output is uploaded to the inputs'
//! device (`place`), with a one-time notice per op naming it.

use crate::autograd::{record, Backward};
use crate::error::Result;
use crate::tensor::{Device, Layout, Storage, Tensor};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The device an op on `inputs` runs on: the first CUDA device among them, else the CPU.
pub fn op_device(inputs: &[&Tensor]) -> Device {
    inputs
        .iter()
        .map(|t| t.device())
        .find(|d| *d != Device::Cpu)
        .unwrap_or(Device::Cpu)
}

/// `storage` on `device` (moved when it lives elsewhere; no copy when it is there already).
pub fn place(storage: Storage, device: Device) -> Result<Storage> {
    if storage.device() == device {
        return Ok(storage);
    }
    place_copy(&storage, device)
}

/// A copy of `storage` on `device` (another device than its own).
pub fn place_copy(storage: &Storage, device: Device) -> Result<Storage> {
    match device {
        Device::Cpu => Ok(Storage::Cpu(storage.try_cpu()?.clone())),
        Device::Cuda(ordinal) => upload(storage, ordinal),
    }
}

#[cfg(feature = "cuda")]
fn upload(storage: &Storage, ordinal: usize) -> Result<Storage> {
    let gpu = crate::cuda::gpu(ordinal)?;
    let host = storage.try_cpu()?;
    Ok(Storage::Cuda(crate::tensor::CudaStorage::upload(
        &gpu, ordinal, host,
    )?))
}

#[cfg(not(feature = "cuda"))]
fn upload(_: &Storage, ordinal: usize) -> Result<Storage> {
    crate::bail!(
        "cuda:{ordinal}: this medsyn build has no CUDA backend (build with `--features cuda`)"
    )
}

fn fallbacks() -> &'static Mutex<BTreeMap<&'static str, usize>> {
    static SEEN: Mutex<BTreeMap<&'static str, usize>> = Mutex::new(BTreeMap::new());
    &SEEN
}

/// Records that `op` ran on the host for device inputs; the first time per op, says so on
/// stderr (set MEDSYN_QUIET_FALLBACK=1 to silence it).
pub fn note_host_fallback(op: &'static str) {
    let Ok(mut seen) = fallbacks().lock() else {
        return;
    };
    let count = seen.entry(op).or_insert(0);
    *count += 1;
    if *count == 1 && std::env::var_os("MEDSYN_QUIET_FALLBACK").is_none() {
        eprintln!(
            "medsyn: `{op}` has no CUDA path yet: it ran on the host (inputs read back, output \
             uploaded); correct but slower"
        );
    }
}

/// Ops that ran on the host for device inputs, with how many times (for reports and tests).
pub fn host_fallbacks() -> Vec<(&'static str, usize)> {
    fallbacks()
        .lock()
        .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
        .unwrap_or_default()
}

struct ToDeviceBack(Device);

impl Backward for ToDeviceBack {
    fn name(&self) -> &'static str {
        "to_device"
    }
    fn backward(
        &self,
        g: &Tensor,
        _: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_device(self.0)?)])
    }
}

impl Tensor {
    /// A contiguous copy on `device` (`self` when it is there already). Gradients flow back to
    /// this tensor's device. Reading a device tensor back waits for its device's queued work.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        let src = self.storage();
        let host = src.try_cpu()?.gather(self.layout());
        let storage = place(Storage::Cpu(host), device)?;
        let out = Tensor::from_storage(storage, Layout::contiguous(self.shape()))?;
        let from = self.device();
        Ok(match record(&[self], || ToDeviceBack(from)) {
            None => out,
            Some(node) => out.view_with(out.layout().clone(), Some(node)),
        })
    }

    /// `to_device(Device::Cpu)`.
    pub fn to_cpu(&self) -> Result<Tensor> {
        self.to_device(Device::Cpu)
    }
}
