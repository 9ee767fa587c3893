//! AdamW's checkpointable state: moments, fp32 masters and step counts by
//! parameter index, written and restored bitwise.

use super::{AdamW, Buf, Bufs, ParamState};
use crate::bail;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::Weak;

impl AdamW {
    /// The optimizer state by parameter index: `state.{i}.step`, `state.{i}.exp_avg`,
    /// `state.{i}.exp_avg_sq`, `state.{i}.master` (half parameters), and `step`. The
    /// tensors are on the CPU (state on a GPU is read back: a sync, at checkpoint time).
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let params = self.params();
        let mut out = vec![(
            "step".to_string(),
            Tensor::from_i64(vec![self.steps as i64], &[])?,
        )];
        for (i, (st, p)) in self.state.iter().zip(&params).enumerate() {
            let Some(st) = st else { continue };
            out.push((
                format!("state.{i}.step"),
                Tensor::from_i64(vec![st.step as i64], &[])?,
            ));
            let (exp_avg, exp_avg_sq, master) = match &st.bufs {
                Bufs::Host {
                    exp_avg,
                    exp_avg_sq,
                    master,
                } => (
                    exp_avg.to_tensor(p.shape())?,
                    exp_avg_sq.to_tensor(p.shape())?,
                    master
                        .as_ref()
                        .map(|m| Tensor::from_vec(m.clone(), p.shape()))
                        .transpose()?,
                ),
                // Read back from the GPU (one sync per buffer; checkpoint time).
                #[cfg(feature = "cuda")]
                Bufs::Cuda(d) => d.tensors(p.shape())?,
            };
            out.push((format!("state.{i}.exp_avg"), exp_avg));
            out.push((format!("state.{i}.exp_avg_sq"), exp_avg_sq));
            if let Some(m) = master {
                out.push((format!("state.{i}.master"), m));
            }
        }
        Ok(out)
    }

    /// Restore a state written by [`AdamW::state_dict`] for the same parameter list.
    /// Parameters without entries start fresh. The state of a parameter on a GPU is
    /// uploaded there (so a CPU-saved state resumes a device run and vice versa).
    pub fn load_state_dict(&mut self, entries: &[(String, Tensor)]) -> Result<()> {
        let params = self.params();
        let mut state: Vec<Option<ParamState>> = (0..params.len()).map(|_| None).collect();
        let mut steps = 0;
        let find = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, t)| t);
        for (key, t) in entries {
            if key == "step" {
                steps = t.to_vec_i64().first().copied().unwrap_or(0).max(0) as u64;
                continue;
            }
            let parsed = key
                .strip_prefix("state.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(i, field)| Some((i.parse::<usize>().ok()?, field)));
            let Some((i, field)) = parsed else {
                bail!("AdamW state: unexpected entry `{key}`")
            };
            if !matches!(field, "step" | "exp_avg" | "exp_avg_sq" | "master") {
                bail!("AdamW state: unexpected entry `{key}`");
            }
            let Some(p) = params.get(i) else {
                bail!(
                    "AdamW state: entry `{key}` names parameter {i}, but there are {} parameters",
                    params.len()
                )
            };
            if field == "master" && !p.dtype().is_half() {
                bail!(
                    "AdamW state: `{key}` is a master copy but parameter {i} is {}",
                    p.dtype()
                );
            }
            if field != "step" && t.shape() != p.shape() {
                bail!(
                    "AdamW state: `{key}` has shape {:?}, parameter {i} has {:?}",
                    t.shape(),
                    p.shape()
                );
            }
            if state[i].is_some() {
                continue;
            }
            let get = |f: &str| {
                find(&format!("state.{i}.{f}"))
                    .ok_or_else(|| Error::msg(format!("AdamW state: `state.{i}.{f}` missing")))
            };
            let step = get("step")?
                .to_vec_i64()
                .first()
                .copied()
                .unwrap_or(0)
                .max(0) as u64;
            let exp_avg = Buf::from_tensor(get("exp_avg")?, p.dtype());
            let exp_avg_sq = Buf::from_tensor(get("exp_avg_sq")?, p.dtype());
            let master = match p.dtype().is_half() {
                true => Some(get("master")?.to_vec::<f32>()),
                false => None,
            };
            #[allow(unused_mut)]
            let mut st = ParamState {
                step,
                bufs: Bufs::Host {
                    exp_avg,
                    exp_avg_sq,
                    master,
                },
                written: Weak::new(),
            };
            // A parameter on a GPU gets its state uploaded now.
            #[cfg(feature = "cuda")]
            if let Some(cx) = crate::ops::cuda::optim::param_device(p)? {
                super::device::place(&cx, p, &mut st)?;
            }
            state[i] = Some(st);
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}
