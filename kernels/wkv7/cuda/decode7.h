// Arguments of the fused RWKV-7 decode kernels (decode7.cu), shared with the binding.
#pragma once
#include <cuda_runtime_api.h>

namespace archbench {

constexpr int MAX_MIX = 6;
constexpr int LORA_GROUPS = 4;      // w, a, v, g
constexpr int MAX_LORA_COLS = 1024;  // sum of the four LoRA widths (832 at 7B)
constexpr int MAX_KSPLIT = 16;       // row blocks of lora_down (tmix7_decode unrolls over them)
constexpr int MAX_GEMV = 4;          // matrices in one gemv launch (r, k, v; RWKV-6: and g)
constexpr int GEMV_MAX_B = 4;        // sequences in one gemv launch (each weight load serves all)

struct MixArgs {
  const void* maa[MAX_MIX];
  int n;
  bool x_weighted;  // out = x_prev + (x - x_prev) maa (RWKV-4/5's time_mix), else x + (x_prev - x) maa
};

struct LoraDownArgs {
  const void* x[LORA_GROUPS];  // [B, C] inputs
  const void* w[LORA_GROUPS];  // [C, rank] first factors
  int col0[LORA_GROUPS + 1];   // column offsets of the groups in the output; col0[n] = total
  int n;
};

struct Tmix7Args {
  const void *r, *k, *v;                 // [B, C] projections
  const float* partial;                  // [ksplit, B, cols] from lora_down
  int ksplit, cols;
  int col0[LORA_GROUPS + 1];             // w, a, v, g (v empty on layer 0)
  const void* w2[LORA_GROUPS];           // [rank, C] second factors (v may be null)
  const float* w0;                       // [C] fp32
  const void *a0, *v0, *k_k, *k_a, *r_k;  // [C] ([H, N] for r_k), model dtype
  const float *lnx_w, *lnx_b;            // [C] fp32
  float lnx_eps;
  void* v_first;                         // [B, C]: written on layer 0, read after
  bool first_layer;
  float* state;                          // [B, H, N, N] fp32, [K, V], updated in place
  void* out;                             // [B, C]
};

// y[m] = W[m] x[m] for m < n matrices [rows[m], cols] (row-major, one column count for all),
// x[m] [B, cols], y[m] [B, rows[m]]; then, for the matrices of relu_mask (bit m),
// relu(.)^2 relu_scale; for the others sigmoid(gate) * . if gate is set ([B, rows], RWKV-6's
// channel mix), add[m] + . if add[m] is set (add may be y), and the sum times post (RWKV-4-6's
// halving of the residual every few layers in fp16; 1 elsewhere).
struct GemvArgs {
  const void* w[MAX_GEMV];
  const void* x[MAX_GEMV];
  void* y[MAX_GEMV];
  const void* add[MAX_GEMV];
  const void* gate;
  int rows[MAX_GEMV];
  int n;
  unsigned relu_mask;
  float relu_scale, post;
  LoraDownArgs lora;  // lora.n = 0: none; else lora_down of inputs [B, cols] into partial, first
  float* partial;     // [lora_ksplit, B, lora cols]
  int lora_ksplit;
};

// RWKV-6 (decode7.cu, mix6 and tmix6): the token shift's LoRA second factors and the five
// interpolations; the per-head kernel.
constexpr int MIX6_MAX_LORA = 64;    // time_maa_w2's rank D (a multiple of 8)
constexpr int TMIX6_MAX_LORA = 128;  // time_decay_w2's rank (a multiple of 4)
struct Mix6Args {
  const void *xn, *xp;     // [B, C] the normed x and the token shift before this token
  const float* partial;    // [ksplit, B, 5 D] from lora_down (of xn + (xp - xn) maa_x)
  int ksplit, D;
  const void* w2;          // [5, D, C] time_maa_w2
  const void* maa[5];      // [C] time_maa_w, _k, _v, _r, _g
  void* out;               // [5, B, C]: x_w, x_k, x_v, x_r, x_g
};
struct Tmix6Args {
  const void *r, *k, *v, *g;  // [B, C] projections (g before its silu; null: no gate, RWKV-5.0)
  const float* partial;       // [ksplit, B, D2] from lora_down (of x_w by time_decay_w1)
  int ksplit, D2;             // D2 = 0: no decay LoRA (RWKV-5.2)
  const void* w2;             // [D2, C] time_decay_w2
  const float *w0, *u;        // [C] time_decay, time_faaaa, fp32; per_head: [H] time_decay and
  int per_head;               //   time_first, the bonus exp(time_first) (RWKV-5.0 / 5.1)
  const float *lnx_w, *lnx_b;  // [C] fp32
  float lnx_eps;
  float* state;               // [B, H, N, N] fp32, [K, V], updated in place
  void* out;                  // [B, C], times scale (RWKV-5/6's fp16 rescaling; 1 elsewhere)
  float scale;
};
// RWKV-4 (decode7.cu, tmix4): the WKV4 step per channel and out = sigmoid(r) wkv scale.
struct Tmix4Args {
  const void *r, *k, *v;          // [B, C] projections (r before its sigmoid)
  const float *decay, *first;     // [C] time_decay (w = -exp(time_decay)), time_first, fp32
  float* state;                   // [B, 3, C] fp32 (aa, bb, pp), updated in place
  void* out;                      // [B, C]
  float scale;
};
cudaError_t tmix4_decode(int dtype, int B, int C, const Tmix4Args& args, cudaStream_t stream);
cudaError_t mix6(int dtype, int B, int C, const Mix6Args& args, cudaStream_t stream);
cudaError_t tmix6_decode(int dtype, int B, int H, int N, const Tmix6Args& args, cudaStream_t stream);
cudaError_t norm_mix(int dtype, int B, int C, float eps, const void* x, const void* ln_w, const void* ln_b, void* prev,
                     const MixArgs& mix, void* out, cudaStream_t stream);
cudaError_t lora_down(int dtype, int B, int C, int ksplit, const LoraDownArgs& args, float* partial,
                      cudaStream_t stream);
cudaError_t tmix7_decode(int dtype, int B, int H, int N, const Tmix7Args& args, cudaStream_t stream);
cudaError_t gemv(int dtype, int B, int cols, const GemvArgs& args, cudaStream_t stream);

}  // namespace archbench
