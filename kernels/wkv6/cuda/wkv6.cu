// WKV6 and WKV5 forward (prefill and decode) with the state in and out.
//
// Per head, state S is [K, V], fp32. Each value column j evolves on its own:
//   y[j] = sum_i r_i (S[i, j] + u_i k_i v_j);   S[:, j] = exp(w) * S[:, j] + k v_j
// with w the log decay, per token for RWKV-6, fixed per channel ([H, N], fp32) for
// RWKV-5. Tiling as in wkv7.cu: a column over S_LANES lanes, TC tokens staged in shared
// memory while the next chunk loads into registers. The step has no reduction on its
// serial path, so its chain is short.
#include "../../common.cuh"

namespace archbench {

template <typename F, int N, int S_LANES, int CB, int TC, bool TOKEN_DECAY>
__global__ void __launch_bounds__(CB * S_LANES)
wkv6_forward_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ k, const F* __restrict__ v,
                    const void* __restrict__ w_, const float* __restrict__ u, float* __restrict__ state,
                    F* __restrict__ y) {
  constexpr int THREADS = CB * S_LANES;
  constexpr int E = N / S_LANES;
  constexpr int VN = Vec<F>::n;
  constexpr int FULL = N / VN;
  constexpr int PART = CB / VN;
  constexpr int NFULL = TOKEN_DECAY ? 3 : 2;      // r, k (, w)
  constexpr int PER_TOKEN = NFULL * FULL + PART;
  constexpr int SLOTS = TC * PER_TOKEN;
  constexpr int NSLOT = (SLOTS + THREADS - 1) / THREADS;
  static_assert(N % S_LANES == 0 && CB % VN == 0 && N % CB == 0 && THREADS % 32 == 0, "bad tiling");

  __shared__ __align__(16) float s_in[NFULL][TC][N];  // r, k (, decay)
  __shared__ __align__(16) float s_v[TC][CB];
  __shared__ __align__(16) float s_y[TC][CB];

  const int groups = N / CB;
  const int bh = blockIdx.x / groups;
  const int col0 = (blockIdx.x % groups) * CB;
  const int bi = bh / H, h = bh % H;
  const int tid = threadIdx.x;
  const int col = tid / S_LANES, lane = tid % S_LANES;
  const int j = col0 + col, i0 = lane * E;
  const size_t tok_stride = (size_t)H * N;
  const size_t base = (size_t)bi * T * tok_stride + (size_t)h * N;
  const F* w = reinterpret_cast<const F*>(w_);
  const F* ins[3] = {r, k, w};

  float s[E], uu[E], dd[E];
  float* st = state + (size_t)bh * N * N;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    s[e] = st[(i0 + e) * N + j];
    uu[e] = u[h * N + i0 + e];
    if constexpr (!TOKEN_DECAY) dd[e] = __expf(reinterpret_cast<const float*>(w_)[h * N + i0 + e]);
  }

  uint4 buf[NSLOT];
  auto fetch = [&](int t0) {
#pragma unroll
    for (int q = 0; q < NSLOT; ++q) {
      const int idx = q * THREADS + tid;
      buf[q] = make_uint4(0, 0, 0, 0);
      if (idx < SLOTS) {
        const int tt = idx / PER_TOKEN, rem = idx % PER_TOKEN;
        if (t0 + tt < T) {
          const size_t off = base + (size_t)(t0 + tt) * tok_stride;
          const F* p = rem < NFULL * FULL ? ins[rem / FULL] + off + (rem % FULL) * VN
                                          : v + off + col0 + (rem - NFULL * FULL) * VN;
          buf[q] = *reinterpret_cast<const uint4*>(p);
        }
      }
    }
  };
  auto stage = [&]() {
#pragma unroll
    for (int q = 0; q < NSLOT; ++q) {
      const int idx = q * THREADS + tid;
      if (idx < SLOTS) {
        const int tt = idx / PER_TOKEN, rem = idx % PER_TOKEN;
        const F* e = reinterpret_cast<const F*>(&buf[q]);
        const bool full = rem < NFULL * FULL;
        float* dst = full ? &s_in[rem / FULL][tt][(rem % FULL) * VN] : &s_v[tt][(rem - NFULL * FULL) * VN];
        const bool decay = full && rem / FULL == 2;
#pragma unroll
        for (int q2 = 0; q2 < VN; ++q2) dst[q2] = decay ? __expf(to_f(e[q2])) : to_f(e[q2]);
      }
    }
  };

  fetch(0);
  for (int t0 = 0; t0 < T; t0 += TC) {
    stage();
    __syncthreads();
    if (t0 + TC < T) fetch(t0 + TC);
    const int len = min(TC, T - t0);
    for (int tt = 0; tt < len; ++tt) {
      const float* ra = &s_in[0][tt][i0];
      const float* ka = &s_in[1][tt][i0];
      const float vj = s_v[tt][col];
      float y0 = 0.f, y1 = 0.f;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float kv = ka[e] * vj;
        const float term = ra[e] * (s[e] + uu[e] * kv);
        if (e % 2 == 0) y0 += term; else y1 += term;
        const float d = TOKEN_DECAY ? s_in[NFULL - 1][tt][i0 + e] : dd[e];
        s[e] = s[e] * d + kv;
      }
      const float yy = lane_group_sum<S_LANES>(y0 + y1);
      if (lane == 0) s_y[tt][col] = yy;
    }
    __syncthreads();
    for (int idx = tid; idx < len * CB; idx += THREADS) {
      const int tt = idx / CB, c = idx % CB;
      y[base + (size_t)(t0 + tt) * tok_stride + col0 + c] = from_f<F>(s_y[tt][c]);
    }
  }
#pragma unroll
  for (int e = 0; e < E; ++e) st[(i0 + e) * N + j] = s[e];
}

template <typename F, int N, int S_LANES, int CB, bool TOKEN_DECAY>
cudaError_t launch6(int B, int T, int H, const void* r, const void* k, const void* v, const void* w,
                    const float* u, float* state, void* y, cudaStream_t stream) {
  constexpr int TC = N >= 128 ? 8 : 16;
  wkv6_forward_kernel<F, N, S_LANES, CB, TC, TOKEN_DECAY><<<B * H * (N / CB), CB * S_LANES, 0, stream>>>(
      T, H, (const F*)r, (const F*)k, (const F*)v, w, u, state, (F*)y);
  return cudaGetLastError();
}

template <typename F, int N, bool TD>
cudaError_t launch6_variant(int variant, int B, int T, int H, const void* r, const void* k, const void* v,
                            const void* w, const float* u, float* state, void* y, cudaStream_t stream) {
  switch (variant) {
    case 1: return launch6<F, N, 2, (N < 64 ? N : 64), TD>(B, T, H, r, k, v, w, u, state, y, stream);
    case 3: return launch6<F, N, 8, 16, TD>(B, T, H, r, k, v, w, u, state, y, stream);
    case 4:
      if constexpr (N >= 32) return launch6<F, N, 1, N, TD>(B, T, H, r, k, v, w, u, state, y, stream);
      return cudaErrorInvalidValue;
    default: return cudaErrorInvalidValue;
  }
}

// token_decay: w is [B, T, H, N] in the input dtype (RWKV-6), else [H, N] fp32 (RWKV-5).
// variant: 0 = choose by shape; 1 = 2 lanes per column; 3 = 8 lanes; 4 = 1 lane.
cudaError_t wkv6_forward(int dtype, bool token_decay, int B, int T, int H, int N, int variant, const void* r,
                         const void* k, const void* v, const void* w, const float* u, float* state, void* y,
                         cudaStream_t stream) {
  if (T == 0) return cudaSuccess;
  if (variant == 0) variant = (long)B * H * N >= 32768 ? 1 : 3;
  ARCHBENCH_DISPATCH_DTYPE(dtype, ARCHBENCH_DISPATCH_HEAD(N, {
    return token_decay ? launch6_variant<F, N, true>(variant, B, T, H, r, k, v, w, u, state, y, stream)
                       : launch6_variant<F, N, false>(variant, B, T, H, r, k, v, w, u, state, y, stream);
  }))
  return cudaSuccess;
}

}  // namespace archbench
