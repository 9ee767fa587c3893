//! LayerNorm, GroupNorm(+SiLU), BatchNorm, (log-)softmax, scaled dot-product attention
//! and embedding: outputs and gradients against PyTorch fixtures (f32 and bf16),
//! f64 finite-difference gradchecks, frozen inputs, fully masked attention rows and
//! bad-input errors. Fixtures: scripts/fixtures/norm_attention.py.

mod common;
use common::*;
use medsyn::ops::attention::{scaled_dot_product_attention as sdpa, AttentionMask};
use medsyn::ops::embedding::embedding;
use medsyn::tensor::Philox;
use medsyn::{DType, Result, Tensor};
use std::sync::OnceLock;

const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| Fixture::load("norm_attention"))
}

/// Tolerance relative to the reference's scale: f32 rounding, or bf16 inputs.
fn rtol(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 2e-2,
        other => tol(other),
    }
}

/// A fixture input as the test dtype: integer tensors as stored, running stats as
/// frozen f32 buffers, everything else as a trainable leaf of `dtype`.
fn input(key: &str, role: &str, dtype: DType) -> Tensor {
    let t = fixture().get(key);
    if !t.dtype().is_float() {
        t
    } else if role.starts_with("running") {
        t.to_dtype(DType::F32).unwrap()
    } else {
        fixture().param(key, dtype)
    }
}

/// Run one fixture case in `dtype`: compare the output and the gradient of
/// sum(out · wsum) of every input the fixture has a gradient for. Returns the inputs.
fn check_case(
    case: &str,
    keys: &[(&str, &str)],
    dtype: DType,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Vec<Tensor> {
    let fx = fixture();
    let inputs: Vec<Tensor> = keys
        .iter()
        .map(|(role, key)| input(key, role, dtype))
        .collect();
    let what = format!("{case} {dtype}");
    let y = f(&inputs).unwrap();
    assert_eq!(y.dtype(), dtype, "{what}: output dtype");
    assert_scaled(
        &y,
        &fx.get(&format!("{case}.out")),
        rtol(dtype),
        1e-3,
        &format!("{what} output"),
    );
    y.mul(&fx.get(&format!("{case}.wsum")))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for ((role, _), t) in keys.iter().zip(&inputs) {
        let key = format!("{case}.grad.{role}");
        if fx.has(&key) {
            let g = t
                .grad()
                .unwrap_or_else(|| panic!("{what}: no gradient for {role}"));
            assert_scaled(
                &g,
                &fx.get(&key),
                rtol(dtype),
                1e-3,
                &format!("{what} grad {role}"),
            );
        } else {
            assert!(t.grad().is_none(), "{what}: {role} must get no gradient");
        }
    }
    inputs
}

fn ln_keys(w: Option<&'static str>, b: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
    let mut k = vec![("x", "ln.x")];
    k.extend(w.map(|w| ("weight", w)));
    k.extend(b.map(|b| ("bias", b)));
    k
}

#[test]
fn layer_norm_matches_pytorch() {
    for dtype in [DType::F32, DType::BF16] {
        let keys = ln_keys(Some("ln.weight"), Some("ln.bias"));
        check_case("ln_affine", &keys, dtype, |t| {
            t[0].layer_norm(1, Some(&t[1]), Some(&t[2]), EPS)
        });
        let keys = ln_keys(Some("ln.weight2d"), Some("ln.bias2d"));
        check_case("ln_2d", &keys, dtype, |t| {
            t[0].layer_norm(2, Some(&t[1]), Some(&t[2]), EPS)
        });
        let keys = ln_keys(Some("ln.weight"), None);
        check_case("ln_weight_only", &keys, dtype, |t| {
            t[0].layer_norm(1, Some(&t[1]), None, EPS)
        });
        check_case("ln_plain", &ln_keys(None, None), dtype, |t| {
            t[0].layer_norm(1, None, None, EPS)
        });
    }
}

#[test]
fn group_norm_and_group_norm_silu_match_pytorch() {
    for dtype in [DType::F32, DType::BF16] {
        for (tag, groups) in [("gn4d", 3), ("gn3d", 2)] {
            let (x, w, b) = (
                format!("{tag}.x"),
                format!("{tag}.weight"),
                format!("{tag}.bias"),
            );
            let keys = [
                ("x", x.as_str()),
                ("weight", w.as_str()),
                ("bias", b.as_str()),
            ];
            check_case(tag, &keys, dtype, |t| {
                t[0].group_norm(groups, Some(&t[1]), Some(&t[2]), EPS)
            });
            check_case(&format!("{tag}_silu"), &keys, dtype, |t| {
                t[0].group_norm_silu(groups, Some(&t[1]), Some(&t[2]), EPS)
            });
        }
        let keys = [("x", "gn_plain.x")];
        check_case("gn_plain", &keys, dtype, |t| {
            t[0].group_norm(2, None, None, EPS)
        });
        check_case("gn_plain_silu", &keys, dtype, |t| {
            t[0].group_norm_silu(2, None, None, EPS)
        });
    }
}

#[test]
fn batch_norm_matches_pytorch_in_training_and_eval() {
    let fx = fixture();
    assert_eq!(fx.scalar("bn.momentum"), MOMENTUM);
    assert_eq!(fx.scalar("eps"), EPS);
    let stats = [
        ("running_mean", "bn.running_mean"),
        ("running_var", "bn.running_var"),
    ];
    for dtype in [DType::F32, DType::BF16] {
        let mut keys = vec![
            ("x", "bn.x4d"),
            ("weight", "bn.weight"),
            ("bias", "bn.bias"),
        ];
        keys.extend(stats);
        let t = check_case("bn_train", &keys, dtype, |t| {
            t[0].batch_norm(
                Some(&t[3]),
                Some(&t[4]),
                Some(&t[1]),
                Some(&t[2]),
                true,
                MOMENTUM,
                EPS,
            )
        });
        // Running stats were updated once, in place (var with the unbiased estimate).
        assert_scaled(
            &t[3],
            &fx.get("bn_train.new_running_mean"),
            rtol(dtype),
            1e-3,
            "running mean update",
        );
        assert_scaled(
            &t[4],
            &fx.get("bn_train.new_running_var"),
            rtol(dtype),
            1e-3,
            "running var update",
        );
        check_case("bn_train_plain", &[("x", "bn.x2d")], dtype, |t| {
            t[0].batch_norm(None, None, None, None, true, MOMENTUM, EPS)
        });
        let mut keys = vec![
            ("x", "bn.x3d"),
            ("weight", "bn.weight"),
            ("bias", "bn.bias"),
        ];
        keys.extend(stats);
        let t = check_case("bn_eval", &keys, dtype, |t| {
            t[0].batch_norm(
                Some(&t[3]),
                Some(&t[4]),
                Some(&t[1]),
                Some(&t[2]),
                false,
                MOMENTUM,
                EPS,
            )
        });
        // Eval mode leaves the running stats alone.
        assert_scaled(
            &t[3],
            &fx.get("bn.running_mean"),
            0.0,
            1e-3,
            "eval keeps running mean",
        );
        assert_scaled(
            &t[4],
            &fx.get("bn.running_var"),
            0.0,
            1e-3,
            "eval keeps running var",
        );
        let keys = [("x", "bn.x3d"), stats[0], stats[1]];
        check_case("bn_eval_plain", &keys, dtype, |t| {
            t[0].batch_norm(Some(&t[1]), Some(&t[2]), None, None, false, MOMENTUM, EPS)
        });
    }
}

#[test]
fn softmax_and_log_softmax_match_pytorch() {
    for dtype in [DType::F32, DType::BF16] {
        for d in 0..3isize {
            // Dim 2 is also reached as -1.
            let dim = if d == 2 { -1 } else { d };
            check_case(&format!("sm_d{d}"), &[("x", "sm.x")], dtype, |t| {
                t[0].softmax(dim)
            });
            check_case(&format!("lsm_d{d}"), &[("x", "sm.x")], dtype, |t| {
                t[0].log_softmax(dim)
            });
        }
    }
    // Logits of scale 60 overflow exp() in f32 without max-subtraction. (Not run in
    // bf16: rounding such logits to bf16 moves them by ~0.25, which changes the
    // reference itself beyond any fixed tolerance.)
    check_case("sm_big", &[("x", "sm.big")], DType::F32, |t| {
        t[0].softmax(-1)
    });
    check_case("lsm_big", &[("x", "sm.big")], DType::F32, |t| {
        t[0].log_softmax(-1)
    });
}

type AttnCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    bool,
    Option<f64>,
);

/// (case, q/k/v key prefix, key-padding key, additive key, causal, scale)
const ATTN_CASES: [AttnCase; 10] = [
    ("att_none", "att", None, None, false, None),
    ("att_causal", "att", None, None, true, None),
    ("att_kpad", "att", Some("att.keep"), None, false, None),
    (
        "att_causal_kpad",
        "att",
        Some("att.keep_ck"),
        None,
        true,
        None,
    ),
    (
        "att_kpad_full",
        "att",
        Some("att.keep_full"),
        None,
        false,
        None,
    ),
    ("att_additive", "att", None, Some("att.bias4d"), false, None),
    (
        "att_causal_additive2d",
        "att",
        None,
        Some("att.bias2d"),
        true,
        None,
    ),
    (
        "att_cross",
        "att_cross",
        Some("att_cross.keep"),
        None,
        false,
        Some(0.3),
    ),
    ("att_cross_causal", "att_cross", None, None, true, None),
    (
        "att_long",
        "att_long",
        Some("att_long.keep"),
        None,
        true,
        None,
    ),
];

#[test]
fn attention_matches_pytorch_for_every_mask() {
    for dtype in [DType::F32, DType::BF16] {
        for (case, prefix, keep, bias, causal, scale) in ATTN_CASES {
            let (q, k, v) = (
                format!("{prefix}.q"),
                format!("{prefix}.k"),
                format!("{prefix}.v"),
            );
            let mut keys = vec![("q", q.as_str()), ("k", k.as_str()), ("v", v.as_str())];
            keys.extend(keep.map(|kp| ("keep", kp)));
            keys.extend(bias.map(|b| ("bias", b)));
            check_case(case, &keys, dtype, |t| {
                let mut mask = AttentionMask {
                    causal,
                    ..AttentionMask::none()
                };
                let mut extra = t[3..].iter();
                if keep.is_some() {
                    mask = mask.with_key_padding(extra.next().unwrap());
                }
                if bias.is_some() {
                    mask = mask.with_additive(extra.next().unwrap());
                }
                sdpa(&t[0], &t[1], &t[2], mask, scale)
            });
        }
    }
}

#[test]
fn embedding_matches_pytorch_and_accepts_i32_ids() {
    for dtype in [DType::F32, DType::BF16] {
        let keys = [("ids", "emb.ids"), ("weight", "emb.weight")];
        let t = check_case("emb", &keys, dtype, |t| embedding(&t[0], &t[1]));
        let ids32 = t[0].to_dtype(DType::I32).unwrap();
        let y = Tensor::embedding(&ids32, &t[1]).unwrap();
        assert_eq!(y.shape(), &[2, 3, 4]);
        assert_scaled(
            &y,
            &fixture().get("emb.out"),
            rtol(dtype),
            1e-3,
            "embedding with i32 ids",
        );
    }
}

#[test]
fn norm_gradients_match_finite_differences() {
    let mut rng = Philox::new(11);
    let x = rand_leaf(&mut rng, &[3, 4, 5]);
    let (w, b) = (rand_leaf(&mut rng, &[5]), rand_leaf(&mut rng, &[5]));
    let (w2, b2) = (rand_leaf(&mut rng, &[4, 5]), rand_leaf(&mut rng, &[4, 5]));
    assert_gradcheck(
        "layer_norm affine",
        |t| t[0].layer_norm(1, Some(&t[1]), Some(&t[2]), EPS),
        &[x.clone(), w.clone(), b.clone()],
    );
    assert_gradcheck(
        "layer_norm 2 dims",
        |t| t[0].layer_norm(2, Some(&t[1]), Some(&t[2]), EPS),
        &[x.clone(), w2, b2],
    );
    assert_gradcheck(
        "layer_norm weight only",
        |t| t[0].layer_norm(1, Some(&t[1]), None, EPS),
        &[x.clone(), w.clone()],
    );
    assert_gradcheck(
        "layer_norm plain",
        |t| t[0].layer_norm(3, None, None, EPS),
        std::slice::from_ref(&x),
    );

    let g4 = rand_leaf(&mut rng, &[2, 6, 3, 2]);
    let (gw, gb) = (rand_leaf(&mut rng, &[6]), rand_leaf(&mut rng, &[6]));
    let gn_in = [g4.clone(), gw.clone(), gb.clone()];
    assert_gradcheck(
        "group_norm",
        |t| t[0].group_norm(3, Some(&t[1]), Some(&t[2]), EPS),
        &gn_in,
    );
    assert_gradcheck(
        "group_norm_silu",
        |t| t[0].group_norm_silu(3, Some(&t[1]), Some(&t[2]), EPS),
        &gn_in,
    );
    let g3 = rand_leaf(&mut rng, &[2, 4, 5]);
    assert_gradcheck(
        "group_norm plain",
        |t| t[0].group_norm(2, None, None, EPS),
        std::slice::from_ref(&g3),
    );
    assert_gradcheck(
        "group_norm_silu plain",
        |t| t[0].group_norm_silu(4, None, None, EPS),
        std::slice::from_ref(&g3),
    );

    let bx = rand_leaf(&mut rng, &[4, 3, 2, 2]);
    let (bw, bb) = (rand_leaf(&mut rng, &[3]), rand_leaf(&mut rng, &[3]));
    let rm = Tensor::rand_uniform(&mut rng, -0.5, 0.5, &[3], DType::F64).unwrap();
    let rv = Tensor::rand_uniform(&mut rng, 0.5, 1.5, &[3], DType::F64).unwrap();
    let bn_in = [bx.clone(), bw, bb];
    assert_gradcheck(
        "batch_norm train",
        |t| {
            t[0].batch_norm(
                Some(&rm),
                Some(&rv),
                Some(&t[1]),
                Some(&t[2]),
                true,
                MOMENTUM,
                EPS,
            )
        },
        &bn_in,
    );
    assert_gradcheck(
        "batch_norm train plain",
        |t| t[0].batch_norm(None, None, None, None, true, MOMENTUM, EPS),
        std::slice::from_ref(&bx),
    );
    assert_gradcheck(
        "batch_norm eval",
        |t| {
            t[0].batch_norm(
                Some(&rm),
                Some(&rv),
                Some(&t[1]),
                Some(&t[2]),
                false,
                MOMENTUM,
                EPS,
            )
        },
        &bn_in,
    );
    assert_gradcheck(
        "batch_norm eval plain",
        |t| t[0].batch_norm(Some(&rm), Some(&rv), None, None, false, MOMENTUM, EPS),
        std::slice::from_ref(&bx),
    );
    let b2d = rand_leaf(&mut rng, &[5, 3]);
    assert_gradcheck(
        "batch_norm [N, C]",
        |t| t[0].batch_norm(None, None, None, None, true, MOMENTUM, EPS),
        &[b2d],
    );
}

#[test]
fn softmax_gradients_match_finite_differences() {
    let mut rng = Philox::new(12);
    let x = rand_leaf(&mut rng, &[3, 4, 5])
        .affine(3.0, 0.0)
        .unwrap()
        .detach()
        .into_param()
        .unwrap();
    for dim in [0isize, 1, -1] {
        assert_gradcheck(
            &format!("softmax dim {dim}"),
            |t| t[0].softmax(dim),
            std::slice::from_ref(&x),
        );
        assert_gradcheck(
            &format!("log_softmax dim {dim}"),
            |t| t[0].log_softmax(dim),
            std::slice::from_ref(&x),
        );
    }
}

fn keep_mask(rows: &[&[i64]]) -> Tensor {
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_i64(flat, &[rows.len(), rows[0].len()]).unwrap()
}

#[test]
fn attention_gradients_match_finite_differences() {
    let mut rng = Philox::new(13);
    let (q, k, v) = (
        rand_leaf(&mut rng, &[2, 2, 4, 3]),
        rand_leaf(&mut rng, &[2, 2, 4, 3]),
        rand_leaf(&mut rng, &[2, 2, 4, 2]),
    );
    let qkv = [q.clone(), k.clone(), v.clone()];
    let keep = keep_mask(&[&[1, 1, 0, 1], &[0, 1, 1, 0]]);
    let full = keep_mask(&[&[1, 0, 1, 1], &[0, 0, 0, 0]]);
    assert_gradcheck(
        "sdpa none",
        |t| sdpa(&t[0], &t[1], &t[2], AttentionMask::none(), None),
        &qkv,
    );
    assert_gradcheck(
        "sdpa causal",
        |t| sdpa(&t[0], &t[1], &t[2], AttentionMask::causal(), None),
        &qkv,
    );
    assert_gradcheck(
        "sdpa key padding",
        |t| sdpa(&t[0], &t[1], &t[2], AttentionMask::key_padding(&keep), None),
        &qkv,
    );
    assert_gradcheck(
        "sdpa causal + key padding (one fully masked row)",
        |t| {
            sdpa(
                &t[0],
                &t[1],
                &t[2],
                AttentionMask::causal().with_key_padding(&keep),
                None,
            )
        },
        &qkv,
    );
    assert_gradcheck(
        "sdpa fully padded batch row",
        |t| {
            sdpa(
                &t[0],
                &t[1],
                &t[2],
                AttentionMask::key_padding(&full),
                Some(0.7),
            )
        },
        &qkv,
    );
    let bias4 = rand_leaf(&mut rng, &[2, 1, 4, 4]);
    let with_bias = [q.clone(), k.clone(), v.clone(), bias4];
    assert_gradcheck(
        "sdpa additive [B,1,Lq,Lk] (bias gets a gradient)",
        |t| sdpa(&t[0], &t[1], &t[2], AttentionMask::additive(&t[3]), None),
        &with_bias,
    );
    let bias2 = rand_leaf(&mut rng, &[4]);
    let with_bias2 = [q.clone(), k.clone(), v.clone(), bias2];
    assert_gradcheck(
        "sdpa causal + additive [Lk] + padding",
        |t| {
            sdpa(
                &t[0],
                &t[1],
                &t[2],
                AttentionMask::causal()
                    .with_additive(&t[3])
                    .with_key_padding(&keep),
                None,
            )
        },
        &with_bias2,
    );
    // Cross-attention, Lq != Lk and Dv != D, custom scale; causal with Lq < Lk.
    let (qc, kc, vc) = (
        rand_leaf(&mut rng, &[1, 2, 3, 4]),
        rand_leaf(&mut rng, &[1, 2, 6, 4]),
        rand_leaf(&mut rng, &[1, 2, 6, 5]),
    );
    let cross = [qc, kc, vc];
    assert_gradcheck(
        "sdpa cross",
        |t| sdpa(&t[0], &t[1], &t[2], AttentionMask::none(), Some(0.3)),
        &cross,
    );
    assert_gradcheck(
        "sdpa cross causal",
        |t| sdpa(&t[0], &t[1], &t[2], AttentionMask::causal(), None),
        &cross,
    );
    // Strided inputs: [B, L, H, D] leaves read through permuted views.
    let (qs, ks, vs) = (
        rand_leaf(&mut rng, &[2, 3, 2, 4]),
        rand_leaf(&mut rng, &[2, 5, 2, 4]),
        rand_leaf(&mut rng, &[2, 5, 2, 3]),
    );
    assert_gradcheck(
        "sdpa permuted views",
        |t| {
            let p = |x: &Tensor| x.permute(&[0, 2, 1, 3]);
            sdpa(
                &p(&t[0])?,
                &p(&t[1])?,
                &p(&t[2])?,
                AttentionMask::none(),
                None,
            )
        },
        &[qs, ks, vs],
    );
    // Longer than one 64×64 block in both directions.
    let (ql, kl, vl) = (
        rand_leaf(&mut rng, &[1, 1, 70, 2]),
        rand_leaf(&mut rng, &[1, 1, 66, 2]),
        rand_leaf(&mut rng, &[1, 1, 66, 2]),
    );
    let keep_l =
        Tensor::from_i64((0..66).map(|j| i64::from(j % 9 != 4)).collect(), &[1, 66]).unwrap();
    assert_gradcheck(
        "sdpa multi-block causal + padding",
        |t| {
            sdpa(
                &t[0],
                &t[1],
                &t[2],
                AttentionMask::causal().with_key_padding(&keep_l),
                None,
            )
        },
        &[ql, kl, vl],
    );
}

#[test]
fn embedding_gradient_matches_finite_differences() {
    let mut rng = Philox::new(14);
    let w = rand_leaf(&mut rng, &[6, 3]);
    let ids = Tensor::from_i64(vec![5, 0, 5, 2, 2, 2], &[3, 2]).unwrap();
    assert_gradcheck("embedding", |t| embedding(&ids, &t[0]), &[w]);
}

/// Attention composed from matmul, masking and softmax (f64), for the fused kernel
/// to be checked against on sizes spanning several 64-row and 64-key blocks.
fn attention_composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    keep: &Tensor,
    causal: bool,
) -> Result<Tensor> {
    let (lq, lk, d) = (q.shape()[2], k.shape()[2], q.shape()[3]);
    let b = q.shape()[0];
    let kv = keep.to_vec_i64();
    let mut add = vec![0.0f64; b * lq * lk];
    for bi in 0..b {
        for i in 0..lq {
            for j in 0..lk {
                if kv[bi * lk + j] == 0 || (causal && j > i) {
                    add[(bi * lq + i) * lk + j] = -1e9;
                }
            }
        }
    }
    let add = Tensor::from_vec(add, &[b, 1, lq, lk])?;
    let s = q
        .matmul(&k.t()?)?
        .scale(1.0 / (d as f64).sqrt())?
        .add(&add)?;
    s.softmax(-1)?.matmul(v)
}

#[test]
fn fused_attention_matches_composition_across_blocks() {
    let mut rng = Philox::new(15);
    let (b, h, lq, lk, d, dv) = (2, 3, 150, 530, 16, 12);
    let f64s = |shape: &[usize], rng: &mut Philox| Tensor::randn(rng, shape, DType::F64).unwrap();
    let (q64, k64, v64) = (
        f64s(&[b, h, lq, d], &mut rng),
        f64s(&[b, h, lk, d], &mut rng),
        f64s(&[b, h, lk, dv], &mut rng),
    );
    let keep = Tensor::from_i64(
        (0..b * lk).map(|j| i64::from(j % 7 != 3)).collect(),
        &[b, lk],
    )
    .unwrap();
    let wsum = Tensor::rand_uniform(&mut rng, 0.5, 1.5, &[b, h, lq, dv], DType::F64).unwrap();
    for causal in [false, true] {
        let leaves = |dtype: DType| -> Vec<Tensor> {
            [&q64, &k64, &v64]
                .iter()
                .map(|t| t.detach().to_dtype(dtype).unwrap().into_param().unwrap())
                .collect()
        };
        let r = leaves(DType::F64);
        let yr = attention_composed(&r[0], &r[1], &r[2], &keep, causal).unwrap();
        yr.mul(&wsum)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let f = leaves(DType::F32);
        let mask = AttentionMask {
            causal,
            key_padding: Some(&keep),
            additive: None,
        };
        let yf = sdpa(&f[0], &f[1], &f[2], mask, None).unwrap();
        yf.mul(&wsum)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let what = if causal { "causal" } else { "padded" };
        assert_scaled(&yf, &yr, 1e-5, 1e-3, &format!("{what} output"));
        for (name, (a, e)) in ["dq", "dk", "dv"].iter().zip(f.iter().zip(&r)) {
            assert_scaled(
                &a.grad().unwrap(),
                &e.grad().unwrap(),
                1e-5,
                1e-3,
                &format!("{what} {name}"),
            );
        }
    }
}

#[test]
fn fully_masked_attention_rows_are_zero_with_zero_gradients() {
    // PyTorch's scaled_dot_product_attention returns NaN for a query row whose keys
    // are all masked; medsyn returns a zero row and zero gradients (documented in
    // ops::attention), so padded batches stay finite.
    let mut rng = Philox::new(16);
    let (q, k, v) = (
        rand_leaf(&mut rng, &[2, 2, 3, 4]),
        rand_leaf(&mut rng, &[2, 2, 5, 4]),
        rand_leaf(&mut rng, &[2, 2, 5, 3]),
    );
    let keep = keep_mask(&[&[1, 1, 0, 1, 1], &[0, 0, 0, 0, 0]]);
    let y = sdpa(&q, &k, &v, AttentionMask::key_padding(&keep), None).unwrap();
    let yv = y.to_vec_f64();
    assert!(yv.iter().all(|x| x.is_finite()));
    let half = yv.len() / 2;
    assert!(
        yv[half..].iter().all(|&x| x == 0.0),
        "batch row 1 is fully padded"
    );
    assert!(yv[..half].iter().any(|&x| x != 0.0));
    y.sum_all().unwrap().backward().unwrap();
    for (name, t) in [("q", &q), ("k", &k), ("v", &v)] {
        let g = t.grad().unwrap().to_vec_f64();
        let n = g.len() / 2;
        assert!(g.iter().all(|x| x.is_finite()), "{name} grad finite");
        assert!(
            g[n..].iter().all(|&x| x == 0.0),
            "{name} grad of the padded batch row is zero"
        );
        assert!(
            g[..n].iter().any(|&x| x != 0.0),
            "{name} grad of the kept batch row is not zero"
        );
    }
    // The padded key of batch row 0 gets no gradient either.
    let gk = k.grad().unwrap().to_vec_f64();
    for h in 0..2 {
        let at = (h * 5 + 2) * 4;
        assert!(
            gk[at..at + 4].iter().all(|&x| x == 0.0),
            "padded key gradient"
        );
    }
    // An additive −∞ row is fully masked too.
    let mut bias = vec![0.0f64; 3 * 5];
    bias[5..10].fill(f64::NEG_INFINITY);
    let bias = Tensor::from_vec(bias, &[3, 5]).unwrap();
    let y = sdpa(&q, &k, &v, AttentionMask::additive(&bias), None)
        .unwrap()
        .to_vec_f64();
    for bh in 0..4 {
        assert!(
            y[(bh * 3 + 1) * 3..(bh * 3 + 2) * 3]
                .iter()
                .all(|&x| x == 0.0),
            "−∞ bias row"
        );
    }
}

#[test]
fn frozen_inputs_get_no_gradient() {
    let mut rng = Philox::new(17);
    let x = rand_leaf(&mut rng, &[2, 4, 3]);
    let w = Tensor::rand_uniform(&mut rng, 0.5, 1.5, &[3], DType::F64).unwrap();
    let b = rand_leaf(&mut rng, &[3]);
    x.layer_norm(1, Some(&w), Some(&b), EPS)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(w.grad().is_none() && x.grad().is_some() && b.grad().is_some());
    // Frozen input, trainable weight.
    let xf = x.detach();
    let wt = rand_leaf(&mut rng, &[4]);
    xf.group_norm_silu(2, Some(&wt), None, EPS)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(xf.grad().is_none() && wt.grad().is_some());
    // Running stats are buffers: never a gradient, even when marked trainable.
    let rm = Tensor::zeros(&[4], DType::F64)
        .unwrap()
        .into_param()
        .unwrap();
    let rv = Tensor::ones(&[4], DType::F64)
        .unwrap()
        .into_param()
        .unwrap();
    let xb = rand_leaf(&mut rng, &[3, 4]);
    for training in [true, false] {
        xb.batch_norm(Some(&rm), Some(&rv), None, None, training, MOMENTUM, EPS)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(rm.grad().is_none() && rv.grad().is_none());
    }
    // Attention with only v trainable.
    let (q, k) = (
        Tensor::randn(&mut rng, &[1, 2, 3, 4], DType::F64).unwrap(),
        Tensor::randn(&mut rng, &[1, 2, 3, 4], DType::F64).unwrap(),
    );
    let v = rand_leaf(&mut rng, &[1, 2, 3, 4]);
    sdpa(&q, &k, &v, AttentionMask::causal(), None)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(q.grad().is_none() && k.grad().is_none() && v.grad().is_some());
    // A frozen embedding table records nothing.
    let table = Tensor::randn(&mut rng, &[5, 2], DType::F32).unwrap();
    let ids = Tensor::from_i64(vec![0, 4], &[2]).unwrap();
    assert!(!embedding(&ids, &table).unwrap().requires_grad());
}

fn err_msg<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn bad_inputs_are_errors() {
    let f = |shape: &[usize]| Tensor::zeros(shape, DType::F32).unwrap();
    let x = f(&[2, 4, 3]);
    let ints = Tensor::from_i64(vec![1, 2], &[2]).unwrap();
    // layer_norm
    assert!(err_msg(x.layer_norm(0, None, None, EPS)).contains("last 0 dims"));
    assert!(x.layer_norm(4, None, None, EPS).is_err());
    assert!(err_msg(x.layer_norm(1, Some(&f(&[4])), None, EPS))
        .contains("weight has shape [4], expected [3]"));
    assert!(x.layer_norm(2, None, Some(&f(&[3])), EPS).is_err());
    assert!(ints.layer_norm(1, None, None, EPS).is_err());
    // group_norm
    assert!(err_msg(x.group_norm(3, None, None, EPS))
        .contains("4 channels are not divisible by 3 groups"));
    assert!(x.group_norm_silu(0, None, None, EPS).is_err());
    assert!(f(&[4]).group_norm(2, None, None, EPS).is_err());
    assert!(x.group_norm(2, Some(&f(&[3])), None, EPS).is_err());
    // batch_norm
    let (rm, rv) = (f(&[4]), Tensor::ones(&[4], DType::F32).unwrap());
    assert!(
        err_msg(x.batch_norm(None, None, None, None, false, MOMENTUM, EPS))
            .contains("eval mode needs")
    );
    assert!(x
        .batch_norm(Some(&rm), None, None, None, true, MOMENTUM, EPS)
        .is_err());
    assert!(x
        .batch_norm(
            Some(&f(&[3])),
            Some(&f(&[3])),
            None,
            None,
            true,
            MOMENTUM,
            EPS
        )
        .is_err());
    assert!(
        err_msg(f(&[1, 4]).batch_norm(Some(&rm), Some(&rv), None, None, true, MOMENTUM, EPS))
            .contains("more than 1 value per channel")
    );
    assert_eq!(
        rm.to_vec_f64(),
        vec![0.0; 4],
        "a rejected call does not touch the running stats"
    );
    assert!(f(&[4])
        .batch_norm(None, None, None, None, true, MOMENTUM, EPS)
        .is_err());
    // softmax
    assert!(err_msg(x.softmax(3)).contains("out of range"));
    assert!(x.log_softmax(-4).is_err());
    assert!(ints.softmax(0).is_err());
    // attention
    let (q, k, v) = (f(&[2, 2, 3, 4]), f(&[2, 2, 5, 4]), f(&[2, 2, 5, 6]));
    let none = AttentionMask::none;
    assert!(sdpa(&q, &k, &v, none(), None).is_ok());
    assert!(err_msg(sdpa(&f(&[2, 3, 4]), &k, &v, none(), None)).contains("q must be [B, H, L, D]"));
    assert!(err_msg(sdpa(&q, &f(&[2, 2, 5, 3]), &v, none(), None)).contains("head widths differ"));
    assert!(err_msg(sdpa(&q, &k, &f(&[2, 2, 4, 6]), none(), None)).contains("lengths differ"));
    assert!(sdpa(&q, &f(&[1, 2, 5, 4]), &v, none(), None).is_err());
    assert!(sdpa(&q, &k.to_dtype(DType::F64).unwrap(), &v, none(), None).is_err());
    let bad_keep = Tensor::from_i64(vec![1; 6], &[2, 3]).unwrap();
    assert!(err_msg(sdpa(
        &q,
        &k,
        &v,
        AttentionMask::key_padding(&bad_keep),
        None
    ))
    .contains("key padding mask must be [B, Lk] = [2, 5]"));
    assert!(
        err_msg(sdpa(&q, &k, &v, AttentionMask::additive(&f(&[3, 4])), None))
            .contains("does not broadcast")
    );
    let int_bias = Tensor::zeros(&[3, 5], DType::I64).unwrap();
    assert!(sdpa(&q, &k, &v, AttentionMask::additive(&int_bias), None).is_err());
    // embedding
    let table = f(&[5, 2]);
    let msg = err_msg(embedding(
        &Tensor::from_i64(vec![0, 7], &[2]).unwrap(),
        &table,
    ));
    assert!(
        msg.contains("id 7") && msg.contains("vocabulary of 5"),
        "{msg}"
    );
    assert!(err_msg(embedding(
        &Tensor::from_i64(vec![-1], &[1]).unwrap(),
        &table
    ))
    .contains("id -1"));
    assert!(embedding(&f(&[2]), &table).is_err());
    assert!(embedding(&ints, &f(&[5])).is_err());
}
