// Joining the pieces of a long WKV6 / WKV5 prompt that ran as a batch (kernels/wkv6/pieces.py).
//
// At few heads the chunked kernel's state pass is one chain of chunks per head, and that chain
// sets its speed at B = 1. The recurrence is linear in the state, so the prompt can be cut into
// P pieces that run at once as a batch, piece p > 0 from a zero state, and be joined after:
// with S_p the state entering piece p, E_t the sum of the piece's log decays before token t,
// and D_p their sum over the whole piece,
//
//     y_t   = y0_t + (r_t ∘ e^{E_t}) S_p         (y0, S0_p: what the batch run gave)
//     S_p+1 = e^{D_p} ∘ S_p + S0_p              (e^{D} scales the key rows of S)
//
// Two kernels. fold_kernel: a thread per state entry walks the pieces in order and writes each
// S_p (p >= 1) and the final state. fix_kernel: one block per (tile of 64 tokens, head, batch
// and piece p >= 1), all at once: the running sum of the log decays within the tile (4
// threads a channel) from the tile's offset (the sum before it, from the caller), r ∘ e^{E}
// as the A operand, its product with S_p on tensor cores (tf32 as in the chunked kernel: 1
// pass for fp16 / bf16 inputs, 3 for fp32), added to y in place (y read before the product).
// Head size 64.
#include <mma.h>

#include "../../chunked_tc.cuh"

namespace archbench {
namespace wkv6p {

using namespace nvcuda;
using tc::Acc;

constexpr int N = 64, TT = 64, LD = N + 4, THREADS = 256, PARTS = THREADS / N, PER = TT / PARTS;

// s_in[b, p] = S_p for p = 1 .. P-1 (s_in[b, 0] is not written); state_out = the state after
// the last piece. s0, s_in: [B * P, H, N, N]; dsum: [B * P, H, N], or [H, N] per_head.
__global__ void __launch_bounds__(THREADS)
fold_kernel(int B, int P, int H, bool per_head, const float* __restrict__ s0, const float* __restrict__ dsum,
            float* __restrict__ s_in, float* __restrict__ state_out) {
  const size_t per_b = (size_t)H * N * N, e = (size_t)blockIdx.x * THREADS + threadIdx.x;
  if (e >= (size_t)B * per_b) return;
  const size_t b = e / per_b, in_b = e % per_b, row = in_b / N;  // row: h * N + i
  const size_t piece = per_b;                                     // stride between pieces
  const float* a = s0 + b * P * piece + in_b;
  const size_t dstride = per_head ? 0 : (size_t)H * N;  // per head: one sum for every piece
  const float* d = dsum + b * P * dstride + row;
  float* o = s_in + b * P * piece + in_b;
  float cur = a[0];
  for (int p = 1; p < P; ++p) {
    o[p * piece] = cur;
    cur = fmaf(__expf(d[p * dstride]), cur, a[p * piece]);
  }
  state_out[e] = cur;
}

template <typename F, int PASSES, bool W_PER_HEAD>
__global__ void __launch_bounds__(THREADS, 3)
fix_kernel(int P, int Ts, int T, int H, const F* __restrict__ r, const F* __restrict__ w, F* __restrict__ y,
           const float* __restrict__ s_in, const float* __restrict__ offset) {
  __shared__ __align__(128) float S[N][LD];
  __shared__ __align__(128) float Q[TT][LD];
  __shared__ float psum[PARTS][N];
  const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z / (P - 1), p = 1 + blockIdx.z % (P - 1);
  const int tid = threadIdx.x, nt = (Ts + TT - 1) / TT, t0 = tile * TT;
  const size_t bp = (size_t)b * P + p;
  // token t of the tile: row base + (t0 + t) * tok of y, r and w
  const size_t tok = (size_t)H * N;
  const size_t base = ((size_t)b * T + (size_t)p * Ts) * tok + (size_t)h * N;
  const int c = tid % N, part = tid / N;
  float rv[PER], wv[PER], lsum = 0.f;
  const float w_head = W_PER_HEAD ? to_f(w[(size_t)h * N + c]) : 0.f;
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int t = t0 + part * PER + i;
    const bool in = t < Ts;
    const size_t o = base + (size_t)t * tok + c;
    rv[i] = in ? to_f(r[o]) : 0.f;
    wv[i] = in ? (W_PER_HEAD ? w_head : to_f(w[o])) : 0.f;
    lsum += wv[i];
  }
  // y, read now so that the loads overlap the product: 8 entries a step, 16-byte aligned
  constexpr int STEPS = TT * N / 8 / THREADS, VW = 8 / Vec<F>::n;
  uint4 yraw[STEPS][VW];
#pragma unroll
  for (int m = 0; m < STEPS; ++m) {
    const int v = tid + m * THREADS, i = v / (N / 8), col = (v % (N / 8)) * 8;
#pragma unroll
    for (int q = 0; q < VW; ++q)
      yraw[m][q] = t0 + i < Ts ? *reinterpret_cast<const uint4*>(y + base + (size_t)(t0 + i) * tok + col + q * Vec<F>::n)
                               : make_uint4(0, 0, 0, 0);
  }
  {  // S_p, 16-byte loads (after the inputs' loads are issued)
    const float4* a = reinterpret_cast<const float4*>(s_in + (bp * H + h) * N * N);
#pragma unroll
    for (int m = 0; m < N * N / 4 / THREADS; ++m) {
      const int e = tid + m * THREADS;
      const float4 v = a[e];
      float* dst = &S[e / (N / 4)][(e % (N / 4)) * 4];
      dst[0] = v.x, dst[1] = v.y, dst[2] = v.z, dst[3] = v.w;
    }
  }
  psum[part][c] = lsum;
  __syncthreads();
  float e = W_PER_HEAD ? (float)t0 * w_head : offset[((bp * nt + tile) * H + h) * N + c];
#pragma unroll
  for (int q = 0; q < PARTS; ++q)
    if (q < part) e += psum[q][c];
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    Q[part * PER + i][c] = rv[i] * __expf(e);
    e += wv[i];
  }
  __syncthreads();
  const int warp = tid / 32, rt = warp / 2, ct = (warp % 2) * 2;
  Acc acc[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    wmma::fill_fragment(acc[j], 0.f);
#pragma unroll
    for (int k8 = 0; k8 < N / 8; ++k8)
      tc::mma8<PASSES, wmma::row_major, wmma::row_major>(acc[j], &Q[rt * 16][k8 * 8], LD, &S[k8 * 8][(ct + j) * 16],
                                                         LD);
  }
  __syncthreads();  // every warp has read Q
#pragma unroll
  for (int j = 0; j < 2; ++j) wmma::store_matrix_sync(&Q[rt * 16][(ct + j) * 16], acc[j], LD, wmma::mem_row_major);
  __syncthreads();
#pragma unroll
  for (int m = 0; m < STEPS; ++m) {
    const int v = tid + m * THREADS, i = v / (N / 8), col = (v % (N / 8)) * 8;
    if (t0 + i >= Ts) continue;
    float cur[8];
#pragma unroll
    for (int q = 0; q < VW; ++q) {
      const F* raw = reinterpret_cast<const F*>(&yraw[m][q]);
#pragma unroll
      for (int x = 0; x < Vec<F>::n; ++x) cur[q * Vec<F>::n + x] = to_f(raw[x]) + Q[i][col + q * Vec<F>::n + x];
    }
    tc::store8<F>(y + base + (size_t)(t0 + i) * tok + col, cur);
  }
}

}  // namespace wkv6p

// r, y: [B, T, H, 64] (y holds the batch run's output for tokens < P * Ts and is corrected in
// place); w: log decay per token [B, T, H, 64] or, with w_per_head, per head [H, 64], in the
// inputs' dtype; s0: [B * P, H, 64, 64] fp32, the pieces' final states from the batch run
// (piece 0's from the true initial state, the others' from zero); offset: [B * P, nt, H, 64]
// fp32, the sum of each piece's log decays before each tile of 64 tokens (nt tiles a piece);
// dsum: [B * P, H, 64] fp32, each piece's sum; with w_per_head, offset is not read (the
// kernel multiplies) and dsum is [H, 64], Ts w; s_in: [B * P, H, 64, 64] fp32 workspace;
// state_out: [B, H, 64, 64] fp32, the state after token P * Ts.
cudaError_t wkv6_pieces_fix(int dtype, int B, int P, int Ts, int T, int H, int N, const void* r, const void* w,
                            bool w_per_head, void* y, const float* s0, const float* offset, const float* dsum,
                            float* s_in, float* state_out, cudaStream_t stream) {
  using namespace wkv6p;
  if (N != wkv6p::N || P < 2 || Ts < 1 || (long)P * Ts > T) return cudaErrorInvalidValue;
  if (B == 0 || H == 0) return cudaSuccess;
  const size_t entries = (size_t)B * H * N * N;
  fold_kernel<<<(unsigned)((entries + THREADS - 1) / THREADS), THREADS, 0, stream>>>(B, P, H, w_per_head, s0, dsum,
                                                                                    s_in, state_out);
  const dim3 grid((Ts + TT - 1) / TT, H, B * (P - 1));
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    constexpr int PASSES = sizeof(F) == 4 ? 3 : 1;
    if (w_per_head)
      fix_kernel<F, PASSES, true><<<grid, THREADS, 0, stream>>>(P, Ts, T, H, (const F*)r, (const F*)w, (F*)y, s_in,
                                                                offset);
    else
      fix_kernel<F, PASSES, false><<<grid, THREADS, 0, stream>>>(P, Ts, T, H, (const F*)r, (const F*)w, (F*)y, s_in,
                                                                 offset);
    return cudaGetLastError();
  })
  return cudaSuccess;
}

}  // namespace archbench
