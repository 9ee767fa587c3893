//! The CPU GEMM (`backend::cpu::gemm::matmul`) against a naive f64 triple loop on
//! strided, transposed, broadcast and offset views; plus an ignored throughput harness.

use medsyn::backend::cpu::gemm::{
    matmul, matmul_packed_b, packed_b_available, MatRef, PackB, PACKED_B_COLS,
};

/// Deterministic uniform values in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f64) / ((1u64 << 24) as f64) * 2.0 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next() as f32).collect()
    }
}

/// How an operand of logical shape rows×cols sits in its buffer.
#[derive(Clone, Copy, Debug)]
enum Lay {
    /// Row-major with `pad` extra floats per row, starting at `off`.
    Row { pad: usize, off: usize },
    /// Column-major (a transposed view) with `pad` extra floats per column.
    Col { pad: usize, off: usize },
    /// Every row is the same row vector (row stride 0).
    BcastRows { off: usize },
    /// Every column is the same column vector (column stride 0).
    BcastCols { off: usize },
}

struct Operand {
    data: Vec<f32>,
    offset: usize,
    rs: usize,
    cs: usize,
}

impl Operand {
    fn new(rng: &mut Lcg, rows: usize, cols: usize, lay: Lay) -> Self {
        let (len, offset, rs, cs) = match lay {
            Lay::Row { pad, off } => (off + rows * (cols + pad), off, cols + pad, 1),
            Lay::Col { pad, off } => (off + cols * (rows + pad), off, 1, rows + pad),
            Lay::BcastRows { off } => (off + cols, off, 0, 1),
            Lay::BcastCols { off } => (off + rows, off, 1, 0),
        };
        Operand {
            data: rng.vec(len.max(1)),
            offset,
            rs,
            cs,
        }
    }
    fn view(&self) -> MatRef<'_, f32> {
        MatRef {
            data: &self.data,
            offset: self.offset,
            rs: self.rs,
            cs: self.cs,
        }
    }
    fn at(&self, i: usize, j: usize) -> f64 {
        self.data[self.offset + i * self.rs + j * self.cs] as f64
    }
}

const POISON: f32 = -7.5e30;

/// Runs one case and checks it against f64; `ldd_pad` extra columns per dst row must
/// stay untouched.
#[allow(clippy::too_many_arguments)]
fn check(
    m: usize,
    n: usize,
    k: usize,
    la: Lay,
    lb: Lay,
    ldd_pad: usize,
    accumulate: bool,
    threads: bool,
) {
    let mut rng = Lcg((m * 1_000_003 + n * 1009 + k) as u64 ^ 0x5eed);
    let a = Operand::new(&mut rng, m, k, la);
    let b = Operand::new(&mut rng, k, n, lb);
    let ldd = n + ldd_pad;
    let len = if m == 0 { 3 } else { (m - 1) * ldd + n + 3 };
    let mut dst = vec![POISON; len];
    let prior = rng.vec(len);
    if accumulate {
        for i in 0..m {
            for j in 0..n {
                dst[i * ldd + j] = prior[i * ldd + j];
            }
        }
    } else {
        // Overwrite must not read dst: NaN there would leak into the result.
        for i in 0..m {
            for j in 0..n {
                dst[i * ldd + j] = f32::NAN;
            }
        }
    }
    matmul(
        m,
        n,
        k,
        a.view(),
        b.view(),
        &mut dst,
        ldd,
        accumulate,
        threads,
    );

    let what =
        format!("{m}x{n}x{k} a={la:?} b={lb:?} ldd+{ldd_pad} acc={accumulate} thr={threads}");
    let tol = 1e-5 * (k.max(1) as f64).sqrt();
    for (idx, &v) in dst.iter().enumerate() {
        let (i, j) = (idx / ldd, idx % ldd);
        if i >= m || j >= n {
            assert_eq!(
                v.to_bits(),
                POISON.to_bits(),
                "{what}: wrote outside the window at {idx}"
            );
            continue;
        }
        let mut exact = 0.0f64;
        let mut scale = 0.0f64;
        for p in 0..k {
            exact += a.at(i, p) * b.at(p, j);
            scale += (a.at(i, p) * b.at(p, j)).abs();
        }
        if accumulate {
            exact += prior[idx] as f64;
            scale += (prior[idx] as f64).abs();
        }
        let err = (v as f64 - exact).abs();
        assert!(
            err <= tol * scale.max(1e-3),
            "{what}: ({i},{j}) got {v} want {exact} err {err:e} scale {scale}"
        );
    }
}

const ROW: Lay = Lay::Row { pad: 0, off: 0 };

#[test]
fn small_and_odd_shapes_row_major() {
    for &(m, n, k) in &[
        (1, 1, 1),
        (1, 17, 3),
        (5, 1, 9),
        (6, 16, 1),
        (6, 16, 4),
        (7, 13, 5),
        (12, 32, 7),
        (13, 33, 257),
        (67, 131, 259),
        (2, 300, 40),
        (145, 20, 513),
        (5, 24, 9),
        (20, 24, 30),
        (12, 8, 33),
        (3, 56, 300),
        (64, 40, 64),
        (70, 12, 90),
    ] {
        for acc in [false, true] {
            check(m, n, k, ROW, ROW, 0, acc, false);
        }
    }
}

#[test]
fn transposed_and_offset_views() {
    let lays = [
        Lay::Row { pad: 3, off: 5 },
        Lay::Col { pad: 0, off: 0 },
        Lay::Col { pad: 2, off: 7 },
    ];
    for &(m, n, k) in &[(7, 13, 5), (30, 45, 70), (67, 131, 259)] {
        for la in lays {
            for lb in lays {
                check(m, n, k, la, lb, 0, false, false);
            }
        }
    }
}

#[test]
fn broadcast_operands_with_stride_zero() {
    for &(m, n, k) in &[(9, 20, 11), (50, 70, 300)] {
        check(m, n, k, Lay::BcastRows { off: 2 }, ROW, 0, false, false);
        check(m, n, k, Lay::BcastCols { off: 1 }, ROW, 0, true, false);
        check(m, n, k, ROW, Lay::BcastRows { off: 3 }, 0, false, false);
        check(m, n, k, ROW, Lay::BcastCols { off: 0 }, 0, true, false);
        check(
            m,
            n,
            k,
            Lay::Col { pad: 1, off: 0 },
            Lay::BcastRows { off: 0 },
            0,
            false,
            false,
        );
    }
}

#[test]
fn leading_dimension_gaps_stay_untouched() {
    for &(m, n, k) in &[(1, 5, 3), (7, 13, 5), (40, 37, 66), (100, 250, 33)] {
        for acc in [false, true] {
            for thr in [false, true] {
                check(m, n, k, ROW, Lay::Col { pad: 1, off: 2 }, 9, acc, thr);
            }
        }
    }
}

#[test]
fn large_blocked_shapes_threaded_and_not() {
    // Several KC and MC blocks, partial NR panels, both thread splits (M and N), and
    // uneven splits over 2 and 3 worker threads.
    for threads in [2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for &(m, n, k) in &[
                (300, 517, 600),
                (9, 1500, 300),
                (400, 24, 520),
                (13, 100, 900),
            ] {
                for thr in [false, true] {
                    check(m, n, k, ROW, ROW, 3, thr, thr);
                }
            }
            let col = Lay::Col { pad: 0, off: 0 };
            check(
                200,
                300,
                700,
                col,
                Lay::Col { pad: 4, off: 1 },
                0,
                true,
                true,
            );
            check(
                150,
                260,
                300,
                Lay::BcastRows { off: 1 },
                col,
                0,
                false,
                true,
            );
        });
    }
}

#[test]
fn wide_shape_spans_several_nc_blocks() {
    check(13, 4100 * 2 + 5, 70, ROW, ROW, 0, true, true);
    check(
        13,
        4100 + 5,
        70,
        ROW,
        Lay::Col { pad: 0, off: 0 },
        0,
        false,
        false,
    );
}

#[test]
fn degenerate_sizes() {
    // k == 0: overwrite zeroes the window, accumulate leaves it.
    for acc in [false, true] {
        check(4, 5, 0, ROW, ROW, 2, acc, true);
    }
    check(0, 5, 3, ROW, ROW, 0, false, true);
    check(3, 0, 3, ROW, ROW, 1, false, true);
    check(0, 0, 0, ROW, ROW, 1, true, false);
}

#[test]
fn f64_path_matches_naive() {
    let (m, n, k) = (23, 41, 37);
    let mut rng = Lcg(7);
    let a: Vec<f64> = (0..m * k).map(|_| rng.next()).collect();
    let b: Vec<f64> = (0..k * n).map(|_| rng.next()).collect();
    let mut dst = vec![1.0f64; m * n];
    // b is read transposed: element (p, j) at j*k + p.
    matmul(
        m,
        n,
        k,
        MatRef {
            data: &a,
            offset: 0,
            rs: k,
            cs: 1,
        },
        MatRef {
            data: &b,
            offset: 0,
            rs: 1,
            cs: k,
        },
        &mut dst,
        n,
        true,
        true,
    );
    for i in 0..m {
        for j in 0..n {
            let want: f64 = 1.0 + (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum::<f64>();
            assert!((dst[i * n + j] - want).abs() < 1e-12, "({i},{j})");
        }
    }
}

/// Best-of timing of `f` in GFLOP/s.
fn gflops(flops: f64, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t0 = std::time::Instant::now();
        f();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    flops / best / 1e9
}

/// The `gemm` crate on the same row-major problem (the path f32 took before sgemm/).
fn crate_gemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], dst: &mut [f32], threads: usize) {
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    assert!(a.len() >= m * k && b.len() >= k * n && dst.len() >= m * n);
    // SAFETY: row-major m×k, k×n and m×n buffers of at least these sizes (asserted).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    }
}

/// PyTorch's best-of GFLOP/s for the same shapes and thread counts, if python3 + torch
/// are installed (keyed by "threads m n k").
fn torch_gflops(
    shapes: &[(usize, usize, usize)],
    rounds: usize,
) -> std::collections::HashMap<String, f64> {
    let list: Vec<String> = shapes
        .iter()
        .map(|(m, n, k)| format!("({m},{n},{k})"))
        .collect();
    let script = format!(
        "import time, torch\n\
         for t in (1, 2):\n\
         \x20   torch.set_num_threads(t)\n\
         \x20   for (m, n, k) in [{}]:\n\
         \x20       a = torch.randn(m, k); b = torch.randn(k, n); c = torch.empty(m, n)\n\
         \x20       fl = 2 * m * n * k; reps = max(3, min(500, int(2e9 / fl))); best = 1e9\n\
         \x20       for _ in range({rounds}):\n\
         \x20           torch.mm(a, b, out=c)\n\
         \x20           for _ in range(reps):\n\
         \x20               t0 = time.perf_counter(); torch.mm(a, b, out=c); best = min(best, time.perf_counter() - t0)\n\
         \x20       print(t, m, n, k, fl / best / 1e9)\n",
        list.join(",")
    );
    let mut out = std::collections::HashMap::new();
    if let Ok(o) = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
    {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some((key, v)) = line.rsplit_once(' ') {
                if let Ok(v) = v.parse() {
                    out.insert(key.to_string(), v);
                }
            }
        }
    }
    out
}

/// Throughput of `matmul` (f32) against the `gemm` crate and PyTorch on 1 and 2 threads.
/// The machine may be shared: implementations alternate per round and each keeps its
/// best time. `cargo test --release --test gemm -- --ignored --nocapture gemm_speed`
#[test]
#[ignore]
fn gemm_speed() {
    let shapes = [
        (1024, 1024, 1024),
        (512, 512, 512),
        (256, 4096, 256),
        (64, 64, 64),
        (64, 40, 64),
        (4096, 40, 64),
    ];
    let rounds = 5;
    let torch = torch_gflops(&shapes, rounds);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for &(m, n, k) in &shapes {
            let mut rng = Lcg(1);
            let (a, b) = (rng.vec(m * k), rng.vec(k * n));
            let mut dst = vec![0f32; m * n];
            let flops = 2.0 * (m * n * k) as f64;
            let reps = ((1e9 / flops) as usize).clamp(2, 500);
            let (mut ours, mut theirs) = (0f64, 0f64);
            pool.install(|| {
                for _ in 0..rounds {
                    ours = ours.max(gflops(flops, reps, || {
                        let av = MatRef {
                            data: &a,
                            offset: 0,
                            rs: k,
                            cs: 1,
                        };
                        let bv = MatRef {
                            data: &b,
                            offset: 0,
                            rs: n,
                            cs: 1,
                        };
                        matmul(m, n, k, av, bv, &mut dst, n, false, threads > 1);
                    }));
                    theirs = theirs.max(gflops(flops, reps, || {
                        crate_gemm(m, n, k, &a, &b, &mut dst, threads)
                    }));
                }
            });
            let t = torch.get(&format!("{threads} {m} {n} {k}"));
            println!(
                "threads={threads} {m}x{n}x{k}: ours {ours:.1}, gemm crate {theirs:.1} ({:.2}x), torch {} GFLOP/s",
                ours / theirs,
                t.map_or("n/a".to_string(), |t| format!("{t:.1} (time ours/torch {:.2})", t / ours)),
            );
        }
    }
}

/// A row-major k×n matrix handed to the implicit GEMM through its packer.
struct RowMajorB<'a> {
    b: &'a [f32],
    n: usize,
}

impl PackB for RowMajorB<'_> {
    fn pack(&self, p0: usize, kc: usize, j: usize, end: usize, out: &mut [f32]) {
        let nr = PACKED_B_COLS;
        for (q, panel) in out.chunks_exact_mut(nr * kc).enumerate() {
            for p in 0..kc {
                for c in 0..nr {
                    let col = j + q * nr + c;
                    panel[p * nr + c] = if col < end.min(self.n) {
                        self.b[(p0 + p) * self.n + col]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

#[test]
fn packed_b_entry_matches_naive() {
    if !packed_b_available() {
        return;
    }
    // Tiny, single-threaded, slice-threaded and shared-B threaded sizes; several KC
    // blocks (k > 256) and B blocks (n > 512); edge rows and columns; accumulate; a
    // destination with gaps between rows.
    let shapes = [
        (3, 5, 4),
        (7, 33, 300),
        (64, 1000, 600),
        (130, 70, 20),
        (200, 1100, 700),
    ];
    let mut rng = Lcg(19);
    for (m, n, k) in shapes {
        for acc in [false, true] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.next() as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.next() as f32).collect();
            let ldd = n + 3;
            let init: Vec<f32> = (0..m * ldd).map(|_| rng.next() as f32).collect();
            let mut dst = init.clone();
            let am = MatRef {
                data: &a,
                offset: 0,
                rs: k,
                cs: 1,
            };
            matmul_packed_b(
                m,
                n,
                k,
                am,
                &RowMajorB { b: &b, n },
                &mut dst,
                ldd,
                acc,
                true,
            );
            for i in 0..m {
                for j in 0..ldd {
                    let got = dst[i * ldd + j] as f64;
                    if j >= n {
                        assert_eq!(got, init[i * ldd + j] as f64, "gap touched at ({i}, {j})");
                        continue;
                    }
                    let mut want = if acc { init[i * ldd + j] as f64 } else { 0.0 };
                    for p in 0..k {
                        want += a[i * k + p] as f64 * b[p * n + j] as f64;
                    }
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()) * (k as f64).sqrt(),
                        "m={m} n={n} k={k} acc={acc} ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
