// WKV7 forward (prefill and decode) with the state in and out.
//
// Per head, state S is [K, V] (key index first), fp32. Each value column j evolves on its
// own:  S[:, j] = exp(w) * S[:, j] + b * (a . S[:, j]) + k * v[j];  y[j] = r . S[:, j].
// A column is split over S_LANES consecutive lanes, each holding N / S_LANES of its
// entries, so that one head keeps N * S_LANES threads busy: more lanes shorten the serial
// chain of a step (batch 1), fewer lanes cost fewer instructions (large batch).
// Inputs are staged TC tokens at a time in shared memory (as fp32, the decay already
// exponentiated), the next chunk loading into registers while this one is computed.
// The serial chain of a step is a . S (a dot product and a lane reduction) and one
// multiply-add; y = r . S is off that chain, so with 4 or more lanes a full chunk's TC
// steps are unrolled and the TC partial y of a lane reduced together (one reduce-scatter).
#include "../../common.cuh"

namespace archbench {

// One token for one thread: updates its E entries of the column and returns its part of y.
template <int E, int S_LANES, int TC, int N, int CB>
__device__ __forceinline__ float wkv7_step(float* s, const float (*s_in)[TC][N], const float (*s_v)[CB], int tt,
                                           int lane, int col) {
  float rr[E], dd[E], kk[E], aa[E], bb[E], p[E];
  load_row<E, S_LANES>(s_in[0][tt], lane, rr);
  load_row<E, S_LANES>(s_in[1][tt], lane, dd);
  load_row<E, S_LANES>(s_in[2][tt], lane, kk);
  load_row<E, S_LANES>(s_in[3][tt], lane, aa);
  load_row<E, S_LANES>(s_in[4][tt], lane, bb);
  const float vj = s_v[tt][col];
  const float sa = lane_group_sum<S_LANES>(dot4<E>(aa, s));
#pragma unroll
  for (int e = 0; e < E; ++e) p[e] = fmaf(s[e], dd[e], kk[e] * vj);  // while sa is reduced
#pragma unroll
  for (int e = 0; e < E; ++e) s[e] = fmaf(bb[e], sa, p[e]);
  return dot4<E>(rr, s);
}

template <typename F, int N, int S_LANES, int CB, int TC>
__global__ void __launch_bounds__(CB * S_LANES)
wkv7_forward_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ w, const F* __restrict__ k,
                    const F* __restrict__ v, const F* __restrict__ a, const F* __restrict__ b,
                    float* __restrict__ state, F* __restrict__ y) {
  constexpr int THREADS = CB * S_LANES;
  constexpr int E = N / S_LANES;            // state entries per thread
  static_assert(N % S_LANES == 0 && E % 4 == 0 && N % CB == 0 && THREADS % 32 == 0, "bad tiling");

  __shared__ __align__(16) float s_in[5][TC][N];   // r, decay, k, a, b
  __shared__ __align__(16) float s_v[TC][CB];
  __shared__ __align__(16) float s_y[TC][CB];

  const SeqPlace<N, CB, S_LANES> p(T, H);
  const int bh = p.bh, col0 = p.col0, h = p.h, tid = p.tid, col = p.col, lane = p.lane, j = p.j;
  const size_t tok_stride = p.tok_stride, base = p.base;
  auto idx = [&](int e) { return p.idx(e); };
  const F* ins[5] = {r, w, k, a, b};

  float s[E];
  float* st = state + (size_t)bh * N * N;
#pragma unroll
  for (int e = 0; e < E; ++e) s[e] = st[idx(e) * N + j];

  ChunkStager<F, N, CB, TC, 5, 1, THREADS> chunk;  // r, w (-> decay), k, a, b; and v
  chunk.fetch(ins, v, base, tok_stride, col0, 0, T, tid);
  for (int t0 = 0; t0 < T; t0 += TC) {
    chunk.stage(s_in, s_v, tid);
    __syncthreads();
    if (t0 + TC < T) chunk.fetch(ins, v, base, tok_stride, col0, t0 + TC, T, tid);  // in flight meanwhile
    const int len = min(TC, T - t0);
    chunk_steps<TC, S_LANES, CB, THREADS>([&](int tt) { return wkv7_step<E, S_LANES>(s, s_in, s_v, tt, lane, col); },
                                          len, lane, col, tid, s_y, y, base, tok_stride, t0, col0);
  }
#pragma unroll
  for (int e = 0; e < E; ++e) st[idx(e) * N + j] = s[e];
}

template <typename F, int N, int S_LANES, int CB>
cudaError_t launch7(int B, int T, int H, const void* r, const void* w, const void* k, const void* v, const void* a,
                    const void* b, float* state, void* y, cudaStream_t stream) {
  constexpr int TC = N >= 128 ? 8 : 16;
  wkv7_forward_kernel<F, N, S_LANES, CB, TC><<<B * H * (N / CB), CB * S_LANES, 0, stream>>>(
      T, H, (const F*)r, (const F*)w, (const F*)k, (const F*)v, (const F*)a, (const F*)b, state, (F*)y);
  return cudaGetLastError();
}

// variant: 0 = choose by shape; 1 = 2 lanes per column (large batch); 2 = 4 lanes;
// 3 = 8 lanes (batch 1); 4 = 1 lane (BlinkDL's layout: one thread per column).
cudaError_t wkv7_forward(int dtype, int B, int T, int H, int N, int variant, const void* r, const void* w,
                         const void* k, const void* v, const void* a, const void* b, float* state, void* y,
                         cudaStream_t stream) {
  if (T == 0) return cudaSuccess;
  // measured on an H100 (results/kernels, 2026-11-27 22:38): 8 lanes win at B x H = 40 heads
  // (3.0 against 2.5 Mtok/s with 2 lanes), 2 lanes from 320 (10.5 against 4.8)
  if (variant == 0) variant = (long)B * H < 128 ? 3 : 1;
  ARCHBENCH_DISPATCH_DTYPE(dtype, ARCHBENCH_DISPATCH_HEAD(N, {
    constexpr int CB1 = N < 64 ? N : 64;
    constexpr int CB3 = 16;
    switch (variant) {
      case 1: return launch7<F, N, 2, CB1>(B, T, H, r, w, k, v, a, b, state, y, stream);
      case 2: return launch7<F, N, 4, (N < 32 ? N : 32)>(B, T, H, r, w, k, v, a, b, state, y, stream);
      case 3: return launch7<F, N, (N >= 32 ? 8 : 4), CB3>(B, T, H, r, w, k, v, a, b, state, y, stream);
      case 4:
        if constexpr (N >= 32) return launch7<F, N, 1, N>(B, T, H, r, w, k, v, a, b, state, y, stream);
        return cudaErrorInvalidValue;
      default: return cudaErrorInvalidValue;
    }
  }))
  return cudaSuccess;
}

}  // namespace archbench
