//! Winograd-transformed conv weights kept across calls. A diffusion sampler runs the
//! same U-Net weights 20–50 times per image, and transforming a 3×3 filter bank costs
//! about as much as the convolution saves at the small (8×8) resolutions; so the
//! transform is computed once per weight and reused.
//!
//! Entries are keyed by the weight's storage (an immutable `Arc<Storage>`: the
//! optimizer installs a new one on every update, which makes the old entry stale) and
//! its view (offset, shape, strides). An entry holds only a `Weak` to that storage, so
//! it never keeps a dropped weight alive, and stale entries are purged on insertion.
//! The cache is bounded (`MEDSYN_WINOGRAD_CACHE_MB`, default 2048; 0 disables it):
//! once full, new weights are transformed per call instead of evicting older ones
//! (eviction would thrash on a model that does not fit, as every step walks the layers
//! in the same order).

use crate::backend::cpu::conv::Conv2dGeom;
use crate::backend::cpu::winograd;
use crate::tensor::{Storage, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    storage: usize,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

struct Entry {
    owner: Weak<Storage>,
    transformed: Arc<Vec<f32>>,
}

struct Cache {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    budget: usize,
}

fn budget_bytes() -> usize {
    std::env::var("MEDSYN_WINOGRAD_CACHE_MB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(2048)
        << 20
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(Cache {
            entries: HashMap::new(),
            bytes: 0,
            budget: budget_bytes(),
        })
    })
}

impl Cache {
    fn purge_stale(&mut self) {
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let live = e.owner.strong_count() > 0;
            if !live {
                freed += e.transformed.len() * 4;
            }
            live
        });
        self.bytes -= freed;
    }
}

/// The Winograd transform of `weight` (f32, [o, c, 3, 3], `winograd::applicable(g)`),
/// from the cache when this exact storage and view were transformed before.
pub(crate) fn winograd_weights(weight: &Tensor, g: &Conv2dGeom) -> Arc<Vec<f32>> {
    let storage = weight.storage();
    let layout = weight.layout();
    let key = Key {
        storage: Arc::as_ptr(&storage) as usize,
        offset: layout.offset(),
        shape: layout.shape().to_vec(),
        strides: layout.strides().to_vec(),
    };
    {
        let cache = cache().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = cache.entries.get(&key) {
            // The address alone could be a new storage at a freed one's place; the
            // Weak keeps the old allocation reserved, so a live match is the same one.
            if e.owner.upgrade().is_some_and(|s| Arc::ptr_eq(&s, &storage)) {
                return e.transformed.clone();
            }
        }
    }
    let w = storage.cpu().values::<f32>(layout);
    let transformed = Arc::new(winograd::transform_weights(g, &w));
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    cache.purge_stale();
    let bytes = transformed.len() * 4;
    if let Some(old) = cache.entries.remove(&key) {
        cache.bytes -= old.transformed.len() * 4;
    }
    if cache.bytes + bytes <= cache.budget {
        cache.bytes += bytes;
        let entry = Entry {
            owner: Arc::downgrade(&storage),
            transformed: transformed.clone(),
        };
        cache.entries.insert(key, entry);
    }
    transformed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::no_grad;
    use crate::backend::cpu::conv::conv2d_forward;
    use crate::tensor::Philox;
    use crate::DType;

    fn geom(x: &Tensor, w: &Tensor) -> Conv2dGeom {
        let (xs, ws) = (x.shape(), w.shape());
        Conv2dGeom {
            n: xs[0],
            c: xs[1],
            h: xs[2],
            w: xs[3],
            o: ws[0],
            kh: 3,
            kw: 3,
            stride: (1, 1),
            padding: (1, 1),
            dilation: (1, 1),
            groups: 1,
            oh: xs[2],
            ow: xs[3],
        }
    }

    /// The conv through the op (cached transform) and through the backend with a
    /// fresh transform; they must agree bit for bit.
    fn check(x: &Tensor, w: &Tensor) {
        let got = x
            .conv2d(w, None, (1, 1), (1, 1), (1, 1), 1)
            .unwrap()
            .to_vec::<f32>();
        let g = geom(x, w);
        assert!(
            winograd::applicable(&g),
            "test shape must take the Winograd path"
        );
        let want = conv2d_forward::<f32>(
            &g,
            &x.to_vec::<f32>(),
            &w.contiguous().unwrap().to_vec::<f32>(),
            None,
        );
        assert_eq!(got, want);
    }

    fn cached(w: &Tensor) -> bool {
        let storage = w.storage();
        let cache = cache().lock().unwrap();
        cache
            .entries
            .values()
            .any(|e| e.owner.upgrade().is_some_and(|s| Arc::ptr_eq(&s, &storage)))
    }

    #[test]
    fn reuses_the_transform_and_never_serves_a_stale_or_other_view() {
        let _g = no_grad();
        let mut rng = Philox::new(3);
        let x = Tensor::randn(&mut rng, &[2, 16, 16, 16], DType::F32).unwrap();
        let w = Tensor::randn(&mut rng, &[16, 16, 3, 3], DType::F32).unwrap();
        check(&x, &w);
        assert!(cached(&w));
        let first = winograd_weights(&w, &geom(&x, &w));
        assert!(Arc::ptr_eq(&first, &winograd_weights(&w, &geom(&x, &w))));
        check(&x, &w);

        // An in-place update (as the optimizer does) installs new storage: recomputed.
        let w2 = Tensor::randn(&mut rng, &[16, 16, 3, 3], DType::F32).unwrap();
        w.set_data(&w2).unwrap();
        check(&x, &w);
        assert!(!Arc::ptr_eq(&first, &winograd_weights(&w, &geom(&x, &w))));

        // Two views of one storage are two weights.
        let big = Tensor::randn(&mut rng, &[32, 16, 3, 3], DType::F32).unwrap();
        let (lo, hi) = (
            big.narrow(0, 0, 16).unwrap(),
            big.narrow(0, 16, 16).unwrap(),
        );
        check(&x, &lo);
        check(&x, &hi);
    }

    #[test]
    fn does_not_keep_dropped_weights_alive() {
        let _g = no_grad();
        let mut rng = Philox::new(4);
        let x = Tensor::randn(&mut rng, &[2, 16, 16, 16], DType::F32).unwrap();
        let w = Tensor::randn(&mut rng, &[16, 16, 3, 3], DType::F32).unwrap();
        check(&x, &w);
        let weak = Arc::downgrade(&w.storage());
        drop(w);
        assert!(weak.upgrade().is_none());
    }
}
