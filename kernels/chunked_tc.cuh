// What the chunked tensor-core WKV kernels share (wkv7/cuda/wkv7_chunked.cu,
// wkv6/cuda/wkv6_chunked.cu): the chunk and warp layout, named barriers for the two warp
// roles, and tf32 products from shared memory (1 pass, or 3xTF32 for fp32 inputs).
#pragma once

#include <mma.h>

#include "common.cuh"

namespace archbench {
namespace tc {

using namespace nvcuda;

constexpr int C = 16;                     // tokens per chunk
constexpr int SW = 4, PW = 4;             // state warps, producer warps
constexpr int THREADS = 32 * (SW + PW);
constexpr int PT = 32 * PW;               // producer threads
constexpr float SAFE_SPAN = 64.f;         // |Λ_C| up to which a column is factorised

using Acc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

__device__ __forceinline__ void bar_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void producer_sync() { bar_sync(1, PT); }
__device__ __forceinline__ void state_sync() { bar_sync(2, 32 * SW); }

// Rounds a loaded fragment to tf32 (hi) and, for 3xTF32, keeps the remainder (lo).
template <int PASSES, typename Frag>
__device__ __forceinline__ void split_tf32(Frag& hi, Frag& lo) {
#pragma unroll
  for (int i = 0; i < hi.num_elements; ++i) {
    const float x = hi.x[i];
    const float h = wmma::__float_to_tf32(x);
    hi.x[i] = h;
    if constexpr (PASSES == 3) lo.x[i] = wmma::__float_to_tf32(x - h);
  }
}

// acc += A[16 x 8] B[8 x 16] from shared memory (fp32), in 1 or 3 tf32 products.
template <int PASSES, typename LA, typename LB>
__device__ __forceinline__ void mma8(Acc& acc, const float* a, int lda, const float* b, int ldb) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LA> ah, al;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LB> bh, bl;
  wmma::load_matrix_sync(ah, a, lda);
  wmma::load_matrix_sync(bh, b, ldb);
  split_tf32<PASSES>(ah, al);
  split_tf32<PASSES>(bh, bl);
  if constexpr (PASSES == 3) {
    wmma::mma_sync(acc, al, bh, acc);
    wmma::mma_sync(acc, ah, bl, acc);
  }
  wmma::mma_sync(acc, ah, bh, acc);
}

// Eight floats out as F (16-byte aligned for 2-byte F, 32-byte for float).
template <typename F>
__device__ __forceinline__ void store8(F* dst, const float* src) {
  if constexpr (sizeof(F) == 4) {
    reinterpret_cast<float4*>(dst)[0] = make_float4(src[0], src[1], src[2], src[3]);
    reinterpret_cast<float4*>(dst)[1] = make_float4(src[4], src[5], src[6], src[7]);
  } else {
    uint4 raw;
    F* e = reinterpret_cast<F*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) e[i] = from_f<F>(src[i]);
    *reinterpret_cast<uint4*>(dst) = raw;
  }
}

}  // namespace tc
}  // namespace archbench
