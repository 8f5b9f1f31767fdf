// WKV4 forward, parallel over time: for small batches, where one thread per (batch, channel)
// (wkv4.cu) leaves most of the GPU idle. T is cut into S segments of L tokens (the last may
// be shorter) and three kernels run in turn on one stream:
//
//   1. segment_end:   one thread per (b, segment, channel) runs its segment from "no history"
//                     (pp = -1e38) and writes the segment's own end state (A, B, P) to the
//                     workspace work[b, s, 0..2, c];
//   2. segment_scan:  one thread per (b, channel) walks the S segments, combining: the true
//                     start state of each segment overwrites its entry in work, and the end
//                     state goes to `state`;
//   3. segment_out:   one thread per (b, segment, channel) recomputes its segment's outputs from
//                     its true start state.
//
// Why the combination holds (kernels/wkv4/chunked.py derives it): with a = e^pp aa and
// b = e^pp bb the recurrence is linear, a_n = e^{n w} a_0 + A_true, so a segment's end state is
// the old state decayed by n steps plus what the segment gathers from nothing. In log space, on
// the larger of the two scales q = pp0 + n w and P:
//   p = max(q, P),  aa = e^{q-p} aa0 + e^{P-p} A,  bb = e^{q-p} bb0 + e^{P-p} B,  pp = p.
// Every exponent is <= 0, as in the sequential kernel, so nothing overflows.
//
// Cost against wkv4.cu: k and v are read twice (passes 1 and 3) and the workspace adds
// 3 x 2 x 2 floats per segment and channel; in exchange B x S x C threads run instead of B x C.
// Consecutive threads are consecutive channels, so every load and store of a warp is one
// contiguous row segment.
//
// One exp per step instead of two: of exp(x - max(x, z)) and exp(z - max(x, z)) one is exactly
// 1, the other exp(-|x - z|), so the step needs a single MUFU op and a select (the values are
// the sequential kernel's up to the rounding of that one exp).
#include "../../common.cuh"

namespace archbench {

constexpr int kParThreads = 128;  // threads per block, all on one (b, segment) row of channels
constexpr float kNoHistory = -1e38f;
// Tokens whose loads are in flight while the current ones compute. 4, not wkv4.cu's 8: here
// the latency is hidden mostly by the number of threads, and 4 keeps passes 1 and 3 at 32-40
// registers (full or 3/4 occupancy) where 8 takes 52-64 (half).
constexpr int kParUnroll = 4;

// Threads of one (b, segment) row: blockIdx.x = row * blocks_per_row + channel block, so a
// block never straddles two rows (C need not be a multiple of 128) and the grid's x extent
// (up to 2^31 - 1 blocks) holds any B x S.
struct RowThread {
  int row, c;
  __device__ __forceinline__ RowThread(int C) {
    const int per_row = (C + kParThreads - 1) / kParThreads;
    row = blockIdx.x / per_row;
    c = (blockIdx.x % per_row) * kParThreads + threadIdx.x;
  }
};

// e1 = exp(x - max(x, z)), e2 = exp(z - max(x, z)), max(x, z): one exp.
__device__ __forceinline__ void log_pair(float x, float z, float& e1, float& e2, float& m) {
  const float e = __expf(-fabsf(x - z));
  const bool x_big = x >= z;
  e1 = x_big ? 1.f : e;
  e2 = x_big ? e : 1.f;
  m = x_big ? x : z;
}

// Tokens [t0, t0 + n) of one channel, starting from (aa, bb, pp); with Y, y gets the outputs.
// k, v, y point at the channel's element of token t0; tokens are C apart. Inputs for the next
// U tokens load into registers while the current U are computed (as wkv4.cu).
template <typename F, int U, bool Y>
__device__ __forceinline__ void run_tokens(int n, int C, float w, float u, const F* __restrict__ k,
                                           const F* __restrict__ v, F* __restrict__ y, float& aa, float& bb,
                                           float& pp) {
  float kn[U], vn[U];
  auto fetch = [&](int t0) {
#pragma unroll
    for (int q = 0; q < U; ++q) {
      const bool in = t0 + q < n;
      kn[q] = in ? to_f(k[(size_t)(t0 + q) * C]) : 0.f;
      vn[q] = in ? to_f(v[(size_t)(t0 + q) * C]) : 0.f;
    }
  };
  fetch(0);
  for (int t0 = 0; t0 < n; t0 += U) {
    float kc[U], vc[U];
#pragma unroll
    for (int q = 0; q < U; ++q) { kc[q] = kn[q]; vc[q] = vn[q]; }
    if (t0 + U < n) fetch(t0 + U);
#pragma unroll
    for (int q = 0; q < U; ++q) {
      if (t0 + q >= n) break;
      const float kk = kc[q], vv = vc[q];
      float e1, e2, p;
      if (Y) {  // output: the history on scale pp against the current token with its bonus
        log_pair(pp, u + kk, e1, e2, p);
        y[(size_t)(t0 + q) * C] = from_f<F>((e1 * aa + e2 * vv) / (e1 * bb + e2));
      }
      log_pair(w + pp, kk, e1, e2, p);  // state: the decayed history against the current token
      aa = e1 * aa + e2 * vv;
      bb = e1 * bb + e2;
      pp = p;
    }
  }
}

// Pass 1: each segment's own end state, from no history.
template <typename F>
__global__ void __launch_bounds__(kParThreads)
wkv4_segment_end_kernel(int T, int C, int L, int S, const float* __restrict__ w, const F* __restrict__ k,
                        const F* __restrict__ v, float* __restrict__ work) {
  const RowThread th(C);
  if (th.c >= C) return;
  const int b = th.row / S, s = th.row % S;
  const int t0 = s * L, n = min(L, T - t0);
  const size_t base = ((size_t)b * T + t0) * C + th.c;
  // From no history the first token's p is k_0 (w - 1e38 loses to any key), so the state
  // starts on the key's own scale; the bonus u plays no part in the state.
  float aa = 0.f, bb = 0.f, pp = kNoHistory;
  run_tokens<F, kParUnroll, false>(n, C, w[th.c], 0.f, k + base, v + base, nullptr, aa, bb, pp);
  float* out = work + (size_t)th.row * 3 * C + th.c;  // work[b, s, :, c]
  out[0] = aa;
  out[C] = bb;
  out[2 * C] = pp;
}

// Pass 2: the scan over segments. work[b, s] holds segment s's own end state on entry and its
// true start state on exit; state[b] goes from the start state of the call to its end state.
__global__ void __launch_bounds__(kParThreads)
wkv4_segment_scan_kernel(int B, int T, int C, int L, int S, const float* __restrict__ w,
                         float* __restrict__ state, float* __restrict__ work) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * C) return;
  const int b = idx / C, c = idx % C;
  const float ww = w[c];
  float* st = state + (size_t)b * 3 * C + c;
  float aa = st[0], bb = st[C], pp = st[2 * C];
  float* row = work + (size_t)b * S * 3 * C + c;  // work[b, 0, 0, c]; segments 3C apart
  const float wL = ww * (float)L;                  // a full segment's decay in log space
  // The chain runs through (aa, bb, pp) only; the segment states it reads do not depend on
  // it, so the next segment's are loaded before this one's start state is stored (the
  // compiler cannot move a load of work across a store to work by itself).
  float A = row[0], Bn = row[C], P = row[2 * C];
  for (int s = 0; s < S; ++s) {
    float* cur = row + (size_t)s * 3 * C;
    float An = 0.f, Bnn = 0.f, Pn = 0.f;
    if (s + 1 < S) { An = cur[3 * C]; Bnn = cur[4 * C]; Pn = cur[5 * C]; }
    cur[0] = aa;
    cur[C] = bb;
    cur[2 * C] = pp;
    const float decay = s + 1 < S ? wL : ww * (float)(T - s * L);  // the last segment may be short
    float e_old, e_new, p;
    log_pair(pp + decay, P, e_old, e_new, p);
    aa = e_old * aa + e_new * A;
    bb = e_old * bb + e_new * Bn;
    pp = p;
    A = An; Bn = Bnn; P = Pn;
  }
  st[0] = aa;
  st[C] = bb;
  st[2 * C] = pp;
}

// Pass 3: each segment's outputs from its true start state.
template <typename F>
__global__ void __launch_bounds__(kParThreads)
wkv4_segment_out_kernel(int T, int C, int L, int S, const float* __restrict__ w, const float* __restrict__ u,
                        const F* __restrict__ k, const F* __restrict__ v, const float* __restrict__ work,
                        F* __restrict__ y) {
  const RowThread th(C);
  if (th.c >= C) return;
  const int b = th.row / S, s = th.row % S;
  const int t0 = s * L, n = min(L, T - t0);
  const size_t base = ((size_t)b * T + t0) * C + th.c;
  const float* in = work + (size_t)th.row * 3 * C + th.c;
  float aa = in[0], bb = in[C], pp = in[2 * C];
  run_tokens<F, kParUnroll, true>(n, C, w[th.c], u[th.c], k + base, v + base, y + base, aa, bb, pp);
}

// work: [B, S, 3, C] fp32 with S = ceil(T / L), scratch (nothing in it is read before written).
cudaError_t wkv4_parallel_forward(int dtype, int B, int T, int C, int L, const float* w, const float* u,
                                  const void* k, const void* v, float* state, float* work, void* y,
                                  cudaStream_t stream) {
  if (T == 0) return cudaSuccess;
  if (L <= 0 || B <= 0 || C <= 0) return cudaErrorInvalidValue;
  const int S = (T + L - 1) / L;
  const long long row_blocks = (long long)B * S * ((C + kParThreads - 1) / kParThreads);
  if (row_blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
  const int scan_blocks = (B * C + kParThreads - 1) / kParThreads;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    wkv4_segment_end_kernel<F><<<(unsigned)row_blocks, kParThreads, 0, stream>>>(T, C, L, S, w, (const F*)k,
                                                                                 (const F*)v, work);
    wkv4_segment_scan_kernel<<<scan_blocks, kParThreads, 0, stream>>>(B, T, C, L, S, w, state, work);
    wkv4_segment_out_kernel<F><<<(unsigned)row_blocks, kParThreads, 0, stream>>>(
        T, C, L, S, w, u, (const F*)k, (const F*)v, work, (F*)y);
  })
  return cudaGetLastError();
}

}  // namespace archbench
