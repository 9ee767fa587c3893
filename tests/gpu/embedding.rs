//! backend::cuda::embedding (kernels/embedding.cu) vs src/ops/embedding.rs (row gather,
//! out-of-range ids, scatter-add backward into an f32 table gradient).

use crate::support::*;
use medsyn::backend::cuda::embedding as gpu_embedding;
use medsyn::cuda::gpu::{suffix, Ptr};
use medsyn::cuda::Gpu;
use medsyn::tensor::DType;
use medsyn::Tensor;

/// (vocab, dim, ld, n_ids): 16-byte rows (packed), a dim no vector width divides, a table
/// viewed with row stride ld > dim (packed), a tiny unaligned one, a row wider than a block.
const CASES: [(usize, usize, usize, usize); 5] = [
    (97, 64, 64, 1001),
    (50, 77, 77, 333),
    (31, 40, 48, 129),
    (13, 3, 5, 17),
    (7, 2056, 2056, 45),
];

/// Ids in [0, vocab) (each repeated about n_ids/vocab times), deterministic in `seed`.
fn ids_for(seed: u64, n: usize, vocab: usize) -> Vec<i64> {
    uniform(seed, n, 0.0, vocab as f32)
        .into_iter()
        .map(|u| (u as i64).min(vocab as i64 - 1))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run_forward(
    g: &Gpu,
    dt: DType,
    ids: &[i64],
    table: &[f32],
    vocab: usize,
    dim: usize,
    ld: usize,
    bad: Option<&mut cudarc::driver::CudaSlice<i32>>,
) -> Vec<f32> {
    let n_ids = ids.len();
    let idd = g.upload(ids).unwrap();
    let wd = g.upload_as(table, dt).unwrap();
    let out = g.poisoned_as(n_ids * dim, dt).unwrap();
    let flag = match bad {
        Some(flag) => g.ptr_of(flag, DType::I32),
        None => Ptr::null(DType::I32),
    };
    let ids_p = g.ptr_of(&idd, DType::I64);
    gpu_embedding::embedding(g, ids_p, wd.ptr(), out.ptr(), flag, n_ids, vocab, dim, ld).unwrap();
    g.download_f32(&out).unwrap()
}

#[test]
fn embedding_forward_matches_cpu() {
    let Some(g) = gpu() else { return };
    for (case, &(vocab, dim, ld, n_ids)) in CASES.iter().enumerate() {
        for dt in DTYPES {
            let seed = 700 + case as u64;
            let table = uniform_as(seed, vocab * ld, -2.0, 2.0, dt);
            let ids = ids_for(seed + 1, n_ids, vocab);
            // The CPU twin gathers through the strided [vocab, dim] view of the [vocab, ld] table.
            let wt = Tensor::from_values(table.clone(), &[vocab, ld], dt).unwrap();
            let wt = wt.narrow(1, 0, dim).unwrap();
            let it = Tensor::from_i64(ids.clone(), &[n_ids]).unwrap();
            let want = Tensor::embedding(&it, &wt).unwrap().to_vec_f32();

            let mut flag = g.zeros::<i32>(1).unwrap();
            let got = run_forward(g, dt, &ids, &table, vocab, dim, ld, Some(&mut flag));
            // A copy: bit-identical.
            check("embedding", dt, &got, &want, 0.0, 0.0);
            let name = format!("embedding bad_id {}", suffix(dt).unwrap());
            check_exact(&name, &g.download(&flag).unwrap(), &[0]);
            // Without the flag pointer (nullable) the rows are the same.
            let got = run_forward(g, dt, &ids, &table, vocab, dim, ld, None);
            check("embedding", dt, &got, &want, 0.0, 0.0);
        }
    }
}

#[test]
fn embedding_out_of_range_ids_write_zeros_and_set_the_flag() {
    let Some(g) = gpu() else { return };
    let (vocab, dim) = (11, 24);
    for dt in DTYPES {
        let table = uniform_as(750, vocab * dim, -2.0, 2.0, dt);
        let ids: Vec<i64> = vec![3, -1, 10, 11, 0, i64::MAX, 5, i64::MIN, 7];
        // The CPU twin rejects the bad ids with an error.
        let wt = Tensor::from_values(table.clone(), &[vocab, dim], dt).unwrap();
        let it = Tensor::from_i64(ids.clone(), &[ids.len()]).unwrap();
        assert!(Tensor::embedding(&it, &wt).is_err());
        // On the device: a row of zeros for each bad id, the good rows gathered, the flag set.
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&id| {
                if (0..vocab as i64).contains(&id) {
                    table[id as usize * dim..(id as usize + 1) * dim].to_vec()
                } else {
                    vec![0.0; dim]
                }
            })
            .collect();
        let mut flag = g.zeros::<i32>(1).unwrap();
        let got = run_forward(g, dt, &ids, &table, vocab, dim, dim, Some(&mut flag));
        check("embedding/bad_ids", dt, &got, &want, 0.0, 0.0);
        let name = format!("embedding bad_id set {}", suffix(dt).unwrap());
        check_exact(&name, &g.download(&flag).unwrap(), &[1]);
    }
}

#[test]
fn embedding_backward_matches_cpu() {
    let Some(g) = gpu() else { return };
    for (case, &(vocab, dim, _, n_ids)) in CASES.iter().enumerate() {
        for dt in DTYPES {
            let seed = 800 + case as u64;
            let mut ids = ids_for(seed + 1, n_ids, vocab);
            let gy = uniform_as(seed + 2, n_ids * dim, -1.0, 1.0, dt);

            // CPU twin: EmbeddingBack on an f32 table (the kernel accumulates in f32 whatever
            // the table's dtype; the launch side casts afterwards), fed the rounded gradient.
            let wt = Tensor::from_values(vec![0.0f32; vocab * dim], &[vocab, dim], DType::F32)
                .unwrap()
                .into_param()
                .unwrap();
            let it = Tensor::from_i64(ids.clone(), &[n_ids]).unwrap();
            let out = Tensor::embedding(&it, &wt).unwrap();
            let gt = Tensor::from_values(gy.clone(), &[n_ids, dim], DType::F32).unwrap();
            out.backward_with(&gt).unwrap();
            let want = wt.grad().unwrap().to_vec_f32();

            // The device skips out-of-range ids: add some, with garbage gradient rows.
            let mut gy_dev = gy.clone();
            for bad in [-1i64, vocab as i64, i64::MIN] {
                ids.push(bad);
                gy_dev.extend(uniform_as(seed + 3, dim, 100.0, 200.0, dt));
            }
            let n_dev = ids.len();
            let idd = g.upload(&ids).unwrap();
            let gd = g.upload_as(&gy_dev, dt).unwrap();
            let dw = g.zeros::<f32>(vocab * dim).unwrap();
            let ids_p = g.ptr_of(&idd, DType::I64);
            let dw_p = g.ptr_of(&dw, DType::F32);
            gpu_embedding::embedding_backward(g, ids_p, gd.ptr(), dw_p, n_dev, vocab, dim).unwrap();
            let got = g.download(&dw).unwrap();
            // f32 sums of up to `reps` rows in another order (atomics).
            let reps = (0..vocab)
                .map(|v| ids.iter().filter(|&&i| i == v as i64).count())
                .max()
                .unwrap_or(1);
            check(
                "embedding_backward",
                dt,
                &got,
                &want,
                2e-7 * reps as f64,
                1e-6,
            );
        }
    }
}

#[test]
fn embedding_refuses_short_buffers_and_wrong_dtypes() {
    let Some(g) = gpu() else { return };
    let dt = DType::F32;
    let ids = g.upload(&[0i64, 1, 2]).unwrap();
    let ids_p = g.ptr_of(&ids, DType::I64);
    let w = g.upload_as(&[0.0; 12], dt).unwrap();
    let out = g.poisoned_as(11, dt).unwrap();
    let null = Ptr::null(DType::I32);
    let err = gpu_embedding::embedding(g, ids_p, w.ptr(), out.ptr(), null, 3, 3, 4, 4).unwrap_err();
    assert!(
        err.to_string().contains("output holds 11 elements"),
        "{err}"
    );
    // A table one row short of vocab = 4.
    let out = g.poisoned_as(12, dt).unwrap();
    let err = gpu_embedding::embedding(g, ids_p, w.ptr(), out.ptr(), null, 3, 4, 4, 4).unwrap_err();
    assert!(
        err.to_string().contains("weight holds 12 elements"),
        "{err}"
    );
    // i32 ids, a bf16 output for an f32 table, a bf16 gradient table.
    let ids32 = g.ptr_of(&ids, DType::I32);
    let err = gpu_embedding::embedding(g, ids32, w.ptr(), out.ptr(), null, 3, 3, 4, 4).unwrap_err();
    assert!(err.to_string().contains("expected I64"), "{err}");
    let outh = g.poisoned_as(12, DType::BF16).unwrap();
    let err =
        gpu_embedding::embedding(g, ids_p, w.ptr(), outh.ptr(), null, 3, 3, 4, 4).unwrap_err();
    assert!(err.to_string().contains("expected BF16"), "{err}");
    let err =
        gpu_embedding::embedding_backward(g, ids_p, w.ptr(), outh.ptr(), 3, 3, 4).unwrap_err();
    assert!(err.to_string().contains("expected F32"), "{err}");
}
