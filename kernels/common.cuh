// Shared by the WKV kernels: element conversion, 16-byte vector moves, reductions across
// the S lanes that share one state column, and dispatch on dtype / head size.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace archbench {

enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename F> __device__ __forceinline__ F from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Elements of F in one 16-byte vector.
template <typename F> struct Vec { static constexpr int n = 16 / sizeof(F); };

// Load n = Vec<F>::n elements at p (16-byte aligned) and widen them to float.
template <typename F>
__device__ __forceinline__ void load_vec(const F* __restrict__ p, float* out) {
  uint4 raw = *reinterpret_cast<const uint4*>(p);
  const F* e = reinterpret_cast<const F*>(&raw);
#pragma unroll
  for (int i = 0; i < Vec<F>::n; ++i) out[i] = to_f(e[i]);
}

// Row entries idx(4q .. 4q+3) of a thread into out[4q ..] (see the kernels' idx()).
template <int E, int S_LANES>
__device__ __forceinline__ void load_row(const float* row, int lane, float* out) {
#pragma unroll
  for (int q = 0; q < E / 4; ++q) {
    const float4 x = *reinterpret_cast<const float4*>(row + (q * S_LANES + lane) * 4);
    out[4 * q] = x.x; out[4 * q + 1] = x.y; out[4 * q + 2] = x.z; out[4 * q + 3] = x.w;
  }
}

// Sum over the S consecutive lanes that hold one column (S a power of two, <= 32).
template <int S>
__device__ __forceinline__ float lane_group_sum(float x) {
#pragma unroll
  for (int m = S / 2; m > 0; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
  return x;
}

}  // namespace archbench

// Calls BODY with `using F = <element type>` for the runtime dtype code.
#define ARCHBENCH_DISPATCH_DTYPE(code, ...)                                   \
  switch (code) {                                                             \
    case archbench::kF32: { using F = float; __VA_ARGS__; break; }            \
    case archbench::kF16: { using F = __half; __VA_ARGS__; break; }           \
    case archbench::kBF16: { using F = __nv_bfloat16; __VA_ARGS__; break; }   \
    default: return cudaErrorInvalidValue;                                    \
  }

// Calls BODY with `constexpr int N = <head size>` for the supported head sizes.
#define ARCHBENCH_DISPATCH_HEAD(n, ...)                                       \
  switch (n) {                                                                \
    case 16: { constexpr int N = 16; __VA_ARGS__; break; }                    \
    case 32: { constexpr int N = 32; __VA_ARGS__; break; }                    \
    case 64: { constexpr int N = 64; __VA_ARGS__; break; }                    \
    case 128: { constexpr int N = 128; __VA_ARGS__; break; }                  \
    default: return cudaErrorInvalidValue;                                    \
  }
