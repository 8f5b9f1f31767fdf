// The state pass of the chunked kernels' two-kernel form (chunked_tc.cuh, build_to_workspace):
// the state in registers, each warp carrying a 16-column strip of one head's state through
// the chunks with no barrier between warps inside a chunk.
//
// Per chunk of C = 16 tokens, with S the state [N keys, N values] before the chunk, both ops
// are one step of the form
//     S' = d∘S + E S + Q V            (d∘S: row i scaled by d_i = e^{Λ_C,i}, in fp32)
//     Y  = R̂ S + M̂ V
// WKV6: E = 0, Q = K̂ᵀ, R̂ = R̃, M̂ = M (wkv6_chunked.cu). WKV7 (wkv7_chunked.cu): with U = A'S + W V,
// S' = d∘S + B̂ᵀU + K̂ᵀV and Y = R̃S + M_rk V + M_rb U, so E = B̂ᵀA', Q = B̂ᵀW + K̂ᵀ,
// R̂ = R̃ + M_rb A', M̂ = M_rk + M_rb W: U's two products fold into the operands, which the build
// kernel computes, so Y and S' read only S and V.
//
// A warp computes the transposes, Sᵀ' = d∘Sᵀ + Sᵀ Eᵀ + Vᵀ Qᵀ and Yᵀ = Sᵀ R̂ᵀ + Vᵀ M̂ᵀ, on
// mma.m16n8k8 (tf32): its 16 value columns are the M = 16 rows, Sᵀ's 8 tiles of 8 keys live
// in accumulator registers (c0 c1 c2 c3 = rows g, g, g + 8, g + 8, keys 2q, 2q + 1, 2q, 2q + 1 of
// the tile; g = lane / 4, q = lane % 4), and the same registers are the A operand of the next
// chunk's products: an A fragment wants keys q and q + 4 where the accumulator holds 2q and
// 2q + 1, so the key order inside each 8-key slice is permuted (slot s <-> key 2s for s < 4,
// 2(s - 4) + 1 above), and the B operands contracted with Sᵀ (Eᵀ, R̂ᵀ) are written by the
// build in that order. No data moves between chunks. The d∘S part stays exact fp32 (it is
// the accumulator the products add to); only S as the products' operand is rounded to tf32.
//
// The workspace holds each chunk's B operands already in fragment order (a float2 per lane
// and fragment: one conflict-free 8-byte shared load) and, for 16-bit inputs, rounded to tf32;
// fp32 inputs keep them exact and take three tf32 products (3xTF32) per product.
#pragma once

#include <mma.h>

#include <cstdint>

#include "common.cuh"

namespace archbench {
namespace tc {

// One chunk's operands in the workspace, in floats: Eᵀ (LOWRANK only), d, Qᵀ, R̂ᵀ, M̂ᵀ.
// Fragment (kb, nt) of an operand [K x Nout] is 64 floats: lane l's pair at 2 l.
template <bool LOWRANK, int N = 64, int CC = 16>
struct WsLayout {
  static constexpr int KB_S = N / 8, KB_V = CC / 8, NT_S = N / 8, NT_Y = CC / 8;
  static constexpr int E = LOWRANK ? KB_S * NT_S * 64 : 0;
  static constexpr int OFF_D = E, OFF_Q = OFF_D + N, OFF_R = OFF_Q + KB_V * NT_S * 64, OFF_M = OFF_R + KB_S * NT_Y * 64;
  static constexpr int FLOATS = OFF_M + KB_V * NT_Y * 64;
  static_assert(FLOATS % 4 == 0, "copied in 16-byte pieces");
};

__device__ __forceinline__ uint32_t tf32_bits(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

// One operand [K x Nout] of a chunk into the workspace in fragment order, by PT = 128
// threads: fragment f = kb * NT + nt is 64 floats, lane l's pair at 2 l; thread t writes
// entry t % 64 of fragments t / 64, t / 64 + 2, .. (coalesced), so its lane, its half of the
// pair and the key offset inside the 8-key slice are fixed. get(col, k) is the operand's
// entry at output column col and contracted index k (permuted for the slices contracted with
// Sᵀ, see the top).
template <int KB, int NT, bool PERM, bool ROUND, class Get>
__device__ __forceinline__ void emit_operand(float* __restrict__ dst, Get&& get, int tid) {
  static_assert(NT == 2 || NT == 8, "NT: 2 or 8 column tiles");
  const int l = tid % 64, lane = l / 2, h = l % 2, g = lane / 4, q = lane % 4;
  const int kofs = PERM ? 2 * q + h : q + 4 * h;
#pragma unroll 2
  for (int f = tid / 64; f < KB * NT; f += 2) {
    const float val = get(8 * (f % NT) + g, 8 * (f / NT) + kofs);
    dst[f * 64 + l] = ROUND ? __uint_as_float(tf32_bits(val)) : val;
  }
}

// Writes one chunk's workspace (PT = 128 threads of a group). The op gives the operands in
// natural order: e(i, j) = E[i][j], q(i, t) = Q[i][t], r(t, i) = R̂[t][i], m(t, t') = M̂[t][t'],
// d(i).
template <bool LOWRANK, bool ROUND, class Ops>
__device__ __forceinline__ void emit_chunk(float* __restrict__ dst, const Ops& ops, int tid) {
  using L = WsLayout<LOWRANK>;
  static_assert(L::KB_S == 8 && L::NT_S == 8 && L::KB_V == 2 && L::NT_Y == 2, "head size 64, chunks of 16");
  if constexpr (LOWRANK)
    emit_operand<8, 8, true, ROUND>(dst, [&](int i, int j) { return ops.e(i, j); }, tid);
  if (tid < 64) dst[L::OFF_D + tid] = ops.d(tid);
  emit_operand<2, 8, false, ROUND>(dst + L::OFF_Q, [&](int i, int t) { return ops.q(i, t); }, tid);
  emit_operand<8, 2, true, ROUND>(dst + L::OFF_R, [&](int t, int i) { return ops.r(t, i); }, tid);
  emit_operand<2, 2, false, ROUND>(dst + L::OFF_M, [&](int t, int tp) { return ops.m(t, tp); }, tid);
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// acc += A B for one m16n8k8 fragment, A given as hi (and lo for PASSES 3), B as a float pair
// (tf32-rounded already for PASSES 1, exact for PASSES 3).
template <int PASSES>
__device__ __forceinline__ void mma_frag(float (&acc)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4], float2 b) {
  if constexpr (PASSES == 3) {
    const uint32_t bh0 = tf32_bits(b.x), bh1 = tf32_bits(b.y);
    const uint32_t bl0 = tf32_bits(b.x - __uint_as_float(bh0)), bl1 = tf32_bits(b.y - __uint_as_float(bh1));
    mma_tf32(acc, al, bh0, bh1);
    mma_tf32(acc, ah, bl0, bl1);
    mma_tf32(acc, ah, bh0, bh1);
  } else {
    mma_tf32(acc, ah, __float_as_uint(b.x), __float_as_uint(b.y));
  }
}

template <int PASSES>
__device__ __forceinline__ void split_a(const float (&x)[4], uint32_t (&hi)[4], uint32_t (&lo)[4]) {
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    hi[e] = tf32_bits(x[e]);
    if constexpr (PASSES == 3) lo[e] = tf32_bits(x[e] - __uint_as_float(hi[e]));
  }
}

// A warp's strip of Sᵀ (value columns col, col + 8 for lane group g = lane / 4; keys
// 8 nt + 2q, + 1 for q = lane % 4) between a [N keys, N values] fp32 state and registers.
template <int N>
__device__ __forceinline__ void load_strip(float (&s)[N / 8][4], const float* st, int col, int q) {
#pragma unroll
  for (int nt = 0; nt < N / 8; ++nt) {
    const int i = 8 * nt + 2 * q;
    s[nt][0] = st[(size_t)i * N + col];
    s[nt][1] = st[(size_t)(i + 1) * N + col];
    s[nt][2] = st[(size_t)i * N + col + 8];
    s[nt][3] = st[(size_t)(i + 1) * N + col + 8];
  }
}
template <int N>
__device__ __forceinline__ void store_strip(const float (&s)[N / 8][4], float* st, int col, int q) {
#pragma unroll
  for (int nt = 0; nt < N / 8; ++nt) {
    const int i = 8 * nt + 2 * q;
    st[(size_t)i * N + col] = s[nt][0];
    st[(size_t)(i + 1) * N + col] = s[nt][1];
    st[(size_t)i * N + col + 8] = s[nt][2];
    st[(size_t)(i + 1) * N + col + 8] = s[nt][3];
  }
}

// Yᵀ's two accumulators of a chunk out as y: tokens t0 + 8 nt + 2q, + 1 (those < T), columns
// at yp and yp + 8 (yp: y's row of token 0 at this lane's column).
template <typename F>
__device__ __forceinline__ void store_y_strip(F* yp, size_t tok_stride, int t0, int T, const float (&yacc)[2][4],
                                              int q) {
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    const int t = t0 + 8 * nt + 2 * q;
    F* p = yp + (size_t)t * tok_stride;
    if (t < T) {
      p[0] = from_f<F>(yacc[nt][0]);
      p[8] = from_f<F>(yacc[nt][2]);
    }
    if (t + 1 < T) {
      p[tok_stride] = from_f<F>(yacc[nt][1]);
      p[tok_stride + 8] = from_f<F>(yacc[nt][3]);
    }
  }
}

// 16 bytes global -> shared without waiting; zeros where `valid` is false (tokens past T).
__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory"); }

// Chunks in the shared-memory ring (STAGES - 1 in flight while one is used); a compile-time knob
// for measuring (kernels/build.py: ARCHBENCH_CUDA_DEFINES="ARCHBENCH_STATE_STAGES=4").
#ifndef ARCHBENCH_STATE_STAGES
#define ARCHBENCH_STATE_STAGES 3
#endif
constexpr int STATE_STAGES = ARCHBENCH_STATE_STAGES;
static_assert(STATE_STAGES >= 2, "a ring of at least two chunks");

// Shared memory of a state-pass block of W warps: STAGES x (the chunk's workspace floats + its
// v at the block's 16 W columns, type F).
template <typename F, bool LOWRANK, int W>
constexpr size_t state_smem_bytes() {
  return (size_t)STATE_STAGES * (WsLayout<LOWRANK>::FLOATS * 4 + (size_t)16 * 16 * W * sizeof(F));
}

// The state pass over chunks c0 .. c0 + n - 1 of [B, T] (head size 64). Block (b * H + h) *
// (4 / W) + p: head h of batch b, value columns 16 W p .. 16 W p + 16 W - 1, a warp per 16.
// ws: this segment's workspace, chunk i of head bh at ws + (bh * n + i) * FLOATS.
template <typename F, int PASSES, bool LOWRANK, int W>
__global__ void __launch_bounds__(32 * W)
wkv_state_kernel(int T, int H, const F* __restrict__ v, float* __restrict__ state, F* __restrict__ y, int c0, int n,
                 const float* __restrict__ ws) {
  constexpr int N = 64, CC = 16;
  using L = WsLayout<LOWRANK>;
  constexpr int VBYTES = CC * 16 * W * (int)sizeof(F), STRIDE = L::FLOATS * 4 + VBYTES;
  constexpr int VPIECES = 16 * W * (int)sizeof(F) / 16;  // 16-byte pieces of a token's v row
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  const int per_head = 4 / W, bh = blockIdx.x / per_head, bcol = (blockIdx.x % per_head) * 16 * W;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int bi = bh / H, h = bh % H, col0 = bcol + 16 * warp;
  const size_t tok_stride = (size_t)H * N, vbase = (size_t)bi * T * tok_stride + (size_t)h * N;
  const float* wsh = ws + (size_t)bh * n * L::FLOATS;
  float* st = state + (size_t)bh * N * N;
  // The next segment's build, launched with programmatic dependent launch (one stream,
  // launch_two_kernels), may start beside this pass; launched otherwise, both do nothing.
  pdl_launch_dependents();
  pdl_wait();

  auto issue = [&](int i) {  // chunk i (of the segment) into slot i % STAGES
    unsigned char* slot = smem_bytes + (i % STATE_STAGES) * STRIDE;
    const float* src = wsh + (size_t)i * L::FLOATS;
    for (int e = threadIdx.x; e < L::FLOATS / 4; e += 32 * W) cp_async16(slot + 16 * e, src + 4 * e);
    unsigned char* vdst = slot + L::FLOATS * 4;
    for (int e = threadIdx.x; e < CC * VPIECES; e += 32 * W) {
      const int t = e / VPIECES, p = e % VPIECES, tok = (c0 + i) * CC + t;
      const F* vsrc = v + vbase + (size_t)(tok < T ? tok : 0) * tok_stride + bcol + p * (16 / (int)sizeof(F));
      cp_async16_zfill(vdst + 16 * e, vsrc, tok < T);
    }
  };

  // Sᵀ's strip: s[nt] = rows (values) g, g + 8 x keys 8 nt + 2q, + 1
  float s[8][4];
  load_strip<N>(s, st, col0 + g, q);

#pragma unroll
  for (int p = 0; p < STATE_STAGES - 1; ++p) {
    if (p < n) issue(p);
    cp_async_commit();
  }
  for (int i = 0; i < n; ++i) {
    cp_async_wait<STATE_STAGES - 2>();
    __syncthreads();  // chunk i is in; every warp is done with chunk i - 1 (its slot is refilled next)
    if (i + STATE_STAGES - 1 < n) issue(i + STATE_STAGES - 1);
    cp_async_commit();

    const unsigned char* slot = smem_bytes + (i % STATE_STAGES) * STRIDE;
    const float* cw = reinterpret_cast<const float*>(slot);
    const F* vs = reinterpret_cast<const F*>(slot + L::FLOATS * 4);  // [CC][16 W]
    auto frag = [&](int off, int f) { return reinterpret_cast<const float2*>(cw + off)[f * 32 + lane]; };

    // A operands: Sᵀ (keys permuted, see the top) and Vᵀ (natural token order)
    uint32_t sa[8][4], sl[8][4], va[2][4], vl[2][4];
#pragma unroll
    for (int kb = 0; kb < 8; ++kb) {
      const float x[4] = {s[kb][0], s[kb][2], s[kb][1], s[kb][3]};
      split_a<PASSES>(x, sa[kb], sl[kb]);
    }
#pragma unroll
    for (int kb = 0; kb < 2; ++kb) {
      const int t = 8 * kb + q, c = 16 * warp + g;
      const float x[4] = {to_f(vs[t * 16 * W + c]), to_f(vs[t * 16 * W + c + 8]), to_f(vs[(t + 4) * 16 * W + c]),
                          to_f(vs[(t + 4) * 16 * W + c + 8])};
      split_a<PASSES>(x, va[kb], vl[kb]);
    }

    // Yᵀ = Sᵀ R̂ᵀ + Vᵀ M̂ᵀ (the state before the chunk) and Sᵀ' = d∘Sᵀ + Sᵀ Eᵀ + Vᵀ Qᵀ, key slice
    // by key slice: ten independent accumulators per slice (two of Yᵀ, eight of Sᵀ')
    float yacc[2][4] = {};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const float2 d = *reinterpret_cast<const float2*>(cw + L::OFF_D + 8 * nt + 2 * q);
      s[nt][0] *= d.x;
      s[nt][1] *= d.y;
      s[nt][2] *= d.x;
      s[nt][3] *= d.y;
    }
#pragma unroll
    for (int kb = 0; kb < 8; ++kb) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) mma_frag<PASSES>(yacc[nt], sa[kb], sl[kb], frag(L::OFF_R, kb * 2 + nt));
      if constexpr (LOWRANK) {
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) mma_frag<PASSES>(s[nt], sa[kb], sl[kb], frag(0, kb * 8 + nt));
      }
    }
#pragma unroll
    for (int kb = 0; kb < 2; ++kb) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) mma_frag<PASSES>(yacc[nt], va[kb], vl[kb], frag(L::OFF_M, kb * 2 + nt));
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mma_frag<PASSES>(s[nt], va[kb], vl[kb], frag(L::OFF_Q, kb * 8 + nt));
    }
    store_y_strip<F>(y + vbase + col0 + g, tok_stride, (c0 + i) * CC, T, yacc, q);
  }
  store_strip<N>(s, st, col0 + g, q);
}

}  // namespace tc
}  // namespace archbench
