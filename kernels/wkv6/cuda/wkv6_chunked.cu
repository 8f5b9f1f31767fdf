// WKV6 forward in chunks of C = 16 tokens, the products on tensor cores (tf32 mma), for long
// prompts at small batch, where the one-token-at-a-time kernel (wkv6.cu) is bound by the
// latency of its serial chain.
//
// The maths is kernels/wkv6/chunked.py (its docstring derives it). Per head and chunk, with
// Λ_t = w_0 + .. + w_t the inclusive cumulative log decay (Λ_{-1} = 0, Λ_C = Λ_{C-1}) and S_0
// the state [K, V] before the chunk:
//     Y   = [R̃ | M] [S_0; V]                            [C, V]
//     S_C = diag(e^{Λ_C}) S_0 + K̂ᵀ V                    [K, V]
// R̃_t = r_t e^{Λ_{t-1}} (y_t reads the state before token t's decay), K̂_j = k_j e^{Λ_C - Λ_j},
// M[t, j] = Σ_i r_ti k_ji e^{Λ_{t-1,i} - Λ_{j,i}} for j < t, M[t, t] = Σ_i r_ti u_i k_ti (the
// bonus), 0 above the diagonal. Y and S_C both read only S_0 and V: one phase per chunk.
//
// Structure as wkv7_chunked.cu, on the pipeline of chunked_tc.cuh: one thread block per
// (batch, head, tile of VT state columns):
//  * G groups of 4 producer warps build chunks ahead (state-independent): load and stage
//    the inputs (the group's next chunk's loads in flight meanwhile), the cumulative decays,
//    R̃, K̂, e^{Λ_C}, the bonus diagonal (8 lanes per token, shuffles), and M on tensor cores
//    with the K = 64 reduction split over the 4 warps (16 keys each, partials summed in the
//    masking step). WKV6 has one C x C matrix and no triangular solve (WKV7: four and a
//    solve), so a chunk costs a group less here than in WKV7.
//  * 4 state warps carry S (fp32, in shared memory) through the chunks in order: Y (NT tiles
//    of 16 x 16, K = N + C), then S_C in place (4 NT tiles, D∘S_0 loaded as the accumulator
//    + K̂ᵀ V, K = C).
// Splitting the V columns over N / VT blocks gives B = 1 its parallelism (each block redoes
// the cheap chunk matrices). That is the one-kernel form; for up to WKV6_SPLIT_MAX_HEADS
// heads the two-kernel form (chunked_tc.cuh) builds every chunk at once in wkv6_build_kernel
// and runs the register state pass of state_tc.cuh on a 9.5 KB-per-chunk-and-head workspace.
//
// M is a product of factorised operands, r_t e^{Λ_{t-1} - c} and k_j e^{c - Λ_j}, with a
// per-column reference c = Λ_C / 2, so every factor is within e^{±|Λ_C|/2}. A column whose
// chunk decay is stronger than e^{-SAFE_SPAN} is left out of the product and added term by
// term with exponents <= 0 (a slow path). So nothing overflows.
//
// Precision: tf32 products with fp32 accumulation for fp16/bf16 inputs; for fp32 inputs
// three tf32 products (3xTF32), about fp32's accuracy. State and decays are fp32 throughout.
//
// Head size 64 only (cudaErrorInvalidValue otherwise; the Python op falls back).
#include <mma.h>

#include "../../chunked_tc.cuh"

namespace archbench {
namespace wkv6c {

using namespace nvcuda;
using namespace tc;

// Shared memory. Leading dimensions padded by 4 floats; every array's size is a multiple of
// 32 bytes, so each starts on a 32-byte boundary, as wmma needs.
template <int N, int VT>
struct Chunk {                // a chunk's operands for the state pass (a slot of the ring)
  static constexpr int LDW = N + C + 4, LDN = N + 4, LDV = VT + 4;
  float rm[C][LDW];           // [R̃ | M]
  float kh[C][LDN];           // K̂ (row j), read transposed (col-major) as K̂ᵀ
  float d[N];                 // e^{Λ_C}
  float v[C][LDV];            // the chunk's v at the block's columns
};
template <typename F, int N>
struct Scratch {              // a producer group's working space
  static constexpr int LDC = C + 4, LDN = N + 4;
  F raw[3][C][N];             // r, w, k as loaded (WKV5: r, k)
  float lam[C][N];            // Λ_t
  float fac[2][C][LDN];       // factorised R', K'
  float part[PW][C][LDC];     // the producer warps' partial products R'K'ᵀ (16 keys each)
  float lamc[N];              // Λ_C
  float u[N];                 // the bonus u of this head
  float bonus[C];             // Σ_i r_ti u_i k_ti
  int unsafe;                 // some column of this chunk is not factorised
  int ntok;                   // its tokens before T (set for WKV5's Op only: COUNTS_TOKENS)
  int pad_[6];
};
template <typename F, int N, int VT, int G>
struct Smem {
  static constexpr int LDV = VT + 4;
  Chunk<N, VT> chunk[Pipe<G>::NB];
  Scratch<F, N> scratch[G];
  float s[N][LDV];            // the state tile, updated in place chunk by chunk
  float ystage[SW][16][20];   // a state warp's y tile on its way out
};

template <typename F, int N, int VT, int G, int PASSES, bool W_PER_HEAD>
struct Op {
  using Chunk = wkv6c::Chunk<N, VT>;
  using Scratch = wkv6c::Scratch<F, N>;
  using Smem = wkv6c::Smem<F, N, VT, G>;
  using S = Smem;
  static constexpr bool LOWRANK = false;  // the two-kernel form: S' = d∘S + K̂ᵀV (state_tc.cuh)
  static constexpr int PASSES_ = PASSES;
  static constexpr int LDW = Chunk::LDW, LDC = Scratch::LDC, LDN = Chunk::LDN, LDV = Chunk::LDV;
  static constexpr int NT = VT / 16;  // 16-column tiles of the block's state columns
  static_assert(N % 16 == 0 && VT % 16 == 0 && N % VT == 0 && NT <= SW, "bad tiling");
  static_assert(N <= PT && N == 16 * PW, "build: a column per thread, 16 keys of M per producer warp");

  // The inputs staged per token: r, w, k (then v); for WKV5 (W_PER_HEAD) r, k: its decay is one
  // row per head, read by the build from w_row.
  static constexpr int NIN = W_PER_HEAD ? 2 : 3;
  static constexpr bool COUNTS_TOKENS = W_PER_HEAD;  // the decay row applies to real tokens only
  Loader<F, N, VT, NIN> ld;
  YWriter<F> out;
  const F* w_row;

  // The block's op: inputs from base (token t's rows at base + t tok_stride), its state columns
  // from col0, the head's decay row at w + head_off (W_PER_HEAD).
  static __device__ __forceinline__ Op make(const F* r, const F* w, const F* k, const F* v, F* y, size_t base,
                                            size_t tok_stride, int col0, int T, size_t head_off) {
    Op o{};
    if constexpr (W_PER_HEAD) {
      o.ld.ptr[0] = r, o.ld.ptr[1] = k, o.ld.ptr[2] = v;
      o.w_row = w + head_off;
    } else {
      o.ld.ptr[0] = r, o.ld.ptr[1] = w, o.ld.ptr[2] = k, o.ld.ptr[3] = v;
      o.w_row = nullptr;
    }
    o.ld.base = base, o.ld.tok_stride = tok_stride, o.ld.col0 = col0, o.ld.T = T;
    o.out = {y, base, tok_stride, col0, T};
    return o;
  }

  // Producer group: the state-independent operands of one chunk (inputs staged in scr.raw)
  // into ch.
  __device__ __forceinline__ void build(Scratch& scr, Chunk& ch, const Group& grp) const {
    const int ptid = grp.ptid;
    const F(*r)[N] = scr.raw[0];
    const F(*k)[N] = scr.raw[NIN - 1];
    float(*lam)[N] = scr.lam;

    // 1. cumulative log decay Λ_t per column and the chunk total Λ_C (threads 0..N-1); the
    //    bonus diagonal Σ_i r_ti u_i k_ti (8 threads a token, all PT = 128)
    if constexpr (W_PER_HEAD)
      cumulative_decay<F, N, true>(reinterpret_cast<const F(*)[N]>(w_row), lam, scr.lamc, scr.unsafe, ptid,
                                   scr.ntok);
    else
      cumulative_decay<F, N>(scr.raw[1], lam, scr.lamc, scr.unsafe, ptid);
    {
      static_assert(PT == 8 * C && N % 8 == 0, "bonus: 8 threads per token");
      const int t = ptid / 8, p = ptid % 8;
      float bsum = 0.f;
#pragma unroll
      for (int q = 0; q < N / 8; ++q) {
        const int i = q * 8 + p;
        bsum = fmaf(to_f(r[t][i]) * scr.u[i], to_f(k[t][i]), bsum);
      }
      bsum += __shfl_xor_sync(0xffffffffu, bsum, 4);
      bsum += __shfl_xor_sync(0xffffffffu, bsum, 2);
      bsum += __shfl_xor_sync(0xffffffffu, bsum, 1);
      if (p == 0) scr.bonus[t] = bsum;
    }
    grp.sync();

    // 2. decayed vectors for the state pass (exponents <= 0) and the factorised ones for M
    //    (r e^{Λ_{t-1} - c}, k e^{c - Λ_j}, c = Λ_C / 2; zero where the column is not factorised)
#pragma unroll 2
    for (int e = ptid; e < C * N; e += PT) {
      const int t = e / N, i = e % N;
      const float l = lam[t][i], lp = t ? lam[t - 1][i] : 0.f, lc = scr.lamc[i];
      const bool safe = lc >= -SAFE_SPAN;
      const float elp = __expf(lp), eb = __expf(lc - l);
      const float rc = to_f(r[t][i]), kc = to_f(k[t][i]);
      ch.rm[t][i] = rc * elp;  // R̃
      ch.kh[t][i] = kc * eb;   // K̂
      if (t == 0) ch.d[i] = __expf(lc);
      const float emc = __expf(-0.5f * lc), ecl = __expf(0.5f * lc - l);  // e^{-c} <= e^{32}, e^{c - Λ_j}
      scr.fac[0][t][i] = safe ? rc * (elp * emc) : 0.f;  // R' = r_t e^{Λ_{t-1} - c}
      scr.fac[1][t][i] = safe ? kc * ecl : 0.f;          // K' = k_j e^{c - Λ_j}
    }
    grp.sync();

    // 3. R'K'ᵀ on tensor cores: producer warp pw sums keys 16 pw .. 16 pw + 15
    {
      const int pw = ptid / 32;
      Acc acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int k0 = 16 * pw; k0 < 16 * pw + 16; k0 += 8)  // B operand (i, j) = K'[j][i]: col-major
        mma8<PASSES, wmma::row_major, wmma::col_major>(acc, &scr.fac[0][0][k0], LDN, &scr.fac[1][0][k0], LDN);
      wmma::store_matrix_sync(&scr.part[pw][0][0], acc, LDC, wmma::mem_row_major);
    }
    grp.sync();

    // 4. the partials summed, the terms of unfactorised columns (exponents <= 0), the causal
    //    mask and the bonus diagonal, into [R̃ | M]'s right block
    const bool unsafe = scr.unsafe;
#pragma unroll 1
    for (int e = ptid; e < C * C; e += PT) {
      const int t = e / C, j = e % C;
      float m = (scr.part[0][t][j] + scr.part[1][t][j]) + (scr.part[2][t][j] + scr.part[3][t][j]);
      if (unsafe && j < t) {
        for (int i = 0; i < N; ++i) {
          if (scr.lamc[i] >= -SAFE_SPAN) continue;
          m = fmaf(to_f(r[t][i]) * to_f(k[j][i]), __expf(lam[t - 1][i] - lam[j][i]), m);
        }
      }
      ch.rm[t][N + j] = j < t ? m : j == t ? scr.bonus[t] : 0.f;
    }
  }

  // The two-kernel form (state_tc.cuh): the operands as built, E = 0, Q = K̂ᵀ, R̂ = R̃, M̂ = M.
  __device__ __forceinline__ void finish(Scratch&, Chunk&, const Group&) const {}
  struct Operands {
    const Chunk& ch;
    __device__ float e(int, int) const { return 0.f; }
    __device__ float q(int i, int t) const { return ch.kh[t][i]; }
    __device__ float r(int t, int i) const { return ch.rm[t][i]; }
    __device__ float m(int t, int tp) const { return ch.rm[t][N + tp]; }
    __device__ float d(int i) const { return ch.d[i]; }
  };
  __device__ __forceinline__ Operands operands(Scratch&, const Chunk& ch) const { return {ch}; }

  // State warps: chunk c through the state tile sm.s (in place).
  __device__ __forceinline__ void consume(S& sm, const Chunk& ch, int c, int warp, int lane) const {
    // Y = [R̃ | M] [S_0; V], tile ni by warp ni, written out
    if (warp < NT) {
      const int ni = warp;
      Acc acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll 2
      for (int k0 = 0; k0 < N; k0 += 8)
        mma8<PASSES, wmma::row_major, wmma::row_major>(acc, &ch.rm[0][k0], LDW, &sm.s[k0][ni * 16], LDV);
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 8)
        mma8<PASSES, wmma::row_major, wmma::row_major>(acc, &ch.rm[0][N + k0], LDW, &ch.v[k0][ni * 16], LDV);
      out.write(acc, sm.ystage[warp], c, ni, lane);
    }
    state_sync();  // every read of S_0 done: S is updated in place below
    // S_C = D∘S_0 + K̂ᵀ V
    update_state_tiles<N, NT, LDV>(sm.s, ch.d, warp, lane, [&](Acc& acc, int mi, int ni) {
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 8)  // A operand (i, j) = K̂[j][i]: col-major
        mma8<PASSES, wmma::col_major, wmma::row_major>(acc, &ch.kh[k0][mi * 16], LDN, &ch.v[k0][ni * 16], LDV);
    });
  }
};

// Blocks per SM as wkv7_chunked.cu: two with one producer group at VT <= 32 (fp16/bf16),
// else one.
template <typename F, int N, int VT, int G, int PASSES, bool W_PER_HEAD>
__global__ void __launch_bounds__(Pipe<G>::THREADS, (G == 1 && VT <= 32 && PASSES == 1 ? 2 : 1))
wkv6_chunked_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ k, const F* __restrict__ v,
                    const F* __restrict__ w, const float* __restrict__ u, float* __restrict__ state,
                    F* __restrict__ y) {
  using O = Op<F, N, VT, G, PASSES, W_PER_HEAD>;
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  auto& sm = *reinterpret_cast<typename O::Smem*>(smem_bytes);
  const Place<N, VT> p(H, T);
  for (int i = threadIdx.x; i < G * N; i += blockDim.x) sm.scratch[i / N].u[i % N] = u[p.h * N + i % N];
  __syncthreads();
  const O op = O::make(r, w, k, v, y, p.base, p.tok_stride, p.col0, T, (size_t)p.h * N);
  run_pipeline<O, N, VT, G>(op, sm, state + (size_t)p.bh * N * N, p.col0, (T + C - 1) / C);
}

// The two-kernel form's build (chunked_tc.cuh, build_to_workspace): block (b * H + h) *
// blocks_per_head + q builds chunks c0 + q cpb .. of head h of batch b. Two instances for
// 16-bit inputs: one for a build beside a state pass (96 registers: 5 blocks an SM), with
// BESIDE_CPB chunks a block, and one held to WIDE_BLOCKS or more blocks an SM (80 registers: 6)
// for a build that runs alone (the only segment, as in the pieces' batch), ALONE_CPB chunks a
// block. Measured on an H200 (bf16, graph replays, Mtok/s; results/kernels/build-20261128/):
//  * before the builds stopped loading v (110 registers at 4 blocks an SM), H = 40 1 x 4096 /
//    1 x 16384 (8 pieces: one segment each), blocks an SM x chunks a block: 4 x 8 18.34 / 21.43,
//    5 x 8 18.68 / 21.57, 6 x 8 18.23 / 21.26, 5 x 4 19.21 / 22.25; alone at 5 blocks, 2 / 3 / 4
//    / 6 chunks a block 19.29 / 19.29 / 19.30 / 18.80 at 1 x 4096. Beside state passes (H = 64,
//    1 x 4096 / 1 x 16384) 5 blocks lost (11.92 / 14.38 against 13.57 / 14.91 with 4), and so
//    did 6; 2 / 4 / 6 / 8 chunks a block 13.66 / 13.84 / 12.96 / 13.75 and 14.78 / 14.95 /
//    14.90 / 14.97;
//  * without v (these registers), occupancy capped by padding shared memory against none: alone
//    at most 4 / 5 / 6 (none) blocks 19.25 / 20.03 / 20.57 at 1 x 4096 (22.01 / 22.00 / 22.01 at
//    1 x 16384); beside at most 3 / 4 / 5 (none) 11.01 / 12.81 / 13.08 at H = 64 1 x 4096 and
//    13.85 / 14.93 / 15.03 at 1 x 16384. So no cap. (H = 64 1 x 4096 was 13.64-13.75 with v
//    loaded: the one shape that lost, by 4%.)
// ARCHBENCH_WKV6_WIDE_BLOCKS (kernels/build.py: ARCHBENCH_CUDA_DEFINES) changes WIDE_BLOCKS, for measuring.
#ifndef ARCHBENCH_WKV6_WIDE_BLOCKS
#define ARCHBENCH_WKV6_WIDE_BLOCKS 5
#endif
constexpr int WIDE_BLOCKS = ARCHBENCH_WKV6_WIDE_BLOCKS, BESIDE_CPB = 8, ALONE_CPB = 4;
template <typename F, int N, int PASSES, bool W_PER_HEAD, bool WIDE>
__global__ void __launch_bounds__(PT, WIDE ? WIDE_BLOCKS : 4)
wkv6_build_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ k, const F* __restrict__ v,
                  const F* __restrict__ w, const float* __restrict__ u, int c0, int n, int cpb,
                  float* __restrict__ ws) {
  using O = Op<F, N, 16, 1, PASSES, W_PER_HEAD>;
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  auto& area = *reinterpret_cast<BuildArea<O>*>(smem_bytes);
  const int per_head = (n + cpb - 1) / cpb, bh = blockIdx.x / per_head, q = blockIdx.x % per_head;
  const int bi = bh / H, h = bh % H;
  for (int i = threadIdx.x; i < N; i += blockDim.x) area.scratch.u[i] = u[h * N + i];
  __syncthreads();
  const size_t tok_stride = (size_t)H * N, base = (size_t)bi * T * tok_stride + (size_t)h * N;
  const O op = O::make(r, w, k, v, nullptr, base, tok_stride, 0, T, (size_t)h * N);
  const int i0 = q * cpb, i1 = i0 + cpb < n ? i0 + cpb : n;
  build_to_workspace(op, area, ws + (size_t)bh * n * WsLayout<false>::FLOATS, c0, i0, i1);
}

template <typename F, int N, int VT, int G, bool TWO, bool W_PER_HEAD>
cudaError_t launch_form(int B, int T, int H, const void* r, const void* k, const void* v, const void* w,
                        const float* u, float* state, void* y, void* ws, size_t ws_bytes, cudaStream_t stream) {
  constexpr int PASSES = sizeof(F) == 4 ? 3 : 1;  // 3xTF32 for fp32 inputs
  if constexpr (!TWO) {
    constexpr size_t bytes = sizeof(Smem<F, N, VT, G>);
    if constexpr (bytes > MAX_SMEM) {
      return cudaErrorInvalidValue;  // this many groups do not fit beside this tile
    } else {
      return launch_pipeline(wkv6_chunked_kernel<F, N, VT, G, PASSES, W_PER_HEAD>, B * H * (N / VT),
                             Pipe<G>::THREADS, bytes, stream, T, H, (const F*)r, (const F*)k, (const F*)v,
                             (const F*)w, u, state, (F*)y);
    }
  } else {
    return launch_two_kernels<F, PASSES, false, VT>(
        B, T, H, (const F*)v, state, (F*)y, ws, ws_bytes, stream,
        [&](int c0, int n, float* wsp, bool alone, cudaStream_t on, bool pdl) {
          auto kernel = wkv6_build_kernel<F, N, PASSES, W_PER_HEAD, false>;
          if constexpr (sizeof(F) == 2) {
            if (alone) kernel = wkv6_build_kernel<F, N, PASSES, W_PER_HEAD, true>;
          }
          const int cpb = build_cpb(alone, BESIDE_CPB, sizeof(F) == 2 ? ALONE_CPB : BESIDE_CPB);
          return launch_pipeline_pdl(pdl, kernel, B * H * ((n + cpb - 1) / cpb), PT,
                                     sizeof(BuildArea<Op<F, N, 16, 1, PASSES, W_PER_HEAD>>), on, T, H, (const F*)r,
                                     (const F*)k, (const F*)v, (const F*)w, u, c0, n, cpb, wsp);
        });
  }
}

template <typename F, int N, int VT, int G, bool TWO>
cudaError_t launch(int B, int T, int H, const void* r, const void* k, const void* v, const void* w, bool w_per_head,
                   const float* u, float* state, void* y, void* ws, size_t ws_bytes, cudaStream_t stream) {
  return w_per_head ? launch_form<F, N, VT, G, TWO, true>(B, T, H, r, k, v, w, u, state, y, ws, ws_bytes, stream)
                    : launch_form<F, N, VT, G, TWO, false>(B, T, H, r, k, v, w, u, state, y, ws, ws_bytes, stream);
}

}  // namespace wkv6c

// r, k, v: [B, T, H, N], w: the log decay per token [B, T, H, N] or, with w_per_head, one per
// head [H, N] (WKV5), in the inputs' dtype; u: [H, N] fp32, state [B, H, N, N] fp32 (updated
// in place), y: [B, T, H, N]. variant: the launch code of tc::dispatch. Head size 64 only
// (cudaErrorInvalidValue otherwise). ws: the two-kernel form's workspace,
// wkv6_chunked_workspace() bytes (0: none needed).
size_t wkv6_chunked_workspace(int B, int T, int H, int N, int variant) {
  return tc::workspace_bytes<false>(B, T, H, N, variant, tc::WKV6_SPLIT_MAX_HEADS);
}

cudaError_t wkv6_chunked_forward(int dtype, int B, int T, int H, int N, int variant, const void* r, const void* k,
                                 const void* v, const void* w, bool w_per_head, const float* u, float* state,
                                 void* y, void* ws, size_t ws_bytes, cudaStream_t stream) {
  if (T == 0 || B == 0 || H == 0) return cudaSuccess;
  if (N != 64) return cudaErrorInvalidValue;
  return tc::dispatch(dtype, (long)B * H, variant, tc::WKV6_SPLIT_MAX_HEADS, [&](auto f, auto vt, auto g, auto form) {
    using F = typename decltype(f)::type;
    return wkv6c::launch<F, 64, decltype(vt)::value, decltype(g)::value, decltype(form)::value == 2>(
        B, T, H, r, k, v, w, w_per_head, u, state, y, ws, ws_bytes, stream);
  });
}

}  // namespace archbench
