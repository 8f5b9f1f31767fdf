// WKV6 and WKV5 forward (prefill and decode) with the state in and out.
//
// Per head, state S is [K, V], fp32. Each value column j evolves on its own:
//   y[j] = sum_i r_i (S[i, j] + u_i k_i v_j);   S[:, j] = exp(w) * S[:, j] + k v_j
// with w the log decay, per token for RWKV-6, fixed per channel ([H, N], fp32) for
// RWKV-5. Tiling as in wkv7.cu: a column over S_LANES lanes, TC tokens staged in shared
// memory while the next chunk loads into registers. The step has no reduction on its
// serial path, so with 4 or more lanes a full chunk's TC steps are unrolled and the TC
// partial y of a lane reduced together at the end (one reduce-scatter).
#include "../../common.cuh"

namespace archbench {

template <typename F, int N, int S_LANES, int CB, int TC, bool TOKEN_DECAY>
__global__ void __launch_bounds__(CB * S_LANES)
wkv6_forward_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ k, const F* __restrict__ v,
                    const void* __restrict__ w_, const float* __restrict__ u, float* __restrict__ state,
                    F* __restrict__ y) {
  constexpr int THREADS = CB * S_LANES;
  constexpr int E = N / S_LANES;
  constexpr int NFULL = TOKEN_DECAY ? 3 : 2;      // r, k (, w)
  static_assert(N % S_LANES == 0 && E % 4 == 0 && N % CB == 0 && THREADS % 32 == 0, "bad tiling");

  __shared__ __align__(16) float s_in[NFULL][TC][N];  // r, k (, decay)
  __shared__ __align__(16) float s_v[TC][CB];
  __shared__ __align__(16) float s_y[TC][CB];

  const SeqPlace<N, CB, S_LANES> p(T, H);
  const int bh = p.bh, col0 = p.col0, h = p.h, tid = p.tid, col = p.col, lane = p.lane, j = p.j;
  const size_t tok_stride = p.tok_stride, base = p.base;
  auto idx = [&](int e) { return p.idx(e); };
  const F* w = reinterpret_cast<const F*>(w_);
  const F* ins[3] = {r, k, w};

  float s[E], uu[E], dd[E];
  float* st = state + (size_t)bh * N * N;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    s[e] = st[idx(e) * N + j];
    uu[e] = u[h * N + idx(e)];
    if constexpr (!TOKEN_DECAY) dd[e] = __expf(reinterpret_cast<const float*>(w_)[h * N + idx(e)]);
  }

  ChunkStager<F, N, CB, TC, NFULL, 2, THREADS> chunk;  // r, k (, w -> decay); and v
  chunk.fetch(ins, v, base, tok_stride, col0, 0, T, tid);
  for (int t0 = 0; t0 < T; t0 += TC) {
    chunk.stage(s_in, s_v, tid);
    __syncthreads();
    if (t0 + TC < T) chunk.fetch(ins, v, base, tok_stride, col0, t0 + TC, T, tid);
    const int len = min(TC, T - t0);
    auto step = [&](int tt) {  // one token: update this thread's entries, return its part of y
      float rr[E], kk[E], td[E], acc[4] = {0.f, 0.f, 0.f, 0.f};
      load_row<E, S_LANES>(s_in[0][tt], lane, rr);
      load_row<E, S_LANES>(s_in[1][tt], lane, kk);
      if constexpr (TOKEN_DECAY) load_row<E, S_LANES>(s_in[NFULL - 1][tt], lane, td);
      const float vj = s_v[tt][col];
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float kv = kk[e] * vj;
        acc[e % 4] = fmaf(rr[e], fmaf(uu[e], kv, s[e]), acc[e % 4]);
        s[e] = fmaf(s[e], TOKEN_DECAY ? td[e] : dd[e], kv);
      }
      return (acc[0] + acc[1]) + (acc[2] + acc[3]);
    };
    chunk_steps<TC, S_LANES, CB, THREADS>(step, len, lane, col, tid, s_y, y, base, tok_stride, t0, col0);
  }
#pragma unroll
  for (int e = 0; e < E; ++e) st[idx(e) * N + j] = s[e];
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
    case 3: return launch6<F, N, (N >= 32 ? 8 : 4), 16, TD>(B, T, H, r, k, v, w, u, state, y, stream);
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
  // measured on an H100 (results/kernels): 8 lanes win at B x H = 40 and 64 heads; from 320,
  // 2 lanes with a decay per token (RWKV-6), 1 lane with a fixed one (RWKV-5)
  if (variant == 0) variant = (long)B * H < 128 ? 3 : (token_decay || N < 32 ? 1 : 4);
  ARCHBENCH_DISPATCH_DTYPE(dtype, ARCHBENCH_DISPATCH_HEAD(N, {
    return token_decay ? launch6_variant<F, N, true>(variant, B, T, H, r, k, v, w, u, state, y, stream)
                       : launch6_variant<F, N, false>(variant, B, T, H, r, k, v, w, u, state, y, stream);
  }))
  return cudaSuccess;
}

}  // namespace archbench
