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
// One thread block per (batch, head, tile of VT state columns), run by the pipeline of
// chunked_tc.cuh:
//  * G groups of 4 producer warps build chunks ahead (their operands do not depend on the
//    state): load and stage the inputs (the group's next chunk's loads in flight meanwhile),
//    the cumulative decays, the decayed vectors, the four C x C matrices (tensor cores), the
//    causal masks and the triangular solve (forward substitution, fp32).
//  * 4 state warps carry S (fp32, in shared memory) through the chunks in order: the three
//    products above on tensor cores, y written out.
// Everything of a chunk stays in shared memory. That is the one-kernel form (no longer
// chosen by shape). For few heads (chunked_tc.cuh, the two-kernel form) the same build runs
// over all chunks at once in wkv7_build_kernel, finish() folds U's products into the
// operands, and they go through a 25.9 KB-per-chunk-and-head workspace to the register state
// pass of state_tc.cuh. The fused form (FusedOp below, for many heads, and the two-kernel
// form's first segment) keeps the pipeline but the state in the state warps' registers.
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

// Shared memory. Leading dimensions are padded by 4 floats (conflict-free tensor-core
// loads); every array's size is a multiple of 32 bytes, so each starts on a 32-byte
// boundary, as wmma needs.
template <int N, int VT>
struct Chunk {                // a chunk's operands for the state pass (a slot of the ring)
  static constexpr int LDW = N + C + 4, LDC = C + 4, LDN = N + 4, LDV = VT + 4;
  float aw[C][LDW];           // [A' | W] = (I - L_ab)^{-1} [Ã | L_ak]
  float rm[C][LDW];           // [R̃ | M_rk]
  float mrb[C][LDC];          // M_rb
  float bh[C][LDN];           // B̂ (row j), read transposed (col-major) as B̂ᵀ
  float kh[C][LDN];           // K̂
  float d[N];                 // e^{Λ_C}
  float v[C][LDV];            // the chunk's v at the block's columns
};
template <typename F, int N>
struct Scratch {              // a producer group's working space
  static constexpr int LDC = C + 4, LDN = N + 4;
  F raw[5][C][N];             // r, w, k, a, b as loaded
  float lam[C][N];            // Λ_t
  float fac[4][C][LDN];       // factorised Ã', R̃', B̄, K̄
  float lab[C][LDC];          // L_ab
  float lamc[N];              // Λ_C
  int unsafe;                 // some column of this chunk is not factorised
  int pad_[7];
};
template <typename F, int N, int VT, int G>
struct Smem {
  static constexpr int LDV = VT + 4;
  Chunk<N, VT> chunk[Pipe<G>::NB];
  Scratch<F, N> scratch[G];
  float s[N][LDV];            // the state tile, updated in place chunk by chunk
  float u[C][LDV];            // U of the current chunk
  float ystage[SW][16][20];   // a state warp's y tile on its way out
};

template <typename F, int N, int VT, int G, int PASSES>
struct Op {
  using Chunk = wkv7c::Chunk<N, VT>;
  using Scratch = wkv7c::Scratch<F, N>;
  using Smem = wkv7c::Smem<F, N, VT, G>;
  using S = Smem;
  static constexpr bool LOWRANK = true;  // the two-kernel form's E = B̂ᵀA' (state_tc.cuh)
  static constexpr int PASSES_ = PASSES;
  static constexpr int LDW = Chunk::LDW, LDC = Chunk::LDC, LDN = Chunk::LDN, LDV = Chunk::LDV;
  static constexpr int NT = VT / 16;  // 16-column tiles of the block's state columns
  static_assert(N % 16 == 0 && VT % 16 == 0 && N % VT == 0 && NT <= SW, "bad tiling");
  static_assert(PW == 4 && N <= PT && N + C <= PT, "build: one C x C matrix per producer warp, a column per thread");

  Loader<F, N, VT, 5> ld;  // r, w, k, a, b; v
  YWriter<F> out;

  // Where a build's results go: into the chunk itself, natural layout (the one- and
  // two-kernel forms; the fused form's TiledOut below writes them as tiles).
  struct NaturalOut {
    Chunk& ch;
    __device__ void r(int t, int i, float x) const { ch.rm[t][i] = x; }
    __device__ void bh(int t, int i, float x) const { ch.bh[t][i] = x; }
    __device__ void kh(int t, int i, float x) const { ch.kh[t][i] = x; }
    __device__ void d(int i, float x) const { ch.d[i] = x; }
    __device__ void mrb(int t, int j, float x) const { ch.mrb[t][j] = x; }
    __device__ void mrk(int t, int j, float x) const { ch.rm[t][N + j] = x; }
    __device__ void aw(int t, int p, float x) const { ch.aw[t][p] = x; }  // [A' | W], p < N + C
  };

  // Producer group: the state-independent operands of one chunk (inputs staged in scr.raw)
  // into ch.
  __device__ __forceinline__ static void build(Scratch& scr, Chunk& ch, const Group& grp) {
    build_into(scr, ch, grp, NaturalOut{ch});
  }
  // The same, its results through `out`; ch (aw, mrb, rm's columns N..) is the working area:
  // Ã and L_ak (the solve's right-hand sides) and the C x C products before their masks.
  template <class Work, class Out>
  __device__ __forceinline__ static void build_into(Scratch& scr, Work& ch, const Group& grp, const Out& out) {
    const int ptid = grp.ptid;
    const F(*r)[N] = scr.raw[0];
    const F(*w)[N] = scr.raw[1];
    const F(*k)[N] = scr.raw[2];
    const F(*a)[N] = scr.raw[3];
    const F(*b)[N] = scr.raw[4];
    float(*lam)[N] = scr.lam;

    // 1. cumulative log decay Λ_t per column and the chunk total Λ_C
    cumulative_decay<F, N>(w, lam, scr.lamc, scr.unsafe, ptid);
    grp.sync();

    // 2. decayed vectors for the state pass (every exponent <= 0) and the factorised ones
    //    for the C x C matrices (x e^{Λ - c}, y e^{c - Λ}, c = Λ_C / 2; zero where the column
    //    is not factorised)
#pragma unroll 1
    for (int e = ptid; e < C * N; e += PT) {
      const int t = e / N, i = e % N;
      const float l = lam[t][i], lp = t ? lam[t - 1][i] : 0.f, lc = scr.lamc[i];
      const bool safe = lc >= -SAFE_SPAN;
      const float el = __expf(l), elp = __expf(lp), eb = __expf(lc - l);
      const float ac = to_f(a[t][i]), rc = to_f(r[t][i]), bc = to_f(b[t][i]), kc = to_f(k[t][i]);
      ch.aw[t][i] = ac * elp;  // Ã
      out.r(t, i, rc * el);    // R̃
      out.bh(t, i, bc * eb);   // B̂
      out.kh(t, i, kc * eb);   // K̂
      if (t == 0) out.d(i, __expf(lc));
      const float emc = __expf(-0.5f * lc), ecl = __expf(0.5f * lc - l);  // e^{-c} <= e^{32}, e^{c - Λ_t}
      scr.fac[0][t][i] = safe ? ac * (elp * emc) : 0.f;  // Ã' = a_t e^{Λ_{t-1} - c}
      scr.fac[1][t][i] = safe ? rc * (el * emc) : 0.f;   // R̃' = r_t e^{Λ_t - c}
      scr.fac[2][t][i] = safe ? bc * ecl : 0.f;          // B̄ = b_j e^{c - Λ_j}
      scr.fac[3][t][i] = safe ? kc * ecl : 0.f;          // K̄ = k_j e^{c - Λ_j}
    }
    grp.sync();

    // 3. the C x C matrices on tensor cores, one per producer warp:
    //    L_ab = Ã'B̄ᵀ, L_ak = Ã'K̄ᵀ, M_rb = R̃'B̄ᵀ, M_rk = R̃'K̄ᵀ (masked in step 4)
    {
      const int pw = ptid / 32;
      const float* x = &scr.fac[pw < 2 ? 0 : 1][0][0];
      const float* yf = &scr.fac[(pw & 1) ? 3 : 2][0][0];
      Acc acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll 2
      for (int k0 = 0; k0 < N; k0 += 8)  // B operand (i, j) = y[j][i]: col-major
        mma8<PASSES, wmma::row_major, wmma::col_major>(acc, x + k0, LDN, yf + k0, LDN);
      float* dst = pw == 0 ? &scr.lab[0][0] : pw == 1 ? &ch.aw[0][N] : pw == 2 ? &ch.mrb[0][0] : &ch.rm[0][N];
      const int ldd = pw == 0 || pw == 2 ? LDC : LDW;
      wmma::store_matrix_sync(dst, acc, ldd, wmma::mem_row_major);
    }
    grp.sync();

    // 4. the terms of columns left out of step 3 (exponents <= 0), and the causal masks
    const bool unsafe = scr.unsafe;
#pragma unroll 1
    for (int e = ptid; e < C * C; e += PT) {
      const int t = e / C, j = e % C;
      float lab = scr.lab[t][j], lak = ch.aw[t][N + j], mrb = ch.mrb[t][j], mrk = ch.rm[t][N + j];
      if (unsafe && j <= t) {
        for (int i = 0; i < N; ++i) {
          if (scr.lamc[i] >= -SAFE_SPAN) continue;
          const float lj = lam[j][i], rt = to_f(r[t][i]), bj = to_f(b[j][i]), kj = to_f(k[j][i]);
          const float em = __expf(lam[t][i] - lj);
          mrb = fmaf(rt * bj, em, mrb);
          mrk = fmaf(rt * kj, em, mrk);
          if (j < t) {
            const float el = __expf(lam[t - 1][i] - lj), at = to_f(a[t][i]);
            lab = fmaf(at * bj, el, lab);
            lak = fmaf(at * kj, el, lak);
          }
        }
      }
      scr.lab[t][j] = j < t ? lab : 0.f;
      ch.aw[t][N + j] = j < t ? lak : 0.f;
      out.mrb(t, j, j <= t ? mrb : 0.f);
      out.mrk(t, j, j <= t ? mrk : 0.f);
    }
    grp.sync();

    // 5. [A' | W] = (I - L_ab)^{-1} [Ã | L_ak] by forward substitution, a column per thread:
    //    X_t = RHS_t + Σ_{j<t} L_ab[t, j] X_j
    if (ptid < N + C) {
      float x[C];
#pragma unroll
      for (int t = 0; t < C; ++t) x[t] = ch.aw[t][ptid];
#pragma unroll
      for (int j = 0; j < C; ++j)
#pragma unroll
        for (int t = j + 1; t < C; ++t) x[t] = fmaf(scr.lab[t][j], x[j], x[t]);
#pragma unroll
      for (int t = 0; t < C; ++t) out.aw(t, ptid, x[t]);
    }
  }

  // The two-kernel form (state_tc.cuh), after build: U's products folded into the operands,
  // [E | Q - K̂ᵀ] = B̂ᵀ [A' | W] ([N, N + C], into the scratch's Λ and factor arrays, free after
  // the build: exactly N x LDW floats) and [R̂ | M̂] = [R̃ | M_rk] + M_rb [A' | W] (in place
  // of ch.rm). 25 tiles of 16 x 16 over the group's 4 warps.
  static_assert(offsetof(Scratch, fac) == offsetof(Scratch, lam) + sizeof(float) * C * N &&
                    sizeof(float) * (C * N + 4 * C * LDN) == sizeof(float) * N * LDW,
                "E | Q overlays the scratch's lam and fac");
  __device__ __forceinline__ static float* eq_area(Scratch& scr) { return &scr.lam[0][0]; }

  __device__ __forceinline__ void finish(Scratch& scr, Chunk& ch, const Group& grp) const {
    float* eq = eq_area(scr);
    for (int tile = grp.ptid / 32; tile < 25; tile += PW) {
      Acc acc;
      if (tile < 20) {  // E | Q rows 16 mi.., columns 16 nj..: B̂ᵀ (col-major view of ch.bh) [A' | W]
        const int mi = tile / 5, nj = tile % 5;
        wmma::fill_fragment(acc, 0.f);
#pragma unroll
        for (int k0 = 0; k0 < C; k0 += 8)
          mma8<PASSES, wmma::col_major, wmma::row_major>(acc, &ch.bh[k0][mi * 16], LDN, &ch.aw[k0][nj * 16], LDW);
        wmma::store_matrix_sync(eq + mi * 16 * LDW + nj * 16, acc, LDW, wmma::mem_row_major);
      } else {          // R̂ | M̂ columns 16 nj..
        const int nj = tile - 20;
        wmma::load_matrix_sync(acc, &ch.rm[0][nj * 16], LDW, wmma::mem_row_major);
#pragma unroll
        for (int k0 = 0; k0 < C; k0 += 8)
          mma8<PASSES, wmma::row_major, wmma::row_major>(acc, &ch.mrb[0][k0], LDC, &ch.aw[k0][nj * 16], LDW);
        wmma::store_matrix_sync(&ch.rm[0][nj * 16], acc, LDW, wmma::mem_row_major);
      }
    }
  }

  struct Operands {
    const float* eq;
    const Chunk& ch;
    __device__ float e(int i, int j) const { return eq[i * LDW + j]; }
    __device__ float q(int i, int t) const { return eq[i * LDW + N + t] + ch.kh[t][i]; }
    __device__ float r(int t, int i) const { return ch.rm[t][i]; }
    __device__ float m(int t, int tp) const { return ch.rm[t][N + tp]; }
    __device__ float d(int i) const { return ch.d[i]; }
  };
  __device__ __forceinline__ Operands operands(Scratch& scr, const Chunk& ch) const { return {eq_area(scr), ch}; }

  // State warps: chunk c through the state tile sm.s (in place).
  __device__ __forceinline__ void consume(S& sm, const Chunk& ch, int c, int warp, int lane) const {
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
      for (int k0 = 0; k0 < N; k0 += 8)
        mma8<PASSES, wmma::row_major, wmma::row_major>(acc, A + k0, LDW, &sm.s[k0][ni * 16], LDV);
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 8)
        mma8<PASSES, wmma::row_major, wmma::row_major>(acc, A + N + k0, LDW, &ch.v[k0][ni * 16], LDV);
      if (is_u) {
        wmma::store_matrix_sync(&sm.u[0][ni * 16], acc, LDV, wmma::mem_row_major);
      } else {
        yacc = acc;
        ytile = ni;
      }
    }
    state_sync();  // U complete; every read of S_0 done (S is updated in place below)
    // B. Y += M_rb U, written out
    if (ytile >= 0) {
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 8)
        mma8<PASSES, wmma::row_major, wmma::row_major>(yacc, &ch.mrb[0][k0], LDC, &sm.u[k0][ytile * 16], LDV);
      out.write(yacc, sm.ystage[warp], c, ytile, lane);
    }
    //    S_C = D∘S_0 + B̂ᵀ U + K̂ᵀ V
    update_state_tiles<N, NT, LDV>(sm.s, ch.d, warp, lane, [&](Acc& acc, int mi, int ni) {
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 8)  // A operand (i, j) = B̂[j][i]: col-major
        mma8<PASSES, wmma::col_major, wmma::row_major>(acc, &ch.bh[k0][mi * 16], LDN, &sm.u[k0][ni * 16], LDV);
#pragma unroll
      for (int k0 = 0; k0 < C; k0 += 8)
        mma8<PASSES, wmma::col_major, wmma::row_major>(acc, &ch.kh[k0][mi * 16], LDN, &ch.v[k0][ni * 16], LDV);
    });
  }
};

// The fused form (form 3): one kernel as above, but the state warps keep the state in
// registers, each a strip of 16 value columns (the state pass of state_tc.cuh: transposed
// products on mma.m16n8k8, Sᵀ's accumulators reused as the next chunk's A operand), with U's
// products done by the state warps, so nothing is folded after the build:
//     Uᵀ = Sᵀ A'ᵀ + Vᵀ Wᵀ,   Yᵀ = Sᵀ R̃ᵀ + Vᵀ M_rkᵀ + Uᵀ M_rbᵀ,   Sᵀ' = d∘Sᵀ + Uᵀ B̂ + Vᵀ K̂
// (76 products of 16 x 8 x 8 per warp and chunk). The producers run Op's build with its
// results written straight into the ring slot as 8 x 8 tiles (TiledOut): operand X[n][k]
// (the B operand's row k, column n) as fragment (k / 8, n / 8), 64 floats row-major in
// n % 8, k % 8, rounded to tf32 for 16-bit inputs. With the
// contracted index permuted inside each 8-slice (slot s <-> 2s, s < 4; 2(s - 4) + 1 above) on
// both sides, which is the accumulators' own order (state_tc.cuh), lane l's B pair is the
// float2 at 2 l of a tile: one conflict-free 8-byte load. Uᵀ and Vᵀ as A operands use the
// same permutation of tokens. No shared-memory state, no barrier among the state warps.
template <int N>
struct TiledChunk {
  static constexpr int KB = N / 8, LDV = N + 4;  // 8-key slices; v row stride
  static constexpr int A = 0, W = A + KB * 2 * 64, R = W + 4 * 64, MK = R + KB * 2 * 64, MB = MK + 4 * 64,
                       BH = MB + 4 * 64, KH = BH + 2 * KB * 64, FLOATS = KH + 2 * KB * 64;
  float op[FLOATS];  // A'ᵀ, Wᵀ, R̃ᵀ, M_rkᵀ, M_rbᵀ (tokens as n), B̂, K̂ (keys as n)
  float d[N];        // e^{Λ_C}
  float v[C][LDV];   // the chunk's v, every column (staged by the loader)
};

template <typename F, int N, int G, int PASSES>
struct FusedOp {
  using Base = Op<F, N, 16, 1, PASSES>;  // its build, into a natural-layout chunk
  using Chunk = TiledChunk<N>;
  struct Work {  // the build's working area (Op::build_into)
    float aw[C][Base::LDW];
    float rm[C][Base::LDW];  // columns N.. only
    float mrb[C][Base::LDC];
  };
  struct Scratch : Base::Scratch {
    Work work;
  };
  struct Smem {
    Chunk chunk[Pipe<G>::NB];
    Scratch scratch[G];
  };
  static constexpr bool REG_STATE = true;
  static_assert(N == 16 * SW, "a state warp per 16 columns");

  Loader<F, N, N, 5> ld;  // r, w, k, a, b; v at every column
  F* y;
  size_t base, tok_stride;
  int T;

  // The build's results as tiles of the slot: operand X[n][k] (nt tiles of 8 along n) at
  // fragment (k / 8) nt + n / 8, row-major in n % 8, k % 8; tf32-rounded for 16-bit inputs.
  struct TiledOut {
    Chunk& ch;
    template <int NT>
    __device__ __forceinline__ void put(int off, int n, int k, float x) const {
      ch.op[off + ((k >> 3) * NT + (n >> 3)) * 64 + (n & 7) * 8 + (k & 7)] =
          PASSES == 1 ? __uint_as_float(tf32_bits(x)) : x;
    }
    __device__ void r(int t, int i, float x) const { put<2>(Chunk::R, t, i, x); }
    __device__ void bh(int t, int i, float x) const { put<N / 8>(Chunk::BH, i, t, x); }
    __device__ void kh(int t, int i, float x) const { put<N / 8>(Chunk::KH, i, t, x); }
    __device__ void d(int i, float x) const { ch.d[i] = x; }
    __device__ void mrb(int t, int j, float x) const { put<2>(Chunk::MB, t, j, x); }
    __device__ void mrk(int t, int j, float x) const { put<2>(Chunk::MK, t, j, x); }
    __device__ void aw(int t, int p, float x) const {
      if (p < N) put<2>(Chunk::A, t, p, x);
      else put<2>(Chunk::W, t, p - N, x);
    }
  };

  __device__ __forceinline__ static void build(Scratch& scr, Chunk& ch, const Group& grp) {
    Base::build_into(scr, scr.work, grp, TiledOut{ch});
  }

  // Sᵀ's strip of warp w (value columns 16 w ..): s[nt] = rows g, g + 8 x keys 8 nt + 2q, + 1
  __device__ __forceinline__ static void state_in(float (&s)[N / 8][4], const float* st, int warp, int lane) {
    load_strip<N>(s, st, 16 * warp + lane / 4, lane % 4);
  }
  __device__ __forceinline__ static void state_out(const float (&s)[N / 8][4], float* st, int warp, int lane) {
    store_strip<N>(s, st, 16 * warp + lane / 4, lane % 4);
  }

  __device__ __forceinline__ void step(float (&s)[N / 8][4], const Chunk& ch, int c, int warp, int lane) const {
    constexpr int KB = Chunk::KB;
    const int g = lane / 4, q = lane % 4, col = 16 * warp + g;
    auto frag = [&](int off, int f) { return reinterpret_cast<const float2*>(ch.op + off)[f * 32 + lane]; };
    // Vᵀ as A operand, tokens permuted: slot q <-> token 2q, slot q + 4 <-> 2q + 1
    uint32_t va[2][4], vl[2][4];
#pragma unroll
    for (int kb = 0; kb < 2; ++kb) {
      const int t = 8 * kb + 2 * q;
      const float x[4] = {ch.v[t][col], ch.v[t][col + 8], ch.v[t + 1][col], ch.v[t + 1][col + 8]};
      split_a<PASSES>(x, va[kb], vl[kb]);
    }
    float u[2][4] = {}, yacc[2][4] = {};
#pragma unroll
    for (int kb = 0; kb < KB; ++kb) {  // Sᵀ A'ᵀ and Sᵀ R̃ᵀ
      uint32_t sa[4], sl[4];
      const float x[4] = {s[kb][0], s[kb][2], s[kb][1], s[kb][3]};
      split_a<PASSES>(x, sa, sl);
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        mma_frag<PASSES>(u[nt], sa, sl, frag(Chunk::A, kb * 2 + nt));
        mma_frag<PASSES>(yacc[nt], sa, sl, frag(Chunk::R, kb * 2 + nt));
      }
    }
#pragma unroll
    for (int kb = 0; kb < 2; ++kb)  // Vᵀ Wᵀ and Vᵀ M_rkᵀ
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        mma_frag<PASSES>(u[nt], va[kb], vl[kb], frag(Chunk::W, kb * 2 + nt));
        mma_frag<PASSES>(yacc[nt], va[kb], vl[kb], frag(Chunk::MK, kb * 2 + nt));
      }
    uint32_t ua[2][4], ul[2][4];  // Uᵀ as A operand: its accumulators in the permuted order
#pragma unroll
    for (int kb = 0; kb < 2; ++kb) {
      const float x[4] = {u[kb][0], u[kb][2], u[kb][1], u[kb][3]};
      split_a<PASSES>(x, ua[kb], ul[kb]);
    }
#pragma unroll
    for (int kb = 0; kb < 2; ++kb)  // Uᵀ M_rbᵀ
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) mma_frag<PASSES>(yacc[nt], ua[kb], ul[kb], frag(Chunk::MB, kb * 2 + nt));
#pragma unroll
    for (int nt = 0; nt < KB; ++nt) {  // d∘Sᵀ (exact fp32), then + Uᵀ B̂ + Vᵀ K̂
      const float2 d = *reinterpret_cast<const float2*>(&ch.d[8 * nt + 2 * q]);
      s[nt][0] *= d.x;
      s[nt][1] *= d.y;
      s[nt][2] *= d.x;
      s[nt][3] *= d.y;
    }
#pragma unroll
    for (int kb = 0; kb < 2; ++kb)
#pragma unroll
      for (int nt = 0; nt < KB; ++nt) {
        mma_frag<PASSES>(s[nt], ua[kb], ul[kb], frag(Chunk::BH, kb * KB + nt));
        mma_frag<PASSES>(s[nt], va[kb], vl[kb], frag(Chunk::KH, kb * KB + nt));
      }
    store_y_strip<F>(y + base + col, tok_stride, c * C, T, yacc, q);
  }
};

// Tokens 0 .. t_end - 1 of sequences of T (t_end < T: the first segment of the two-kernel
// form, see launch_two_kernels).
template <typename F, int N, int G, int PASSES>
__global__ void __launch_bounds__(Pipe<G>::THREADS, (G == 1 && PASSES == 1 ? 2 : 1))
wkv7_fused_kernel(int T, int t_end, int H, const F* __restrict__ r, const F* __restrict__ w, const F* __restrict__ k,
                  const F* __restrict__ v, const F* __restrict__ a, const F* __restrict__ b,
                  float* __restrict__ state, F* __restrict__ y) {
  using O = FusedOp<F, N, G, PASSES>;
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  auto& sm = *reinterpret_cast<typename O::Smem*>(smem_bytes);
  pdl_launch_dependents();  // the next segment's build may start beside it (launch_two_kernels, one stream)
  const Place<N, N> p(H, T);
  const O op{{{}, {r, w, k, a, b, v}, p.base, p.tok_stride, 0, t_end}, y, p.base, p.tok_stride, t_end};
  run_pipeline<O, N, N, G>(op, sm, state + (size_t)p.bh * N * N, 0, (t_end + C - 1) / C);
}

template <typename F, int N, int G>
cudaError_t launch_fused(int B, int T, int t_end, int H, const void* r, const void* w, const void* k, const void* v,
                         const void* a, const void* b, float* state, void* y, cudaStream_t stream) {
  constexpr int PASSES = sizeof(F) == 4 ? 3 : 1;  // 3xTF32 for fp32 inputs
  constexpr size_t bytes = sizeof(typename FusedOp<F, N, G, PASSES>::Smem);
  if constexpr (bytes > MAX_SMEM) {
    return cudaErrorInvalidValue;
  } else {
    return launch_pipeline(wkv7_fused_kernel<F, N, G, PASSES>, B * H, Pipe<G>::THREADS, bytes, stream, T, t_end, H,
                           (const F*)r, (const F*)w, (const F*)k, (const F*)v, (const F*)a, (const F*)b, state,
                           (F*)y);
  }
}

// One producer group: two blocks per SM where shared memory allows (VT <= 32) for
// fp16/bf16. Several groups (512 threads at G = 3): one block per SM. The fp32 (3xTF32)
// build runs with one group and one block per SM rather than spill (the precision path).
template <typename F, int N, int VT, int G, int PASSES>
__global__ void __launch_bounds__(Pipe<G>::THREADS, (G == 1 && VT <= 32 && PASSES == 1 ? 2 : 1))
wkv7_chunked_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ w, const F* __restrict__ k,
                    const F* __restrict__ v, const F* __restrict__ a, const F* __restrict__ b,
                    float* __restrict__ state, F* __restrict__ y) {
  using O = Op<F, N, VT, G, PASSES>;
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  auto& sm = *reinterpret_cast<typename O::Smem*>(smem_bytes);
  const Place<N, VT> p(H, T);
  const O op{{{}, {r, w, k, a, b, v}, p.base, p.tok_stride, p.col0, T}, {y, p.base, p.tok_stride, p.col0, T}};
  run_pipeline<O, N, VT, G>(op, sm, state + (size_t)p.bh * N * N, p.col0, (T + C - 1) / C);
}

// The two-kernel form's build (chunked_tc.cuh, build_to_workspace): block (b * H + h) *
// blocks_per_head + q builds chunks c0 + q cpb .. of head h of batch b, BESIDE_CPB chunks a
// block beside a state pass. Measured on an H200 (bf16, H = 40, graph replays, Mtok/s at 1 x
// 4096 / 1 x 16384; results/kernels/build-20261128/): 2 chunks a block 9.57 / 9.63, 3 9.01 /
// 8.69, 4 9.54 / 9.50, 6 7.67 / 6.72, 8 (before) 9.25 / 9.01, 16 7.06 / 6.27; then, with the
// builds no longer loading v (build_to_workspace: a load slot fewer, and the 8 bytes of
// register spills of the 16-bit build gone), 10.33 / 10.99. Alone (the only segment: short
// prompts, e.g. 1 x 1024 at H = 40; results/kernels/alone-cpb-20261128/): 2 chunks a block
// 7.04-7.07 Mtok/s, 4 6.69-6.73, 6 6.64-6.67, 8 (before) 6.39-6.40, 16 4.83-4.85.
constexpr int BESIDE_CPB = 2, ALONE_CPB = 2;
template <typename F, int N, int PASSES>
__global__ void __launch_bounds__(PT, 4)
wkv7_build_kernel(int T, int H, const F* __restrict__ r, const F* __restrict__ w, const F* __restrict__ k,
                  const F* __restrict__ v, const F* __restrict__ a, const F* __restrict__ b, int c0, int n, int cpb,
                  float* __restrict__ ws) {
  using O = Op<F, N, 16, 1, PASSES>;
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  auto& area = *reinterpret_cast<BuildArea<O>*>(smem_bytes);
  const int per_head = (n + cpb - 1) / cpb, bh = blockIdx.x / per_head, q = blockIdx.x % per_head;
  const int bi = bh / H, h = bh % H;
  const size_t tok_stride = (size_t)H * N, base = (size_t)bi * T * tok_stride + (size_t)h * N;
  const O op{{{}, {r, w, k, a, b, v}, base, tok_stride, 0, T}, {nullptr, base, tok_stride, 0, T}};
  const int i0 = q * cpb, i1 = i0 + cpb < n ? i0 + cpb : n;
  build_to_workspace(op, area, ws + (size_t)bh * n * WsLayout<true>::FLOATS, c0, i0, i1);
}

template <typename F, int N, int VT, int G, int FORM>
cudaError_t launch(int B, int T, int H, const void* r, const void* w, const void* k, const void* v, const void* a,
                   const void* b, float* state, void* y, void* ws, size_t ws_bytes, cudaStream_t stream) {
  constexpr int PASSES = sizeof(F) == 4 ? 3 : 1;  // 3xTF32 for fp32 inputs
  if constexpr (FORM == 3) {
    return launch_fused<F, N, G>(B, T, T, H, r, w, k, v, a, b, state, y, stream);
  } else if constexpr (FORM == 1) {
    constexpr size_t bytes = sizeof(Smem<F, N, VT, G>);
    if constexpr (bytes > MAX_SMEM) {
      return cudaErrorInvalidValue;  // this many groups do not fit beside this tile
    } else {
      return launch_pipeline(wkv7_chunked_kernel<F, N, VT, G, PASSES>, B * H * (N / VT), Pipe<G>::THREADS, bytes,
                             stream, T, H, (const F*)r, (const F*)w, (const F*)k, (const F*)v, (const F*)a,
                             (const F*)b, state, (F*)y);
    }
  } else {
    auto build = [&](int c0, int n, float* wsp, bool alone, cudaStream_t on, bool pdl) {
      const int cpb = build_cpb(alone, BESIDE_CPB, ALONE_CPB);
      return launch_pipeline_pdl(pdl, wkv7_build_kernel<F, N, PASSES>, B * H * ((n + cpb - 1) / cpb), PT,
                                 sizeof(BuildArea<Op<F, N, 16, 1, PASSES>>), on, T, H, (const F*)r, (const F*)w,
                                 (const F*)k, (const F*)v, (const F*)a, (const F*)b, c0, n, cpb, wsp);
    };
    // The first segment by the fused kernel (ARCHBENCH_FUSED_FIRST=0: built like the rest, for measuring)
    const char* env = std::getenv("ARCHBENCH_FUSED_FIRST");
    if (env && env[0] == '0' && env[1] == 0)
      return launch_two_kernels<F, PASSES, true, VT>(B, T, H, (const F*)v, state, (F*)y, ws, ws_bytes, stream, build);
    constexpr int GF = sizeof(F) == 4 ? 1 : FUSED_GROUPS;
    return launch_two_kernels<F, PASSES, true, VT>(
        B, T, H, (const F*)v, state, (F*)y, ws, ws_bytes, stream, build, [&](int n, cudaStream_t on) {
          return launch_fused<F, N, GF>(B, T, std::min(T, n * C), H, r, w, k, v, a, b, state, y, on);
        });
  }
}

}  // namespace wkv7c

// variant: the launch code of tc::dispatch (block width, producer groups, form; 0 = by
// shape). Head size 64 only (cudaErrorInvalidValue otherwise: the Python op takes the
// sequential kernel then), and so is a combination whose shared memory does not fit. ws:
// the two-kernel form's workspace, wkv7_chunked_workspace() bytes (0: none needed).
size_t wkv7_chunked_workspace(int B, int T, int H, int N, int variant) {
  return tc::workspace_bytes<true>(B, T, H, N, variant, tc::WKV7_SPLIT_MAX_HEADS);
}

cudaError_t wkv7_chunked_forward(int dtype, int B, int T, int H, int N, int variant, const void* r, const void* w,
                                 const void* k, const void* v, const void* a, const void* b, float* state, void* y,
                                 void* ws, size_t ws_bytes, cudaStream_t stream) {
  if (T == 0 || B == 0 || H == 0) return cudaSuccess;
  if (N != 64) return cudaErrorInvalidValue;
  return tc::dispatch<true>(dtype, (long)B * H, variant, tc::WKV7_SPLIT_MAX_HEADS, [&](auto f, auto vt, auto g, auto form) {
    using F = typename decltype(f)::type;
    return wkv7c::launch<F, 64, decltype(vt)::value, decltype(g)::value, decltype(form)::value>(
        B, T, H, r, w, k, v, a, b, state, y, ws, ws_bytes, stream);
  });
}

}  // namespace archbench
