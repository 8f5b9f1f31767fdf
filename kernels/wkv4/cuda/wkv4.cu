// WKV4 forward (prefill and decode) with the state (aa, bb, pp) in and out.
//
// One thread per (batch, channel) walks the sequence in log space, as BlinkDL's kernels
// do: pp is the log of the scale shared by the numerator aa and the denominator bb, so no
// exp() overflows in fp16 or over long sequences. Inputs for the next U tokens load into
// registers while the current U are computed.
#include "../../common.cuh"

namespace archbench {

template <typename F, int U>
__global__ void __launch_bounds__(128)
wkv4_forward_kernel(int B, int T, int C, const float* __restrict__ w, const float* __restrict__ u,
                    const F* __restrict__ k, const F* __restrict__ v, float* __restrict__ state,
                    F* __restrict__ y) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * C) return;
  const int b = idx / C, c = idx % C;
  const float ww = w[c], uu = u[c];
  float* st = state + (size_t)b * 3 * C + c;
  float aa = st[0], bb = st[C], pp = st[2 * C];
  const size_t base = (size_t)b * T * C + c;

  float kn[U], vn[U];
  auto fetch = [&](int t0) {
#pragma unroll
    for (int q = 0; q < U; ++q) {
      const bool in = t0 + q < T;
      kn[q] = in ? to_f(k[base + (size_t)(t0 + q) * C]) : 0.f;
      vn[q] = in ? to_f(v[base + (size_t)(t0 + q) * C]) : 0.f;
    }
  };
  fetch(0);
  for (int t0 = 0; t0 < T; t0 += U) {
    float kc[U], vc[U];
#pragma unroll
    for (int q = 0; q < U; ++q) { kc[q] = kn[q]; vc[q] = vn[q]; }
    if (t0 + U < T) fetch(t0 + U);
#pragma unroll
    for (int q = 0; q < U; ++q) {
      if (t0 + q >= T) break;
      const float kk = kc[q], vv = vc[q];
      float ww2 = uu + kk;
      float p = fmaxf(pp, ww2);
      float e1 = __expf(pp - p), e2 = __expf(ww2 - p);
      y[base + (size_t)(t0 + q) * C] = from_f<F>((e1 * aa + e2 * vv) / (e1 * bb + e2));
      ww2 = ww + pp;
      p = fmaxf(ww2, kk);
      e1 = __expf(ww2 - p);
      e2 = __expf(kk - p);
      aa = e1 * aa + e2 * vv;
      bb = e1 * bb + e2;
      pp = p;
    }
  }
  st[0] = aa;
  st[C] = bb;
  st[2 * C] = pp;
}

cudaError_t wkv4_forward(int dtype, int B, int T, int C, const float* w, const float* u, const void* k,
                         const void* v, float* state, void* y, cudaStream_t stream) {
  if (T == 0) return cudaSuccess;
  const int blocks = (B * C + 127) / 128;
  ARCHBENCH_DISPATCH_DTYPE(dtype, {
    wkv4_forward_kernel<F, 8><<<blocks, 128, 0, stream>>>(B, T, C, w, u, (const F*)k, (const F*)v, state, (F*)y);
  })
  return cudaGetLastError();
}

}  // namespace archbench
