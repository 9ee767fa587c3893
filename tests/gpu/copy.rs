//! backend::cuda::copy (kernels/copy.cu) vs CpuStorage::gather + layout::scatter_into: strided
//! copies between permuted, narrowed, broadcast and contiguous views, bit-exact, per dtype.

use crate::support::*;
use half::{bf16, f16};
use medsyn::backend::cuda::copy::strided_copy;
use medsyn::cuda::Gpu;
use medsyn::tensor::{scatter_into, CpuStorage, DType, Layout};

/// The dtypes checked (every element size: 4, 2, 2, 8, 1 bytes), plus i32 and f64.
const COPY_DTYPES: [DType; 7] = [
    DType::F32,
    DType::BF16,
    DType::F16,
    DType::I64,
    DType::U8,
    DType::I32,
    DType::F64,
];

/// `len` random elements of `dtype` (floats from uniform(), integers over their whole range).
fn random_storage(dtype: DType, len: usize, seed: u64) -> CpuStorage {
    let u = uniform(seed, len, -1000.0, 1000.0);
    match dtype {
        DType::F32 => CpuStorage::F32(u),
        DType::F64 => CpuStorage::F64(u.iter().map(|&x| x as f64 / 3.0).collect()),
        DType::BF16 => CpuStorage::BF16(u.iter().map(|&x| bf16::from_f32(x)).collect()),
        DType::F16 => CpuStorage::F16(u.iter().map(|&x| f16::from_f32(x / 20.0)).collect()),
        DType::I64 => CpuStorage::I64(
            u.iter()
                .map(|&x| ((x as f64 * 9.2e15) as i64) ^ 0x5a5a)
                .collect(),
        ),
        DType::I32 => CpuStorage::I32(u.iter().map(|&x| (x * 2.1e6) as i32).collect()),
        DType::U8 => CpuStorage::U8(u.iter().map(|&x| (x.abs() as u32 % 251) as u8).collect()),
    }
}

/// Each element's bits, zero-extended to u64 (little-endian bytes of `size` each).
fn elements(bytes: &[u8], size: usize) -> Vec<u64> {
    bytes
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect()
}

/// One copy: the source view and the destination view (storage sized from their extents).
struct Case {
    name: &'static str,
    src: Layout,
    dst: Layout,
}

fn contiguous_at(shape: &[usize], offset: usize) -> Layout {
    let c = Layout::contiguous(shape);
    Layout::new(c.shape().to_vec(), c.strides().to_vec(), offset)
}

/// The cases: permuted, narrowed (offset), broadcast sources; contiguous, narrowed (cat-like)
/// and transposed destinations; odd sizes; ranks 0..8; an empty shape.
fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let c = |shape: &[usize]| Layout::contiguous(shape);
    // Rank 1 plain copy between offset pointers (odd size, several blocks).
    v.push(Case {
        name: "plain",
        src: contiguous_at(&[100_003], 3),
        dst: contiguous_at(&[100_003], 5),
    });
    // contiguous() of a permuted [3,5,7] view.
    v.push(Case {
        name: "permuted",
        src: c(&[3, 5, 7]).permute(&[2, 0, 1]).unwrap(),
        dst: c(&[7, 3, 5]),
    });
    // A narrowed window of [6, 9, 11].
    v.push(Case {
        name: "narrowed",
        src: c(&[6, 9, 11])
            .narrow(1, 2, 5)
            .unwrap()
            .narrow(2, 1, 9)
            .unwrap(),
        dst: c(&[6, 5, 9]),
    });
    // A broadcast [1, 7, 1] → [5, 7, 3], itself offset in its storage.
    v.push(Case {
        name: "broadcast",
        src: contiguous_at(&[1, 7, 1], 4)
            .broadcast_to(&[5, 7, 3])
            .unwrap(),
        dst: c(&[5, 7, 3]),
    });
    // cat: a [4, 6] input into columns 5..11 of a [4, 13] output.
    v.push(Case {
        name: "cat slice",
        src: c(&[4, 6]),
        dst: c(&[4, 13]).narrow(1, 5, 6).unwrap(),
    });
    // A contiguous source into a transposed destination view, large and odd.
    v.push(Case {
        name: "transposed dst",
        src: c(&[257, 131]),
        dst: c(&[131, 257]).permute(&[1, 0]).unwrap(),
    });
    // Permuted source, narrowed + permuted destination.
    v.push(Case {
        name: "permuted to narrowed",
        src: c(&[8, 3, 10]).permute(&[1, 2, 0]).unwrap(),
        dst: c(&[12, 3, 9])
            .permute(&[1, 0, 2])
            .unwrap()
            .narrow(1, 1, 10)
            .unwrap()
            .narrow(2, 0, 8)
            .unwrap(),
    });
    // Rank 8 that merges to nothing smaller (reversed dims), odd sizes.
    let shape8 = [2, 3, 1, 2, 3, 2, 1, 3];
    v.push(Case {
        name: "rank 8 reversed",
        src: c(&shape8).permute(&[7, 6, 5, 4, 3, 2, 1, 0]).unwrap(),
        dst: c(&[3, 1, 2, 3, 2, 1, 3, 2]),
    });
    // Rank 8 with a broadcast source dim and a narrowed destination.
    v.push(Case {
        name: "rank 8 broadcast",
        src: c(&[3, 2, 1, 2, 3, 2, 3, 2])
            .permute(&[1, 0, 3, 2, 5, 4, 7, 6])
            .unwrap()
            .broadcast_to(&[2, 3, 2, 2, 2, 3, 2, 3])
            .unwrap(),
        dst: c(&[2, 3, 2, 2, 2, 3, 2, 5]).narrow(7, 1, 3).unwrap(),
    });
    // A one-element (rank 0) copy and an empty one.
    v.push(Case {
        name: "scalar",
        src: Layout::new(vec![], vec![], 7),
        dst: Layout::new(vec![], vec![], 2),
    });
    v.push(Case {
        name: "empty",
        src: c(&[4, 0, 3]),
        dst: c(&[4, 0, 3]),
    });
    v
}

/// The destination buffer (all bytes 0xff, `dst_len` elements) after the copy, by the CPU twin.
fn reference(src: &CpuStorage, case: &Case, dst_len: usize) -> Vec<u64> {
    let size = src.dtype().size_in_bytes();
    let gathered = elements(src.gather(&case.src).as_bytes(), size);
    let poison = if size == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    };
    let mut want = vec![poison; dst_len];
    scatter_into(&mut want, &case.dst, &gathered);
    want
}

fn run_case(g: &Gpu, case: &Case, dtype: DType, seed: u64) {
    let size = dtype.size_in_bytes();
    // Storage a little longer than the views need (checks nothing past the extent changes).
    let src_len = case.src.storage_extent() + 3;
    let dst_len = case.dst.storage_extent() + 3;
    let src = random_storage(dtype, src_len, seed);
    let want = reference(&src, case, dst_len);

    let src_dev = g.upload(src.as_bytes()).unwrap();
    let dst_dev = g.poisoned::<u8>(dst_len * size).unwrap();
    let (sp, dp) = (g.ptr_of(&src_dev, dtype), g.ptr_of(&dst_dev, dtype));
    assert_eq!((sp.len, dp.len), (src_len, dst_len));
    strided_copy(g, sp, &case.src, dp, &case.dst).unwrap();
    let got = elements(&g.download(&dst_dev).unwrap(), size);
    let name = format!("strided_copy_b{size} {:?} {}", dtype, case.name);
    check_exact(&name, &got, &want);
}

#[test]
fn strided_copy_matches_gather_and_scatter() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        for (j, &dtype) in COPY_DTYPES.iter().enumerate() {
            let what = format!("{} {dtype:?}", case.name);
            soft(&mut fails, what, || {
                run_case(g, case, dtype, 1000 + 10 * i as u64 + j as u64)
            });
        }
    }
    finish(fails);
}

#[test]
fn strided_copy_refuses_bad_arguments() {
    let Some(g) = gpu() else { return };
    let src = g.upload(&[0u8; 96]).unwrap(); // 24 f32
    let dst = g.poisoned::<u8>(96).unwrap();
    let (sp, dp) = (g.ptr_of(&src, DType::F32), g.ptr_of(&dst, DType::F32));
    let l = Layout::contiguous(&[4, 6]);
    let err = |r: medsyn::Result<()>| r.unwrap_err().to_string();

    let e = err(strided_copy(g, sp, &l, dp, &Layout::contiguous(&[6, 4])));
    assert!(e.contains("differs from destination shape"), "{e}");
    let e = err(strided_copy(g, sp, &l, g.ptr_of(&dst, DType::BF16), &l));
    assert!(e.contains("expected F32"), "{e}");
    let short = g.ptr_of(&dst, DType::F32).offset(1).unwrap();
    let e = err(strided_copy(g, sp, &l, short, &l));
    assert!(e.contains("destination holds 23 elements"), "{e}");
    let e = err(strided_copy(
        g,
        sp,
        &l.narrow(1, 1, 5).unwrap(),
        dp,
        &contiguous_at(&[4, 5], 5),
    ));
    assert!(e.contains("destination holds 24 elements"), "{e}");
    let bcast = Layout::new(vec![4, 6], vec![0, 1], 0);
    let e = err(strided_copy(g, sp, &l, dp, &bcast));
    assert!(e.contains("stride 0"), "{e}");
    // The refusals launched nothing: the destination is still all 0xff.
    assert!(g.download(&dst).unwrap().iter().all(|&b| b == 0xff));
    // A good copy afterwards works.
    strided_copy(g, sp, &l, dp, &l).unwrap();
    assert!(g.download(&dst).unwrap().iter().all(|&b| b == 0));
}
