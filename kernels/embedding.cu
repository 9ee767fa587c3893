// Embedding: forward row gather (int64 ids → rows of a [vocab, dim] table, in the
// table's dtype) and backward scatter-add of the output gradient rows into an f32
// [vocab, dim] gradient buffer with f32 atomics. CPU twin: src/ops/embedding.rs
// (gather_rows, EmbeddingBack).
#include "common.cuh"

// out[k, :] = weight[ids[k], :] for k < n_ids (row k of out is contiguous, dim wide;
// weight rows start ld elements apart, columns contiguous). An id outside [0, vocab)
// writes a row of zeros and sets *bad_id = 1 (when bad_id is non-null): the CPU
// rejects such ids with an error before gathering; the launch side should check
// ids it can see on the host and read the flag otherwise. Block (BX, BY): BX threads
// across the row, BY rows per block (BX·BY <= 1024); grid any (block-strided over
// ids); no smem. 16-byte copies when weight, out, ld and dim allow.
template <typename T>
__device__ void embedding_impl(long long n_ids, long long vocab, long long dim, long long ld,
                               const long long* __restrict__ ids, const T* __restrict__ weight, T* __restrict__ out,
                               int* __restrict__ bad_id) {
    constexpr int V = medsyn::Pack<T>::N;
    const bool packed = medsyn::aligned16(weight) && medsyn::aligned16(out) && dim % V == 0 && ld % V == 0;
    for (long long k = medsyn::first_row(); k < n_ids; k += medsyn::row_stride()) {
        const long long id = ids[k];
        T* o = out + k * dim;
        if (id < 0 || id >= vocab) {
            if (bad_id && threadIdx.x == 0) *bad_id = 1;
            for (long long j = threadIdx.x; j < dim; j += blockDim.x) o[j] = medsyn::from_f32<T>(0.0f);
            continue;
        }
        const T* w = weight + id * ld;
        if (packed) {
            for (long long j = (long long)threadIdx.x * V; j < dim; j += (long long)blockDim.x * V)
                medsyn::store_pack(o + j, medsyn::load_pack(w + j));
        } else {
            for (long long j = threadIdx.x; j < dim; j += blockDim.x) o[j] = w[j];
        }
    }
}
MEDSYN_DTYPES(embedding,
              (long long n_ids, long long vocab, long long dim, long long ld, const long long* __restrict__ ids,
               const T* __restrict__ weight, T* __restrict__ out, int* __restrict__ bad_id),
              (n_ids, vocab, dim, ld, ids, weight, out, bad_id))

// dweight[ids[k], j] += g[k, j] (f32 atomicAdd) for k < n_ids, j < dim; dweight is an
// f32 [vocab, dim] contiguous buffer zeroed by the launch side (cast to the table's
// dtype afterwards). Ids outside [0, vocab) are skipped. Launch as embedding; no smem.
// Not bitwise deterministic when an id repeats (atomic order varies).
template <typename T>
__device__ void embedding_backward_impl(long long n_ids, long long vocab, long long dim,
                                        const long long* __restrict__ ids, const T* __restrict__ g,
                                        float* __restrict__ dweight) {
    for (long long k = medsyn::first_row(); k < n_ids; k += medsyn::row_stride()) {
        const long long id = ids[k];
        if (id < 0 || id >= vocab) continue;
        const T* gr = g + k * dim;
        float* d = dweight + id * dim;
        for (long long j = threadIdx.x; j < dim; j += blockDim.x) atomicAdd(d + j, medsyn::to_f32(gr[j]));
    }
}
MEDSYN_DTYPES(embedding_backward,
              (long long n_ids, long long vocab, long long dim, const long long* __restrict__ ids,
               const T* __restrict__ g, float* __restrict__ dweight),
              (n_ids, vocab, dim, ids, g, dweight))

/*
Launch contract (embedding.cu)
==============================
ids: int64 [n_ids] contiguous (ids of any shape, flattened; i32/u8 ids are cast to
int64 first). weight: [vocab, dim] with row stride ld (elements, >= dim) and unit
column stride (a table with another column stride is made contiguous first). out:
contiguous [n_ids, dim] (= ids.shape + [dim]). Suffix = storage type T of weight/out/g.

embedding_T(i64 n_ids, i64 vocab, i64 dim, i64 ld, const i64* ids, const T* weight,
            T* out, int* bad_id (nullable))
    block (BX, BY): BX = min(256, roundup32(ceil(dim / P))) with P = 16/sizeof(T) when
    dim % P == 0 and ld % P == 0 (else P = 1), BY = max(1, 256 / BX); grid =
    min(ceil(n_ids/BY), 65535·k); no smem. bad_id: device int zeroed before the launch;
    1 afterwards if some id was out of range (the CPU's error case). Bit-identical to
    ops::embedding::embedding (a copy).
embedding_backward_T(i64 n_ids, i64 vocab, i64 dim, const i64* ids, const T* g, float* dweight)
    g contiguous [n_ids, dim]; dweight f32 [vocab, dim] contiguous, zeroed first
    (cuMemsetD32Async), converted to the table's dtype by cast_f32_* afterwards
    (f32 tables use it as is). Same launch as embedding_T with P = 1; no smem. Mirrors
    EmbeddingBack (the CPU adds rows in id order; here the order of atomics varies,
    so repeated ids give sums that differ in the last bits run to run).
*/
