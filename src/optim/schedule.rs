//! Learning-rate schedules: linear warm-up followed by cosine decay.

/// Linear warm-up from 0 to `base_lr` over `warmup_steps`, then cosine decay from
/// `base_lr` to `min_lr` at `total_steps`, and `min_lr` after that.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub min_lr: f64,
}

impl WarmupCosine {
    /// The learning rate for optimizer step `step` (0-based: the first step uses
    /// `lr_at(0)`, which is 0 when there is a warm-up).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps as f64;
        }
        if step >= self.total_steps {
            return self.min_lr;
        }
        let span = (self.total_steps - self.warmup_steps) as f64;
        let progress = (step - self.warmup_steps) as f64 / span;
        self.min_lr
            + (self.base_lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}
