//! Philox4x32-10 counter-based random numbers (Salmon et al., SC'11): the same
//! stream on every backend, so CPU and GPU noise can be bit-identical.

/// A seeded counter-based generator. Each draw consumes counter blocks of four
/// 32-bit outputs; the state is just (key, next counter), so it saves and resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Philox {
    key: [u32; 2],
    counter: u64,
}

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The Philox4x32 block function with 10 rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        c = [
            ((p1 >> 32) as u32) ^ c[1] ^ k[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// Uniform in (0, 1] from the top 24 bits of `x` (never 0, so log() is safe).
fn open_uniform(x: u32) -> f64 {
    ((x >> 8) as f64 + 1.0) * (1.0 / 16_777_216.0)
}

impl Philox {
    pub fn new(seed: u64) -> Self {
        Philox {
            key: [seed as u32, (seed >> 32) as u32],
            counter: 0,
        }
    }

    /// Restore a generator at a given position (for exact resume).
    pub fn from_state(seed: u64, counter: u64) -> Self {
        Philox {
            counter,
            ..Philox::new(seed)
        }
    }

    pub fn counter(&self) -> u64 {
        self.counter
    }

    pub fn seed(&self) -> u64 {
        self.key[0] as u64 | ((self.key[1] as u64) << 32)
    }

    fn block(&self, index: u64) -> [u32; 4] {
        let c = self.counter.wrapping_add(index);
        philox4x32_10([c as u32, (c >> 32) as u32, 0, 0], self.key)
    }

    fn advance(&mut self, n: usize) {
        self.counter = self.counter.wrapping_add(n.div_ceil(4) as u64);
    }

    /// `n` standard normals (Box–Muller on each pair of outputs, computed in f64).
    pub fn normal(&mut self, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(n + 3);
        for b in 0..n.div_ceil(4) as u64 {
            let x = self.block(b);
            for pair in [[x[0], x[1]], [x[2], x[3]]] {
                let r = (-2.0 * open_uniform(pair[0]).ln()).sqrt();
                let theta = 2.0 * std::f64::consts::PI * open_uniform(pair[1]);
                out.push(r * theta.cos());
                out.push(r * theta.sin());
            }
        }
        out.truncate(n);
        self.advance(n);
        out
    }

    /// `n` uniforms in [0, 1).
    pub fn uniform(&mut self, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(n + 3);
        for b in 0..n.div_ceil(4) as u64 {
            for x in self.block(b) {
                out.push((x >> 8) as f64 * (1.0 / 16_777_216.0));
            }
        }
        out.truncate(n);
        self.advance(n);
        out
    }

    /// A uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let x = self.block(0);
        self.advance(4);
        let wide = ((x[0] as u64) << 32) | x[1] as u64;
        ((wide as u128 * n as u128) >> 64) as u64
    }

    /// A uniformly shuffled permutation of `0..n` (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answer() {
        // Random123's published known-answer test for philox4x32-10.
        let out = philox4x32_10([0, 0, 0, 0], [0, 0]);
        assert_eq!(out, [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        let out = philox4x32_10([!0, !0, !0, !0], [!0, !0]);
        assert_eq!(out, [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
    }

    #[test]
    fn normals_have_unit_moments() {
        let v = Philox::new(7).normal(200_000);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn draws_advance_and_resume() {
        let mut a = Philox::new(3);
        let first = a.normal(10);
        let second = a.normal(10);
        assert_ne!(first, second);
        let mut b = Philox::from_state(3, a.counter());
        assert_eq!(a.normal(5), b.normal(5));
    }
}
