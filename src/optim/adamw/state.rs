//! AdamW's checkpointable state: moments, fp32 masters and step counts by
//! parameter index, written and restored bitwise.

use super::{AdamW, Buf, ParamState};
use crate::bail;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl AdamW {
    /// The optimizer state by parameter index: `state.{i}.step`, `state.{i}.exp_avg`,
    /// `state.{i}.exp_avg_sq`, `state.{i}.master` (half parameters), and `step`.
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
            out.push((
                format!("state.{i}.exp_avg"),
                st.exp_avg.to_tensor(p.shape())?,
            ));
            out.push((
                format!("state.{i}.exp_avg_sq"),
                st.exp_avg_sq.to_tensor(p.shape())?,
            ));
            if let Some(m) = &st.master {
                out.push((
                    format!("state.{i}.master"),
                    Tensor::from_vec(m.clone(), p.shape())?,
                ));
            }
        }
        Ok(out)
    }

    /// Restore a state written by [`AdamW::state_dict`] for the same parameter list.
    /// Parameters without entries start fresh.
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
            let mut st = ParamState::new(p);
            st.step = get("step")?
                .to_vec_i64()
                .first()
                .copied()
                .unwrap_or(0)
                .max(0) as u64;
            st.exp_avg = Buf::from_tensor(get("exp_avg")?, p.dtype());
            st.exp_avg_sq = Buf::from_tensor(get("exp_avg_sq")?, p.dtype());
            if p.dtype().is_half() {
                st.master = Some(get("master")?.to_vec::<f32>());
            }
            state[i] = Some(st);
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}
