// WKV7 forward in chunks of C = 16 tokens, the products on tensor cores (tf32 mma), for
// long prompts at small batch, where the one-token-at-a-time kernel (wkv7.cu) is bound by
// the latency of its serial chain.
//
// The maths is kernels/wkv7/chunked.py (its docstring derives it). Per head and chunk, with
// Λ_t the cumulative log decay inside the chunk (Λ_{-1} = 0, Λ_C its total) and S_0 the
// state [K, V] before the chunk:
//     U   = (I - L_ab)^{-1} (Ã S_0 + L_ak V)                 [C, V]
//     Y   = R̃ S_0 + M_rb U + M_rk V                           [C, V]
//     S_C = diag(e^{Λ_C}) S_0 + B̂ᵀ U + K̂ᵀ V                  [K, V]
// Ã_t = a_t e^{Λ_{t-1}}, R̃_t = r_t e^{Λ_t}, B̂_j = b_j e^{Λ_C - Λ_j}, K̂_j = k_j e^{Λ_C - Λ_j};
// L_xy[t, j] = Σ_i x_ti y_ji e^{Λ_{t-1,i} - Λ_{j,i}} (j < t), M_xy[t, j] = Σ_i x_ti y_ji
// e^{Λ_{t,i} - Λ_{j,i}} (j <= t). Folding the inverse into the operands once per chunk,
// A' = (I - L_ab)^{-1} Ã and W = (I - L_ab)^{-1} L_ak, the state pass is three products:
//     U = [A' | W] [S_0; V],   Y = [R̃ | M_rk] [S_0; V] + M_rb U,   S_C = D∘S_0 + [B̂ᵀ | K̂ᵀ] [U; V].
//
// One thread block per (batch, head, tile of VT state columns), 8 warps in two roles that
// meet at one __syncthreads per chunk:
//  * 4 producer warps build chunk c + 1's operands (they do not depend on the state): load
//    and stage the inputs (the loads of chunk c + 2 in flight meanwhile), the cumulative
//    decays, the decayed vectors, the four C x C matrices (tensor cores), the causal masks
//    and the triangular solve (forward substitution, fp32).
//  * 4 state warps carry S (fp32, in shared memory) through chunk c: the three products
//    above on tensor cores, y written out.
// Everything of a chunk stays in shared memory: a workspace in global memory would move
// ~20 KB per chunk and head, ten times the inputs.
//
// The C x C matrices are products of factorised operands, x_t e^{Λ_t - c} and y_j e^{c - Λ_j},
// with a per-column reference c = Λ_C / 2, so that every factor is within e^{±|Λ_C|/2}. A
// column whose chunk decay is stronger than e^{-SAFE_SPAN} (far beyond RWKV-7's range,
// Λ_C >= 16 * -0.6065) is left out of the factorised products and added term by term with
// exponents <= 0 (a slow path that real models never take). So nothing overflows.
//
// Precision: tf32 products with fp32 accumulation for fp16/bf16 inputs; for fp32 inputs each
// product is done as three tf32 products (hi*hi + hi*lo + lo*hi, "3xTF32"), about fp32's
// accuracy. The state, the decays and the triangular solve are fp32 throughout.
//
// Head size 64 only (N = 128 would not fit two blocks' shared memory); the Python op falls
// back to the sequential kernel for other sizes.
#include <mma.h>

#include "../../chunked_tc.cuh"

namespace archbench {
namespace wkv7c {

using namespace nvcuda;
using namespace tc;

// Shared memory of one block. Leading dimensions are padded by 4 floats (conflict-free
// tensor-core loads); every array starts on a 32-byte boundary, as wmma needs.
template <int N, int VT>
struct Smem {
  static constexpr int LDW = N + C + 4, LDC = C + 4, LDN = N + 4, LDV = VT + 4;
  struct Chunk {              // a chunk's operands for the state pass (double-buffered)
    float aw[C][LDW];         // [A' | W] = (I - L_ab)^{-1} [Ã | L_ak]
    float rm[C][LDW];         // [R̃ | M_rk]
    float mrb[C][LDC];        // M_rb
    float bh[C][LDN];         // B̂ (row j), read transposed (col-major) as B̂ᵀ
    float kh[C][LDN];         // K̂
    float d[N];               // e^{Λ_C}
  };
  Chunk chunk[2];
  float s[2][N + C][LDV];     // rows 0..N-1: the state tile, rows N..N+C-1: the chunk's v (ping-pong)
  float u[C][LDV];            // U of the current chunk
  float ystage[SW][16][20];   // a state warp's y tile on its way out
  // producer scratch (single-buffered)
  float raw[5][C][N];         // r, Λ (w, summed in place), k, a, b as fp32
  float fac[4][C][LDN];       // factorised Ã', R̃', B̄, K̄
  float lab[C][LDC];          // L_ab
  float lamc[N];              // Λ_C
  int unsafe;                 // some column of this chunk is not factorised
};

// A chunk's inputs, fetched into registers by the producer threads (16-byte loads, zeros
// past T: padding tokens change nothing) and staged into shared memory as fp32.
template <typename F, int N, int VT>
struct Loader {
  static constexpr int VN = Vec<F>::n;
  static constexpr int FULL = N / VN, PART = VT / VN, PER_TOKEN = 5 * FULL + PART;
  static constexpr int SLOTS = C * PER_TOKEN, NSLOT = (SLOTS + PT - 1) / PT;
  static_assert(N % VN == 0 && VT % VN == 0, "16-byte vectors must tile a row");
  uint4 buf[NSLOT];

  const F *r, *w, *k, *a, *b, *v;

  // base + t * tok_stride is token t's row; v read at columns col0..
  __device__ __forceinline__ void fetch(size_t base, size_t tok_stride, int col0, int t0, int T, int ptid) {
#pragma unroll
    for (int q = 0; q < NSLOT; ++q) {
      const int idx = q * PT + ptid;
      buf[q] = make_uint4(0, 0, 0, 0);
      if (idx < SLOTS) {
        const int tt = idx / PER_TOKEN, rem = idx % PER_TOKEN;
        if (t0 + tt < T) {
          const size_t off = base + (size_t)(t0 + tt) * tok_stride;
          const int which = rem / FULL;  // r, w, k, a, b, v (a select chain, not an indexed array)
          const F* src = which == 0 ? r : which == 1 ? w : which == 2 ? k : which == 3 ? a : which == 4 ? b : v;
          const int e0 = which < 5 ? (rem % FULL) * VN : col0 + (rem - 5 * FULL) * VN;
          const F* p = src + off + e0;
          buf[q] = *reinterpret_cast<const uint4*>(p);
        }
      }
    }
  }

  // raw: [5][C][N]; vrows: the chunk's v, row stride ldv
  __device__ __forceinline__ void stage(float* raw, float* vrows, int ldv, int ptid) const {
#pragma unroll
    for (int q = 0; q < NSLOT; ++q) {
      const int idx = q * PT + ptid;
      if (idx < SLOTS) {
        const int tt = idx / PER_TOKEN, rem = idx % PER_TOKEN;
        const F* e = reinterpret_cast<const F*>(&buf[q]);
        float* dst = rem < 5 * FULL ? raw + ((rem / FULL) * C + tt) * N + (rem % FULL) * VN
                                    : vrows + tt * ldv + (rem - 5 * FULL) * VN;
#pragma unroll
        for (int u = 0; u < VN; ++u) dst[u] = to_f(e[u]);
      }
    }
  }
};

// Producer: the state-independent operands of one chunk (inputs already staged in sm.raw)
// into ch. Called by the PT producer threads together.
template <int N, int VT, int PASSES>
__device__ __forceinline__ void build_chunk(Smem<N, VT>& sm, typename Smem<N, VT>::Chunk& ch, int ptid) {
  using S = Smem<N, VT>;
  constexpr int LDW = S::LDW, LDC = S::LDC, LDN = S::LDN;
  float(*r)[N] = sm.raw[0];
  float(*lam)[N] = sm.raw[1];
  float(*k)[N] = sm.raw[2];
  float(*a)[N] = sm.raw[3];
  float(*b)[N] = sm.raw[4];

  // 1. cumulative log decay Λ_t per column (in place of w) and the chunk total Λ_C
  if (ptid < N) {
    float acc = 0.f;
#pragma unroll
    for (int t = 0; t < C; ++t) {
      acc += lam[t][ptid];
      lam[t][ptid] = acc;
    }
    sm.lamc[ptid] = acc;
    if (acc < -SAFE_SPAN) sm.unsafe = 1;  // benign race: every writer writes 1
  }
  producer_sync();

  // 2. decayed vectors for the state pass (every exponent <= 0) and the factorised ones
  //    for the C x C matrices (x e^{Λ - c}, y e^{c - Λ}, c = Λ_C / 2; zero where the column
  //    is not factorised)
#pragma unroll 1
  for (int e = ptid; e < C * N; e += PT) {
    const int t = e / N, i = e % N;
    const float l = lam[t][i], lp = t ? lam[t - 1][i] : 0.f, lc = sm.lamc[i];
    const bool safe = lc >= -SAFE_SPAN;
    const float el = __expf(l), elp = __expf(lp), eb = __expf(lc - l);
    const float ac = a[t][i], rc = r[t][i], bc = b[t][i], kc = k[t][i];
    ch.aw[t][i] = ac * elp;  // Ã
    ch.rm[t][i] = rc * el;   // R̃
    ch.bh[t][i] = bc * eb;   // B̂
    ch.kh[t][i] = kc * eb;   // K̂
    if (t == 0) ch.d[i] = __expf(lc);
    const float emc = __expf(-0.5f * lc), ecl = __expf(0.5f * lc - l);  // e^{-c} <= e^{32}, e^{c - Λ_t}
    sm.fac[0][t][i] = safe ? ac * (elp * emc) : 0.f;  // Ã' = a_t e^{Λ_{t-1} - c}
    sm.fac[1][t][i] = safe ? rc * (el * emc) : 0.f;   // R̃' = r_t e^{Λ_t - c}
    sm.fac[2][t][i] = safe ? bc * ecl : 0.f;          // B̄ = b_j e^{c - Λ_j}
    sm.fac[3][t][i] = safe ? kc * ecl : 0.f;          // K̄ = k_j e^{c - Λ_j}
  }
  producer_sync();

  // 3. the C x C matrices on tensor cores, one per producer warp:
  //    L_ab = Ã'B̄ᵀ, L_ak = Ã'K̄ᵀ, M_rb = R̃'B̄ᵀ, M_rk = R̃'K̄ᵀ (masked in step 4)
  {
    const int pw = ptid / 32;
    const float* x = &sm.fac[pw < 2 ? 0 : 1][0][0];
    const float* y = &sm.fac[(pw & 1) ? 3 : 2][0][0];
    Acc acc;
    wmma::fill_fragment(acc, 0.f);
#pragma unroll 2
    for (int k0 = 0; k0 < N; k0 += 8)  // B operand (i, j) = y[j][i]: col-major
      mma8<PASSES, wmma::row_major, wmma::col_major>(acc, x + k0, LDN, y + k0, LDN);
    float* dst = pw == 0 ? &sm.lab[0][0] : pw == 1 ? &ch.aw[0][N] : pw == 2 ? &ch.mrb[0][0] : &ch.rm[0][N];
    const int ld = pw == 0 || pw == 2 ? LDC : LDW;
    wmma::store_matrix_sync(dst, acc, ld, wmma::mem_row_major);
  }
  producer_sync();

  // 4. the terms of columns left out of step 3 (exponents <= 0), and the causal masks
  const bool unsafe = sm.unsafe;
#pragma unroll 1
  for (int e = ptid; e < C * C; e += PT) {
    const int t = e / C, j = e % C;
    float lab = sm.lab[t][j], lak = ch.aw[t][N + j], mrb = ch.mrb[t][j], mrk = ch.rm[t][N + j];
    if (unsafe && j <= t) {
      for (int i = 0; i < N; ++i) {
        if (sm.lamc[i] >= -SAFE_SPAN) continue;
        const float lj = lam[j][i];
        const float em = __expf(lam[t][i] - lj);
        mrb = fmaf(r[t][i] * b[j][i], em, mrb);
        mrk = fmaf(r[t][i] * k[j][i], em, mrk);
        if (j < t) {
          const float el = __expf(lam[t - 1][i] - lj);
          lab = fmaf(a[t][i] * b[j][i], el, lab);
          lak = fmaf(a[t][i] * k[j][i], el, lak);
        }
      }
    }
    sm.lab[t][j] = j < t ? lab : 0.f;
    ch.aw[t][N + j] = j < t ? lak : 0.f;
    ch.mrb[t][j] = j <= t ? mrb : 0.f;
    ch.rm[t][N + j] = j <= t ? mrk : 0.f;
  }
  producer_sync();

  // 5. [A' | W] = (I - L_ab)^{-1} [Ã | L_ak] by forward substitution, a column per thread:
  //    X_t = RHS_t + Σ_{j<t} L_ab[t, j] X_j
  if (ptid < N + C) {
    float x[C];
#pragma unroll
    for (int t = 0; t < C; ++t) x[t] = ch.aw[t][ptid];
#pragma unroll
    for (int j = 0; j < C; ++j)
#pragma unroll
      for (int t = j + 1; t < C; ++t) x[t] = fmaf(sm.lab[t][j], x[j], x[t]);
#pragma unroll
    for (int t = 0; t < C; ++t) ch.aw[t][ptid] = x[t];
  }
}

// Two blocks per SM where shared memory allows (VT <= 32) for fp16/bf16; the fp32 (3xTF32)
// build takes one block per SM rather than spill (it is the precision path, not the fast one).
template <typename F, int N, int VT, int PASSES>
__global__ void __launch_bounds__(THREADS, (VT <= 32 && PASSES == 1 ? 2 : 1))
wkv7_chunked_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ w, const F* __restrict__ k,
                    const F* __restrict__ v, const F* __restrict__ a, const F* __restrict__ b,
                    float* __restrict__ state, F* __restrict__ y) {
  using S = Smem<N, VT>;
  constexpr int LDW = S::LDW, LDC = S::LDC, LDN = S::LDN, LDV = S::LDV;
  constexpr int NT = VT / 16;  // 16-column tiles of the block's state columns
  static_assert(N % 16 == 0 && VT % 16 == 0 && N % VT == 0 && NT <= SW, "bad tiling");
  static_assert(PW == 4 && N <= PT && N + C <= PT, "build_chunk: one C x C matrix per producer warp, a column per thread");
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  S& sm = *reinterpret_cast<S*>(smem_bytes);

  const int tiles = N / VT;
  const int bh = blockIdx.x / tiles;            // b * H + h
  const int col0 = (blockIdx.x % tiles) * VT;   // first state column of this block
  const int bi = bh / H, h = bh % H;
  const size_t tok_stride = (size_t)H * N;
  const size_t base = (size_t)bi * T * tok_stride + (size_t)h * N;
  float* st = state + (size_t)bh * N * N;
  const int nchunks = (T + C - 1) / C;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  if (warp >= SW) {
    // ---------------- producer warps ----------------
    const int ptid = tid - 32 * SW;
    Loader<F, N, VT> ld{{}, r, w, k, a, b, v};
    ld.fetch(base, tok_stride, col0, 0, T, ptid);
    if (ptid == 0) sm.unsafe = 0;
    ld.stage(&sm.raw[0][0][0], &sm.s[0][N][0], LDV, ptid);
    if (nchunks > 1) ld.fetch(base, tok_stride, col0, C, T, ptid);
    producer_sync();
    build_chunk<N, VT, PASSES>(sm, sm.chunk[0], ptid);
    __syncthreads();
    for (int c = 0; c < nchunks; ++c) {
      if (c + 1 < nchunks) {  // chunk c + 1 while the state warps do chunk c
        const int nb = (c + 1) & 1;
        if (ptid == 0) sm.unsafe = 0;
        ld.stage(&sm.raw[0][0][0], &sm.s[nb][N][0], LDV, ptid);
        if (c + 2 < nchunks) ld.fetch(base, tok_stride, col0, (c + 2) * C, T, ptid);
        producer_sync();
        build_chunk<N, VT, PASSES>(sm, sm.chunk[nb], ptid);
      }
      __syncthreads();
    }
    return;
  }

  // ---------------- state warps ----------------
  // the state tile in: rows 0..N-1, columns col0..col0+VT-1
  for (int e = tid; e < N * VT / 4; e += 32 * SW) {
    const int row = e / (VT / 4), c4 = (e % (VT / 4)) * 4;
    const float4 x = *reinterpret_cast<const float4*>(st + (size_t)row * N + col0 + c4);
    sm.s[0][row][c4] = x.x; sm.s[0][row][c4 + 1] = x.y; sm.s[0][row][c4 + 2] = x.z; sm.s[0][row][c4 + 3] = x.w;
  }
  __syncthreads();
  for (int c = 0; c < nchunks; ++c) {
    const typename S::Chunk& ch = sm.chunk[c & 1];
    float(*so)[LDV] = sm.s[c & 1];        // S_0 and the chunk's v
    float(*sn)[LDV] = sm.s[(c + 1) & 1];  // S_C
    // A. U = [A' | W] [S_0; V] (to shared memory) and Y = [R̃ | M_rk] [S_0; V] (kept)
    Acc yacc;
    int ytile = -1;
#pragma unroll
    for (int q = warp; q < 2 * NT; q += SW) {
      const bool is_u = q < NT;
      const int ni = is_u ? q : q - NT;
      const float* A = is_u ? &ch.aw[0][0] : &ch.rm[0][0];
      Acc acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll 2
      for (int k0 = 0; k0 < N + C; k0 += 8)
        mma8<PASSES, wmma::row_major, wmma::row_major>(acc, A + k0, LDW, &so[k0][ni * 16], LDV);
      if (is_u) {
        wmma::store_matrix_sync(&sm.u[0][ni * 16], acc, LDV, wmma::mem_row_major);
      } else {
        yacc = acc;
        ytile = ni;
      }
    }
    state_sync();
    // B. Y += M_rb U, written out
    if (ytile >= 0) {
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 8)
        mma8<PASSES, wmma::row_major, wmma::row_major>(yacc, &ch.mrb[0][k0], LDC, &sm.u[k0][ytile * 16], LDV);
      wmma::store_matrix_sync(&sm.ystage[warp][0][0], yacc, 20, wmma::mem_row_major);
      __syncwarp();
      const int row = lane / 2, half = lane % 2, t = c * C + row;
      if (t < T) store8<F>(y + base + (size_t)t * tok_stride + col0 + ytile * 16 + half * 8,
                           &sm.ystage[warp][row][half * 8]);
    }
    //    S_C = D∘S_0 + B̂ᵀ U + K̂ᵀ V, a 16 x 16 tile at a time: D∘S_0 goes into S_C's tile
    //    (the warp's own), is loaded as the accumulator, and the products are added
#pragma unroll
    for (int q = warp; q < (N / 16) * NT; q += SW) {
      const int mi = q / NT, ni = q % NT;
#pragma unroll
      for (int e = lane; e < 256; e += 32) {
        const int rr = mi * 16 + e / 16, cc = ni * 16 + e % 16;
        sn[rr][cc] = ch.d[rr] * so[rr][cc];
      }
      __syncwarp();
      Acc acc;
      wmma::load_matrix_sync(acc, &sn[mi * 16][ni * 16], LDV, wmma::mem_row_major);
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 8)  // A operand (i, j) = B̂[j][i]: col-major
        mma8<PASSES, wmma::col_major, wmma::row_major>(acc, &ch.bh[k0][mi * 16], LDN, &sm.u[k0][ni * 16], LDV);
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 8)
        mma8<PASSES, wmma::col_major, wmma::row_major>(acc, &ch.kh[k0][mi * 16], LDN, &so[N + k0][ni * 16], LDV);
      wmma::store_matrix_sync(&sn[mi * 16][ni * 16], acc, LDV, wmma::mem_row_major);
    }
    __syncthreads();
  }
  // the state tile out
  float(*sf)[LDV] = sm.s[nchunks & 1];
  for (int e = tid; e < N * VT / 4; e += 32 * SW) {
    const int row = e / (VT / 4), c4 = (e % (VT / 4)) * 4;
    *reinterpret_cast<float4*>(st + (size_t)row * N + col0 + c4) =
        make_float4(sf[row][c4], sf[row][c4 + 1], sf[row][c4 + 2], sf[row][c4 + 3]);
  }
}

template <typename F, int N, int VT>
cudaError_t launch(int B, int T, int H, const void* r, const void* w, const void* k, const void* v, const void* a,
                   const void* b, float* state, void* y, cudaStream_t stream) {
  constexpr int PASSES = sizeof(F) == 4 ? 3 : 1;  // 3xTF32 for fp32 inputs
  constexpr size_t bytes = sizeof(Smem<N, VT>);
  auto kernel = wkv7_chunked_kernel<F, N, VT, PASSES>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
  if (err != cudaSuccess) return err;
  kernel<<<B * H * (N / VT), THREADS, bytes, stream>>>(T, H, (const F*)r, (const F*)w, (const F*)k, (const F*)v,
                                                         (const F*)a, (const F*)b, state, (F*)y);
  return cudaGetLastError();
}

}  // namespace wkv7c

// variant: 0 = choose by shape; 1, 2, 3 = 16, 32, 64 state columns per block. Head size 64
// only (cudaErrorInvalidValue otherwise: the Python op takes the sequential kernel then).
cudaError_t wkv7_chunked_forward(int dtype, int B, int T, int H, int N, int variant, const void* r, const void* w,
                                 const void* k, const void* v, const void* a, const void* b, float* state, void* y,
                                 cudaStream_t stream) {
  if (T == 0 || B == 0 || H == 0) return cudaSuccess;
  if (N != 64) return cudaErrorInvalidValue;
  // Measured on an H100 (bf16, H = 40): 32 columns per block is the fastest at B x H = 40
  // (3.9-4.0 Mtok/s; 16 columns 3.1, 64 columns 3.3), 64 columns at B x H = 320 and 640 (each
  // block's producer warps redo the chunk matrices, so fewer, wider blocks win once the
  // heads alone fill the SMs). 16 columns never won.
  if (variant == 0) variant = (long)B * H <= 264 ? 2 : 3;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    constexpr int N = 64;
    switch (variant) {
      case 1: return wkv7c::launch<F, N, 16>(B, T, H, r, w, k, v, a, b, state, y, stream);
      case 2: return wkv7c::launch<F, N, 32>(B, T, H, r, w, k, v, a, b, state, y, stream);
      case 3: return wkv7c::launch<F, N, 64>(B, T, H, r, w, k, v, a, b, state, y, stream);
      default: return cudaErrorInvalidValue;
    }
  })
  return cudaSuccess;
}

}  // namespace archbench
