// WKV6 forward in chunks of C = 16 tokens, the products on tensor cores (tf32 mma), for long
// prompts at small batch, where the one-token-at-a-time kernel (wkv6.cu) is bound by the
// latency of its serial chain. UNTESTED ON A GPU so far (written without one): it is reached
// only through wkv6_cuda_chunked (kernels/wkv6/op.py), never by default.
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
// Structure as wkv7_chunked.cu (which passed its GPU tests): one thread block per (batch,
// head, tile of VT state columns), 8 warps in two roles meeting at one __syncthreads per chunk:
//  * 4 producer warps build chunk c + 1's operands (state-independent): load and stage the
//    inputs (chunk c + 2's loads in flight meanwhile), the cumulative decays, R̃, K̂, e^{Λ_C},
//    the bonus diagonal (8 lanes per token, shuffles), and M on tensor cores with the K = 64
//    reduction split over the 4 warps (16 keys each, partials summed in the masking step).
//    WKV6 has one C x C matrix and no triangular solve (WKV7: four and a solve), so this
//    side is several times lighter than WKV7's, whose producers set its pace at B = 1.
//  * 4 state warps carry S (fp32, in shared memory) through chunk c: Y (NT tiles of
//    16 x 16, K = N + C) and S_C (4 NT tiles, D∘S_0 loaded as the accumulator + K̂ᵀ V, K = C).
// Splitting the V columns over N / VT blocks gives B = 1 its parallelism (each block redoes
// the cheap chunk matrices).
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

// Shared memory of one block. Leading dimensions padded by 4 floats; every array starts on
// a 32-byte boundary (all sizes are multiples of 8 floats), as wmma needs.
template <int N, int VT>
struct Smem {
  static constexpr int LDW = N + C + 4, LDC = C + 4, LDN = N + 4, LDV = VT + 4;
  struct Chunk {              // a chunk's operands for the state pass (double-buffered)
    float rm[C][LDW];         // [R̃ | M]
    float kh[C][LDN];         // K̂ (row j), read transposed (col-major) as K̂ᵀ
    float d[N];               // e^{Λ_C}
  };
  Chunk chunk[2];
  float s[2][N + C][LDV];     // rows 0..N-1: the state tile, rows N..N+C-1: the chunk's v (ping-pong)
  float ystage[SW][16][20];   // a state warp's y tile on its way out
  // producer scratch (single-buffered)
  float raw[3][C][N];         // r, Λ (w, summed in place), k as fp32
  float fac[2][C][LDN];       // factorised R', K'
  float part[PW][C][LDC];     // the producer warps' partial products R'K'ᵀ (16 keys each)
  float lamc[N];              // Λ_C
  float u[N];                 // the bonus u of this head
  float bonus[C];             // Σ_i r_ti u_i k_ti
  int unsafe;                 // some column of this chunk is not factorised
  int pad_[7];
};

// A chunk's inputs (r, w, k full rows; v at this block's columns), fetched into registers by
// the producer threads (16-byte loads, zeros past T: padding tokens change nothing) and
// staged into shared memory as fp32.
template <typename F, int N, int VT>
struct Loader {
  static constexpr int VN = Vec<F>::n;
  static constexpr int FULL = N / VN, PART = VT / VN, PER_TOKEN = 3 * FULL + PART;
  static constexpr int SLOTS = C * PER_TOKEN, NSLOT = (SLOTS + PT - 1) / PT;
  static_assert(N % VN == 0 && VT % VN == 0, "16-byte vectors must tile a row");
  uint4 buf[NSLOT];

  const F *r, *w, *k, *v;

  __device__ __forceinline__ void fetch(size_t base, size_t tok_stride, int col0, int t0, int T, int ptid) {
#pragma unroll
    for (int q = 0; q < NSLOT; ++q) {
      const int idx = q * PT + ptid;
      buf[q] = make_uint4(0, 0, 0, 0);
      if (idx < SLOTS) {
        const int tt = idx / PER_TOKEN, rem = idx % PER_TOKEN;
        if (t0 + tt < T) {
          const size_t off = base + (size_t)(t0 + tt) * tok_stride;
          const int which = rem / FULL;  // r, w, k, v
          const F* src = which == 0 ? r : which == 1 ? w : which == 2 ? k : v;
          const int e0 = which < 3 ? (rem % FULL) * VN : col0 + (rem - 3 * FULL) * VN;
          buf[q] = *reinterpret_cast<const uint4*>(src + off + e0);
        }
      }
    }
  }

  // raw: [3][C][N]; vrows: the chunk's v, row stride ldv
  __device__ __forceinline__ void stage(float* raw, float* vrows, int ldv, int ptid) const {
#pragma unroll
    for (int q = 0; q < NSLOT; ++q) {
      const int idx = q * PT + ptid;
      if (idx < SLOTS) {
        const int tt = idx / PER_TOKEN, rem = idx % PER_TOKEN;
        const F* e = reinterpret_cast<const F*>(&buf[q]);
        float* dst = rem < 3 * FULL ? raw + ((rem / FULL) * C + tt) * N + (rem % FULL) * VN
                                    : vrows + tt * ldv + (rem - 3 * FULL) * VN;
#pragma unroll
        for (int x = 0; x < VN; ++x) dst[x] = to_f(e[x]);
      }
    }
  }
};

// Producer: the state-independent operands of one chunk (inputs already staged in sm.raw,
// sm.unsafe reset) into ch. Called by the PT producer threads together.
template <int N, int VT, int PASSES>
__device__ __forceinline__ void build_chunk(Smem<N, VT>& sm, typename Smem<N, VT>::Chunk& ch, int ptid) {
  using S = Smem<N, VT>;
  constexpr int LDN = S::LDN, LDC = S::LDC;
  static_assert(N == 16 * PW, "M's reduction: 16 keys per producer warp");
  float(*r)[N] = sm.raw[0];
  float(*lam)[N] = sm.raw[1];
  float(*k)[N] = sm.raw[2];

  // 1. cumulative log decay Λ_t per column (in place of w) and the chunk total Λ_C (threads
  //    0..N-1); the bonus diagonal Σ_i r_ti u_i k_ti (8 threads a token, all PT = 128)
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
  {
    static_assert(PT == 8 * C && N % 8 == 0, "bonus: 8 threads per token");
    const int t = ptid / 8, p = ptid % 8;
    float b = 0.f;
#pragma unroll
    for (int q = 0; q < N / 8; ++q) {
      const int i = q * 8 + p;
      b = fmaf(r[t][i] * sm.u[i], k[t][i], b);
    }
    b += __shfl_xor_sync(0xffffffffu, b, 4);
    b += __shfl_xor_sync(0xffffffffu, b, 2);
    b += __shfl_xor_sync(0xffffffffu, b, 1);
    if (p == 0) sm.bonus[t] = b;
  }
  producer_sync();

  // 2. decayed vectors for the state pass (exponents <= 0) and the factorised ones for M
  //    (r e^{Λ_{t-1} - c}, k e^{c - Λ_j}, c = Λ_C / 2; zero where the column is not factorised)
#pragma unroll 2
  for (int e = ptid; e < C * N; e += PT) {
    const int t = e / N, i = e % N;
    const float l = lam[t][i], lp = t ? lam[t - 1][i] : 0.f, lc = sm.lamc[i];
    const bool safe = lc >= -SAFE_SPAN;
    const float elp = __expf(lp), eb = __expf(lc - l);
    const float rc = r[t][i], kc = k[t][i];
    ch.rm[t][i] = rc * elp;  // R̃
    ch.kh[t][i] = kc * eb;   // K̂
    if (t == 0) ch.d[i] = __expf(lc);
    const float emc = __expf(-0.5f * lc), ecl = __expf(0.5f * lc - l);  // e^{-c} <= e^{32}, e^{c - Λ_j}
    sm.fac[0][t][i] = safe ? rc * (elp * emc) : 0.f;  // R' = r_t e^{Λ_{t-1} - c}
    sm.fac[1][t][i] = safe ? kc * ecl : 0.f;          // K' = k_j e^{c - Λ_j}
  }
  producer_sync();

  // 3. R'K'ᵀ on tensor cores: producer warp pw sums keys 16 pw .. 16 pw + 15
  {
    const int pw = ptid / 32;
    Acc acc;
    wmma::fill_fragment(acc, 0.f);
#pragma unroll
    for (int k0 = 16 * pw; k0 < 16 * pw + 16; k0 += 8)  // B operand (i, j) = K'[j][i]: col-major
      mma8<PASSES, wmma::row_major, wmma::col_major>(acc, &sm.fac[0][0][k0], LDN, &sm.fac[1][0][k0], LDN);
    wmma::store_matrix_sync(&sm.part[pw][0][0], acc, LDC, wmma::mem_row_major);
  }
  producer_sync();

  // 4. the partials summed, the terms of unfactorised columns (exponents <= 0), the causal
  //    mask and the bonus diagonal, into [R̃ | M]'s right block
  const bool unsafe = sm.unsafe;
#pragma unroll 1
  for (int e = ptid; e < C * C; e += PT) {
    const int t = e / C, j = e % C;
    float m = (sm.part[0][t][j] + sm.part[1][t][j]) + (sm.part[2][t][j] + sm.part[3][t][j]);
    if (unsafe && j < t) {
      for (int i = 0; i < N; ++i) {
        if (sm.lamc[i] >= -SAFE_SPAN) continue;
        m = fmaf(r[t][i] * k[j][i], __expf(lam[t - 1][i] - lam[j][i]), m);
      }
    }
    ch.rm[t][N + j] = j < t ? m : j == t ? sm.bonus[t] : 0.f;
  }
}

// Two blocks per SM for fp16/bf16 at VT <= 32 (as WKV7); the fp32 (3xTF32) build takes one.
template <typename F, int N, int VT, int PASSES>
__global__ void __launch_bounds__(THREADS, (VT <= 32 && PASSES == 1 ? 2 : 1))
wkv6_chunked_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ k, const F* __restrict__ v,
                    const F* __restrict__ w, const float* __restrict__ u, float* __restrict__ state,
                    F* __restrict__ y) {
  using S = Smem<N, VT>;
  constexpr int LDW = S::LDW, LDN = S::LDN, LDV = S::LDV;
  constexpr int NT = VT / 16;  // 16-column tiles of the block's state columns
  static_assert(N % 16 == 0 && VT % 16 == 0 && N % VT == 0 && NT <= SW, "bad tiling");
  static_assert(N <= PT, "build_chunk: a column per thread for the cumulative decay");
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
    Loader<F, N, VT> ld{{}, r, w, k, v};
    ld.fetch(base, tok_stride, col0, 0, T, ptid);
    if (ptid < N) sm.u[ptid] = u[h * N + ptid];
    if (ptid == 0) sm.unsafe = 0;
    ld.stage(&sm.raw[0][0][0], &sm.s[0][N][0], LDV, ptid);
    if (nchunks > 1) ld.fetch(base, tok_stride, col0, C, T, ptid);
    producer_sync();
    build_chunk<N, VT, PASSES>(sm, sm.chunk[0], ptid);
    __syncthreads();
    for (int c = 0; c < nchunks; ++c) {
      if (c + 1 < nchunks) {  // chunk c + 1 while the state warps do chunk c
        const int nb = (c + 1) & 1;  // (the __syncthreads below put every producer past the last build)
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
    float(*sn)[LDV] = sm.s[(c + 1) & 1];  // S_C (rows 0..N-1; rows N.. hold chunk c + 1's v)
    // Y = [R̃ | M] [S_0; V], tile ni by warp ni, written out
    if (warp < NT) {
      const int ni = warp;
      Acc acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll 2
      for (int k0 = 0; k0 < N + C; k0 += 8)
        mma8<PASSES, wmma::row_major, wmma::row_major>(acc, &ch.rm[0][k0], LDW, &so[k0][ni * 16], LDV);
      wmma::store_matrix_sync(&sm.ystage[warp][0][0], acc, 20, wmma::mem_row_major);
      __syncwarp();
      const int row = lane / 2, half = lane % 2, t = c * C + row;
      if (t < T) store8<F>(y + base + (size_t)t * tok_stride + col0 + ni * 16 + half * 8,
                           &sm.ystage[warp][row][half * 8]);
    }
    // S_C = D∘S_0 + K̂ᵀ V, a 16 x 16 tile at a time: D∘S_0 goes into S_C's tile (the warp's
    // own), is loaded as the accumulator, and the product is added
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
      for (int k0 = 0; k0 < C; k0 += 8)  // A operand (i, j) = K̂[j][i]: col-major
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
cudaError_t launch(int B, int T, int H, const void* r, const void* k, const void* v, const void* w, const float* u,
                   float* state, void* y, cudaStream_t stream) {
  constexpr int PASSES = sizeof(F) == 4 ? 3 : 1;  // 3xTF32 for fp32 inputs
  constexpr size_t bytes = sizeof(Smem<N, VT>);
  auto kernel = wkv6_chunked_kernel<F, N, VT, PASSES>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
  if (err != cudaSuccess) return err;
  kernel<<<B * H * (N / VT), THREADS, bytes, stream>>>(T, H, (const F*)r, (const F*)k, (const F*)v, (const F*)w, u,
                                                         state, (F*)y);
  return cudaGetLastError();
}

}  // namespace wkv6c

// r, k, v, w: [B, T, H, N] (w the log decay per token), u: [H, N] fp32, state [B, H, N, N]
// fp32 (updated in place), y: [B, T, H, N]. variant: 0 = choose by shape; 1, 2, 3 = 16, 32,
// 64 state columns per block. Head size 64 only (cudaErrorInvalidValue otherwise).
cudaError_t wkv6_chunked_forward(int dtype, int B, int T, int H, int N, int variant, const void* r, const void* k,
                                 const void* v, const void* w, const float* u, float* state, void* y,
                                 cudaStream_t stream) {
  if (T == 0 || B == 0 || H == 0) return cudaSuccess;
  if (N != 64) return cudaErrorInvalidValue;
  // NOT MEASURED (no GPU when written): the producers' per-chunk work is light here, so the
  // guess is 16 columns per block (4 blocks a head) while B x H leaves SMs idle, 32 up to
  // 2 blocks per SM, 64 beyond (WKV7's measured rule is 32 up to B x H = 264, 64 beyond).
  if (variant == 0) variant = (long)B * H <= 66 ? 1 : (long)B * H <= 264 ? 2 : 3;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    constexpr int N = 64;
    switch (variant) {
      case 1: return wkv6c::launch<F, N, 16>(B, T, H, r, k, v, w, u, state, y, stream);
      case 2: return wkv6c::launch<F, N, 32>(B, T, H, r, k, v, w, u, state, y, stream);
      case 3: return wkv6c::launch<F, N, 64>(B, T, H, r, k, v, w, u, state, y, stream);
      default: return cudaErrorInvalidValue;
    }
  })
  return cudaSuccess;
}

}  // namespace archbench
