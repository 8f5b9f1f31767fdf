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

// Where a thread of the sequential kernels (wkv6.cu, wkv7.cu) sits: blocks (b H + h) N / CB ..
// own CB value columns of head h of batch b from col0, S_LANES threads (lanes) a column;
// thread (col, lane) holds entries e of state column j = col0 + col at key index idx(e) =
// ((e / 4) S_LANES + lane) 4 + e % 4: the S_LANES lanes of a column read consecutive 16-byte
// pieces of a shared-memory row (one wavefront, no bank conflict) and the columns of a warp
// share them (broadcast). Token t's row of the head starts at base + t tok_stride.
template <int N, int CB, int S_LANES>
struct SeqPlace {
  int bh, col0, bi, h, tid, col, lane, j;
  size_t tok_stride, base;
  __device__ __forceinline__ SeqPlace(int T, int H) {
    const int groups = N / CB;
    bh = blockIdx.x / groups;
    col0 = (blockIdx.x % groups) * CB;
    bi = bh / H, h = bh % H;
    tid = threadIdx.x;
    col = tid / S_LANES, lane = tid % S_LANES;
    j = col0 + col;
    tok_stride = (size_t)H * N;
    base = (size_t)bi * T * tok_stride + (size_t)h * N;
  }
  __device__ __forceinline__ int idx(int e) const { return ((e / 4) * S_LANES + lane) * 4 + (e % 4); }
};

// Stages TC tokens of a head's inputs into shared memory as fp32: NFULL inputs of N
// entries per token (input DECAY exponentiated on the way: the kernels take log decays),
// plus this block's CB entries of v. fetch() starts the 16-byte global loads of a chunk
// into registers; stage() writes the chunk that was fetched. Fetching chunk c + 1 before
// computing chunk c hides the load latency.
template <typename F, int N, int CB, int TC, int NFULL, int DECAY, int THREADS>
struct ChunkStager {
  static constexpr int VN = Vec<F>::n;
  static constexpr int FULL = N / VN, PART = CB / VN;
  static constexpr int PER_TOKEN = NFULL * FULL + PART;
  static constexpr int SLOTS = TC * PER_TOKEN;
  static constexpr int NSLOT = (SLOTS + THREADS - 1) / THREADS;
  static_assert(N % VN == 0 && CB % VN == 0, "16-byte vectors must tile a row");
  uint4 buf[NSLOT];

  // full[i] + base + t * tok_stride is token t's row of input i; part likewise plus col0.
  __device__ __forceinline__ void fetch(const F* const* full, const F* part, size_t base, size_t tok_stride,
                                        int col0, int t0, int T, int tid) {
#pragma unroll
    for (int q = 0; q < NSLOT; ++q) {
      const int idx = q * THREADS + tid;
      buf[q] = make_uint4(0, 0, 0, 0);
      if (idx < SLOTS) {
        const int tt = idx / PER_TOKEN, rem = idx % PER_TOKEN;
        if (t0 + tt < T) {
          const size_t off = base + (size_t)(t0 + tt) * tok_stride;
          const F* p = rem < NFULL * FULL ? full[rem / FULL] + off + (rem % FULL) * VN
                                          : part + off + col0 + (rem - NFULL * FULL) * VN;
          buf[q] = *reinterpret_cast<const uint4*>(p);
        }
      }
    }
  }

  __device__ __forceinline__ void stage(float (*s_in)[TC][N], float (*s_v)[CB], int tid) const {
#pragma unroll
    for (int q = 0; q < NSLOT; ++q) {
      const int idx = q * THREADS + tid;
      if (idx < SLOTS) {
        const int tt = idx / PER_TOKEN, rem = idx % PER_TOKEN;
        const F* e = reinterpret_cast<const F*>(&buf[q]);
        const bool full = rem < NFULL * FULL;
        float* dst = full ? &s_in[rem / FULL][tt][(rem % FULL) * VN] : &s_v[tt][(rem - NFULL * FULL) * VN];
        const bool decay = full && rem / FULL == DECAY;
#pragma unroll
        for (int u = 0; u < VN; ++u) dst[u] = decay ? __expf(to_f(e[u])) : to_f(e[u]);
      }
    }
  }
};

// Sum over the S consecutive lanes that hold one column (S a power of two, <= 32).
template <int S>
__device__ __forceinline__ float lane_group_sum(float x) {
#pragma unroll
  for (int m = S / 2; m > 0; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
  return x;
}

// Sums over the S lanes of a column for M values at once (M a multiple of S), without
// repeating work: each round a lane keeps half of its values, sends the other half to its
// partner and adds what comes back, so M values cost M - M / S shuffles instead of
// M log2(S). Afterwards lane l of the group holds the sums of values l * M / S .. + M / S
// in v[0 .. M / S).
template <int M, int S>
__device__ __forceinline__ void lane_group_reduce_scatter(float* v, int lane) {
  static_assert(M % S == 0, "M must be a multiple of S");
  int len = M;
#pragma unroll
  for (int m = S / 2; m > 0; m >>= 1) {
    const bool upper = lane & m;
    len /= 2;
#pragma unroll
    for (int i = 0; i < M / 2; ++i) {
      if (i < len) {
        const float send = upper ? v[i] : v[i + len];
        const float keep = upper ? v[i + len] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, m);
      }
    }
  }
}

// The sequential kernels' chunk of len tokens (wkv6.cu, wkv7.cu): step(tt) takes token tt
// through this thread's state entries and returns its part of the column's y; the S_LANES
// lanes' parts are summed into s_y[tt][col] (a full chunk unrolled, reduce-scattered, where
// S_LANES >= 4: measured, with 1-2 lanes the unrolled chunk costs occupancy); then the block
// writes the chunk's y, token t0 + tt of column col0 + c at y[base + (t0 + tt) tok_stride + col0 + c].
template <int TC, int S_LANES, int CB, int THREADS, typename F, class Step>
__device__ __forceinline__ void chunk_steps(Step&& step, int len, int lane, int col, int tid, float (*s_y)[CB],
                                            F* y, size_t base, size_t tok_stride, int t0, int col0) {
  if (S_LANES >= 4 && len == TC) {
    float yp[TC];
#pragma unroll
    for (int tt = 0; tt < TC; ++tt) yp[tt] = step(tt);
    lane_group_reduce_scatter<TC, S_LANES>(yp, lane);
#pragma unroll
    for (int q = 0; q < TC / S_LANES; ++q) s_y[lane * (TC / S_LANES) + q][col] = yp[q];
  } else {
    for (int tt = 0; tt < len; ++tt) {
      const float yy = lane_group_sum<S_LANES>(step(tt));
      if (lane == 0) s_y[tt][col] = yy;
    }
  }
  __syncthreads();
  for (int idx = tid; idx < len * CB; idx += THREADS) {
    const int tt = idx / CB, c = idx % CB;
    y[base + (size_t)(t0 + tt) * tok_stride + col0 + c] = from_f<F>(s_y[tt][c]);
  }
}

// Dot product of n entries (n a multiple of 4) with four accumulators: a short chain.
template <int n>
__device__ __forceinline__ float dot4(const float* x, const float* y) {
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int e = 0; e < n; ++e) acc[e % 4] = fmaf(x[e], y[e], acc[e % 4]);
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// A 16-byte copy global -> shared memory that does not wait for the data (cp.async, sm_80
// and later): the loads are in flight while the block does other work, and hold no
// registers. cp_async_wait_all() then waits for all of this thread's copies.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
#else
  *reinterpret_cast<uint4*>(smem) = *reinterpret_cast<const uint4*>(gmem);
#endif
}

__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Programmatic dependent launch (sm_90+). A kernel launched with it (launch_ex(..., pdl =
// true)) may start before the kernel ahead of it in the stream has finished: once every block
// of that one has called pdl_launch_dependents() (or exited). pdl_wait() returns once the
// kernel ahead has completed and its writes are visible; a kernel that has not waited must
// not read what the one ahead writes. A kernel does not complete before its pdl_wait()
// returns, so a launched-with-pdl kernel that waits (in any one block) completes after the
// kernel ahead of it. Without such a launch, or on older GPUs, both calls do nothing.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// kernel<<<grid, threads, smem, stream>>>(args...), with programmatic dependent launch if pdl.
template <typename... Params, typename... Args>
cudaError_t launch_ex(void (*kernel)(Params...), dim3 grid, int threads, size_t smem, cudaStream_t stream, bool pdl,
                      Args... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
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
