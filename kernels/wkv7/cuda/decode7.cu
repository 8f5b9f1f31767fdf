// The RWKV-7 decode step (one token per sequence, batch B) in a few kernels around the large
// matrix-vector products:
//
//   norm_mix      layer norm of x, the token shift and up to six interpolations
//                 x + (x_prev - x) * maa, in one pass (the time mix's six, the channel mix's one;
//                 RWKV-5's x_prev + (x - x_prev) * time_mix)
//   lora_down     the first factor of the w, a, v and g LoRAs, four inputs in one launch: the
//                 rows (C) are split over ksplit row blocks that each write partial sums
//   tmix7_decode  per (sequence, head): the partial sums reduced, tanh / sigmoid, the second
//                 LoRA factors for this head's channels, decay, in-context rate, key
//                 normalisation, value residual, the WKV7 state update in place, the group
//                 norm, the bonus r.k.r_k v and the gate: out = (norm(y) + bonus) * g
//   gemv          y = W x for the projections at small batch (r, k, v in one launch, after
//                 lora_down's blocks; the output and FFN projections with the residual or
//                 relu^2 fused)
//
// RWKV-6's decode step (kernels/wkv6/decode.py) runs on norm_mix, lora_down and gemv too, with
// two kernels of its own further down: mix6 (its token shift's LoRA and five interpolations) and
// tmix6 (its per-head kernel). RWKV-5.2's (kernels/wkv5/decode.py) is RWKV-6's without the
// LoRAs; RWKV-4's (kernels/wkv4/decode.py) has tmix4, per channel, as its time mix.
//
// At batch 1 every one of them moves a few KB to a few MB, so latency, not bandwidth, sets
// their time: each spreads its DRAM bytes over many blocks (one SM pulls only about 1/132 of
// the GPU's bandwidth) and issues all of a thread's loads before it waits on the first.
//
// Everything is fp32 inside and rounded once on the way out (the unfused path rounds after
// each op in the model dtype), so the two agree within the dtype's tolerance. No
// allocation, no host synchronisation: the step can be captured in a CUDA graph.
#include <cstdlib>
#include <string>
#include <type_traits>

#include "../../common.cuh"
#include "decode7.h"

namespace archbench {

// SM count, opt-in shared memory per block and compute capability of the current device,
// read once per device.
struct DeviceInfo {
  int sms = 0, smem_optin = 0, cc_major = 0;
};
static DeviceInfo device_info() {
  static DeviceInfo cache[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return DeviceInfo{132, 48 * 1024, 0};
  DeviceInfo& d = cache[dev];
  if (d.sms == 0) {
    DeviceInfo n;
    cudaDeviceGetAttribute(&n.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    cudaDeviceGetAttribute(&n.cc_major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&n.sms, cudaDevAttrMultiProcessorCount, dev);
    d = n;
  }
  return d;
}

// Programmatic dependent launch (common.cuh). Every kernel here is launched so that it may
// start while the kernel before it in the stream is finishing: it first calls
// pdl_launch_dependents() (which lets the next kernel start in turn, once every block of
// this one is running), then loads what no earlier kernel of the step writes - weights, and
// the state it alone updates (written before the step at the latest; the step begins with
// ordinary launches, the embedding, so such writes have completed) - and only after
// pdl_wait() (which returns once the previous kernel has completed and its writes are
// visible) reads activations and writes anything to global memory.
// So the first DRAM round trip of each kernel, a large part of its time at batch 1, overlaps
// the tail of the one before. Since every kernel waits for its predecessor before it
// completes, "the previous kernel has completed" covers every kernel before it too. On older
// GPUs, or with ARCHBENCH_DECODE_PDL=0, the launches are ordinary and both calls do nothing.
// ARCHBENCH_DECODE_PDL (read once): unset or "1", every kernel so; "0", none; otherwise the
// kernels that are, by letter (for finding which one a fault needs): n norm_mix, l lora_down,
// t tmix7, g gemv, L gemv with the LoRA blocks.
static bool pdl_enabled(char kernel) {
  static const std::string which = [] {
    const char* e = std::getenv("ARCHBENCH_DECODE_PDL");
    const std::string v = e ? e : "";
    return v.empty() || v == "1" ? std::string("nltgL") : v == "0" ? std::string() : v;
  }();
  return which.find(kernel) != std::string::npos && device_info().cc_major >= 9;
}
template <typename... Params, typename... Args>
static cudaError_t launch(char name, void (*kernel)(Params...), dim3 grid, int threads, size_t smem,
                          cudaStream_t stream, Args... args) {
  return launch_ex(kernel, grid, threads, smem, stream, pdl_enabled(name), args...);
}
// Compile-time variants, for finding a fault (ARCHBENCH_CUDA_DEFINES="ARCHBENCH_DECODE_WAIT_FIRST=1"
// or "ARCHBENCH_DECODE_TRIGGER_LATE=1"): every kernel waits for the one before it before its
// first load; or lets the next one start only after that wait.
#ifndef ARCHBENCH_DECODE_WAIT_FIRST
#define ARCHBENCH_DECODE_WAIT_FIRST 0
#endif
#ifndef ARCHBENCH_DECODE_TRIGGER_LATE
#define ARCHBENCH_DECODE_TRIGGER_LATE 0
#endif
__device__ __forceinline__ void decode_start() {  // each kernel's first instruction
  if (!ARCHBENCH_DECODE_TRIGGER_LATE) pdl_launch_dependents();
  if (ARCHBENCH_DECODE_WAIT_FIRST) pdl_wait();
}
__device__ __forceinline__ void decode_wait() {  // before reading what an earlier kernel of the step wrote
  pdl_wait();
  if (ARCHBENCH_DECODE_TRIGGER_LATE) pdl_launch_dependents();
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// Sum over the block of THREADS threads; every thread gets it. red holds THREADS / 32 floats
// that no other call uses before the next __syncthreads (give each call its own).
template <int THREADS>
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float t = 0.f;
#pragma unroll
  for (int i = 0; i < THREADS / 32; ++i) t += red[i];
  return t;
}

__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + __expf(-x)); }

// tanh for the LoRAs' hidden values. tanhf under --use_fast_math is tanh.approx.f32, whose
// relative error (up to 2^-11) is an fp16 rounding's worth and reaches the decay through
// exp(-exp(.)): RWKV-6's fp16 fused step came out 3.4x further from fp32 than the unfused
// one (4 layers at the 3B width, results/decode/fused-v4-fp16); 0.8x with this one.
// 1 - 2 / (e^2|x| + 1) is within about 1e-7 absolute.
__device__ __forceinline__ float tanh_(float x) {
  return copysignf(1.f - 2.f / (__expf(2.f * fabsf(x)) + 1.f), x);
}

// Widen the Vec<F>::n elements of a 16-byte vector held in registers.
template <typename F>
__device__ __forceinline__ void unpack(const uint4& raw, float* out) {
  const F* e = reinterpret_cast<const F*>(&raw);
#pragma unroll
  for (int i = 0; i < Vec<F>::n; ++i) out[i] = to_f(e[i]);
}

// Entry g (not known at compile time) of a small array in kernel parameters, by selects:
// indexing the parameter array with a register would copy it to local memory.
template <typename P, int NPTR>
__device__ __forceinline__ P select(const P (&ptrs)[NPTR], int g) {
  P p = ptrs[0];
#pragma unroll
  for (int i = 1; i < NPTR; ++i) p = g == i ? ptrs[i] : p;
  return p;
}
template <typename F, int NPTR>
__device__ __forceinline__ const F* pick(const void* const (&ptrs)[NPTR], int g) {
  return static_cast<const F*>(select(ptrs, g));
}

// The LoRA group of concatenated column q: the number of group starts col0[1..3] at or
// below q (an empty group - v on layer 0 - has col0[g] == col0[g + 1] and is skipped).
__device__ __forceinline__ int lora_group(int q, const int (&col0)[LORA_GROUPS + 1]) {
  int g = 0;
#pragma unroll
  for (int i = 1; i < LORA_GROUPS; ++i) g += q >= col0[i];
  return g;
}

// ---------------------------------------------------------------------------------------
// norm_mix. Grid (slices, B), NM_THREADS threads. Block (s, b) computes the layer-norm
// statistics of row b from all C values of x (at most 16 KB, from L2: cheap to repeat in
// every block) but interpolates and writes only its slice of cpb channels, thread t owning
// channels c0 + t + e * NM_THREADS. So the bytes that come from DRAM (the interpolation
// weights, the norm's affine, prev) spread over C / cpb blocks per sequence, not one.
//
// prev (the token shift) is read (old value) and written (new value: the normed x) in this
// kernel. Each channel of it is touched by one thread of one block only, which reads it
// before writing it, so there is no race between blocks; and the statistics come from x,
// never from prev.
constexpr int NM_THREADS = 128, NM_PER = 4;  // slices of up to 512 channels
constexpr int NM_XVEC = 8;                   // 16-byte vectors of x per thread: C up to 4096 in fp32
template <typename F>
__global__ void __launch_bounds__(NM_THREADS)
    norm_mix_kernel(int B, int C, int cpb, float eps, const F* x, const F* __restrict__ ln_w,
                    const F* __restrict__ ln_b, F* __restrict__ prev, MixArgs mix, F* __restrict__ out) {
  constexpr int VN = Vec<F>::n;
  __shared__ float red[2][NM_THREADS / 32];
  const int tid = threadIdx.x, b = blockIdx.y;
  const int c0 = blockIdx.x * cpb, c1 = min(C, c0 + cpb), nvec = C / VN;
  const F* xb = x + (size_t)b * C;
  decode_start();
  // Every load first, so the block waits for memory once: this thread's channels of the
  // weights and of prev (no other kernel of the step writes them: before the wait), then,
  // once the kernel that wrote x is done, the whole row of x as 16-byte vectors (for the
  // statistics) and the slice's channels of it. x is not __restrict__: a const __restrict__
  // pointer is read-only for the whole kernel to the compiler, whose loads through it (the
  // non-coherent ld.global.nc) ptxas may then issue before the wait - and the kernel before
  // this one is still writing x then. With x declared so, graphed fp32 steps read stale
  // activations (2026-11-28, H200: logits off by up to 2.8 from the eager step, any GPU;
  // tests/harness/test_decode_gpu.py). tests/kernels/test_cuda_sources_compile.py holds every
  // kernel to it: no ld.global.nc after a griddepcontrol.wait.
  float xv[NM_PER], pv[NM_PER], wv[NM_PER], bv[NM_PER], mv[MAX_MIX][NM_PER];
#pragma unroll
  for (int e = 0; e < NM_PER; ++e) {
    const int c = c0 + tid + e * NM_THREADS;
    const bool in = c < c1;
    pv[e] = in ? to_f(prev[(size_t)b * C + c]) : 0.f;
    wv[e] = in ? to_f(ln_w[c]) : 0.f;
    bv[e] = in ? to_f(ln_b[c]) : 0.f;
#pragma unroll
    for (int m = 0; m < MAX_MIX; ++m) mv[m][e] = in && m < mix.n ? to_f(static_cast<const F*>(mix.maa[m])[c]) : 0.f;
  }
  decode_wait();
  uint4 raw[NM_XVEC];
#pragma unroll
  for (int e = 0; e < NM_XVEC; ++e) {
    const int v = tid + e * NM_THREADS;
    raw[e] = v < nvec ? *reinterpret_cast<const uint4*>(xb + (size_t)v * VN) : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int e = 0; e < NM_PER; ++e) {
    const int c = c0 + tid + e * NM_THREADS;
    xv[e] = c < c1 ? to_f(xb[c]) : 0.f;
  }
  // mean, then the variance around it (two passes over registers, as F.layer_norm); the
  // zero-filled vectors past C add nothing to the sum and are skipped in the second pass
  float s = 0.f;
#pragma unroll
  for (int e = 0; e < NM_XVEC; ++e) {
    float f[VN];
    unpack<F>(raw[e], f);
#pragma unroll
    for (int u = 0; u < VN; ++u) s += f[u];
  }
  const float mean = block_sum<NM_THREADS>(s, red[0]) / C;
  float q = 0.f;
#pragma unroll
  for (int e = 0; e < NM_XVEC; ++e) {
    if (tid + e * NM_THREADS >= nvec) break;
    float f[VN];
    unpack<F>(raw[e], f);
#pragma unroll
    for (int u = 0; u < VN; ++u) q = fmaf(f[u] - mean, f[u] - mean, q);
  }
  const float rstd = rsqrtf(block_sum<NM_THREADS>(q, red[1]) / C + eps);
#pragma unroll
  for (int e = 0; e < NM_PER; ++e) {
    const int c = c0 + tid + e * NM_THREADS;
    if (c >= c1) break;
    const F xn = from_f<F>((xv[e] - mean) * rstd * wv[e] + bv[e]);
    const float xf = to_f(xn), dx = pv[e] - xf;
#pragma unroll
    for (int m = 0; m < MAX_MIX; ++m)
      if (m < mix.n)
        out[((size_t)m * B + b) * C + c] = from_f<F>(mix.x_weighted ? fmaf(-dx, mv[m][e], pv[e]) : fmaf(dx, mv[m][e], xf));
    prev[(size_t)b * C + c] = xn;  // the shift for the next token
  }
}

// ---------------------------------------------------------------------------------------
// lora_down. Grid (ksplit, column tiles, B), LD_THREADS threads. Block (ks, tile, b) reads
// rows ks * rows .. of the LD_TILE columns of its tile (the four groups' columns side by
// side; every width is a multiple of 8, so a 16-byte vector never straddles two groups) and
// writes their partial sums. Thread (rl, cv) = (tid / NVT, tid % NVT) takes vector cv of
// rows rl, rl + RL, ..., LD_UNROLL rows' loads issued before the first multiply. At 2.9B
// (C = 2560, 576 columns) this is 16 x 9 = 144 blocks of 20 KB (one wave on an H100)
// instead of 16 blocks of 184 KB: no SM has to pull much more than its share.
// At batch 1 the same blocks also run first in the r / k / v projection's launch (gemv with
// GemvArgs::lora set): one kernel fewer in the step's chain.
constexpr int LD_THREADS = 256, LD_TILE = 64, LD_UNROLL = 8;
template <typename F>
__device__ __forceinline__ void lora_down_block(int ks, int tile, int b, int B, int C, int rows,
                                                const LoraDownArgs& args, float* __restrict__ partial) {
  constexpr int VN = Vec<F>::n, NVT = LD_TILE / VN, RL = LD_THREADS / NVT;
  __shared__ float red[LD_THREADS / 32][LD_TILE];
  const int tid = threadIdx.x;
  const int cols = args.col0[LORA_GROUPS], c0 = ks * rows, c1 = min(C, c0 + rows);
  const int rl = tid / NVT, cv = tid % NVT, col = tile * LD_TILE + cv * VN;
  float acc[VN];
#pragma unroll
  for (int u = 0; u < VN; ++u) acc[u] = 0.f;
  decode_start();
  const bool work = col < cols && c0 < c1;
  const int g = lora_group(col, args.col0), first = select(args.col0, g);
  const int rank = select(args.col0, g + 1) - first;
  const F* x = pick<F>(args.x, g) + (size_t)b * C;
  const F* w = pick<F>(args.w, g) + (col - first);
  // Rows past the block's end are clamped to its last row and weighted by zero: loads
  // without a condition are what lets the compiler issue all of them before the first use
  // (conditional ones came out one by one). The extra loads hit L1.
  uint4 wr[LD_UNROLL];
  auto load_w = [&](int base) {
#pragma unroll
    for (int i = 0; i < LD_UNROLL; ++i) wr[i] = *reinterpret_cast<const uint4*>(w + (size_t)min(base + i * RL, c1 - 1) * rank);
  };
  if (work) load_w(c0 + rl);  // the weights do not depend on the kernels before: load them before the wait
  decode_wait();
  if (work) {
    for (int base = c0 + rl; base < c1; base += LD_UNROLL * RL) {  // one pass at C / ksplit <= 256 (bf16)
      if (base != c0 + rl) load_w(base);
      float xr[LD_UNROLL];
#pragma unroll
      for (int i = 0; i < LD_UNROLL; ++i) xr[i] = to_f(x[min(base + i * RL, c1 - 1)]);
#pragma unroll
      for (int i = 0; i < LD_UNROLL; ++i)
        if (base + i * RL >= c1) xr[i] = 0.f;
#pragma unroll
      for (int i = 0; i < LD_UNROLL; ++i) {
        float wv[VN];
        unpack<F>(wr[i], wv);
#pragma unroll
        for (int u = 0; u < VN; ++u) acc[u] = fmaf(xr[i], wv[u], acc[u]);
      }
    }
  }
  // the row lanes of a warp (lanes cv, cv + NVT, ...) meet by shuffles, the warps in shared memory
#pragma unroll
  for (int u = 0; u < VN; ++u)
#pragma unroll
    for (int m = NVT; m < 32; m <<= 1) acc[u] += __shfl_xor_sync(0xffffffffu, acc[u], m);
  if (tid % 32 < NVT) {  // lane == cv here
#pragma unroll
    for (int u = 0; u < VN; ++u) red[tid / 32][cv * VN + u] = acc[u];
  }
  __syncthreads();
  const int out_col = tile * LD_TILE + tid;
  if (tid < LD_TILE && out_col < cols) {
    float t = 0.f;
#pragma unroll
    for (int w = 0; w < LD_THREADS / 32; ++w) t += red[w][tid];
    partial[((size_t)ks * B + b) * cols + out_col] = t;
  }
}
template <typename F>
__global__ void __launch_bounds__(LD_THREADS)
    lora_down_kernel(int B, int C, int rows, LoraDownArgs args, float* __restrict__ partial) {
  lora_down_block<F>(blockIdx.x, blockIdx.y, blockIdx.z, B, C, rows, args, partial);
}

// Column q of sequence b of lora_down's partial sums [ksplit, B, cols], summed; all ksplit loads
// are issued at once (unconditional, clamped), before the first add.
__device__ __forceinline__ float ksplit_sum(const float* partial, int ksplit, int B, int b, int cols, int q) {
  const size_t stride = (size_t)B * cols;
  const float* pp = partial + (size_t)b * cols + q;
  float pk[MAX_KSPLIT];
#pragma unroll
  for (int ks = 0; ks < MAX_KSPLIT; ++ks) pk[ks] = pp[min(ks, ksplit - 1) * stride];
  float t = 0.f;
#pragma unroll
  for (int ks = 0; ks < MAX_KSPLIT; ++ks)
    if (ks < ksplit) t += pk[ks];
  return t;
}

// The group norm of a head's N outputs, held as partial sums part_y [G][N] over G row groups:
// threads j < N get d = y_j - mean and return 1 / sqrt(var + eps) (two passes, as
// F.group_norm); the other threads add zeros. Every thread of the block must call it.
template <int THREADS, int G, int N>
__device__ __forceinline__ float head_norm(const float (&part_y)[G][N], float* red_mean, float* red_var, float eps,
                                           float& d) {
  const int j = threadIdx.x;
  float yj = 0.f;
  if (j < N) {
#pragma unroll
    for (int q = 0; q < G; ++q) yj += part_y[q][j];
  }
  const float mean = block_sum<THREADS>(yj, red_mean) / N;
  d = j < N ? yj - mean : 0.f;
  return rsqrtf(block_sum<THREADS>(d * d, red_var) / N + eps);
}

// ---------------------------------------------------------------------------------------
// tmix7_decode. One block per (head, sequence), G N threads (tmix_groups): thread (l, j) =
// (tid / N, tid % N) holds rows l * N / G .. of state column j. The block's DRAM reads are its head's
// columns of the four second factors (cols x N values: 74 KB at 2.9B) and its state (16 KB
// at N = 64). Both are requested in the first instructions, before the wait for lora_down -
// the second factors as asynchronous copies into shared memory, `staged` rows of them (all
// at batch 1, unless the LoRAs are large in fp32 or N = 128; none at large batch; the rest
// is read from global memory when used) - so their latency overlaps lora_down and the
// reduction of its partial sums instead of following them, and the multiply then reads
// shared memory.
constexpr int TM_STAGE_BYTES = 96 * 1024;
// Row groups of the state: G N threads a block, thread (l, j) holding N / G rows of column j.
// At batch 1 the kernel's 40 blocks (2.9B) are latency-bound on few warps (ncu, H200, 4
// groups: 4.6 cycles a warp between instructions, 8 warps an SM); 8 groups where the
// registers allow (N <= 64: 512 threads), else 4. Graphed 2.9B step on an H200: 2.100 ms
// with 8 groups, 2.112-2.141 with 4, 2.147-2.151 with 16 (results/decode/rwkv7-tmix).
#ifndef ARCHBENCH_TMIX_GROUPS
#define ARCHBENCH_TMIX_GROUPS 8
#endif
__host__ __device__ constexpr int tmix_groups(int N) { return N <= 64 ? ARCHBENCH_TMIX_GROUPS : 4; }
template <typename F, int N>
__global__ void __launch_bounds__(tmix_groups(N) * N) tmix7_decode_kernel(int B, int H, int staged, Tmix7Args p) {
  constexpr int G = tmix_groups(N), THREADS = G * N, ROWS = N / G, WARPS = THREADS / 32;
  constexpr int VN = Vec<F>::n, NV = N / VN, RSTEP = THREADS / NV;
  static_assert(NV <= 32 && 32 % NV == 0, "a warp holds whole rows of the second factors");
  const int h = blockIdx.x, b = blockIdx.y, C = H * N;
  const int tid = threadIdx.x, l = tid / N, j = tid % N;
  const size_t bc = (size_t)b * C, c = (size_t)h * N + j;  // this thread's channel / column

  extern __shared__ uint4 stage_raw[];
  F* sw2 = reinterpret_cast<F*>(stage_raw);  // [staged][N]: rows of the concatenated second factors
  __shared__ float hid[MAX_LORA_COLS];
  __shared__ float lred[WARPS][LORA_GROUPS][N];  // per-warp sums of the second-factor products
  __shared__ float s_r[N], s_d[N], s_k[N], s_a[N], s_b[N], s_v[N];
  __shared__ float part[G][N], part_y[G][N];
  __shared__ float hred[4][WARPS];  // head sums: key norm, bonus, mean, variance

  // 1. Loads that depend on no earlier kernel of the step, before the wait: the second
  // factors (asynchronous), this thread's rows of the state (only this kernel writes them)
  // and (threads j < N) the channel's parameters; after it, the channel's activations.
  decode_start();
  for (int idx = tid; idx < staged * NV; idx += THREADS) {
    const int q = idx / NV, vc = idx % NV, g = lora_group(q, p.col0);
    const F* src = pick<F>(p.w2, g) + (size_t)(q - select(p.col0, g)) * C + (size_t)h * N + vc * VN;
    cp_async16(sw2 + (size_t)q * N + vc * VN, src);
  }
  float* st = p.state + ((size_t)b * H + h) * N * N;
  float s[ROWS];
#pragma unroll
  for (int q = 0; q < ROWS; ++q) s[q] = st[(size_t)(l * ROWS + q) * N + j];
  float in_r = 0.f, in_k = 0.f, in_v = 0.f, in_w0 = 0.f, in_a0 = 0.f, in_v0 = 0.f, in_kk = 0.f, in_ka = 0.f,
        in_rk = 0.f, in_vf = 0.f, in_lw = 0.f, in_lb = 0.f;
  if (tid < N) {  // the channel's parameters
    in_w0 = p.w0[c];
    in_a0 = to_f(static_cast<const F*>(p.a0)[c]);
    in_kk = to_f(static_cast<const F*>(p.k_k)[c]);
    in_ka = to_f(static_cast<const F*>(p.k_a)[c]);
    in_rk = to_f(static_cast<const F*>(p.r_k)[c]);
    in_lw = p.lnx_w[c];
    in_lb = p.lnx_b[c];
    if (!p.first_layer) in_v0 = to_f(static_cast<const F*>(p.v0)[c]);
  }
  decode_wait();
  if (tid < N) {  // and its activations, written by earlier kernels
    in_r = to_f(static_cast<const F*>(p.r)[bc + c]);
    in_k = to_f(static_cast<const F*>(p.k)[bc + c]);
    in_v = to_f(static_cast<const F*>(p.v)[bc + c]);
    if (!p.first_layer) in_vf = to_f(static_cast<const F*>(p.v_first)[bc + c]);
  }

  // 2. The partial sums of the first factors, reduced (all ksplit loads of a column in
  // flight at once); tanh for the decay, sigmoid for the gate.
  for (int col = tid; col < p.cols; col += THREADS) {
    float t = ksplit_sum(p.partial, p.ksplit, B, b, p.cols, col);
    if (col < p.col0[1]) t = tanh_(t);
    else if (col >= p.col0[3]) t = sigmoidf_(t);
    hid[col] = t;
  }
  cp_async_wait_all();
  __syncthreads();  // hid and the staged rows are in place

  // 3. Second factors for this head's channels: thread t takes vector column t % NV and
  // rows t / NV + RSTEP * i of each group, from shared memory where staged.
  float acc[LORA_GROUPS][VN];
  {
    const int vc = tid % NV, r0 = tid / NV;
#pragma unroll
    for (int g = 0; g < LORA_GROUPS; ++g) {
#pragma unroll
      for (int u = 0; u < VN; ++u) acc[g][u] = 0.f;
      const int base = p.col0[g], rank = p.col0[g + 1] - base;
      if (rank == 0) continue;  // v on layer 0 (null pointer)
      const F* gw = static_cast<const F*>(p.w2[g]) + (size_t)h * N + vc * VN;
#pragma unroll 4
      for (int q = r0; q < rank; q += RSTEP) {
        const int qc = base + q;
        float wv[VN];
        load_vec<F>(qc < staged ? sw2 + (size_t)qc * N + vc * VN : gw + (size_t)q * C, wv);
        const float hq = hid[qc];
#pragma unroll
        for (int u = 0; u < VN; ++u) acc[g][u] = fmaf(hq, wv[u], acc[g][u]);
      }
    }
    // the row lanes of a warp that share a vector column (lanes vc, vc + NV, ...) meet by
    // shuffles, the warps in shared memory
#pragma unroll
    for (int g = 0; g < LORA_GROUPS; ++g)
#pragma unroll
      for (int u = 0; u < VN; ++u)
#pragma unroll
        for (int m = NV; m < 32; m <<= 1) acc[g][u] += __shfl_xor_sync(0xffffffffu, acc[g][u], m);
    if (tid % 32 < NV) {  // lane == vc here
#pragma unroll
      for (int g = 0; g < LORA_GROUPS; ++g)
#pragma unroll
        for (int u = 0; u < VN; ++u) lred[tid / 32][g][vc * VN + u] = acc[g][u];
    }
  }
  __syncthreads();

  // 4. Per channel (threads j < N, j == tid): the four LoRA outputs, decay, in-context rate,
  // value residual, and the terms of the key norm and the bonus.
  float a = 0.f, kk = 0.f, bon = 0.f, gate = 0.f;
  if (tid < N) {
    float low[LORA_GROUPS] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int w = 0; w < WARPS; ++w)
#pragma unroll
      for (int g = 0; g < LORA_GROUPS; ++g) low[g] += lred[w][g][j];
    const float log_w = -0.6065306597126334f * sigmoidf_(in_w0 + low[0]);  // exp(-0.5) * sigmoid
    a = sigmoidf_(in_a0 + low[1]);
    const float kmod = in_k * (1.f + (a - 1.f) * in_ka);
    float v = in_v;
    if (p.first_layer) static_cast<F*>(p.v_first)[bc + c] = from_f<F>(v);
    else v = fmaf(in_vf - v, sigmoidf_(in_v0 + low[2]), v);
    s_r[j] = in_r; s_d[j] = __expf(log_w); s_k[j] = kmod; s_v[j] = v;
    gate = low[3];
    kk = in_k * in_kk;
    bon = in_r * kmod * in_rk;
  }
  // key normalisation (F.normalize: x / max(|x|, 1e-12)) and the bonus, over the head; the
  // values sit in threads 0..N-1 (the others add zeros)
  const float norm2 = block_sum<THREADS>(kk * kk, hred[0]);
  const float bonus = block_sum<THREADS>(bon, hred[1]);
  const float inv = 1.f / fmaxf(sqrtf(norm2), 1e-12f);
  if (tid < N) {
    const float kn = kk * inv;
    s_b[j] = kn * a;  // b = kk * a
    s_a[j] = -kn;     // a = -kk
  }
  __syncthreads();

  // 5. The state update: thread (l, j) holds rows l * ROWS .. of column j.
  float sa = 0.f;
#pragma unroll
  for (int q = 0; q < ROWS; ++q) sa = fmaf(s_a[l * ROWS + q], s[q], sa);
  part[l][j] = sa;
  __syncthreads();
  sa = 0.f;
#pragma unroll
  for (int q = 0; q < G; ++q) sa += part[q][j];
  const float vj = s_v[j];
  float y = 0.f;
#pragma unroll
  for (int q = 0; q < ROWS; ++q) {
    const int i = l * ROWS + q;
    s[q] = fmaf(s[q], s_d[i], fmaf(s_b[i], sa, s_k[i] * vj));
    st[(size_t)i * N + j] = s[q];
    y = fmaf(s_r[i], s[q], y);
  }
  part_y[l][j] = y;
  __syncthreads();

  // 6. Group norm over the head, the bonus and the gate.
  float d;
  const float rstd = head_norm<THREADS, G, N>(part_y, hred[2], hred[3], p.lnx_eps, d);
  if (tid < N) {
    const float yn = d * rstd * in_lw + in_lb;
    static_cast<F*>(p.out)[bc + c] = from_f<F>((yn + bonus * vj) * gate);
  }
}


// ---------------------------------------------------------------------------------------
// RWKV-6's decode step reuses norm_mix (its three outputs: the normed x, the old token shift and
// the LoRA input), lora_down and gemv, and adds:
//
//   mix6   the token shift's LoRA: tanh of lora_down's summed partials, time_maa_w2's products
//          for the block's channels, and the five interpolations x + (x_prev - x)(maa_m + delta_m)
//   tmix6  per (head, sequence): the decay LoRA's second factor and w = exp(-exp(.)), the WKV6
//          state update y = r (S + u k v^T), S = diag(w) S + k v^T, the group norm, silu(g);
//          without the LoRA (D2 = 0) RWKV-5's (kernels/wkv5/decode.py): 5.2's as they are, 5.0 /
//          5.1's with one decay and exp(time_first) a head (per_head), 5.0's without the gate
//
// mix6: grid (C / M6_CH, B), M6_GROUPS row groups of M6_CH channels. Thread (gr, c) holds rows
// gr, gr + M6_GROUPS, ... of each of the five D-row blocks of time_maa_w2 for its channel,
// loaded before the wait (no kernel of the step writes them).
constexpr int M6_CH = 64, M6_GROUPS = 8, M6_THREADS = M6_CH * M6_GROUPS, M6_RPT = MIX6_MAX_LORA / M6_GROUPS;
template <typename F>
__global__ void __launch_bounds__(M6_THREADS) mix6_kernel(int B, int C, Mix6Args p) {
  const int tid = threadIdx.x, gr = tid / M6_CH, b = blockIdx.y, D = p.D;
  const int c = blockIdx.x * M6_CH + tid % M6_CH, cc = min(c, C - 1);
  const size_t bc = (size_t)b * C;
  __shared__ float hid[5 * MIX6_MAX_LORA];
  __shared__ float red[M6_GROUPS][5][M6_CH];
  decode_start();
  const F* w2 = static_cast<const F*>(p.w2);
  float wv[5][M6_RPT];
#pragma unroll
  for (int m = 0; m < 5; ++m)
#pragma unroll
    for (int i = 0; i < M6_RPT; ++i) {
      const int j = gr + i * M6_GROUPS;
      wv[m][i] = j < D ? to_f(w2[(size_t)(m * D + j) * C + cc]) : 0.f;
    }
  float maa[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
  if (gr == 0) {
#pragma unroll
    for (int m = 0; m < 5; ++m) maa[m] = to_f(static_cast<const F*>(p.maa[m])[cc]);
  }
  decode_wait();
  float xn = 0.f, xp = 0.f;
  if (gr == 0) {
    xn = to_f(static_cast<const F*>(p.xn)[bc + cc]);
    xp = to_f(static_cast<const F*>(p.xp)[bc + cc]);
  }
  for (int q = tid; q < 5 * D; q += M6_THREADS) hid[q] = tanh_(ksplit_sum(p.partial, p.ksplit, B, b, 5 * D, q));
  __syncthreads();
#pragma unroll
  for (int m = 0; m < 5; ++m) {
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < M6_RPT; ++i) {
      const int j = gr + i * M6_GROUPS;
      if (j < D) acc = fmaf(hid[m * D + j], wv[m][i], acc);
    }
    red[gr][m][tid % M6_CH] = acc;
  }
  __syncthreads();
  if (gr == 0 && c < C) {
    const float dx = xp - xn;
#pragma unroll
    for (int m = 0; m < 5; ++m) {
      float delta = 0.f;
#pragma unroll
      for (int q = 0; q < M6_GROUPS; ++q) delta += red[q][m][tid];
      static_cast<F*>(p.out)[((size_t)m * B + b) * C + c] = from_f<F>(fmaf(dx, maa[m] + delta, xn));
    }
  }
}

// tmix6: one block per (head, sequence), TM6_G N threads; thread (l, j) holds rows
// l ROWS .. of state column j and the decay LoRA's rows l, l + TM6_G, ... for channel j.
constexpr int TM6_G = 4, TM6_RPT = TMIX6_MAX_LORA / TM6_G;
template <typename F, int N>
__global__ void __launch_bounds__(TM6_G * N) tmix6_decode_kernel(int B, int H, Tmix6Args p) {
  constexpr int THREADS = TM6_G * N, ROWS = N / TM6_G, WARPS = THREADS / 32;
  const int h = blockIdx.x, b = blockIdx.y, C = H * N;
  const int tid = threadIdx.x, l = tid / N, j = tid % N;
  const size_t bc = (size_t)b * C, c = (size_t)h * N + j;
  __shared__ float hid[TMIX6_MAX_LORA];
  __shared__ float part[TM6_G][N], part_y[TM6_G][N];
  __shared__ float s_r[N], s_k[N], s_d[N], s_u[N], s_v[N];
  __shared__ float hred[2][WARPS];
  decode_start();
  const F* w2 = static_cast<const F*>(p.w2);
  float wv[TM6_RPT];
#pragma unroll
  for (int i = 0; i < TM6_RPT; ++i) {
    const int q = l + i * TM6_G;
    wv[i] = q < p.D2 ? to_f(w2[(size_t)q * C + c]) : 0.f;
  }
  float* st = p.state + ((size_t)b * H + h) * N * N;
  float s[ROWS];
#pragma unroll
  for (int q = 0; q < ROWS; ++q) s[q] = st[(size_t)(l * ROWS + q) * N + j];
  float in_w0 = 0.f, in_u = 0.f, in_lw = 0.f, in_lb = 0.f;
  if (tid < N) {
    in_w0 = p.per_head ? p.w0[h] : p.w0[c];
    in_u = p.per_head ? expf(p.u[h]) : p.u[c];
    in_lw = p.lnx_w[c];
    in_lb = p.lnx_b[c];
  }
  decode_wait();
  float in_r = 0.f, in_k = 0.f, in_v = 0.f, in_g = 0.f;
  if (tid < N) {
    in_r = to_f(static_cast<const F*>(p.r)[bc + c]);
    in_k = to_f(static_cast<const F*>(p.k)[bc + c]);
    in_v = to_f(static_cast<const F*>(p.v)[bc + c]);
    if (p.g) in_g = to_f(static_cast<const F*>(p.g)[bc + c]);
  }
  for (int q = tid; q < p.D2; q += THREADS) hid[q] = tanh_(ksplit_sum(p.partial, p.ksplit, B, b, p.D2, q));
  __syncthreads();
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < TM6_RPT; ++i) {
    const int q = l + i * TM6_G;
    if (q < p.D2) acc = fmaf(hid[q], wv[i], acc);
  }
  part[l][j] = acc;
  __syncthreads();
  if (tid < N) {
    float ww = in_w0;
#pragma unroll
    for (int q = 0; q < TM6_G; ++q) ww += part[q][j];
    s_d[j] = __expf(-__expf(ww));  // the decay, exp(w) with w = -exp(time_decay + LoRA)
    s_r[j] = in_r;
    s_k[j] = in_k;
    s_u[j] = in_u;
    s_v[j] = in_v;
  }
  __syncthreads();
  const float v = s_v[j];
  float y = 0.f;
#pragma unroll
  for (int q = 0; q < ROWS; ++q) {
    const int i = l * ROWS + q;
    const float kv = s_k[i] * v;
    y = fmaf(s_r[i], fmaf(s_u[i], kv, s[q]), y);
    s[q] = fmaf(s_d[i], s[q], kv);
    st[(size_t)i * N + j] = s[q];
  }
  part_y[l][j] = y;
  __syncthreads();
  float d;
  const float rstd = head_norm<THREADS, TM6_G, N>(part_y, hred[0], hred[1], p.lnx_eps, d);
  if (tid < N) {
    const float yn = d * rstd * in_lw + in_lb;
    const float gate = p.g ? in_g * sigmoidf_(in_g) : 1.f;
    static_cast<F*>(p.out)[bc + c] = from_f<F>(yn * gate * p.scale);
  }
}

// ---------------------------------------------------------------------------------------
// tmix4: RWKV-4's time mix between the r / k / v projections and the output projection, per
// channel: the WKV4 step of kernels/wkv4/ref.py on the state (aa, bb, pp: numerator,
// denominator, the log of their common scale) in place, and out = sigmoid(r) wkv scale.
// Grid (C / TM4_THREADS, B); the state and the parameters are loaded before the wait.
constexpr int TM4_THREADS = 128;
template <typename F>
__global__ void __launch_bounds__(TM4_THREADS) tmix4_decode_kernel(int B, int C, Tmix4Args p) {
  const int c = blockIdx.x * TM4_THREADS + threadIdx.x, b = blockIdx.y;
  decode_start();
  if (c >= C) return;
  float* st = p.state + (size_t)b * 3 * C + c;
  const float aa = st[0], bb = st[C], pp = st[2 * C];
  const float w = -expf(p.decay[c]), u = p.first[c];
  decode_wait();
  const size_t o = (size_t)b * C + c;
  const float r = to_f(static_cast<const F*>(p.r)[o]), k = to_f(static_cast<const F*>(p.k)[o]);
  const float v = to_f(static_cast<const F*>(p.v)[o]);
  float ww = u + k, q = fmaxf(pp, ww), e1 = expf(pp - q), e2 = expf(ww - q);
  const float y = (e1 * aa + e2 * v) / (e1 * bb + e2);
  ww = w + pp;
  q = fmaxf(ww, k);
  e1 = expf(ww - q);
  e2 = expf(k - q);
  st[0] = e1 * aa + e2 * v;
  st[C] = e1 * bb + e2;
  st[2 * C] = q;
  static_cast<F*>(p.out)[o] = from_f<F>(sigmoidf_(r) * y * p.scale);
}

// ---------------------------------------------------------------------------------------
// gemv: y = W x for W [rows, cols] row-major (an nn.Linear weight) at batch B <= 4, at the
// copy rate of the weights. kw warps share a row (kw = 1 at 2560 columns in bf16, 4 at
// 10240): warp p of a row takes its 16-byte vectors (u kw + p) 32 + lane, u < UNROLL - each
// warp-wide load is 512 contiguous bytes, and all of a warp's loads are issued at once,
// before the wait for the previous kernel (the weights do not depend on it). Each weight
// vector is widened once and serves all B sequences. The 32 lanes meet by shuffles, the kw
// warps of a row in shared memory. 8 / kw rows a block, the rows of all (up to four)
// matrices in one grid, whose row counts may differ (the channel mix's key and receptance):
// r, k and v at 2.9B are one launch of 960 blocks. fp32
// accumulation, one rounding; the weights are loaded with the streaming hint (read once per
// step, they should not push the activations out of L2).
constexpr int GV_THREADS = 256, GV_WARPS = GV_THREADS / 32;
// LORA: the instance with lora_down's blocks in its first grid row (held to 64 registers,
// the plain one's count at one sequence, so that both keep four blocks an SM). RAGGED: the
// instance for matrices of different row counts (a few more instructions before the first
// load, 0.4% of RWKV-7's step when every launch had them: results/decode/fused-v4-fp16).
template <typename F, int UNROLL, int MAXB, bool LORA, bool RAGGED>
__global__ void __launch_bounds__(GV_THREADS, LORA ? 4 : 0) gemv_kernel(int B, int cols, int kw, GemvArgs a) {
  constexpr int VN = Vec<F>::n;
  __shared__ float red[GV_WARPS][MAXB];
  if (LORA && blockIdx.y == 0) {  // the LoRA first factors, first: block x = (ks, tile, b), ks fastest
    const LoraDownArgs& l = a.lora;
    const int tiles = (l.col0[LORA_GROUPS] + LD_TILE - 1) / LD_TILE, x = blockIdx.x;
    decode_start();
    if (x >= a.lora_ksplit * tiles * B) return;
    lora_down_block<F>(x % a.lora_ksplit, x / a.lora_ksplit % tiles, x / (a.lora_ksplit * tiles), B, cols,
                       (cols + a.lora_ksplit - 1) / a.lora_ksplit, l, a.partial);
    return;
  }
  decode_start();
  const int m = blockIdx.y - LORA, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int rows = RAGGED ? select(a.rows, m) : a.rows[0], row0 = blockIdx.x * (GV_WARPS / kw);
  if (RAGGED && row0 >= rows) return;  // past a shorter matrix's rows: the whole block
  const int row = row0 + warp / kw, part = warp % kw;
  const bool active = row < rows;  // no early return: the kw warps of a row meet at a barrier
  const F* w = pick<F>(a.w, m) + (size_t)min(row, rows - 1) * cols;
  const F* x = pick<F>(a.x, m);
  const int nvec = cols / VN, stride = 32 * kw, first = part * 32 + lane;
  uint4 wr[UNROLL];
  auto load_w = [&](int base) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int v = base + u * stride;
      wr[u] = v < nvec ? __ldcs(reinterpret_cast<const uint4*>(w + (size_t)v * VN)) : make_uint4(0, 0, 0, 0);
    }
  };
  load_w(first);
  decode_wait();
  float acc[MAXB];
#pragma unroll
  for (int bb = 0; bb < MAXB; ++bb) acc[bb] = 0.f;
  for (int base = first; base < nvec; base += UNROLL * stride) {  // one pass where kw fits the row
    if (base != first) load_w(base);
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int v = base + u * stride;
      if (v >= nvec) break;
      float wv[VN];
      unpack<F>(wr[u], wv);
#pragma unroll
      for (int bb = 0; bb < MAXB; ++bb) {
        if (bb >= B) break;
        float xv[VN];
        load_vec<F>(x + (size_t)bb * cols + (size_t)v * VN, xv);
#pragma unroll
        for (int e = 0; e < VN; ++e) acc[bb] = fmaf(wv[e], xv[e], acc[bb]);
      }
    }
  }
#pragma unroll
  for (int bb = 0; bb < MAXB; ++bb)
    if (bb < B) acc[bb] = warp_sum(acc[bb]);
  if (kw > 1) {  // uniform over the block
    if (lane == 0) {
#pragma unroll
      for (int bb = 0; bb < MAXB; ++bb) red[warp][bb] = acc[bb];
    }
    __syncthreads();
    if (part == 0) {
#pragma unroll
      for (int bb = 0; bb < MAXB; ++bb) {
        float t = 0.f;
        for (int q = 0; q < kw; ++q) t += red[warp + q][bb];
        acc[bb] = t;
      }
    }
  }
  if (!active || part != 0) return;
  F* y = static_cast<F*>(select(a.y, m));
  const F* add = pick<F>(a.add, m);
#pragma unroll
  for (int bb = 0; bb < MAXB; ++bb) {
    if (bb >= B) break;
    if (lane == bb) {  // the B results are written by B different lanes
      const size_t o = (size_t)bb * rows + row;
      float t = acc[bb];
      if (a.relu_mask >> m & 1u) {
        t = fmaxf(t, 0.f) * fmaxf(t, 0.f) * a.relu_scale;
      } else {
        if (a.gate != nullptr) t *= sigmoidf_(to_f(static_cast<const F*>(a.gate)[o]));
        if (add != nullptr) t += to_f(add[o]);  // add may be y: this lane reads o before writing it
        t *= a.post;
      }
      y[o] = from_f<F>(t);
    }
  }
}

// ---------------------------------------------------------------------------------------

cudaError_t norm_mix(int dtype, int B, int C, float eps, const void* x, const void* ln_w, const void* ln_b, void* prev,
                     const MixArgs& mix, void* out, cudaStream_t stream) {
  const DeviceInfo dev = device_info();
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    constexpr int VN = Vec<F>::n;
    if (C % VN || C > NM_THREADS * NM_XVEC * VN || reinterpret_cast<uintptr_t>(x) % 16) return cudaErrorInvalidValue;
    // 64 channels a block (40 blocks per sequence at C = 2560) while the grid fits in about
    // two blocks an SM; wider slices at large batch, where the sequences alone fill the GPU
    // and each block's statistics would only be repeated more often.
    int cpb = 64;
    while (cpb < NM_THREADS * NM_PER && (long)((C + cpb - 1) / cpb) * B > 2 * dev.sms) cpb *= 2;
    return launch('n', norm_mix_kernel<F>, dim3((C + cpb - 1) / cpb, B), NM_THREADS, 0, stream, B, C, cpb, eps,
                  (const F*)x, (const F*)ln_w, (const F*)ln_b, (F*)prev, mix, (F*)out);
  })
  return cudaSuccess;
}

cudaError_t lora_down(int dtype, int B, int C, int ksplit, const LoraDownArgs& args, float* partial,
                      cudaStream_t stream) {
  const int cols = args.col0[LORA_GROUPS];
  if (args.n != LORA_GROUPS || cols > MAX_LORA_COLS || ksplit < 1 || ksplit > MAX_KSPLIT) return cudaErrorInvalidValue;
  const int rows = (C + ksplit - 1) / ksplit;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    constexpr int VN = Vec<F>::n;
    for (int g = 0; g < LORA_GROUPS; ++g)
      if ((args.col0[g + 1] - args.col0[g]) % VN) return cudaErrorInvalidValue;
    return launch('l', lora_down_kernel<F>, dim3(ksplit, (cols + LD_TILE - 1) / LD_TILE, B), LD_THREADS, 0, stream, B, C,
                  rows, args, partial);
  })
  return cudaSuccess;
}

cudaError_t tmix7_decode(int dtype, int B, int H, int N, const Tmix7Args& args, cudaStream_t stream) {
  if (args.cols > MAX_LORA_COLS || args.ksplit < 1 || args.ksplit > MAX_KSPLIT) return cudaErrorInvalidValue;
  const DeviceInfo dev = device_info();
  ARCHBENCH_DISPATCH_DTYPE(dtype, ARCHBENCH_DISPATCH_HEAD(N, {
    if constexpr (N >= 16) {
      // Stage the second factors while the grid is about a wave (small batch: latency rules).
      // At large batch many blocks share an SM, the factors come from L2, and a block that
      // held ~74 KB of shared memory would keep the others out. The budget leaves room for
      // the kernel's static shared memory (at most 44 KB, at N = 128).
      const int row_bytes = N * (int)sizeof(F);
      const int budget = min(TM_STAGE_BYTES, dev.smem_optin - 48 * 1024);
      const int staged = B * H <= 2 * dev.sms ? max(0, min(args.cols, budget / row_bytes)) : 0;
      const int smem = staged * row_bytes;
      auto kernel = tmix7_decode_kernel<F, N>;
      // Over 48 KB of shared memory in all needs an opt-in per kernel (and per device): set
      // once to the largest size asked for. A host-side attribute, fine under graph capture.
      static int opted[64] = {};
      int d = 0;
      cudaGetDevice(&d);
      if (smem > 0 && (d < 0 || d >= 64 || smem > opted[d])) {
        const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        if (e != cudaSuccess) return e;
        if (d >= 0 && d < 64) opted[d] = smem;
      }
      return launch('t', kernel, dim3(H, B), tmix_groups(N) * N, smem, stream, B, H, staged, args);
    }
  }))
  return cudaSuccess;
}

cudaError_t mix6(int dtype, int B, int C, const Mix6Args& args, cudaStream_t stream) {
  if (B < 1 || C < 1 || args.D < 1 || args.D > MIX6_MAX_LORA || args.D % 8 || args.ksplit < 1 || args.ksplit > MAX_KSPLIT)
    return cudaErrorInvalidValue;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    return launch('n', mix6_kernel<F>, dim3((C + M6_CH - 1) / M6_CH, B), M6_THREADS, 0, stream, B, C, args);
  })
  return cudaSuccess;
}

cudaError_t tmix6_decode(int dtype, int B, int H, int N, const Tmix6Args& args, cudaStream_t stream) {
  if (args.D2 < 0 || args.D2 > TMIX6_MAX_LORA || args.ksplit < 1 || args.ksplit > MAX_KSPLIT) return cudaErrorInvalidValue;
  ARCHBENCH_DISPATCH_DTYPE(dtype, ARCHBENCH_DISPATCH_HEAD(N, {
    return launch('t', tmix6_decode_kernel<F, N>, dim3(H, B), TM6_G * N, 0, stream, B, H, args);
  }))
  return cudaSuccess;
}

cudaError_t tmix4_decode(int dtype, int B, int C, const Tmix4Args& args, cudaStream_t stream) {
  if (B < 1 || C < 1) return cudaErrorInvalidValue;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    return launch('t', tmix4_decode_kernel<F>, dim3((C + TM4_THREADS - 1) / TM4_THREADS, B), TM4_THREADS, 0, stream,
                  B, C, args);
  })
  return cudaSuccess;
}

cudaError_t gemv(int dtype, int B, int cols, const GemvArgs& args, cudaStream_t stream) {
  if (B < 1 || B > GEMV_MAX_B || args.n < 1 || args.n > MAX_GEMV || cols < 1) return cudaErrorInvalidValue;
  int rows = 0;  // the grid covers the longest matrix
  bool ragged = false;
  for (int m = 0; m < args.n; ++m) {
    if (args.rows[m] < 1) return cudaErrorInvalidValue;
    rows = max(rows, args.rows[m]);
    ragged |= args.rows[m] != args.rows[0];
  }
  if (ragged && args.lora.n) return cudaErrorInvalidValue;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    constexpr int VN = Vec<F>::n;
    if (cols % VN) return cudaErrorInvalidValue;
    // kw warps a row, so that a warp has at most 16 vectors per lane: all of its loads in
    // flight at once (kw = 1 at 2560 columns in bf16, 4 at 10240)
    const int per_lane = (cols / VN + 31) / 32;
    int kw = 1;
    while (kw < GV_WARPS && (per_lane + kw - 1) / kw > 16) kw *= 2;
    // (fewer rows a block - down to one - measured the same for the whole step)
    const int per_warp = (per_lane + kw - 1) / kw, rows_per_block = GV_WARPS / kw;
    dim3 grid((rows + rows_per_block - 1) / rows_per_block, args.n);
    if (args.lora.n) {  // a first row of blocks for the LoRA first factors (their inputs are [B, cols])
      const int lcols = args.lora.col0[LORA_GROUPS];
      if (args.lora.n != LORA_GROUPS || lcols > MAX_LORA_COLS || args.lora_ksplit < 1 || args.lora_ksplit > MAX_KSPLIT)
        return cudaErrorInvalidValue;
      for (int g = 0; g < LORA_GROUPS; ++g)
        if ((args.lora.col0[g + 1] - args.lora.col0[g]) % VN) return cudaErrorInvalidValue;
      grid.x = max(grid.x, (unsigned)(args.lora_ksplit * ((lcols + LD_TILE - 1) / LD_TILE) * B));
      grid.y += 1;
    }
    // the unroll fitted to the vectors a lane has (registers for 16 where 10 are used cost
    // a block an SM: 112 against 80 registers), one sequence apart from up to four
    auto go = [&](auto unroll) {
      constexpr int U = decltype(unroll)::value;
      if (args.lora.n)
        return B == 1 ? launch('L', gemv_kernel<F, U, 1, true, false>, grid, GV_THREADS, 0, stream, B, cols, kw, args)
                      : launch('L', gemv_kernel<F, U, GEMV_MAX_B, true, false>, grid, GV_THREADS, 0, stream, B, cols, kw,
                               args);
      if (ragged)
        return B == 1 ? launch('g', gemv_kernel<F, U, 1, false, true>, grid, GV_THREADS, 0, stream, B, cols, kw, args)
                      : launch('g', gemv_kernel<F, U, GEMV_MAX_B, false, true>, grid, GV_THREADS, 0, stream, B, cols, kw,
                               args);
      return B == 1 ? launch('g', gemv_kernel<F, U, 1, false, false>, grid, GV_THREADS, 0, stream, B, cols, kw, args)
                    : launch('g', gemv_kernel<F, U, GEMV_MAX_B, false, false>, grid, GV_THREADS, 0, stream, B, cols, kw,
                             args);
    };
    if (per_warp <= 4) return go(std::integral_constant<int, 4>{});
    if (per_warp <= 8) return go(std::integral_constant<int, 8>{});
    if (per_warp <= 10) return go(std::integral_constant<int, 10>{});
    if (per_warp <= 12) return go(std::integral_constant<int, 12>{});
    return go(std::integral_constant<int, 16>{});
  })
  return cudaSuccess;
}

}  // namespace archbench
