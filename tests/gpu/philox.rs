//! backend::cuda::philox (kernels/philox.cu) vs src/tensor/random.rs (raw Philox4x32-10 words,
//! uniforms, normals) and the image-noise convention of src/pipelines/generate.rs (f64
//! Box–Muller rounded to f32).

use crate::support::*;
use cudarc::driver::CudaSlice;
use medsyn::backend::cuda::philox::{self as gpu_philox, PhiloxLaunch};
use medsyn::cuda::gpu::suffix;
use medsyn::cuda::Gpu;
use medsyn::tensor::{DType, Philox};
use medsyn::Tensor;

const SEEDS: [u64; 4] = [0, 1, 42, u64::MAX];
/// 2^32 − 1 carries into the counter's high word; u64::MAX wraps to 0.
const COUNTERS: [u64; 4] = [0, 7, (1 << 32) - 1, u64::MAX];

/// The block function of random.rs (`philox4x32_10` is private to the crate): a copy, checked
/// below against Random123's known answers and against the crate's own `Philox` draws.
fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        c = [
            ((p1 >> 32) as u32) ^ c[1] ^ k[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [
            k[0].wrapping_add(0x9E37_79B9),
            k[1].wrapping_add(0xBB67_AE85),
        ];
    }
    c
}

/// Word 4b + j of the stream at (seed, counter): block b encrypts counter + b.
fn raw_words(seed: u64, counter: u64, nblocks: usize) -> Vec<u32> {
    (0..nblocks as u64)
        .flat_map(|b| {
            let c = counter.wrapping_add(b);
            philox4x32_10(
                [c as u32, (c >> 32) as u32, 0, 0],
                [seed as u32, (seed >> 32) as u32],
            )
        })
        .collect()
}

/// The reference copy agrees with the crate's generator: known answers, every word's top 24
/// bits through `Philox::uniform`, words 0 and 1 exactly through `Philox::below(u64::MAX)`.
/// Runs with or without a GPU.
#[test]
fn reference_block_function_matches_the_crate() {
    assert_eq!(
        philox4x32_10([0; 4], [0; 2]),
        [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
    );
    assert_eq!(
        philox4x32_10([!0; 4], [!0; 2]),
        [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
    );
    for seed in SEEDS {
        for counter in COUNTERS {
            let words = raw_words(seed, counter, 9);
            let u = Philox::from_state(seed, counter).uniform(36);
            for (w, u) in words.iter().zip(&u) {
                assert_eq!(
                    (w >> 8) as f64 / 16_777_216.0,
                    *u,
                    "seed {seed} counter {counter}"
                );
            }
            for b in 0..9u64 {
                let mut rng = Philox::from_state(seed, counter.wrapping_add(b));
                let wide = rng.below(u64::MAX);
                let (w0, w1) = (words[4 * b as usize], words[4 * b as usize + 1]);
                let want = ((w0 as u64) << 32 | w1 as u64).saturating_sub(1);
                assert_eq!(wide, want, "seed {seed} counter {counter} block {b}");
            }
        }
    }
}

/// One block of 32 threads walking every counter block (launch-shape independence).
const ONE_WARP: PhiloxLaunch = PhiloxLaunch {
    grid: Some(1),
    block: 32,
};

fn raw_on_device(
    g: &Gpu,
    seed: u64,
    counter: u64,
    nblocks: usize,
    launch: PhiloxLaunch,
) -> Vec<u32> {
    let out = g.poisoned::<u32>(4 * nblocks).unwrap();
    let p = g.ptr_of(&out, DType::I32);
    gpu_philox::philox_raw(g, p, nblocks, seed, counter, launch).unwrap();
    g.download(&out).unwrap()
}

#[test]
fn philox_raw_matches_the_block_function() {
    let Some(g) = gpu() else { return };
    // Random123's known answer.
    let got = raw_on_device(g, 0, 0, 1, PhiloxLaunch::default());
    check_exact(
        "philox_raw known-answer",
        &got,
        &[0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
    );
    let nblocks = 1000;
    let mut all_got = Vec::new();
    let mut all_want = Vec::new();
    for seed in SEEDS {
        for counter in COUNTERS {
            all_got.extend(raw_on_device(
                g,
                seed,
                counter,
                nblocks,
                PhiloxLaunch::default(),
            ));
            all_want.extend(raw_words(seed, counter, nblocks));
        }
    }
    check_exact("philox_raw", &all_got, &all_want);
    // Launch-shape independence: one block of 32 threads walks all blocks.
    let one = raw_on_device(g, 42, 7, nblocks, ONE_WARP);
    check_exact(
        "philox_raw grid-independence",
        &one,
        &raw_words(42, 7, nblocks),
    );
}

/// `n` values of `philox_{kind}` in `dt` at (seed, counter) as raw bytes ((lo, hi) for
/// uniforms).
#[allow(clippy::too_many_arguments)]
fn draw(
    g: &Gpu,
    kind: &str,
    dt: DType,
    n: usize,
    seed: u64,
    counter: u64,
    range: Option<(f64, f64)>,
    launch: PhiloxLaunch,
) -> Vec<u8> {
    let out: CudaSlice<u8> = g.poisoned::<u8>(n * elem_size(dt)).unwrap();
    let p = g.ptr_of(&out, dt);
    match (kind, range) {
        ("uniform", Some((lo, hi))) => {
            gpu_philox::philox_uniform(g, p, n, seed, counter, lo, hi, launch).unwrap()
        }
        ("normal", None) => gpu_philox::philox_normal(g, p, n, seed, counter, launch).unwrap(),
        _ => panic!("draw: {kind} with range {range:?}"),
    }
    g.download(&out).unwrap()
}

/// The stored bit patterns of a dtype's elements, widened to u64.
fn bits_of(bytes: &[u8], dt: DType) -> Vec<u64> {
    match dt {
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as u64)
            .collect(),
        _ => bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes(c.try_into().unwrap()) as u64)
            .collect(),
    }
}

/// The CPU tensor's elements as stored bits in `dt`.
fn tensor_bits(t: &Tensor, dt: DType) -> Vec<u64> {
    match dt {
        DType::F64 => t.to_vec::<f64>().iter().map(|v| v.to_bits()).collect(),
        DType::F32 => t.to_vec_f32().iter().map(|v| v.to_bits() as u64).collect(),
        DType::BF16 => t
            .to_vec_f32()
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits() as u64)
            .collect(),
        _ => t
            .to_vec_f32()
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits() as u64)
            .collect(),
    }
}

fn elem_size(dt: DType) -> usize {
    match dt {
        DType::F64 => 8,
        DType::F32 => 4,
        _ => 2,
    }
}

#[test]
fn philox_uniform_is_bit_identical_to_rand_uniform() {
    let Some(g) = gpu() else { return };
    let n = 1_000_003; // the last counter block is partial
    for dt in DTYPES {
        let sfx = suffix(dt).unwrap();
        let mut got = Vec::new();
        let mut want = Vec::new();
        for (i, (seed, counter)) in [
            (0u64, 0u64),
            (42, 7),
            (u64::MAX, (1 << 32) - 1),
            (9, u64::MAX - 3),
        ]
        .into_iter()
        .enumerate()
        {
            let (lo, hi) = [(0.0, 1.0), (-1.0, 1.0), (-3.5, 10.25), (1e-3, 0.7)][i];
            let bytes = draw(
                g,
                "uniform",
                dt,
                n,
                seed,
                counter,
                Some((lo, hi)),
                PhiloxLaunch::default(),
            );
            got.extend(bits_of(&bytes, dt));
            let t = Tensor::rand_uniform(&mut Philox::from_state(seed, counter), lo, hi, &[n], dt)
                .unwrap();
            want.extend(tensor_bits(&t, dt));
        }
        check_exact(&format!("philox_uniform {sfx}"), &got, &want);
        // Launch-shape independence.
        let small = 1001;
        let a = draw(g, "uniform", dt, small, 5, 3, Some((-2.0, 2.0)), ONE_WARP);
        let b = draw(
            g,
            "uniform",
            dt,
            small,
            5,
            3,
            Some((-2.0, 2.0)),
            PhiloxLaunch::default(),
        );
        check_exact(&format!("philox_uniform grid-independence {sfx}"), &a, &b);
    }
}

/// Order-preserving map of IEEE bits (sign-magnitude) to integers, for ulp distances.
fn ordered(bits: u64, dt: DType) -> i128 {
    let sign_bit = 8 * elem_size(dt) as u32 - 1;
    let mag = (bits & !(1u64 << sign_bit)) as i128;
    if bits >> sign_bit & 1 == 1 {
        -mag
    } else {
        mag
    }
}

/// Compares stored bits: `max_ulps` bounds every difference and at most `max_mismatches`
/// elements may differ at all (CUDA's f64 log/sin/cos vs glibc's: see philox.cu). Records
/// the largest ulp distance.
fn check_ulps(
    name: &str,
    dt: DType,
    got: &[u64],
    want: &[u64],
    max_ulps: i128,
    max_mismatches: usize,
) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mut mismatches = 0;
    let mut worst = 0i128;
    let mut first_bad = None;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        if a == b {
            continue;
        }
        mismatches += 1;
        let d = (ordered(a, dt) - ordered(b, dt)).abs();
        worst = worst.max(d);
        if d > max_ulps && first_bad.is_none() {
            first_bad = Some(i);
        }
    }
    let pass = first_bad.is_none() && mismatches <= max_mismatches;
    record(name, pass, worst as f64);
    eprintln!(
        "{name}: {mismatches} of {} elements differ from the CPU (at most {worst} ulp)",
        got.len()
    );
    if let Some(i) = first_bad {
        panic!(
            "{name}: element {i} has bits {:#x}, the CPU {:#x} ({worst} ulp apart at worst)",
            got[i], want[i]
        );
    }
    assert!(
        pass,
        "{name}: {mismatches} elements differ (allowed {max_mismatches})"
    );
}

#[test]
fn philox_normal_matches_randn() {
    let Some(g) = gpu() else { return };
    let n = 1_000_003;
    let cases = [(0u64, 0u64), (42, (1 << 32) - 1), (u64::MAX, u64::MAX - 1)];
    // f64: every value within a few ulp (CUDA's log ≤ 1 ulp, sin/cos ≤ 2 ulp).
    for &(seed, counter) in &cases {
        let bytes = draw(
            g,
            "normal",
            DType::F64,
            n,
            seed,
            counter,
            None,
            PhiloxLaunch::default(),
        );
        let want: Vec<u64> = Philox::from_state(seed, counter)
            .normal(n)
            .iter()
            .map(|v| v.to_bits())
            .collect();
        check_ulps(
            "philox_normal f64",
            DType::F64,
            &bits_of(&bytes, DType::F64),
            &want,
            8,
            n,
        );
    }
    // f32 / bf16 / f16: bit-identical to Tensor::randn but where an f64 value lies within those
    // few ulp of a rounding boundary (~1e-8 per element): at most a handful, one ulp each.
    for dt in DTYPES {
        let sfx = suffix(dt).unwrap();
        let mut got = Vec::new();
        let mut want = Vec::new();
        for &(seed, counter) in &cases {
            let bytes = draw(
                g,
                "normal",
                dt,
                n,
                seed,
                counter,
                None,
                PhiloxLaunch::default(),
            );
            got.extend(bits_of(&bytes, dt));
            let t = Tensor::randn(&mut Philox::from_state(seed, counter), &[n], dt).unwrap();
            want.extend(tensor_bits(&t, dt));
        }
        check_ulps(&format!("philox_normal {sfx}"), dt, &got, &want, 1, 6);
        let small = 1001;
        let a = draw(g, "normal", dt, small, 5, 3, None, ONE_WARP);
        let b = draw(g, "normal", dt, small, 5, 3, None, PhiloxLaunch::default());
        check_exact(&format!("philox_normal grid-independence {sfx}"), &a, &b);
    }
}

/// generate.rs's noise: per image, the first C·h·w normals of Philox(seed) rounded to f32,
/// then the scheduler's noise continuing the same stream (the host advances the counter by
/// ceil(n/4) per draw). Sizes not divisible by 4 make the second draw start on a fresh block.
#[test]
fn philox_normal_f32_reproduces_image_noise() {
    let Some(g) = gpu() else { return };
    let mut got = Vec::new();
    let mut want = Vec::new();
    for (seed, chw) in [
        (0x5EED_0001u64, 4 * 64 * 64),
        (u64::MAX / 3, 3 * 5 * 7),
        (17, 4 * 33 * 17),
    ] {
        let mut rng = Philox::new(seed);
        // The device draws claim their positions from a second host generator.
        let mut dev_rng = Philox::new(seed);
        for _draw in 0..3 {
            let counter = rng.counter();
            assert_eq!(gpu_philox::claim(&mut dev_rng, chw), (seed, counter));
            let bytes = draw(
                g,
                "normal",
                DType::F32,
                chw,
                seed,
                counter,
                None,
                PhiloxLaunch::default(),
            );
            got.extend(bits_of(&bytes, DType::F32));
            want.extend(
                rng.normal(chw)
                    .into_iter()
                    .map(|x| (x as f32).to_bits() as u64),
            );
            assert_eq!(rng.counter(), counter + chw.div_ceil(4) as u64);
            assert_eq!(dev_rng.counter(), rng.counter());
        }
    }
    check_ulps(
        "philox_normal image-noise f32",
        DType::F32,
        &got,
        &want,
        1,
        1,
    );
}

#[test]
fn philox_refuses_short_buffers_wrong_dtypes_and_bad_launches() {
    let Some(g) = gpu() else { return };
    let out = g.poisoned::<u32>(7).unwrap();
    let p = g.ptr_of(&out, DType::I32);
    let d = PhiloxLaunch::default();
    let err = gpu_philox::philox_raw(g, p, 2, 0, 0, d).unwrap_err();
    assert!(err.to_string().contains("output holds 7 elements"), "{err}");
    let err = gpu_philox::philox_raw(g, g.ptr_of(&out, DType::F32), 1, 0, 0, d).unwrap_err();
    assert!(err.to_string().contains("expected I32"), "{err}");
    let f = g.ptr_of(&out, DType::F32);
    let err = gpu_philox::philox_normal(g, f, 8, 0, 0, d).unwrap_err();
    assert!(err.to_string().contains("output holds 7 elements"), "{err}");
    // Integer outputs, f64 uniforms and a 2048-thread block are refused.
    assert!(gpu_philox::philox_normal(g, p, 4, 0, 0, d).is_err());
    let f64p = g.ptr_of(&out, DType::F64);
    assert!(gpu_philox::philox_uniform(g, f64p, 2, 0, 0, 0.0, 1.0, d).is_err());
    let wide = PhiloxLaunch {
        grid: None,
        block: 2048,
    };
    assert!(gpu_philox::philox_normal(g, f, 4, 0, 0, wide).is_err());
}
