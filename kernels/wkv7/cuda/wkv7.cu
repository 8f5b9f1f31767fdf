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

  const int groups = N / CB;
  const int bh = blockIdx.x / groups;           // b * H + h
  const int col0 = (blockIdx.x % groups) * CB;  // first value column of this block
  const int bi = bh / H, h = bh % H;
  const int tid = threadIdx.x;
  const int col = tid / S_LANES, lane = tid % S_LANES;
  const int j = col0 + col;
  // Entry e of this thread is key index idx(e) = ((e / 4) * S_LANES + lane) * 4 + e % 4: the
  // S_LANES lanes of a column read consecutive 16-byte pieces of a shared-memory row (one
  // wavefront, no bank conflict) and the columns of a warp share them (broadcast).
  auto idx = [&](int e) { return ((e / 4) * S_LANES + lane) * 4 + (e % 4); };
  const size_t tok_stride = (size_t)H * N;
  const size_t base = (size_t)bi * T * tok_stride + (size_t)h * N;
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
    if (S_LANES >= 4 && len == TC) {  // measured: with 1-2 lanes the unrolled chunk costs occupancy
      float yp[TC];
#pragma unroll
      for (int tt = 0; tt < TC; ++tt) yp[tt] = wkv7_step<E, S_LANES>(s, s_in, s_v, tt, lane, col);
      lane_group_reduce_scatter<TC, S_LANES>(yp, lane);
#pragma unroll
      for (int q = 0; q < TC / S_LANES; ++q) s_y[lane * (TC / S_LANES) + q][col] = yp[q];
    } else {
      for (int tt = 0; tt < len; ++tt) {
        const float yy = lane_group_sum<S_LANES>(wkv7_step<E, S_LANES>(s, s_in, s_v, tt, lane, col));
        if (lane == 0) s_y[tt][col] = yy;
      }
    }
    __syncthreads();
    for (int idx = tid; idx < len * CB; idx += THREADS) {
      const int tt = idx / CB, c = idx % CB;
      y[base + (size_t)(t0 + tt) * tok_stride + col0 + c] = from_f<F>(s_y[tt][c]);
    }
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
