// The RWKV-7 decode step (one token per sequence, batch B) in three kernels around the
// large matrix-vector products, which stay with cuBLAS:
//
//   norm_mix      layer norm of x, the token shift and up to six interpolations
//                 x + (x_prev - x) * maa, in one pass (the time mix's six, the channel mix's one)
//   lora_down     the first factor of the w, a, v and g LoRAs, four inputs in one launch: the
//                 rows (C) are split over KSPLIT blocks that each write partial sums
//   tmix7_decode  per (sequence, head): the partial sums reduced, tanh / sigmoid, the second
//                 LoRA factors for this head's channels, decay, in-context rate, key
//                 normalisation, value residual, the WKV7 state update in place, the group
//                 norm, the bonus r.k.r_k v and the gate: out = (norm(y) + bonus) * g
//
// Everything is fp32 inside and rounded once on the way out (the unfused path rounds after
// each op in the model dtype), so the two agree within the dtype's tolerance. No
// allocation, no host synchronisation: the step can be captured in a CUDA graph.
#include "../../common.cuh"
#include "decode7.h"

namespace archbench {

// Sum over the block (blockDim a multiple of 32); red holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  __syncthreads();  // red may still be read by a previous call
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float t = 0.f;
  for (int i = 0; i < blockDim.x / 32; ++i) t += red[i];
  return t;
}

__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + __expf(-x)); }

// One block per sequence; thread t owns channels t, t + blockDim, ... (at most NM_PER of
// them). Every load is issued before the first reduction, so the block waits for memory
// once, not once per input.
constexpr int NM_PER = 8, NM_THREADS = 512;  // C up to 4096
template <typename F>
__global__ void __launch_bounds__(NM_THREADS) norm_mix_kernel(int B, int C, float eps, const F* __restrict__ x, const F* __restrict__ ln_w,
                                const F* __restrict__ ln_b, F* __restrict__ prev, MixArgs mix, F* __restrict__ out) {
  __shared__ float red[32];
  const int b = blockIdx.x;
  float xv[NM_PER], pv[NM_PER], wv[NM_PER], bv[NM_PER], mv[MAX_MIX][NM_PER];
#pragma unroll
  for (int e = 0; e < NM_PER; ++e) {
    const int c = threadIdx.x + e * blockDim.x;
    const bool in = c < C;
    xv[e] = in ? to_f(x[(size_t)b * C + c]) : 0.f;
    pv[e] = in ? to_f(prev[(size_t)b * C + c]) : 0.f;
    wv[e] = in ? to_f(ln_w[c]) : 0.f;
    bv[e] = in ? to_f(ln_b[c]) : 0.f;
#pragma unroll
    for (int m = 0; m < MAX_MIX; ++m) mv[m][e] = in && m < mix.n ? to_f(static_cast<const F*>(mix.maa[m])[c]) : 0.f;
  }
  float s = 0.f;
#pragma unroll
  for (int e = 0; e < NM_PER; ++e) s += xv[e];
  const float mean = block_sum(s, red) / C;
  float q = 0.f;
#pragma unroll
  for (int e = 0; e < NM_PER; ++e) {
    const int c = threadIdx.x + e * blockDim.x;
    const float d = c < C ? xv[e] - mean : 0.f;
    q = fmaf(d, d, q);
  }
  const float rstd = rsqrtf(block_sum(q, red) / C + eps);
#pragma unroll
  for (int e = 0; e < NM_PER; ++e) {
    const int c = threadIdx.x + e * blockDim.x;
    if (c >= C) break;
    const F xn = from_f<F>((xv[e] - mean) * rstd * wv[e] + bv[e]);
    const float xf = to_f(xn), dx = pv[e] - xf;
#pragma unroll
    for (int m = 0; m < MAX_MIX; ++m)
      if (m < mix.n) out[((size_t)m * B + b) * C + c] = from_f<F>(fmaf(dx, mv[m][e], xf));
    prev[(size_t)b * C + c] = xn;  // the shift for the next token
  }
}

// Block (ks, b): rows ks * rows .. of every group. Thread (rl, cv) reads the 16-byte vector
// cv of rows rl, rl + RL, ... (RL row lanes, many loads in flight), and the RL row lanes
// meet in shared memory. Every LoRA width is a multiple of the vector width.
template <typename F>
__global__ void lora_down_kernel(int B, int C, int rows, int RL, LoraDownArgs args, float* __restrict__ partial) {
  constexpr int VN = Vec<F>::n;
  __shared__ float red[8][MAX_LORA_COLS];
  const int ks = blockIdx.x, b = blockIdx.y;
  const int cols = args.col0[args.n], nvec = cols / VN;
  const int c0 = ks * rows, c1 = min(C, c0 + rows);
  const int rl = threadIdx.x / nvec, cv = threadIdx.x % nvec;
  if (rl < RL) {
    const int col = cv * VN;
    int g = 0;
    while (g + 1 < args.n && col >= args.col0[g + 1]) ++g;
    const int rank = args.col0[g + 1] - args.col0[g];
    const F* x = static_cast<const F*>(args.x[g]) + (size_t)b * C;
    const F* w = static_cast<const F*>(args.w[g]) + (col - args.col0[g]);
    float acc[VN];
#pragma unroll
    for (int u = 0; u < VN; ++u) acc[u] = 0.f;
#pragma unroll 4
    for (int c = c0 + rl; c < c1; c += RL) {
      float wv[VN];
      load_vec<F>(w + (size_t)c * rank, wv);
      const float xc = to_f(x[c]);
#pragma unroll
      for (int u = 0; u < VN; ++u) acc[u] = fmaf(xc, wv[u], acc[u]);
    }
#pragma unroll
    for (int u = 0; u < VN; ++u) red[rl][col + u] = acc[u];
  }
  __syncthreads();
  for (int col = threadIdx.x; col < cols; col += blockDim.x) {
    float t = 0.f;
    for (int q = 0; q < RL; ++q) t += red[q][col];
    partial[((size_t)ks * B + b) * cols + col] = t;
  }
}

// One block per (head, sequence), 4 N threads: thread (l, j) = (tid / N, tid % N).
template <typename F, int N>
__global__ void __launch_bounds__(4 * N) tmix7_decode_kernel(int B, int H, Tmix7Args p) {
  constexpr int THREADS = 4 * N, ROWS = N / 4;
  constexpr int VN = Vec<F>::n, NV = N / VN, RSTEP = THREADS / NV;
  const int h = blockIdx.x, b = blockIdx.y, C = H * N;
  const int tid = threadIdx.x, l = tid / N, j = tid % N;
  const size_t bc = (size_t)b * C, c = (size_t)h * N + j;  // this thread's channel / column

  __shared__ float hid[MAX_LORA_COLS];
  __shared__ float low[4][N];                                  // the four LoRA outputs
  __shared__ float s_r[N], s_d[N], s_k[N], s_a[N], s_b[N], s_v[N], s_g[N];
  __shared__ float part[4][N], kk2[N], bon[N];
  __shared__ float lred[RSTEP][N];

  // Loads that depend on nothing computed here go first, so their latency overlaps the
  // LoRA phase: this thread's rows of the state, and (threads j < N) the channel's inputs.
  float* st = p.state + ((size_t)b * H + h) * N * N;
  float s[ROWS];
#pragma unroll
  for (int q = 0; q < ROWS; ++q) s[q] = st[(size_t)(l * ROWS + q) * N + j];
  float in_r = 0.f, in_k = 0.f, in_v = 0.f, in_w0 = 0.f, in_a0 = 0.f, in_v0 = 0.f, in_kk = 0.f, in_ka = 0.f,
        in_rk = 0.f, in_vf = 0.f, in_lw = 0.f, in_lb = 0.f;
  if (tid < N) {
    in_r = to_f(static_cast<const F*>(p.r)[bc + c]);
    in_k = to_f(static_cast<const F*>(p.k)[bc + c]);
    in_v = to_f(static_cast<const F*>(p.v)[bc + c]);
    in_w0 = p.w0[c];
    in_a0 = to_f(static_cast<const F*>(p.a0)[c]);
    in_kk = to_f(static_cast<const F*>(p.k_k)[c]);
    in_ka = to_f(static_cast<const F*>(p.k_a)[c]);
    in_rk = to_f(static_cast<const F*>(p.r_k)[c]);
    in_lw = p.lnx_w[c];
    in_lb = p.lnx_b[c];
    if (!p.first_layer) {
      in_v0 = to_f(static_cast<const F*>(p.v0)[c]);
      in_vf = to_f(static_cast<const F*>(p.v_first)[bc + c]);
    }
  }

  // partial sums of the first LoRA factors, reduced; tanh for the decay, sigmoid for the gate
  for (int col = tid; col < p.cols; col += THREADS) {
    float t = 0.f;
#pragma unroll 16
    for (int ks = 0; ks < p.ksplit; ++ks) t += p.partial[((size_t)ks * B + b) * p.cols + col];
    if (col < p.col0[1]) t = tanhf(t);
    else if (col >= p.col0[3]) t = sigmoidf_(t);
    hid[col] = t;
  }
  __syncthreads();
  // second factors for this head's channels, 16-byte loads of every group issued before
  // any reduction: thread t takes vector column t % NV and rows t / NV + RSTEP * i
  {
    const int vc = tid % NV, r0 = tid / NV;
    float acc[LORA_GROUPS][VN];
#pragma unroll
    for (int g = 0; g < LORA_GROUPS; ++g) {
#pragma unroll
      for (int u = 0; u < VN; ++u) acc[g][u] = 0.f;
      const F* w2 = static_cast<const F*>(p.w2[g]);
      if (w2 == nullptr) continue;
#pragma unroll 8
      for (int q = r0; q < p.col0[g + 1] - p.col0[g]; q += RSTEP) {
        float wv[VN];
        load_vec<F>(w2 + (size_t)q * C + (size_t)h * N + vc * VN, wv);
        const float hq = hid[p.col0[g] + q];
#pragma unroll
        for (int u = 0; u < VN; ++u) acc[g][u] = fmaf(hq, wv[u], acc[g][u]);
      }
    }
#pragma unroll
    for (int g = 0; g < LORA_GROUPS; ++g) {
#pragma unroll
      for (int u = 0; u < VN; ++u) lred[r0][vc * VN + u] = acc[g][u];
      __syncthreads();
      if (tid < N) {
        float t = 0.f;
        for (int q = 0; q < RSTEP; ++q) t += lred[q][tid];
        low[g][tid] = t;
      }
      __syncthreads();
    }
  }
  if (tid < N) {
    const float k = in_k;
    float v = in_v;
    const float log_w = -0.6065306597126334f * sigmoidf_(in_w0 + low[0][j]);  // exp(-0.5) * sigmoid
    const float a = sigmoidf_(in_a0 + low[1][j]);
    const float kmod = k * (1.f + (a - 1.f) * in_ka);
    if (p.first_layer) static_cast<F*>(p.v_first)[bc + c] = from_f<F>(v);
    else v = fmaf(in_vf - v, sigmoidf_(in_v0 + low[2][j]), v);
    s_r[j] = in_r; s_d[j] = __expf(log_w); s_k[j] = kmod; s_v[j] = v; s_g[j] = low[3][j];
    s_a[j] = a;  // becomes kk * a below
    kk2[j] = k * in_kk;
    bon[j] = in_r * kmod * in_rk;
  }
  __syncthreads();
  // key normalisation (F.normalize: x / max(|x|, 1e-12)) and the bonus, over the head
  float norm2 = 0.f, bonus = 0.f;
  for (int i = 0; i < N; ++i) {
    norm2 = fmaf(kk2[i], kk2[i], norm2);
    bonus += bon[i];
  }
  const float inv = 1.f / fmaxf(sqrtf(norm2), 1e-12f);
  __syncthreads();
  if (tid < N) {
    const float kn = kk2[j] * inv;
    s_b[j] = kn * s_a[j];  // b = kk * a
    s_a[j] = -kn;          // a = -kk
  }
  __syncthreads();
  // the state update: thread (l, j) holds rows l * ROWS .. of column j
  float sa = 0.f;
#pragma unroll
  for (int q = 0; q < ROWS; ++q) sa = fmaf(s_a[l * ROWS + q], s[q], sa);
  part[l][j] = sa;
  __syncthreads();
  sa = part[0][j] + part[1][j] + part[2][j] + part[3][j];
  const float vj = s_v[j];
  float y = 0.f;
#pragma unroll
  for (int q = 0; q < ROWS; ++q) {
    const int i = l * ROWS + q;
    s[q] = fmaf(s[q], s_d[i], fmaf(s_b[i], sa, s_k[i] * vj));
    st[(size_t)i * N + j] = s[q];
    y = fmaf(s_r[i], s[q], y);
  }
  __syncthreads();  // every thread has read part[] for sa
  part[l][j] = y;
  __syncthreads();
  // group norm over the head, the bonus and the gate
  if (tid < N) kk2[j] = part[0][j] + part[1][j] + part[2][j] + part[3][j];
  __syncthreads();
  float mean = 0.f;
  for (int i = 0; i < N; ++i) mean += kk2[i];
  mean /= N;
  float var = 0.f;
  for (int i = 0; i < N; ++i) var = fmaf(kk2[i] - mean, kk2[i] - mean, var);
  var /= N;
  if (tid < N) {
    const float yn = (kk2[j] - mean) * rsqrtf(var + p.lnx_eps) * in_lw + in_lb;
    static_cast<F*>(p.out)[bc + c] = from_f<F>((yn + bonus * vj) * s_g[j]);
  }
}

cudaError_t norm_mix(int dtype, int B, int C, float eps, const void* x, const void* ln_w, const void* ln_b, void* prev,
                     const MixArgs& mix, void* out, cudaStream_t stream) {
  if (C > NM_THREADS * NM_PER) return cudaErrorInvalidValue;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    norm_mix_kernel<F><<<B, NM_THREADS, 0, stream>>>(B, C, eps, (const F*)x, (const F*)ln_w, (const F*)ln_b, (F*)prev,
                                             mix, (F*)out);
  })
  return cudaGetLastError();
}

cudaError_t lora_down(int dtype, int B, int C, int ksplit, const LoraDownArgs& args, float* partial,
                      cudaStream_t stream) {
  const int cols = args.col0[args.n];
  if (cols > MAX_LORA_COLS) return cudaErrorInvalidValue;
  const int rows = (C + ksplit - 1) / ksplit;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    constexpr int VN = Vec<F>::n;
    for (int g = 0; g < args.n; ++g)
      if ((args.col0[g + 1] - args.col0[g]) % VN) return cudaErrorInvalidValue;
    const int nvec = cols / VN, RL = max(1, min(8, 1024 / nvec));
    const int threads = (RL * nvec + 31) / 32 * 32;
    lora_down_kernel<F><<<dim3(ksplit, B), threads, 0, stream>>>(B, C, rows, RL, args, partial);
  })
  return cudaGetLastError();
}

cudaError_t tmix7_decode(int dtype, int B, int H, int N, const Tmix7Args& args, cudaStream_t stream) {
  if (args.cols > MAX_LORA_COLS) return cudaErrorInvalidValue;
  ARCHBENCH_DISPATCH_DTYPE(dtype, ARCHBENCH_DISPATCH_HEAD(N, {
    if constexpr (N >= 16) tmix7_decode_kernel<F, N><<<dim3(H, B), 4 * N, 0, stream>>>(B, H, args);
  }))
  return cudaGetLastError();
}

}  // namespace archbench
