// What the chunked tensor-core WKV kernels share (wkv7/cuda/wkv7_chunked.cu,
// wkv6/cuda/wkv6_chunked.cu): the chunk and warp layout, the producer / state-warp pipeline
// that drives them, the input loader, and tf32 products from shared memory (1 pass, or
// 3xTF32 for fp32 inputs).
//
// The pipeline. A block owns one (batch, head, tile of VT state columns) and walks the
// sequence in chunks of C tokens. Its warps have two roles:
//  * G groups of PW producer warps build the state-independent operands of a chunk (decays,
//    decayed vectors, C x C matrices, for WKV7 a triangular solve). Group g builds chunks g,
//    g + G, g + 2G, ..., each into a slot of a ring of NB = G + 1 chunk buffers, so G chunks
//    are under construction while the state warps read the (G + 1)-th. One group takes
//    several microseconds per chunk (a chain of dependent steps with barriers between, not
//    bandwidth): at B = 1 that chain, not the state pass, set the speed of the one-group
//    kernel, and G groups take G chunks through it at once.
//  * SW state warps carry the state tile (fp32, shared memory) through the chunks in order.
// Slot s has two named barriers: FULL (the producers arrive when the chunk is built, the
// state warps wait) and EMPTY (the state warps arrive when done with it, the producer
// group that refills it waits). bar.arrive / bar.sync order the shared-memory writes before
// the arrival against the reads after the wait, as __syncthreads does.
//
// The two-kernel form (build_to_workspace below, state_tc.cuh) is for few heads: the same
// builds over every chunk at once, then a state pass with the state in registers.
#pragma once

#include <mma.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <type_traits>

#include "common.cuh"
#include "state_tc.cuh"

namespace archbench {
namespace tc {

using namespace nvcuda;

constexpr int C = 16;                     // tokens per chunk
constexpr int SW = 4, PW = 4;             // state warps, warps per producer group
constexpr int PT = 32 * PW;               // threads per producer group
constexpr float SAFE_SPAN = 64.f;         // |Λ_C| up to which a column is factorised
constexpr size_t MAX_SMEM = 227 * 1024;   // dynamic shared memory a block may opt into (sm_90)

using Acc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

__device__ __forceinline__ void bar_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void bar_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void state_sync() { bar_sync(1, 32 * SW); }

// Barrier ids: 0 is __syncthreads, 1 the state warps, then one per producer group, then
// FULL and EMPTY per slot.
template <int G_>
struct Pipe {
  static constexpr int G = G_, NB = G + 1;
  static constexpr int THREADS = 32 * SW + G * PT;
  static constexpr int PAIR = PT + 32 * SW;  // threads meeting at a slot's barrier
  static constexpr int FULL0 = 2 + G, EMPTY0 = FULL0 + NB;
  static_assert(G >= 1 && EMPTY0 + NB <= 16, "a CTA has 16 named barriers");
};

// One producer group: its thread index (0..PT-1) and its own barrier.
struct Group {
  int ptid, g;
  __device__ __forceinline__ void sync() const { bar_sync(2 + g, PT); }
};

// Rounds a loaded fragment to tf32 (hi) and, for 3xTF32, keeps the remainder (lo).
template <int PASSES, typename Frag>
__device__ __forceinline__ void split_tf32(Frag& hi, Frag& lo) {
#pragma unroll
  for (int i = 0; i < hi.num_elements; ++i) {
    const float x = hi.x[i];
    const float h = wmma::__float_to_tf32(x);
    hi.x[i] = h;
    if constexpr (PASSES == 3) lo.x[i] = wmma::__float_to_tf32(x - h);
  }
}

// acc += A[16 x 8] B[8 x 16] from shared memory (fp32), in 1 or 3 tf32 products.
template <int PASSES, typename LA, typename LB>
__device__ __forceinline__ void mma8(Acc& acc, const float* a, int lda, const float* b, int ldb) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LA> ah, al;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LB> bh, bl;
  wmma::load_matrix_sync(ah, a, lda);
  wmma::load_matrix_sync(bh, b, ldb);
  split_tf32<PASSES>(ah, al);
  split_tf32<PASSES>(bh, bl);
  if constexpr (PASSES == 3) {
    wmma::mma_sync(acc, al, bh, acc);
    wmma::mma_sync(acc, ah, bl, acc);
  }
  wmma::mma_sync(acc, ah, bh, acc);
}

// Eight floats out as F (16-byte aligned for 2-byte F, 32-byte for float).
template <typename F>
__device__ __forceinline__ void store8(F* dst, const float* src) {
  if constexpr (sizeof(F) == 4) {
    reinterpret_cast<float4*>(dst)[0] = make_float4(src[0], src[1], src[2], src[3]);
    reinterpret_cast<float4*>(dst)[1] = make_float4(src[4], src[5], src[6], src[7]);
  } else {
    uint4 raw;
    F* e = reinterpret_cast<F*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) e[i] = from_f<F>(src[i]);
    *reinterpret_cast<uint4*>(dst) = raw;
  }
}

// A chunk's inputs, fetched into registers by one producer group (16-byte loads, zeros past
// T: padding tokens change nothing) and staged into shared memory: NFULL inputs of N
// entries per token as they are (type F), and this block's VT columns of v as fp32. ptr[0 ..
// NFULL-1] are the full inputs, ptr[NFULL] is v. The pointer is picked by an unrolled
// compare chain: an indexed pointer array would live in local memory.
template <typename F, int N, int VT, int NFULL>
struct Loader {
  static constexpr int VN = Vec<F>::n;
  static constexpr int FULL = N / VN, PART = VT / VN, PER_TOKEN = NFULL * FULL + PART;
  static constexpr int SLOTS = C * PER_TOKEN, NSLOT = (SLOTS + PT - 1) / PT;
  static_assert(N % VN == 0 && VT % VN == 0, "16-byte vectors must tile a row");
  uint4 buf[NSLOT];
  const F* ptr[NFULL + 1];
  size_t base, tok_stride;  // token t's row starts at base + t * tok_stride
  int col0, T;

  __device__ __forceinline__ void fetch(int t0, int ptid) {
#pragma unroll
    for (int q = 0; q < NSLOT; ++q) {
      const int idx = q * PT + ptid;
      buf[q] = make_uint4(0, 0, 0, 0);
      if (idx < SLOTS) {
        const int tt = idx / PER_TOKEN, rem = idx % PER_TOKEN;
        if (t0 + tt < T) {
          const int which = rem / FULL;
          const F* src = ptr[NFULL];
#pragma unroll
          for (int i = 0; i < NFULL; ++i) src = which == i ? ptr[i] : src;
          const int e0 = which < NFULL ? (rem % FULL) * VN : col0 + (rem - NFULL * FULL) * VN;
          buf[q] = *reinterpret_cast<const uint4*>(src + base + (size_t)(t0 + tt) * tok_stride + e0);
        }
      }
    }
  }

  // The same inputs at VT2 columns of v (0: none, for the two-kernel form's builds, which do
  // not read v: a slot fewer per thread).
  template <int VT2>
  __device__ __forceinline__ Loader<F, N, VT2, NFULL> with_columns() const {
    Loader<F, N, VT2, NFULL> l;
#pragma unroll
    for (int i = 0; i <= NFULL; ++i) l.ptr[i] = ptr[i];
    l.base = base, l.tok_stride = tok_stride, l.col0 = col0, l.T = T;
    return l;
  }

  // raw: [NFULL][C][N] of F; vrows: the chunk's v as fp32, row stride ldv (unused at VT = 0)
  __device__ __forceinline__ void stage(F* raw, float* vrows, int ldv, int ptid) const {
#pragma unroll
    for (int q = 0; q < NSLOT; ++q) {
      const int idx = q * PT + ptid;
      if (idx < SLOTS) {
        const int tt = idx / PER_TOKEN, rem = idx % PER_TOKEN;
        if (rem < NFULL * FULL) {
          *reinterpret_cast<uint4*>(raw + ((rem / FULL) * C + tt) * N + (rem % FULL) * VN) = buf[q];
        } else {
          const F* e = reinterpret_cast<const F*>(&buf[q]);
          float* dst = vrows + tt * ldv + (rem - NFULL * FULL) * VN;
#pragma unroll
          for (int u = 0; u < VN; ++u) dst[u] = to_f(e[u]);
        }
      }
    }
  }
};

// Where a block sits: blocks (b * H + h) * (N / VT) .. own head h of batch b, each VT state
// columns from col0; token t's row of that head starts at base + t * tok_stride. (Computed
// in this order on purpose: the kernels' SASS is the same as with the lines written out in
// each kernel, checked with cuobjdump.)
template <int N, int VT>
struct Place {
  int bh, col0, bi, h;  // bh = b * H + h
  size_t tok_stride, base;
  __device__ __forceinline__ Place(int H, int T)
      : bh(blockIdx.x / (N / VT)), col0((blockIdx.x % (N / VT)) * VT), bi(bh / H), h(bh % H),
        tok_stride((size_t)H * N), base((size_t)bi * T * tok_stride + (size_t)h * N) {}
};

// y out: a state warp's 16 x 16 tile (tokens of chunk c, columns col0 + 16 tile ..) from its
// accumulator, through the warp's staging tile in shared memory, as 8-wide stores.
template <typename F>
struct YWriter {
  F* y;
  size_t base, tok_stride;
  int col0, T;
  __device__ __forceinline__ void write(const Acc& acc, float (*stage)[20], int c, int tile, int lane) const {
    wmma::store_matrix_sync(&stage[0][0], acc, 20, wmma::mem_row_major);
    __syncwarp();
    const int row = lane / 2, half = lane % 2, t = c * C + row;
    if (t < T) store8<F>(y + base + (size_t)t * tok_stride + col0 + tile * 16 + half * 8, &stage[row][half * 8]);
  }
};

// A build's first step: the cumulative log decay Λ_t = w_0 + .. + w_t per column (in lam,
// threads 0..N-1), the chunk total Λ_C (lamc), and `unsafe` set where a column decays past
// e^{-SAFE_SPAN} within the chunk. ONE_ROW: w[0] is the decay of each of the chunk's ntok real
// tokens (WKV5's, one row per head, read from global memory instead of staged per token), 0
// past them, as the loader's zeros give the staged decays of tokens past T.
template <typename F, int N, bool ONE_ROW = false>
__device__ __forceinline__ void cumulative_decay(const F (*w)[N], float (*lam)[N], float* lamc, int& unsafe,
                                                 int ptid, int ntok = C) {
  if (ptid < N) {
    float acc = 0.f;
    const float w0 = ONE_ROW ? to_f(w[0][ptid]) : 0.f;
#pragma unroll
    for (int t = 0; t < C; ++t) {
      acc += ONE_ROW ? (t < ntok ? w0 : 0.f) : to_f(w[t][ptid]);
      lam[t][ptid] = acc;
    }
    lamc[ptid] = acc;
    if (acc < -SAFE_SPAN) unsafe = 1;  // benign race: every writer writes 1
  }
}

// A state pass's S_C = D∘S_0 + (the op's products), a 16 x 16 tile at a time, each state warp
// its own tiles: D∘S_0 in place, loaded as the accumulator, add(acc, mi, ni) adds the products
// of tile (mi, ni), and the tile is stored back. s: the state tile [N][LDV] of NT column tiles.
template <int N, int NT, int LDV, class Add>
__device__ __forceinline__ void update_state_tiles(float (*s)[LDV], const float* d, int warp, int lane, Add add) {
#pragma unroll
  for (int q = warp; q < (N / 16) * NT; q += SW) {
    const int mi = q / NT, ni = q % NT;
#pragma unroll
    for (int e = lane; e < 256; e += 32) {
      const int rr = mi * 16 + e / 16, cc = ni * 16 + e % 16;
      s[rr][cc] *= d[rr];
    }
    __syncwarp();
    Acc acc;
    wmma::load_matrix_sync(acc, &s[mi * 16][ni * 16], LDV, wmma::mem_row_major);
    add(acc, mi, ni);
    wmma::store_matrix_sync(&s[mi * 16][ni * 16], acc, LDV, wmma::mem_row_major);
  }
}

// Whether an op's build needs the count of real tokens in its chunk (Op::COUNTS_TOKENS: the
// pipeline then sets Scratch::ntok, C but in a last, partial chunk).
template <class O, class = void>
struct CountsTokens : std::false_type {};
template <class O>
struct CountsTokens<O, std::void_t<decltype(O::COUNTS_TOKENS)>> : std::bool_constant<O::COUNTS_TOKENS> {};

// Whether an op's state warps keep the state in registers (Op::REG_STATE, the fused form of
// WKV7) rather than in shared memory.
template <class O, class = void>
struct RegState : std::false_type {};
template <class O>
struct RegState<O, std::void_t<decltype(O::REG_STATE)>> : std::bool_constant<O::REG_STATE> {};

// The pipeline of one block (see the top of this file). Op holds the block's pointers and
// does the op-specific work:
//   Op::Smem       shared memory: chunk[NB] slots (each with v[C][LDV], the chunk's v),
//                  scratch[G] (one per producer group, with raw[NFULL][C][N] of F and
//                  int unsafe), s[N][LDV] (the state tile)
//   op.ld          a Loader with the block's pointers (copied by each producer thread)
//   op.build(scratch, chunk, grp)   the chunk's operands from its staged inputs
//   op.consume(sm, chunk, c, warp, lane)  chunk c through the state (state warps); it may
//                  use state_sync() inside; the state is complete after a state_sync
// or, where Op::REG_STATE is true (no s in Smem; VT = 16 SW), the state warps' own strips:
//   op.state_in(s, st, warp, lane), op.step(s, chunk, c, warp, lane), op.state_out(...)
//                  with float s[N / 8][4] in registers and no barrier between state warps
// st points at this block's head state ([N, N] fp32, row stride N), col0 its first column.
template <class Op, int N, int VT, int G>
__device__ __forceinline__ void run_pipeline(const Op& op, typename Op::Smem& sm, float* st, int col0, int nchunks) {
  using P = Pipe<G>;
  constexpr int LDV = VT + 4;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  if (warp >= SW) {
    // ---------------- producer groups ----------------
    const int g = (warp - SW) / PW;
    const Group grp{tid - 32 * SW - g * PT, g};
    auto ld = op.ld;
    auto& scr = sm.scratch[g];
    if (g < nchunks) ld.fetch(g * C, grp.ptid);
    for (int c = g; c < nchunks; c += G) {
      const int s = c % P::NB;
      if (c >= P::NB) bar_sync(P::EMPTY0 + s, P::PAIR);  // the state warps are done with chunk c - NB
      if (c > g) grp.sync();                              // this group's last build is done with scratch
      if (grp.ptid == 0) {
        scr.unsafe = 0;
        if constexpr (CountsTokens<Op>::value) scr.ntok = min(C, ld.T - c * C);
      }
      ld.stage(&scr.raw[0][0][0], &sm.chunk[s].v[0][0], LDV, grp.ptid);
      if (c + G < nchunks) ld.fetch((c + G) * C, grp.ptid);  // in flight during the build
      grp.sync();
      op.build(scr, sm.chunk[s], grp);
      bar_arrive(P::FULL0 + s, P::PAIR);
    }
    return;
  }

  // ---------------- state warps ----------------
  if constexpr (RegState<Op>::value) {  // the state in registers, each warp its own strip
    static_assert(VT == 16 * SW, "a register-state block holds every column, 16 a warp");
    float s[N / 8][4];
    op.state_in(s, st, warp, lane);
    for (int c = 0; c < nchunks; ++c) {
      const int slot = c % P::NB;
      bar_sync(P::FULL0 + slot, P::PAIR);
      op.step(s, sm.chunk[slot], c, warp, lane);
      if (c + P::NB < nchunks) bar_arrive(P::EMPTY0 + slot, P::PAIR);
    }
    op.state_out(s, st, warp, lane);
  } else {
    for (int e = tid; e < N * VT / 4; e += 32 * SW) {  // the state tile in: rows 0..N-1, columns col0..
      const int row = e / (VT / 4), c4 = (e % (VT / 4)) * 4;
      *reinterpret_cast<float4*>(&sm.s[row][c4]) = *reinterpret_cast<const float4*>(st + (size_t)row * N + col0 + c4);
    }
    state_sync();
    for (int c = 0; c < nchunks; ++c) {
      const int s = c % P::NB;
      bar_sync(P::FULL0 + s, P::PAIR);
      op.consume(sm, sm.chunk[s], c, warp, lane);
      if (c + P::NB < nchunks) bar_arrive(P::EMPTY0 + s, P::PAIR);
      state_sync();
    }
    for (int e = tid; e < N * VT / 4; e += 32 * SW) {  // the state tile out
      const int row = e / (VT / 4), c4 = (e % (VT / 4)) * 4;
      *reinterpret_cast<float4*>(st + (size_t)row * N + col0 + c4) = *reinterpret_cast<const float4*>(&sm.s[row][c4]);
    }
  }
}

// The two-kernel form, for few heads (B x H too small to fill the GPU with blocks of the
// pipeline above, whose state pass then sets the speed: measured in results/kernels/). The
// sequence is cut into segments of n chunks; per segment
//  1. the build kernel: every (head, chunk) of the segment built at once, over the whole GPU,
//     one group of PT threads per block walking build_cpb() consecutive chunks of one head: op.build
//     as in the pipeline, then op.finish (the op's extra products, state_tc.cuh) and the
//     chunk's operands written to the workspace in fragment order (emit_chunk), chunk i of
//     head bh at ws + (bh * n + i) * WsLayout::FLOATS floats;
//  2. wkv_state_kernel (state_tc.cuh): the state in registers, a warp per 16 value columns.
// The chunk operands are built once per head here (the one-kernel form builds them in each
// of the head's N / VT blocks). BuildArea is the build kernel's shared memory; Op is the op
// instantiated with VT = 16 (the v it stages is not used).
template <class Op>
struct BuildArea {
  typename Op::Chunk chunk;
  typename Op::Scratch scratch;
};

template <class Op>
__device__ __forceinline__ void build_to_workspace(const Op& op, BuildArea<Op>& area, float* ws, int c0, int i_begin,
                                                   int i_end) {
  static_assert(PT == 128, "emit_chunk: 128 threads");
  const Group grp{(int)threadIdx.x, 0};
  auto ld = op.ld.template with_columns<0>();  // the build does not read v
  auto& scr = area.scratch;
  ld.fetch((c0 + i_begin) * C, grp.ptid);
  for (int i = i_begin; i < i_end; ++i) {
    if (i > i_begin) grp.sync();  // the last chunk's emit is done with the area
    if (grp.ptid == 0) {
      scr.unsafe = 0;
      if constexpr (CountsTokens<Op>::value) scr.ntok = min(C, ld.T - (c0 + i) * C);
    }
    ld.stage(&scr.raw[0][0][0], nullptr, 0, grp.ptid);
    if (i + 1 < i_end) ld.fetch((c0 + i + 1) * C, grp.ptid);
    grp.sync();
    op.build(scr, area.chunk, grp);
    grp.sync();
    op.finish(scr, area.chunk, grp);
    grp.sync();
    emit_chunk<Op::LOWRANK, Op::PASSES_ == 1>(ws + (size_t)i * WsLayout<Op::LOWRANK>::FLOATS,
                                              op.operands(scr, area.chunk), grp.ptid);
  }
  // Launched with programmatic dependent launch beside the state pass ahead of it (one stream,
  // launch_two_kernels), the kernel must not complete before that pass: one block waits for it
  // (the others exit, so that the build's later waves are not held up). Otherwise a no-op.
  if (blockIdx.x == gridDim.x - 1) pdl_wait();
}

// The workspace budget that sets the segment length.
constexpr size_t WS_BUDGET = size_t(256) << 20;

// Chunks a build block takes in one launch (the op's choice): `beside` where the build runs
// beside a state pass, `alone` where nothing runs beside it (the only segment: launch_two_kernels
// passes alone). ARCHBENCH_BUILD_CPB / ARCHBENCH_BUILD_CPB_ALONE (> 0, read at every call)
// override them, for measuring. The chunks only change hands: any count gives the same bits.
inline int build_cpb(bool alone, int beside, int alone_cpb) {
  const char* e = std::getenv(alone ? "ARCHBENCH_BUILD_CPB_ALONE" : "ARCHBENCH_BUILD_CPB");
  const int v = e ? std::atoi(e) : 0;
  return v > 0 ? v : alone ? alone_cpb : beside;
}

// The segments of the two-kernel form: `seg` chunks each, in `bufs` workspace buffers (two
// where there is more than one segment: the build of segment s + 1 runs on a second stream
// beside the state pass of segment s). The length trades the build that nothing overlaps (the
// first) and each state pass's start and end against the build's waves: a segment's build is
// heads x seg / (chunks a block) blocks of ~50-110 us each (8 chunks a block), its state pass ~1.2 (WKV7) / 0.8 (WKV6) us a
// chunk. Measured on an H200 (bf16, results/kernels/overlap-20261128/), Mtok/s at segments
// of 32 / 48 / 64 / 96 / 128 / 192 / 256 chunks:
//   WKV7 1 x 16384, H = 40:  6.3 / 7.8 / 9.1 / 8.1 / 8.6 / 7.4-7.8 / 7.4-7.8 (serial 6.4);
//        1 x 16384, H = 64:  5.1 / 4.9 / 5.4 / 5.6 / 5.6 / 5.6 / 5.6 (serial 4.8);
//        2 x 16384, H = 64:  7.0 / 6.4 at every other length (serial 6.0);
//        4 x 4096, H = 40:   9.6-9.7 at every length (serial 9.1);
//   WKV6 1 x 16384, H = 40:  13.9 / 14.1 / 15.0 / 15.3 / 14.3 / 14.9 / 15.3 (serial 13.0);
//        1 x 16384, H = 64:  12.1 / 12.8 / 11.9 / 12.8 / 13.4 / 13.7 / 12.8 (serial 10.6);
//        2 x 16384, H = 64:  13.8 / 16.3 / 16.8 / 18.0 / 17.5 / 17.4 / 17.4 (serial 14.6).
// Uneven schedules (ARCHBENCH_SEG_SCHEDULE, below; H200, results/kernels/
// wkv_bench_20261128-130703-h200-schedules.log), Mtok/s at 1 x 4096 / 1 x 16384: WKV6 at H = 64
// the default 128 12.51 / 13.70, 128 then 192 12.52 / 14.10 (192 alone: 10.89 / 13.84), every
// schedule with a shorter segment after the first slower (11.5-12.3 / 8.6-12.9); WKV7 at H = 40
// the default 64 8.19 / 9.05, every other (shorter first or last segments, 48, 96, 128) slower
// (7.0-7.9 / 4.1-8.9). So WKV6 at 64 heads takes 128 then 192 - except at 256 chunks or
// fewer (a 4096-token prompt), where 64-chunk segments win once the builds go on one stream
// (launch_two_kernels; results/kernels/one-stream-20261128/, H200, Mtok/s replayed / as calls,
// 1 x 4096 at H = 64: 64 each 13.72 / 13.28, 128 + 128 12.81 / 12.66, 64 then 192 11.99 /
// 11.76; at 1 x 16384 64 each loses, 14.65 / 14.44 against 14.90 / 14.91; on two streams
// as calls 64 each lost, 11.29 against 12.36, every wait between the streams costing GPU time).
// Buffers fit WS_BUDGET together (fewer chunks a segment where they would not).
// ARCHBENCH_SEG_CHUNKS (chunks, > 0) overrides the length, for measuring.
template <bool LOWRANK>
constexpr int preferred_segment(long heads, int nchunks) {
  if (LOWRANK) return heads <= 48 ? 64 : heads <= 96 ? 128 : 32;
  if (heads > 48 && heads <= 64 && nchunks <= 256) return 64;
  return heads <= 48 ? 96 : 128;
}
template <bool LOWRANK>
constexpr int later_segments(long heads, int nchunks) {  // the length after the first (0: the same)
  return !LOWRANK && heads > 48 && heads <= 64 && nchunks > 256 ? 192 : 0;
}
// ARCHBENCH_SEG_SCHEDULE="a,b,c" (chunks) gives segment s the length of entry s (the last one
// repeated), for measuring uneven schedules; the buffers hold the longest.
constexpr int MAX_SCHEDULE = 16;
struct Segments {
  int seg, bufs;                    // chunks a buffer holds, buffers
  int sched[MAX_SCHEDULE] = {}, n_sched = 0;
  int length(int s) const { return n_sched ? sched[s < n_sched ? s : n_sched - 1] : seg; }
};
template <bool LOWRANK>
inline Segments segments(long heads, int nchunks) {
  constexpr int floats = WsLayout<LOWRANK>::FLOATS;
  const long fit = (long)(WS_BUDGET / 2 / ((size_t)floats * 4 * (size_t)heads));
  long n = preferred_segment<LOWRANK>(heads, nchunks);
  const char* fixed = std::getenv("ARCHBENCH_SEG_CHUNKS");
  const bool fixed_set = fixed && std::atol(fixed) > 0;
  if (fixed_set) n = std::atol(fixed);
  Segments sg{};
  if (const char* e = std::getenv("ARCHBENCH_SEG_SCHEDULE"); e && *e) {
    long longest = 0;
    for (const char* p = e; *p && sg.n_sched < MAX_SCHEDULE;) {
      char* end = nullptr;
      const long v = std::strtol(p, &end, 10);
      if (end == p) break;
      if (v > 0) {
        sg.sched[sg.n_sched++] = (int)(v < fit ? v : (fit > 0 ? fit : 1));
        longest = std::max(longest, (long)sg.sched[sg.n_sched - 1]);
      }
      p = *end == ',' ? end + 1 : end;
    }
    if (sg.n_sched) n = longest;
  } else if (const int later = later_segments<LOWRANK>(heads, nchunks); later && !fixed_set) {
    sg.sched[0] = (int)std::min<long>(n, fit);
    sg.sched[1] = later;
    sg.n_sched = 2;
    n = std::max<long>(n, later);
  }
  if (n > fit) n = fit;
  if (n < 1) n = 1;
  if (n >= nchunks && (sg.n_sched == 0 || sg.sched[0] >= nchunks)) return {nchunks, 1};
  sg.seg = (int)std::min<long>(n, nchunks);
  sg.bufs = 2;
  for (int i = 0; i < sg.n_sched; ++i) sg.sched[i] = std::min(sg.sched[i], sg.seg);  // what the buffers hold
  return sg;
}

// The two-kernel form on one stream (launch_two_kernels) on GPUs of compute capability 9.0 or
// later, unless ARCHBENCH_TWO_KERNEL_PDL=0 (two streams, as on older GPUs; read at every call).
inline bool one_stream_pdl() {
  const char* e = std::getenv("ARCHBENCH_TWO_KERNEL_PDL");
  if (e && e[0] == '0' && e[1] == 0) return false;
  static int major[64] = {};  // per device, looked up once
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
  if (major[dev] == 0 && cudaDeviceGetAttribute(&major[dev], cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
    return false;
  return major[dev] >= 9;
}

// The second stream of the two-kernel form and its events, one set per host thread and device,
// made on first use and kept; aux_in / aux_done order other work put on it (the WKV6 pieces'
// offsets, wkv6_pieces.cu).
struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t start, built[2], used[2], aux_in, aux_done;
};
inline cudaError_t side_stream(SideStream*& out) {
  constexpr int MAX_DEVICES = 64;
  thread_local SideStream sides[MAX_DEVICES];
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  if (dev >= MAX_DEVICES) return cudaErrorInvalidDevice;
  SideStream& s = sides[dev];
  if (s.stream == nullptr) {
    cudaEvent_t* evs[7] = {&s.start, &s.built[0], &s.built[1], &s.used[0], &s.used[1], &s.aux_in, &s.aux_done};
    for (cudaEvent_t* e : evs)
      if ((err = cudaEventCreateWithFlags(e, cudaEventDisableTiming)) != cudaSuccess) return err;
    if ((err = cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking)) != cudaSuccess) return err;
  }
  out = &s;
  return cudaSuccess;
}

// Launches KERNEL over `blocks` blocks of Pipe<G>::THREADS threads with SMEM bytes of
// dynamic shared memory (opting in above 48 KB).
template <typename Kernel, typename... Args>
cudaError_t launch_pipeline(Kernel kernel, int blocks, int threads, size_t smem, cudaStream_t stream, Args... args) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess) return err;
  kernel<<<blocks, threads, smem, stream>>>(args...);
  return cudaGetLastError();
}
// The same with programmatic dependent launch if pdl (the two-kernel form's builds on one
// stream, launch_two_kernels).
template <typename Kernel, typename... Args>
cudaError_t launch_pipeline_pdl(bool pdl, Kernel kernel, int blocks, int threads, size_t smem, cudaStream_t stream,
                                Args... args) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess) return err;
  return launch_ex(kernel, dim3(blocks), threads, smem, stream, pdl, args...);
}

template <typename T>
struct Type {
  using type = T;
};
template <int V>
using Int = std::integral_constant<int, V>;

// The launch code of the chunked kernels, variant = tile + 10 * groups + 100 * form (tile 0 =
// by shape, 1, 2, 3 = 16, 32, 64 state columns per block; groups 0 = by shape, 1-3 producer
// groups; form 0 = by shape, 1 = one kernel, 2 = two kernels: the build kernel and
// wkv_state_kernel, 3 = fused: one kernel with the state in registers, ops with FUSED only),
// resolved and passed on as go(Type<F>{}, Int<VT>{}, Int<G>{}, Int<FORM>{}) for one of the
// combinations built; cudaErrorInvalidValue for an unknown dtype or combination. One kernel:
// fp32 inputs and 16 columns always take one group (shared memory). Two kernels: no producer
// groups (G = 1 passed, the code's groups ignored). Fused: 64 columns, 1-3 groups (3 by
// default; fp32: 1).
//
// The choice by shape, one kernel, measured on an H100 (bf16, H = 40, results/kernels/
// wkv_bench_20261128-021524.jsonl), Mtok/s, WKV7 / WKV6:
//   B x H = 40:  32 columns with one group 4.0-4.2 / 5.6-5.8, with two 5.1-5.3 / 7.4-7.7, with
//                three the same as two; 64 columns 3.1-3.5 / 5.1-5.4 at any count;
//   B x H = 320, 640: 64 columns with one group 10.3, 13.1 / 16.6, 21.2; more groups or 32
//                columns 8.3-11.2 / 11.8-17.3: with the heads alone filling the SMs, more
//                blocks beat more producers.
// The two-kernel form by shape up to split_max_heads heads (the op's: WKV7_SPLIT_MAX_HEADS,
// WKV6_SPLIT_MAX_HEADS), 64 columns a block there. Measured on an H100 (bf16, H = 40,
// results/kernels/wkv_bench_20261128-075504.jsonl), Mtok/s, two kernels at 16 / 32 / 64
// columns against one kernel (by shape):
//   WKV7 B x H = 40:  6.0-6.1 / 7.0-7.1 / 7.1-7.3 against 5.1-5.3 (32 columns, 2 groups);
//        B x H = 320: 9.9-10.0 against 10.3 (64, 1); 640: 10.2-10.3 against 13.0;
//   WKV6 B x H = 40:  12.5-13.3 / 12.6-13.1 / 12.9-13.6 against 7.5-7.6;
//        B x H = 320: 24.4 / 27.2 / 27.3 against 16.6; 640: 25.4 / 25.4 / 24.9 against 21.2.
// And on an H200 (bf16, results/kernels/wkv_bench_20261128-130032-h200-forms), two kernels at
// 64 columns against one: WKV6 16 x 16384 x 64 heads (1024) 17.39 against 13.43, 8 x 4096 x
// 64 (512) 17.51 against 13.30; WKV7 8 x 4096 x 40 (320) 9.50 against 10.01, 16 x 16384 x 40
// (640) 9.32 against 12.59, 8 x 4096 x 64 (512) 5.91 against 8.10. Above 1024 heads: not measured.
// The fused form (WKV7; results/kernels/wkv_bench_20261128-145038-h200-fused.jsonl, H200,
// bf16), Mtok/s, fused with 1 / 2 / 3 groups against two kernels and one kernel (64, 1):
//   B x H = 40:   4.1 / 6.2-6.4 / 7.4-7.5 against 8.19-9.37 and 3.1;
//   B x H = 64:   4.1 / 6.2-6.4 / 7.4-7.5 against 5.53-5.63 and 3.1;
//   B x H = 320:  14.35 / 16.85 / 20.20 against 9.50 and 10.00; 640: 17.16 / 20.77 / 24.48
//                 against 9.35 and 12.65; 512: 12.88 / 12.80 / 15.15 against 5.94 and 8.15;
//                 1024: 12.98 / 13.03 / 15.34 against 7.04 and 8.23.
// So WKV7 takes two kernels up to 48 heads (40 measured; 48 is where its segments lengthen),
// the fused form with 3 groups above (fp32: 1 group); its one-kernel form is no longer
// chosen by shape.
constexpr long WKV7_SPLIT_MAX_HEADS = 48, WKV6_SPLIT_MAX_HEADS = 1024;
constexpr int SPLIT_TILE = 3, FUSED_GROUPS = 3;

// The form by shape (variant / 100 if given): two kernels up to split_max_heads heads, above
// them the fused form for ops that have it, else one kernel.
inline int split_form(long heads, int variant, long split_max_heads, bool fused = false) {
  const int form = variant / 100;
  return form ? form : heads <= split_max_heads ? 2 : fused ? 3 : 1;
}

template <bool FUSED = false, typename Go>
cudaError_t dispatch(int dtype, long heads, int variant, long split_max_heads, Go&& go) {
  int tile = variant % 10, groups = variant / 10 % 10;
  const int form = split_form(heads, variant, split_max_heads, FUSED);
  if (form == 2) {  // the state pass's width: 16, 32 or 64 columns (1, 2, 4 warps) a block
    if (tile == 0) tile = SPLIT_TILE;
    ARCHBENCH_DISPATCH_DTYPE(dtype, {
      switch (tile) {
        case 1: return go(Type<F>{}, Int<16>{}, Int<1>{}, Int<2>{});
        case 2: return go(Type<F>{}, Int<32>{}, Int<1>{}, Int<2>{});
        case 3: return go(Type<F>{}, Int<64>{}, Int<1>{}, Int<2>{});
        default: return cudaErrorInvalidValue;
      }
    })
    return cudaSuccess;
  }
  if constexpr (FUSED) {
    if (form == 3) {
      if (tile != 0 && tile != 3) return cudaErrorInvalidValue;
      if (groups == 0) groups = FUSED_GROUPS;
      if (dtype == kF32) groups = 1;
      ARCHBENCH_DISPATCH_DTYPE(dtype, {
        if (groups == 1) return go(Type<F>{}, Int<64>{}, Int<1>{}, Int<3>{});
        if constexpr (sizeof(F) == 2) {
          if (groups == 2) return go(Type<F>{}, Int<64>{}, Int<2>{}, Int<3>{});
          if (groups == 3) return go(Type<F>{}, Int<64>{}, Int<3>{}, Int<3>{});
        }
        return cudaErrorInvalidValue;
      })
      return cudaSuccess;
    }
  }
  if (form != 1) return cudaErrorInvalidValue;
  if (tile == 0) tile = heads <= 264 ? 2 : 3;
  if (groups == 0) groups = tile == 2 ? 2 : 1;
  if (dtype == kF32 || tile == 1) groups = 1;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    switch (tile * 10 + groups) {
      case 11: return go(Type<F>{}, Int<16>{}, Int<1>{}, Int<1>{});
      case 21: return go(Type<F>{}, Int<32>{}, Int<1>{}, Int<1>{});
      case 31: return go(Type<F>{}, Int<64>{}, Int<1>{}, Int<1>{});
      default: break;
    }
    if constexpr (sizeof(F) == 2) {
      switch (tile * 10 + groups) {
        case 22: return go(Type<F>{}, Int<32>{}, Int<2>{}, Int<1>{});
        case 23: return go(Type<F>{}, Int<32>{}, Int<3>{}, Int<1>{});
        case 32: return go(Type<F>{}, Int<64>{}, Int<2>{}, Int<1>{});
        case 33: return go(Type<F>{}, Int<64>{}, Int<3>{}, Int<1>{});
        default: break;
      }
    }
    return cudaErrorInvalidValue;
  })
  return cudaSuccess;
}

// The two-kernel form over [B, T] (H heads of 64): per segment of chunks, the op's build
// kernel, launched by build(c0, n, ws, alone, stream, pdl) (alone: the only segment, nothing
// beside it; pdl: with programmatic dependent launch, launch_pipeline_pdl), then
// wkv_state_kernel at VT columns a block. ws holds ws_bytes (at least workspace_bytes()).
// With several segments, before sm_90 (or with ARCHBENCH_TWO_KERNEL_PDL=0; on sm_90+ see below)
// the builds run on a second stream, one segment ahead of the state passes, which stay on `stream` at the greatest priority (their blocks are placed first
// when both wait); events order the two streams, so a CUDA graph captures the same order.
// first (optional, WKV7): first(n, stream) runs the first segment's n chunks whole (the fused
// form: builds and state pass in one kernel, on few SMs at few heads), so that no build is
// waited for at the start: segment 1 is built beside it.
// On sm_90+ (one_stream_pdl; ARCHBENCH_TWO_KERNEL_PDL=0 for the two streams above): every
// kernel on `stream`, none on a second stream and no events. Build s + 1 is launched with
// programmatic dependent launch after state pass s (or the fused first segment), which lets
// it start at once (both call pdl_launch_dependents() first), so the two overlap as on two
// streams; one block of the build waits for that pass before exiting (build_to_workspace), so
// the build completes after it, and state pass s + 1, an ordinary launch, starts after the
// build and hence after pass s, and so does build s + 2, which reuses pass s's buffer. The
// build reads only the op's inputs, which no kernel running beside it writes. Why: in eager
// use each wait between two streams costs GPU time that a graph's edges do not. Measured on
// an H200 (bf16, Mtok/s as calls, two streams / one; results/kernels/one-stream-20261128/):
// WKV6 1 x 16384 at H = 64 13.82 / 14.78-14.91, at H = 40 20.41 / 20.86-20.97, 1 x 4096 at
// H = 64 12.39 / 12.58-12.66, the rest within the runs' spread; replayed from a graph the same.
template <typename F, int PASSES, bool LOWRANK, int VT, class Build, class First = std::nullptr_t>
cudaError_t launch_two_kernels(int B, int T, int H, const F* v, float* state, F* y, void* ws, size_t ws_bytes,
                               cudaStream_t stream, Build&& build, First&& first = nullptr) {
  constexpr bool HAS_FIRST = !std::is_same_v<std::decay_t<First>, std::nullptr_t>;
  constexpr int FLOATS = WsLayout<LOWRANK>::FLOATS, W = VT / 16;
  const int nchunks = (T + C - 1) / C;
  const Segments sg = segments<LOWRANK>((long)B * H, nchunks);
  const size_t buf_floats = (size_t)B * H * sg.seg * FLOATS;
  if (ws == nullptr || ws_bytes < sg.bufs * buf_floats * 4) return cudaErrorInvalidValue;
  float* wsp = static_cast<float*>(ws);
  auto kernel = wkv_state_kernel<F, PASSES, LOWRANK, W>;
  const size_t smem = state_smem_bytes<F, LOWRANK, W>();
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess) return err;
  int least = 0, greatest = 0;
  if ((err = cudaDeviceGetStreamPriorityRange(&least, &greatest)) != cudaSuccess) return err;
  auto state_pass = [&](int c0, int n, const float* buf) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributePriority;
    attr[0].val.priority = greatest;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(B * H * (4 / W));
    cfg.blockDim = dim3(32 * W);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kernel, T, H, v, state, y, c0, n, buf);
  };
  if (sg.bufs == 1) {  // one segment: nothing to overlap
    if ((err = build(0, nchunks, wsp, true, stream, false)) != cudaSuccess) return err;
    return state_pass(0, nchunks, wsp);
  }
  if (one_stream_pdl()) {  // see above
    for (int c0 = 0, s = 0, n = 0; c0 < nchunks; c0 += n, ++s) {
      n = std::min(nchunks - c0, sg.length(s));
      float* buf = wsp + (s % 2) * buf_floats;
      if constexpr (HAS_FIRST) {
        if (s == 0) {
          if ((err = first(n, stream)) != cudaSuccess) return err;
          continue;
        }
      }
      if ((err = build(c0, n, buf, false, stream, s > 0)) != cudaSuccess) return err;
      if ((err = state_pass(c0, n, buf)) != cudaSuccess) return err;
    }
    return cudaSuccess;
  }
  SideStream* side = nullptr;
  if ((err = side_stream(side)) != cudaSuccess) return err;
  if ((err = cudaEventRecord(side->start, stream)) != cudaSuccess) return err;  // the inputs are ready
  if ((err = cudaStreamWaitEvent(side->stream, side->start, 0)) != cudaSuccess) return err;
  for (int c0 = 0, s = 0, n = 0; c0 < nchunks; c0 += n, ++s) {
    n = std::min(nchunks - c0, sg.length(s));
    const int b = s % 2;
    float* buf = wsp + b * buf_floats;
    if constexpr (HAS_FIRST) {
      if (s == 0) {  // buffer 0 is free after it (recorded so that the order is the same)
        if ((err = first(n, stream)) != cudaSuccess) return err;
        if ((err = cudaEventRecord(side->used[b], stream)) != cudaSuccess) return err;
        continue;
      }
    }
    if (s >= 2 && (err = cudaStreamWaitEvent(side->stream, side->used[b], 0)) != cudaSuccess) return err;
    if ((err = build(c0, n, buf, false, side->stream, false)) != cudaSuccess) return err;
    if ((err = cudaEventRecord(side->built[b], side->stream)) != cudaSuccess) return err;
    if ((err = cudaStreamWaitEvent(stream, side->built[b], 0)) != cudaSuccess) return err;
    if ((err = state_pass(c0, n, buf)) != cudaSuccess) return err;
    if ((err = cudaEventRecord(side->used[b], stream)) != cudaSuccess) return err;
  }
  return cudaSuccess;  // the last state pass waited for the last build: `stream` has joined the side
}

// Bytes of workspace the two-kernel form takes at this shape (0 where `variant` with the
// op's split_max_heads picks the one-kernel form, or the shape is not for the chunked kernels).
template <bool LOWRANK>
size_t workspace_bytes(int B, int T, int H, int N, int variant, long split_max_heads) {
  const long heads = (long)B * H;
  if (N != 64 || T == 0 || heads == 0 || split_form(heads, variant, split_max_heads) != 2) return 0;
  const Segments sg = segments<LOWRANK>(heads, (T + C - 1) / C);
  return (size_t)sg.bufs * heads * sg.seg * WsLayout<LOWRANK>::FLOATS * 4;
}

}  // namespace tc
}  // namespace archbench
