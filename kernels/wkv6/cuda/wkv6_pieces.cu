// Running the pieces of a long WKV6 / WKV5 prompt as a batch and joining them (kernels/wkv6/
// pieces.py says when and why).
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
// wkv6_pieces_forward does it all in one call, so that the host issues a few launches, not the
// ~30 torch ops it took in Python (results/kernels, 2026-11-28: 0.257 ms to issue a 1 x 4096 x
// 40 call against 0.226 ms of GPU work): the pieces' initial states (a 2-D memset and copy), the
// batch run (wkv6_chunked_forward), and beside it on a second stream tile_sums_kernel and
// scan_kernel (each piece's log decays summed before every tile of 64 tokens, and over the
// piece); then
// fold_kernel (a thread per state entry walks the pieces in order and writes each S_p, p >= 1,
// and the final state) and a tile kernel: every tile of 64 tokens of every head and piece p >= 1
// at once (a block walks a few of one piece, the next one's r, y and w staged in shared memory
// by cp.async while it works on one): the running sum of the log decays within the tile from
// the tile's offset, r ∘ e^{E} as the A operand, its product with S_p on tensor cores (tf32 as
// in the chunked kernel: 1 pass for fp16 / bf16 inputs, 3 for fp32), added to y in place. Head
// size 64.
#include <mma.h>

#include <algorithm>
#include <cstdlib>

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

// The pieces' log decays summed per tile, in two kernels. tile_sums_kernel: offset[bp, tile, :]
// (H x 64 entries) = the sum of w over that tile's tokens of piece bp (of B * P, each Ts tokens
// of a [B * P, Ts, H, 64] batch); block (x, tile, bp), a thread per 16-byte vector of a token
// row, walking the tile's tokens with loads in flight. scan_kernel: a thread per (bp, h, c)
// turns its column of tile sums into the sums before each tile, in place, and writes the
// piece's total to dsum[bp, h, c]. A decay per head (w [H, 64]): scan_kernel only writes dsum
// [H, 64] = Ts w (offset is not used).
constexpr int SUM_THREADS = 128;

template <typename F>
__global__ void __launch_bounds__(SUM_THREADS)
tile_sums_kernel(int Ts, int H, const F* __restrict__ w, float* __restrict__ offset) {
  constexpr int VN = Vec<F>::n;
  const size_t tok = (size_t)H * N;
  const int nvec = (int)(tok / VN), vec = blockIdx.x * SUM_THREADS + threadIdx.x;
  if (vec >= nvec) return;
  const int nt = (Ts + TT - 1) / TT, tile = blockIdx.y, bp = blockIdx.z;
  const int t0 = tile * TT, t1 = min(Ts, t0 + TT);
  const F* wp = w + ((size_t)bp * Ts + t0) * tok + (size_t)vec * VN;
  float acc[2][VN] = {};
  int t = 0;
#pragma unroll 4
  for (; t + 1 < t1 - t0; t += 2) {  // two rows a step, two sets of sums
    float a[VN], b[VN];
    load_vec<F>(wp + (size_t)t * tok, a);
    load_vec<F>(wp + (size_t)(t + 1) * tok, b);
#pragma unroll
    for (int e = 0; e < VN; ++e) acc[0][e] += a[e], acc[1][e] += b[e];
  }
  if (t < t1 - t0) {
    float a[VN];
    load_vec<F>(wp + (size_t)t * tok, a);
#pragma unroll
    for (int e = 0; e < VN; ++e) acc[0][e] += a[e];
  }
  float* op = offset + ((size_t)bp * nt + tile) * tok + (size_t)vec * VN;
#pragma unroll
  for (int e = 0; e < VN; e += 4)
    *reinterpret_cast<float4*>(op + e) =
        make_float4(acc[0][e] + acc[1][e], acc[0][e + 1] + acc[1][e + 1], acc[0][e + 2] + acc[1][e + 2],
                    acc[0][e + 3] + acc[1][e + 3]);
}

template <typename F, bool W_PER_HEAD>
__global__ void __launch_bounds__(THREADS)
scan_kernel(int BP, int Ts, int H, const F* __restrict__ w, float* __restrict__ offset, float* __restrict__ dsum) {
  const size_t tok = (size_t)H * N, e = (size_t)blockIdx.x * THREADS + threadIdx.x;
  if constexpr (W_PER_HEAD) {
    if (e < tok) dsum[e] = (float)Ts * to_f(w[e]);
    return;
  }
  if (e >= (size_t)BP * tok) return;
  const int nt = (Ts + TT - 1) / TT;
  const size_t bp = e / tok, col = e % tok;
  float* op = offset + bp * nt * tok + col;
  float run = 0.f;
  int i = 0;
  for (; i + 4 <= nt; i += 4) {  // four loads in flight
    const float x0 = op[i * tok], x1 = op[(i + 1) * tok], x2 = op[(i + 2) * tok], x3 = op[(i + 3) * tok];
    op[i * tok] = run;
    op[(i + 1) * tok] = run += x0;
    op[(i + 2) * tok] = run += x1;
    op[(i + 3) * tok] = run += x2;
    run += x3;
  }
  for (; i < nt; ++i) {
    const float x = op[i * tok];
    op[i * tok] = run;
    run += x;
  }
  dsum[e] = run;
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
#endif
}

// A tile's inputs (r, y and, per token, w: NARR arrays) into one stage of rows of PITCH
// elements by cp.async, zeros past the piece's Ts tokens; base: token 0 of the piece.
template <int NARR, int PITCH, typename F>
__device__ __forceinline__ void stage_tile(F (*stage)[TT][PITCH], int tile, int Ts, size_t base, size_t tok,
                                           const F* r, const F* y, const F* w, int tid) {
  constexpr int VN = Vec<F>::n;
  const int t0 = tile * TT;
  for (int v = tid; v < TT * N / VN; v += THREADS) {
    const int i = v / (N / VN), col = (v % (N / VN)) * VN;
    const size_t o = base + (size_t)(t0 + i) * tok + col;
#pragma unroll
    for (int a = 0; a < NARR; ++a) {
      F* dst = &stage[a][i][col];
      const F* src = a == 0 ? r : a == 1 ? y : w;
      if (t0 + i < Ts) cp_async16(dst, src + o);
      else *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
  }
}

// What a block of the tile kernels works on: head h of piece p >= 1 of sequence b (grid (H,
// tile groups, B * (P - 1))), its tiles first .. last - 1 of the piece's nt; base: the row of
// the piece's token 0 in r, w and y, tok: the row stride.
struct TileBlock {
  int h, b, p, nt, first, last;
  size_t bp, tok, base;
  __device__ __forceinline__ TileBlock(int P, int Ts, int T, int H, int tpb)
      : h(blockIdx.x), b(blockIdx.z / (P - 1)), p(1 + blockIdx.z % (P - 1)), nt((Ts + TT - 1) / TT),
        first(blockIdx.y * tpb), last(min(nt, first + tpb)), bp((size_t)b * P + p), tok((size_t)H * N),
        base(((size_t)b * T + (size_t)p * Ts) * tok + (size_t)h * N) {}
};

// Two stages: the next tile's inputs put in flight, this tile's waited for, then a barrier.
template <typename Issue>
__device__ __forceinline__ void next_tile(int tile, int last, int buf, const Issue& issue) {
  if (tile + 1 < last) {
    issue(tile + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
}

// Shared memory of fix_kernel: S_p, the product's A operand (then its result), the per-part
// decay sums, and two stages of a tile's inputs (r, y and, per token, w) as they are in memory.
template <typename F, bool W_PER_HEAD>
struct FixSmem {
  static constexpr int NARR = W_PER_HEAD ? 2 : 3;  // r, y (, w)
  float S[N][LD];
  float Q[TT][LD];
  float psum[PARTS][N];
  F stage[2][NARR][TT][N];
};

// Block (h, g, b * (P - 1) + p - 1) corrects tiles g * tpb .. of piece p of sequence b, head h,
// the next tile's inputs in flight (cp.async) while it works on one.
template <typename F, int PASSES, bool W_PER_HEAD>
__global__ void __launch_bounds__(THREADS, 2)
fix_kernel(int P, int Ts, int T, int H, int tpb, const F* __restrict__ r, const F* __restrict__ w,
           F* __restrict__ y, const float* __restrict__ s_in, const float* __restrict__ offset) {
  using Sm = FixSmem<F, W_PER_HEAD>;
  constexpr int RY = 1, WI = 2;  // stage arrays: 0 r, 1 y, 2 w
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  Sm& sm = *reinterpret_cast<Sm*>(smem_bytes);
  const TileBlock tb(P, Ts, T, H, tpb);
  const int h = tb.h, nt = tb.nt, first = tb.first, last = tb.last, tid = threadIdx.x;
  const size_t bp = tb.bp, tok = tb.tok, base = tb.base;
  auto issue = [&](int tile, int buf) { stage_tile<Sm::NARR>(sm.stage[buf], tile, Ts, base, tok, r, y, w, tid); };
  if (first >= last) return;
  {  // S_p with the first tile
    const float* a = s_in + (bp * H + h) * N * N;
    for (int v = tid; v < N * N / 4; v += THREADS) cp_async16(&sm.S[v / (N / 4)][(v % (N / 4)) * 4], a + v * 4);
  }
  issue(first, 0);
  cp_async_commit();
  const int c = tid % N, part = tid / N;
  const int warp = tid / 32, rt = warp / 2, ct = (warp % 2) * 2;
  const float w_head = W_PER_HEAD ? to_f(w[(size_t)h * N + c]) : 0.f;
  for (int tile = first; tile < last; ++tile) {
    const int buf = (tile - first) & 1, t0 = tile * TT;
    next_tile(tile, last, buf, issue);  // this tile's stage (and, at the first, S_p) visible to every thread
    float rv[PER], wv[PER], lsum = 0.f;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      rv[i] = to_f(sm.stage[buf][0][part * PER + i][c]);
      wv[i] = t0 + part * PER + i < Ts ? (W_PER_HEAD ? w_head : to_f(sm.stage[buf][WI % Sm::NARR][part * PER + i][c]))
                                       : 0.f;
      lsum += wv[i];
    }
    sm.psum[part][c] = lsum;
    __syncthreads();
    float e = W_PER_HEAD ? (float)t0 * w_head : offset[((bp * nt + tile) * H + h) * N + c];
#pragma unroll
    for (int q = 0; q < PARTS; ++q)
      if (q < part) e += sm.psum[q][c];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      sm.Q[part * PER + i][c] = rv[i] * __expf(e);
      e += wv[i];
    }
    __syncthreads();
    Acc acc[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::fill_fragment(acc[j], 0.f);
#pragma unroll
      for (int k8 = 0; k8 < N / 8; ++k8)
        tc::mma8<PASSES, wmma::row_major, wmma::row_major>(acc[j], &sm.Q[rt * 16][k8 * 8], LD,
                                                           &sm.S[k8 * 8][(ct + j) * 16], LD);
    }
    __syncthreads();  // every warp has read Q
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&sm.Q[rt * 16][(ct + j) * 16], acc[j], LD, wmma::mem_row_major);
    __syncthreads();
    for (int v = tid; v < TT * N / 8; v += THREADS) {  // y += the product, 8 entries a step
      const int i = v / (N / 8), col = (v % (N / 8)) * 8;
      if (t0 + i >= Ts) continue;
      float cur[8];
#pragma unroll
      for (int x = 0; x < 8; ++x) cur[x] = to_f(sm.stage[buf][RY][i][col + x]) + sm.Q[i][col + x];
      tc::store8<F>(y + base + (size_t)(t0 + i) * tok + col, cur);
    }
    __syncthreads();  // stage buf is refilled next iteration
  }
}

// Variant 2 of the tile kernel, for 16-bit inputs (join="cuda2" in pieces.py): the same
// maths with fewer shared-memory wavefronts, which Nsight Compute found binding variant 1
// (L1 data pipe 69% busy, its banks 13%; results/kernels/pieces-20261128). Stage rows are
// padded to 144 bytes and read 16 bytes at a time; the running sums go across the lanes of a
// warp (warp: 8 channels, lane: 2 tokens, a shuffle scan); each warp keeps its 64 x 16 strip of
// S_p as B fragments in registers for all of its tiles; the update reads Q and y 16 bytes at a
// time. Written 2026-11-28 without a GPU left to run it: opt-in until measured.
constexpr int SP = N + 8;  // stage row pitch, elements

template <typename F, bool W_PER_HEAD>
struct Fix2Smem {
  static constexpr int NARR = W_PER_HEAD ? 2 : 3;  // r, y (, w)
  float Q[TT][LD];  // S_p at the start, then each tile's A operand and product
  F stage[2][NARR][TT][SP];
};

template <typename F, bool W_PER_HEAD>
__global__ void __launch_bounds__(THREADS, 2)
fix2_kernel(int P, int Ts, int T, int H, int tpb, const F* __restrict__ r, const F* __restrict__ w,
            F* __restrict__ y, const float* __restrict__ s_in, const float* __restrict__ offset) {
  static_assert(sizeof(F) == 2 && Vec<F>::n == 8, "16-bit inputs");
  using Sm = Fix2Smem<F, W_PER_HEAD>;
  using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
  using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
  constexpr int RY = 1;
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  Sm& sm = *reinterpret_cast<Sm*>(smem_bytes);
  const TileBlock tb(P, Ts, T, H, tpb);
  const int h = tb.h, nt = tb.nt, first = tb.first, last = tb.last, tid = threadIdx.x;
  const size_t bp = tb.bp, tok = tb.tok, base = tb.base;
  auto issue = [&](int tile, int buf) { stage_tile<Sm::NARR>(sm.stage[buf], tile, Ts, base, tok, r, y, w, tid); };
  if (first >= last) return;
  {  // S_p into Q's space, with the first tile
    const float* a = s_in + (bp * H + h) * N * N;
    for (int v = tid; v < N * N / 4; v += THREADS) cp_async16(&sm.Q[v / (N / 4)][(v % (N / 4)) * 4], a + v * 4);
  }
  issue(first, 0);
  cp_async_commit();
  const int warp = tid / 32, lane = tid % 32;
  const int ct = warp % 4, rt0 = (warp / 4) * 2;  // the product: column tile ct, row tiles rt0, rt0 + 1
  const int ch0 = warp * 8;                        // the sums: channels ch0 .. ch0 + 7, tokens 2 lane, 2 lane + 1
  float w_head[8];
#pragma unroll
  for (int c = 0; c < 8; ++c) w_head[c] = W_PER_HEAD ? to_f(w[(size_t)h * N + ch0 + c]) : 0.f;
  FragB bf[N / 8];
  for (int tile = first; tile < last; ++tile) {
    const int buf = (tile - first) & 1, t0 = tile * TT;
    next_tile(tile, last, buf, issue);  // this tile's stage (and, at the first, S_p) visible to every thread
    if (tile == first) {  // the B fragments, once; then Q's space is free
#pragma unroll
      for (int k8 = 0; k8 < N / 8; ++k8) {
        wmma::load_matrix_sync(bf[k8], &sm.Q[k8 * 8][ct * 16], LD);
#pragma unroll
        for (int i = 0; i < bf[k8].num_elements; ++i) bf[k8].x[i] = wmma::__float_to_tf32(bf[k8].x[i]);
      }
      __syncthreads();
    }
    float rv[2][8], wv[2][8], pair[8];
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      load_vec<F>(&sm.stage[buf][0][2 * lane + q][ch0], rv[q]);
      if constexpr (W_PER_HEAD) {
        const bool in = t0 + 2 * lane + q < Ts;
#pragma unroll
        for (int c = 0; c < 8; ++c) wv[q][c] = in ? w_head[c] : 0.f;
      } else {
        load_vec<F>(&sm.stage[buf][2][2 * lane + q][ch0], wv[q]);
      }
    }
    float incl[8];
#pragma unroll
    for (int c = 0; c < 8; ++c) incl[c] = pair[c] = wv[0][c] + wv[1][c];
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const float o = __shfl_up_sync(0xffffffffu, incl[c], d);
        if (lane >= d) incl[c] += o;
      }
    }
    float off[8];
    if constexpr (W_PER_HEAD) {
#pragma unroll
      for (int c = 0; c < 8; ++c) off[c] = (float)t0 * w_head[c];
    } else {
      const float4* o4 = reinterpret_cast<const float4*>(offset + ((bp * nt + tile) * H + h) * N + ch0);
      const float4 a = o4[0], bq = o4[1];
      off[0] = a.x, off[1] = a.y, off[2] = a.z, off[3] = a.w, off[4] = bq.x, off[5] = bq.y, off[6] = bq.z, off[7] = bq.w;
    }
    float q0[8], q1[8];
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const float e = off[c] + (incl[c] - pair[c]);  // the log decays before token 2 lane
      q0[c] = rv[0][c] * __expf(e);
      q1[c] = rv[1][c] * __expf(e + wv[0][c]);
    }
#pragma unroll
    for (int c = 0; c < 8; c += 4) {
      *reinterpret_cast<float4*>(&sm.Q[2 * lane][ch0 + c]) = make_float4(q0[c], q0[c + 1], q0[c + 2], q0[c + 3]);
      *reinterpret_cast<float4*>(&sm.Q[2 * lane + 1][ch0 + c]) = make_float4(q1[c], q1[c + 1], q1[c + 2], q1[c + 3]);
    }
    __syncthreads();
    Acc acc[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[j], 0.f);
#pragma unroll
    for (int k8 = 0; k8 < N / 8; ++k8) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        FragA a;
        wmma::load_matrix_sync(a, &sm.Q[(rt0 + j) * 16][k8 * 8], LD);
#pragma unroll
        for (int i = 0; i < a.num_elements; ++i) a.x[i] = wmma::__float_to_tf32(a.x[i]);
        wmma::mma_sync(acc[j], a, bf[k8], acc[j]);
      }
    }
    __syncthreads();  // every warp has read Q
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&sm.Q[(rt0 + j) * 16][ct * 16], acc[j], LD, wmma::mem_row_major);
    __syncthreads();
    for (int v = tid; v < TT * N / 8; v += THREADS) {  // y += the product, 8 entries a step
      const int i = v / (N / 8), col = (v % (N / 8)) * 8;
      if (t0 + i >= Ts) continue;
      float cur[8];
      load_vec<F>(&sm.stage[buf][RY][i][col], cur);
      const float4 a = *reinterpret_cast<const float4*>(&sm.Q[i][col]);
      const float4 bq = *reinterpret_cast<const float4*>(&sm.Q[i][col + 4]);
      cur[0] += a.x, cur[1] += a.y, cur[2] += a.z, cur[3] += a.w;
      cur[4] += bq.x, cur[5] += bq.y, cur[6] += bq.z, cur[7] += bq.w;
      tc::store8<F>(y + base + (size_t)(t0 + i) * tok + col, cur);
    }
    __syncthreads();  // stage buf is refilled next iteration
  }
}

template <typename F>
cudaError_t launch_tiles(int variant, bool w_per_head, dim3 grid, int P, int Ts, int T, int H, int tpb, const void* r,
                         const void* w, void* y, const float* s_in, const float* offset, cudaStream_t stream) {
  constexpr int PASSES = sizeof(F) == 4 ? 3 : 1;
  auto go = [&](auto kernel, size_t smem) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    kernel<<<grid, THREADS, smem, stream>>>(P, Ts, T, H, tpb, (const F*)r, (const F*)w, (F*)y, s_in, offset);
    return cudaGetLastError();
  };
  if constexpr (sizeof(F) == 2) {
    if (variant == 2)
      return w_per_head ? go(fix2_kernel<F, true>, sizeof(Fix2Smem<F, true>))
                        : go(fix2_kernel<F, false>, sizeof(Fix2Smem<F, false>));
  }
  return w_per_head ? go(fix_kernel<F, PASSES, true>, sizeof(FixSmem<F, true>))
                    : go(fix_kernel<F, PASSES, false>, sizeof(FixSmem<F, false>));
}

}  // namespace wkv6p

cudaError_t wkv6_chunked_forward(int dtype, int B, int T, int H, int N, int variant, const void* r, const void* k,
                                 const void* v, const void* w, bool w_per_head, const float* u, float* state,
                                 void* y, void* ws, size_t ws_bytes, cudaStream_t stream);
size_t wkv6_chunked_workspace(int B, int T, int H, int N, int variant);

// The workspace of wkv6_pieces_forward, in 256-byte aligned parts: s0 and s_in [B * P, H, 64,
// 64] fp32 (the pieces' final states from the batch run, then the states entering them),
// offset [B * P, nt, H, 64] and dsum [B * P, H, 64] fp32 (a decay per head: no offset, dsum
// [H, 64]), then the batch run's own (wkv6_chunked_workspace at [B * P, Ts]).
struct PiecesWs {
  size_t s0, s_in, offset, dsum, chunk, total;
};
static PiecesWs pieces_ws(int B, int P, int Ts, int H, bool w_per_head, int variant) {
  auto up = [](size_t x) { return (x + 255) / 256 * 256; };
  const size_t nt = (Ts + wkv6p::TT - 1) / wkv6p::TT, hn = (size_t)H * wkv6p::N, bp = (size_t)B * P;
  PiecesWs l{};
  l.s0 = 0;
  l.s_in = l.s0 + up(bp * hn * wkv6p::N * 4);
  l.offset = l.s_in + up(bp * hn * wkv6p::N * 4);
  l.dsum = l.offset + (w_per_head ? 0 : up(bp * nt * hn * 4));
  l.chunk = l.dsum + up((w_per_head ? 1 : bp) * hn * 4);
  l.total = l.chunk + wkv6_chunked_workspace(B * P, Ts, H, wkv6p::N, variant);
  return l;
}

size_t wkv6_pieces_workspace(int B, int P, int Ts, int H, int N, bool w_per_head, int variant) {
  return N == wkv6p::N && P >= 2 && Ts >= 1 ? pieces_ws(B, P, Ts, H, w_per_head, variant).total : 0;
}

// A prompt of B sequences cut into P pieces of Ts tokens, as a batch: r, k, v, y [B * P, Ts, H,
// 64] (piece p of sequence b at b * P + p), w the same or, with w_per_head, [H, 64], in the
// inputs' dtype; u [H, 64] fp32; state [B, H, 64, 64] fp32, the state before each sequence,
// replaced by the state after its P * Ts tokens; y: every token's output. variant: the batch
// run's launch code (wkv6_chunked_forward); join: the tile kernel, 1 or 2 (fix2_kernel, 16-bit
// inputs; fp32 inputs take 1 either way). ws: wkv6_pieces_workspace() bytes. The offsets run
// on the chunked kernels' second stream, after whatever the batch run queued there, and the
// caller's stream waits for them before the join (so a CUDA graph captures the same order).
cudaError_t wkv6_pieces_forward(int dtype, int B, int P, int Ts, int H, int N, int variant, const void* r,
                                const void* k, const void* v, const void* w, bool w_per_head, const float* u,
                                float* state, void* y, void* ws, size_t ws_bytes, int join, cudaStream_t stream) {
  using namespace wkv6p;
  if (join != 1 && join != 2) return cudaErrorInvalidValue;
  if (N != wkv6p::N || P < 2 || Ts < 1) return cudaErrorInvalidValue;
  if (B == 0 || H == 0) return cudaSuccess;
  const PiecesWs l = pieces_ws(B, P, Ts, H, w_per_head, variant);
  if (ws == nullptr || ws_bytes < l.total) return cudaErrorInvalidValue;
  unsigned char* base = static_cast<unsigned char*>(ws);
  float *s0 = reinterpret_cast<float*>(base + l.s0), *s_in = reinterpret_cast<float*>(base + l.s_in);
  float *offset = reinterpret_cast<float*>(base + l.offset), *dsum = reinterpret_cast<float*>(base + l.dsum);
  tc::SideStream* side = nullptr;
  cudaError_t err = tc::side_stream(side);
  if (err != cudaSuccess) return err;
  if ((err = cudaEventRecord(side->aux_in, stream)) != cudaSuccess) return err;  // the inputs are ready
  // each sequence's piece 0 from its state, the others from zeros
  const size_t sbytes = (size_t)H * N * N * 4;
  if ((err = cudaMemset2DAsync(reinterpret_cast<unsigned char*>(s0) + sbytes, P * sbytes, 0, (P - 1) * sbytes, B,
                               stream)) != cudaSuccess)
    return err;
  if ((err = cudaMemcpy2DAsync(s0, P * sbytes, state, sbytes, sbytes, B, cudaMemcpyDeviceToDevice, stream)) !=
      cudaSuccess)
    return err;
  if ((err = wkv6_chunked_forward(dtype, B * P, Ts, H, N, variant, r, k, v, w, w_per_head, u, s0, y,
                                  l.total > l.chunk ? base + l.chunk : nullptr, l.total - l.chunk, stream)) !=
      cudaSuccess)
    return err;
  if ((err = cudaStreamWaitEvent(side->stream, side->aux_in, 0)) != cudaSuccess) return err;
  {
    const size_t tok = (size_t)H * N;
    const unsigned scan_blocks = (unsigned)(((w_per_head ? 1 : (size_t)B * P) * tok + THREADS - 1) / THREADS);
    ARCHBENCH_DISPATCH_DTYPE(dtype, {
      if (w_per_head) {
        scan_kernel<F, true><<<scan_blocks, THREADS, 0, side->stream>>>(B * P, Ts, H, (const F*)w, offset, dsum);
      } else {
        const int nvec = (int)(tok / Vec<F>::n);
        tile_sums_kernel<F><<<dim3((nvec + SUM_THREADS - 1) / SUM_THREADS, (Ts + TT - 1) / TT, B * P), SUM_THREADS, 0,
                              side->stream>>>(Ts, H, (const F*)w, offset);
        scan_kernel<F, false><<<scan_blocks, THREADS, 0, side->stream>>>(B * P, Ts, H, (const F*)w, offset, dsum);
      }
    })
  }
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  if ((err = cudaEventRecord(side->aux_done, side->stream)) != cudaSuccess) return err;
  if ((err = cudaStreamWaitEvent(stream, side->aux_done, 0)) != cudaSuccess) return err;
  const size_t entries = (size_t)B * H * N * N;
  fold_kernel<<<(unsigned)((entries + THREADS - 1) / THREADS), THREADS, 0, stream>>>(B, P, H, w_per_head, s0, dsum,
                                                                                    s_in, state);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  // tiles a block walks: about 8 blocks a SM's worth of tiles in all, 1 to 16 a block
  int dev = 0, sms = 132;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  const int nt = (Ts + TT - 1) / TT;
  const long tiles = (long)nt * H * B * (P - 1);
  int tpb = (int)std::max(1L, std::min(16L, tiles / (8L * sms)));
  if (const char* e = std::getenv("ARCHBENCH_PIECES_TPB"); e && std::atoi(e) > 0) tpb = std::atoi(e);  // for measuring
  // heads fastest: the blocks running together read whole token rows (H x 64 entries) of r, w, y
  const dim3 grid(H, (nt + tpb - 1) / tpb, B * (P - 1));
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    return launch_tiles<F>(join, w_per_head, grid, P, Ts, P * Ts, H, tpb, r, w, y, s_in, offset, stream);
  })
  return cudaSuccess;
}

}  // namespace archbench
