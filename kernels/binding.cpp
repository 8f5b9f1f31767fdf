// Thin torch binding of the WKV kernels: pointers, sizes and the current stream in, no
// allocation (outputs and states are allocated by the Python ops), so a call can be
// captured in a CUDA graph. Input checks live in the Python ops (kernels/wkvN/op.py). Each
// call first makes its tensors' GPU the current device (a guard, restored on return), so it
// launches there, on that GPU's current stream, whichever device the caller has current.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#include <torch/extension.h>

#include "wkv7/cuda/decode7.h"

namespace archbench {
cudaError_t wkv4_forward(int dtype, int B, int T, int C, const float* w, const float* u, const void* k,
                         const void* v, float* state, void* y, cudaStream_t stream);
cudaError_t wkv4_parallel_forward(int dtype, int B, int T, int C, int L, const float* w, const float* u,
                                  const void* k, const void* v, float* state, float* work, void* y,
                                  cudaStream_t stream);
cudaError_t wkv6_forward(int dtype, bool token_decay, int B, int T, int H, int N, int variant, const void* r,
                         const void* k, const void* v, const void* w, const float* u, float* state, void* y,
                         cudaStream_t stream);
cudaError_t wkv6_chunked_forward(int dtype, int B, int T, int H, int N, int variant, const void* r, const void* k,
                                 const void* v, const void* w, bool w_per_head, const float* u, float* state,
                                 void* y, void* ws, size_t ws_bytes, cudaStream_t stream);
size_t wkv6_chunked_workspace(int B, int T, int H, int N, int variant);
size_t wkv6_pieces_workspace(int B, int P, int Ts, int H, int N, bool w_per_head, int variant);
cudaError_t wkv6_pieces_forward(int dtype, int B, int P, int Ts, int H, int N, int variant, const void* r,
                                const void* k, const void* v, const void* w, bool w_per_head, const float* u,
                                float* state, void* y, void* ws, size_t ws_bytes, int join, cudaStream_t stream);
cudaError_t wkv7_forward(int dtype, int B, int T, int H, int N, int variant, const void* r, const void* w,
                         const void* k, const void* v, const void* a, const void* b, float* state, void* y,
                         cudaStream_t stream);
cudaError_t wkv7_chunked_forward(int dtype, int B, int T, int H, int N, int variant, const void* r, const void* w,
                                 const void* k, const void* v, const void* a, const void* b, float* state, void* y,
                                 void* ws, size_t ws_bytes, cudaStream_t stream);
size_t wkv7_chunked_workspace(int B, int T, int H, int N, int variant);
}  // namespace archbench

static int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return 0;
    case at::kHalf: return 1;
    case at::kBFloat16: return 2;
    default: TORCH_CHECK(false, "WKV kernels take float32, float16 or bfloat16, got ", t.scalar_type());
  }
}

static const void* ptr_or_null(const at::Tensor& t) { return t.numel() ? t.data_ptr() : nullptr; }

static void check(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, " launch failed: ", cudaGetErrorString(err));
}

// k, v, y: [B, T, C]; w, u: [C] fp32; state: [B, 3, C] fp32 (updated in place)
void wkv4(at::Tensor w, at::Tensor u, at::Tensor k, at::Tensor v, at::Tensor state, at::Tensor y) {
  const c10::cuda::CUDAGuard guard(k.device());
  const int B = k.size(0), T = k.size(1), C = k.size(2);
  check(archbench::wkv4_forward(dtype_code(k), B, T, C, w.data_ptr<float>(), u.data_ptr<float>(), k.data_ptr(),
                                v.data_ptr(), state.data_ptr<float>(), y.data_ptr(),
                                at::cuda::getCurrentCUDAStream()), "wkv4");
}

// The time-parallel WKV4 (wkv4_parallel.cu), same arguments plus the segment length and its
// scratch: work [B, ceil(T / segment), 3, C] fp32, allocated by the caller (kernels/wkv4/op.py)
void wkv4_parallel(at::Tensor w, at::Tensor u, at::Tensor k, at::Tensor v, at::Tensor state, at::Tensor y,
                   at::Tensor work, int64_t segment) {
  const c10::cuda::CUDAGuard guard(k.device());
  const int B = k.size(0), T = k.size(1), C = k.size(2);
  TORCH_CHECK(segment > 0, "wkv4_parallel: segment must be positive, got ", segment);
  const int64_t S = (T + segment - 1) / segment;
  TORCH_CHECK(work.scalar_type() == at::kFloat && work.is_contiguous() && work.dim() == 4 && work.size(0) == B &&
                  work.size(1) == S && work.size(2) == 3 && work.size(3) == C,
              "wkv4_parallel: work must be contiguous float32 [B, ceil(T / segment), 3, C] = [", B, ", ", S, ", 3, ",
              C, "], got ", work.sizes());
  check(archbench::wkv4_parallel_forward(dtype_code(k), B, T, C, (int)segment, w.data_ptr<float>(),
                                         u.data_ptr<float>(), k.data_ptr(), v.data_ptr(), state.data_ptr<float>(),
                                         work.data_ptr<float>(), y.data_ptr(), at::cuda::getCurrentCUDAStream()),
        "wkv4_parallel");
}

// r, k, v, y: [B, T, H, N]; w: [B, T, H, N] (token_decay) or [H, N] fp32; u: [H, N] fp32;
// state: [B, H, N, N] fp32 (updated in place)
void wkv6(at::Tensor r, at::Tensor k, at::Tensor v, at::Tensor w, at::Tensor u, at::Tensor state, at::Tensor y,
          bool token_decay, int64_t variant) {
  const c10::cuda::CUDAGuard guard(r.device());
  const int B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  check(archbench::wkv6_forward(dtype_code(r), token_decay, B, T, H, N, (int)variant, r.data_ptr(), k.data_ptr(),
                                v.data_ptr(), w.data_ptr(), u.data_ptr<float>(), state.data_ptr<float>(), y.data_ptr(),
                                at::cuda::getCurrentCUDAStream()), "wkv6");
}

// The chunked tensor-core WKV6 (wkv6_chunked.cu): r, k, v, y: [B, T, H, N]; w: log decay per
// token [B, T, H, N] or per head [H, N] (WKV5), the inputs' dtype; u: [H, N] fp32; state
// [B, H, N, N] fp32 (updated in place); ws: a uint8 workspace of wkv6_chunked_workspace
// bytes (empty where that is 0); head size 64 only
void wkv6_chunked(at::Tensor r, at::Tensor k, at::Tensor v, at::Tensor w, at::Tensor u, at::Tensor state,
                  at::Tensor y, at::Tensor ws, int64_t variant) {
  const c10::cuda::CUDAGuard guard(r.device());
  const int B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  check(archbench::wkv6_chunked_forward(dtype_code(r), B, T, H, N, (int)variant, r.data_ptr(), k.data_ptr(),
                                        v.data_ptr(), w.data_ptr(), w.dim() == 2, u.data_ptr<float>(),
                                        state.data_ptr<float>(), y.data_ptr(), ws.numel() ? ws.data_ptr() : nullptr, ws.numel(),
                                        at::cuda::getCurrentCUDAStream()),
        "wkv6_chunked");
}

// A prompt cut into P pieces run as a batch and joined (wkv6_pieces.cu, kernels/wkv6/pieces.py):
// r, k, v, y: [B * P, Ts, H, 64], piece p of sequence b at b * P + p; w the same or [H, 64] per
// head (WKV5), the inputs' dtype; u [H, 64] fp32; state [B, H, 64, 64] fp32 (updated in place:
// the state after P * Ts tokens); ws: wkv6_pieces_workspace bytes; variant: the batch run's
// launch code; join: the tile kernel, 1 or 2.
void wkv6_pieces(at::Tensor r, at::Tensor k, at::Tensor v, at::Tensor w, at::Tensor u, at::Tensor state,
                 at::Tensor y, at::Tensor ws, int64_t P, int64_t variant, int64_t join) {
  const c10::cuda::CUDAGuard guard(r.device());
  const int BP = r.size(0), Ts = r.size(1), H = r.size(2), N = r.size(3);
  TORCH_CHECK(P >= 2 && BP % P == 0 && state.numel() == (int64_t)(BP / P) * H * N * N,
              "wkv6_pieces: r must be [B * P, Ts, H, N] and state [B, H, N, N], got ", r.sizes(), " with P = ", P,
              " and state ", state.sizes());
  const int B = BP / (int)P;
  const size_t need = archbench::wkv6_pieces_workspace(B, (int)P, Ts, H, N, w.dim() == 2, (int)variant);
  TORCH_CHECK((size_t)ws.numel() >= need, "wkv6_pieces: the workspace has ", ws.numel(), " bytes, ", need, " needed");
  check(archbench::wkv6_pieces_forward(dtype_code(r), B, (int)P, Ts, H, N, (int)variant, r.data_ptr(), k.data_ptr(),
                                       v.data_ptr(), w.data_ptr(), w.dim() == 2, u.data_ptr<float>(),
                                       state.data_ptr<float>(), y.data_ptr(), ws.data_ptr(), ws.numel(), (int)join,
                                       at::cuda::getCurrentCUDAStream()),
        "wkv6_pieces");
}

// r, w, k, v, a, b, y: [B, T, H, N]; state: [B, H, N, N] fp32 (updated in place)
void wkv7(at::Tensor r, at::Tensor w, at::Tensor k, at::Tensor v, at::Tensor a, at::Tensor b, at::Tensor state,
          at::Tensor y, int64_t variant) {
  const c10::cuda::CUDAGuard guard(r.device());
  const int B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  check(archbench::wkv7_forward(dtype_code(r), B, T, H, N, (int)variant, r.data_ptr(), w.data_ptr(), k.data_ptr(),
                                v.data_ptr(), a.data_ptr(), b.data_ptr(), state.data_ptr<float>(), y.data_ptr(),
                                at::cuda::getCurrentCUDAStream()), "wkv7");
}

// The chunked tensor-core WKV7 (wkv7_chunked.cu), same arguments; head size 64 only
void wkv7_chunked(at::Tensor r, at::Tensor w, at::Tensor k, at::Tensor v, at::Tensor a, at::Tensor b,
                  at::Tensor state, at::Tensor y, at::Tensor ws, int64_t variant) {
  const c10::cuda::CUDAGuard guard(r.device());
  const int B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  check(archbench::wkv7_chunked_forward(dtype_code(r), B, T, H, N, (int)variant, r.data_ptr(), w.data_ptr(),
                                        k.data_ptr(), v.data_ptr(), a.data_ptr(), b.data_ptr(),
                                        state.data_ptr<float>(), y.data_ptr(), ws.numel() ? ws.data_ptr() : nullptr, ws.numel(),
                                        at::cuda::getCurrentCUDAStream()),
        "wkv7_chunked");
}

// Bytes of workspace the chunked kernels' two-kernel form needs at this shape and variant (0
// where the variant takes the one-kernel form).
int64_t wkv6_chunked_workspace(int64_t B, int64_t T, int64_t H, int64_t N, int64_t variant) {
  return (int64_t)archbench::wkv6_chunked_workspace(B, T, H, N, variant);
}
// Bytes of workspace wkv6_pieces needs: B sequences in P pieces of Ts tokens.
int64_t wkv6_pieces_workspace(int64_t B, int64_t P, int64_t Ts, int64_t H, int64_t N, bool w_per_head, int64_t variant) {
  return (int64_t)archbench::wkv6_pieces_workspace(B, P, Ts, H, N, w_per_head, variant);
}
int64_t wkv7_chunked_workspace(int64_t B, int64_t T, int64_t H, int64_t N, int64_t variant) {
  return (int64_t)archbench::wkv7_chunked_workspace(B, T, H, N, variant);
}


// The fused RWKV-7 decode step (decode7.cu). x: [B, C]; prev: [B, C] token shift (updated);
// out: [len(maa), B, C]; x_weighted: x_prev + (x - x_prev) maa (RWKV-5), else x + (x_prev - x) maa.
void rwkv7_norm_mix(at::Tensor x, at::Tensor ln_w, at::Tensor ln_b, at::Tensor prev, std::vector<at::Tensor> maa,
                    at::Tensor out, double eps, bool x_weighted) {
  const c10::cuda::CUDAGuard guard(x.device());
  TORCH_CHECK(maa.size() >= 1 && maa.size() <= archbench::MAX_MIX, "norm_mix: 1 to 6 interpolations");
  archbench::MixArgs mix{};
  for (size_t i = 0; i < maa.size(); ++i) mix.maa[i] = maa[i].data_ptr();
  mix.n = (int)maa.size();
  mix.x_weighted = x_weighted;
  check(archbench::norm_mix(dtype_code(x), x.size(0), x.size(1), (float)eps, x.data_ptr(), ln_w.data_ptr(),
                            ln_b.data_ptr(), prev.data_ptr(), mix, out.data_ptr(), at::cuda::getCurrentCUDAStream()),
        "rwkv7_norm_mix");
}

// xs[g]: [B, C]; ws[g]: [C, rank_g] (empty for a missing group); partial: [ksplit, B, sum of ranks]
// fp32, ksplit <= MAX_KSPLIT
static archbench::LoraDownArgs lora_args(const std::vector<at::Tensor>& xs, const std::vector<at::Tensor>& ws,
                                         const at::Tensor& partial) {
  TORCH_CHECK(xs.size() == archbench::LORA_GROUPS && ws.size() == archbench::LORA_GROUPS, "lora_down: 4 groups");
  archbench::LoraDownArgs args{};
  args.n = archbench::LORA_GROUPS;
  args.col0[0] = 0;
  for (int g = 0; g < archbench::LORA_GROUPS; ++g) {
    TORCH_CHECK(xs[g].is_contiguous() && xs[g].sizes() == xs[0].sizes(), "lora_down: inputs must be contiguous [B, C]");
    args.x[g] = xs[g].data_ptr();
    args.w[g] = ptr_or_null(ws[g]);
    args.col0[g + 1] = args.col0[g] + (ws[g].numel() ? (int)ws[g].size(1) : 0);
  }
  TORCH_CHECK(partial.scalar_type() == at::kFloat && partial.is_contiguous() && partial.dim() == 3 &&
                  partial.size(1) == xs[0].size(0) && partial.size(2) == args.col0[archbench::LORA_GROUPS],
              "lora_down: partial must be fp32 [ksplit, B, sum of ranks]");
  return args;
}

void rwkv7_lora_down(std::vector<at::Tensor> xs, std::vector<at::Tensor> ws, at::Tensor partial) {
  const c10::cuda::CUDAGuard guard(partial.device());
  const archbench::LoraDownArgs args = lora_args(xs, ws, partial);
  check(archbench::lora_down(dtype_code(xs[0]), xs[0].size(0), xs[0].size(1), partial.size(0), args,
                             partial.data_ptr<float>(), at::cuda::getCurrentCUDAStream()),
        "rwkv7_lora_down");
}

// r, k, v, out, v_first: [B, C]; partial from rwkv7_lora_down; w2s: [rank_g, C] (empty if
// missing); params: w0 (fp32), a0, v0 (or empty), k_k, k_a, r_k, ln_x weight, ln_x bias
// (fp32); state [B, H, N, N] fp32, updated in place.
void rwkv7_tmix_decode(at::Tensor r, at::Tensor k, at::Tensor v, at::Tensor partial, std::vector<at::Tensor> w2s,
                       std::vector<at::Tensor> params, double lnx_eps, at::Tensor v_first, bool first_layer,
                       at::Tensor state, at::Tensor out) {
  const c10::cuda::CUDAGuard guard(state.device());
  TORCH_CHECK(w2s.size() == archbench::LORA_GROUPS && params.size() == 8, "tmix_decode: bad argument lists");
  archbench::Tmix7Args p{};
  p.r = r.data_ptr(); p.k = k.data_ptr(); p.v = v.data_ptr();
  p.partial = partial.data_ptr<float>();
  p.ksplit = partial.size(0);
  p.cols = partial.size(2);
  p.col0[0] = 0;
  for (int g = 0; g < archbench::LORA_GROUPS; ++g) {
    p.w2[g] = ptr_or_null(w2s[g]);
    p.col0[g + 1] = p.col0[g] + (w2s[g].numel() ? (int)w2s[g].size(0) : 0);
  }
  TORCH_CHECK(p.col0[archbench::LORA_GROUPS] == p.cols, "tmix_decode: LoRA widths do not match partial");
  p.w0 = params[0].data_ptr<float>();
  p.a0 = params[1].data_ptr(); p.v0 = ptr_or_null(params[2]); p.k_k = params[3].data_ptr();
  p.k_a = params[4].data_ptr(); p.r_k = params[5].data_ptr();
  p.lnx_w = params[6].data_ptr<float>(); p.lnx_b = params[7].data_ptr<float>();
  p.lnx_eps = (float)lnx_eps;
  p.v_first = v_first.data_ptr();
  p.first_layer = first_layer;
  p.state = state.data_ptr<float>();
  p.out = out.data_ptr();
  const int B = state.size(0), H = state.size(1), N = state.size(2);
  check(archbench::tmix7_decode(dtype_code(r), B, H, N, p, at::cuda::getCurrentCUDAStream()), "rwkv7_tmix_decode");
}

// The decode step's projections at small batch (decode7.cu: gemv). ws[m]: [rows_m, cols], one
// column count for all (rows may differ); xs[m]: [B, cols]; ys[m]: [B, rows_m], written; adds:
// empty, or one [B, rows_m] per matrix (may be ys[m] itself): y = add + W x; relu_sq: y =
// relu(W x)^2. Every tensor contiguous and 16-byte aligned (the kernel reads 16-byte vectors).
static archbench::GemvArgs gemv_args(const std::vector<at::Tensor>& ws, const std::vector<at::Tensor>& xs,
                                     const std::vector<at::Tensor>& ys, const std::vector<at::Tensor>& adds,
                                     bool relu_sq) {
  const size_t n = ws.size();
  TORCH_CHECK(n >= 1 && n <= archbench::MAX_GEMV && xs.size() == n && ys.size() == n &&
                  (adds.empty() || adds.size() == n),
              "gemv: 1 to 4 matrices, as many inputs and outputs, no adds or one per matrix");
  TORCH_CHECK(!(relu_sq && !adds.empty()), "gemv: relu_sq and add do not combine");
  const int64_t cols = ws[0].size(1), B = xs[0].size(0);
  auto ok = [](const at::Tensor& t, std::initializer_list<int64_t> shape) {
    return t.is_contiguous() && t.sizes() == at::IntArrayRef(shape) && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  };
  archbench::GemvArgs a{};
  a.n = (int)n;
  a.relu_mask = relu_sq ? (1u << n) - 1 : 0u;
  a.relu_scale = a.post = 1.f;
  for (size_t m = 0; m < n; ++m) {
    const int64_t rows = ws[m].size(0);
    const auto dt = ws[0].scalar_type();
    TORCH_CHECK(ws[m].scalar_type() == dt && xs[m].scalar_type() == dt && ys[m].scalar_type() == dt &&
                    (adds.empty() || adds[m].scalar_type() == dt),
                "gemv: every tensor must have the weights' dtype");
    TORCH_CHECK(ws[m].dim() == 2 && ok(ws[m], {rows, cols}) &&
                    ok(xs[m], {B, cols}) && ok(ys[m], {B, rows}) && (adds.empty() || ok(adds[m], {B, rows})),
                "gemv: shapes must agree and every tensor be contiguous and 16-byte aligned");
    a.rows[m] = (int)rows;
    a.w[m] = ws[m].data_ptr();
    a.x[m] = xs[m].data_ptr();
    a.y[m] = ys[m].data_ptr();
    a.add[m] = adds.empty() ? nullptr : adds[m].data_ptr();
  }
  return a;
}

static void launch_gemv(const archbench::GemvArgs& a, const std::vector<at::Tensor>& ws,
                        const std::vector<at::Tensor>& xs, const char* what) {
  const c10::cuda::CUDAGuard guard(ws[0].device());
  check(archbench::gemv(dtype_code(ws[0]), (int)xs[0].size(0), (int)ws[0].size(1), a, at::cuda::getCurrentCUDAStream()),
        what);
}

void rwkv7_gemv(std::vector<at::Tensor> ws, std::vector<at::Tensor> xs, std::vector<at::Tensor> ys,
                std::vector<at::Tensor> adds, bool relu_sq) {
  launch_gemv(gemv_args(ws, xs, ys, adds, relu_sq), ws, xs, "rwkv7_gemv");
}

// The LoRA first factors and the r / k / v projections in one launch (square matrices:
// lora_xs [B, cols]), as rwkv7_lora_down(lora_xs, lora_ws, partial) then
// rwkv7_gemv(ws, xs, ys, [], False).
void rwkv7_rkv_lora(std::vector<at::Tensor> ws, std::vector<at::Tensor> xs, std::vector<at::Tensor> ys,
                    std::vector<at::Tensor> lora_xs, std::vector<at::Tensor> lora_ws, at::Tensor partial) {
  archbench::GemvArgs a = gemv_args(ws, xs, ys, {}, false);
  a.lora = lora_args(lora_xs, lora_ws, partial);
  for (const auto& w : ws) TORCH_CHECK(w.size(0) == w.size(1), "rkv_lora: square matrices");
  TORCH_CHECK(lora_xs[0].sizes() == xs[0].sizes() &&
                  lora_xs[0].scalar_type() == ws[0].scalar_type(),
              "rkv_lora: LoRA inputs shaped and typed as the projections' inputs");
  a.partial = partial.data_ptr<float>();
  a.lora_ksplit = (int)partial.size(0);
  launch_gemv(a, ws, xs, "rwkv7_rkv_lora");
}

// RWKV-4/5/6's channel-mix value projection (decode7.cu: gemv): ys[0] = (adds[0] + sigmoid(gate) * W x) post
// (post: 0.5 where the model halves its residual in fp16, else 1).
void rwkv6_gemv_gated(std::vector<at::Tensor> ws, std::vector<at::Tensor> xs, std::vector<at::Tensor> ys,
                      std::vector<at::Tensor> adds, at::Tensor gate, double post) {
  archbench::GemvArgs a = gemv_args(ws, xs, ys, adds, false);
  TORCH_CHECK(ws.size() == 1 && gate.is_contiguous() && gate.sizes() == ys[0].sizes() &&
                  gate.scalar_type() == ys[0].scalar_type(),
              "gemv_gated: one matrix, the gate shaped and typed as the output");
  a.gate = gate.data_ptr();
  a.post = (float)post;
  launch_gemv(a, ws, xs, "rwkv6_gemv_gated");
}

// RWKV-4/5/6's channel-mix key and receptance projections in one launch (decode7.cu: gemv):
// h = relu(W_k x_k)^2 scale (scale: the model's fp16 rescaling, else 1), rr = W_r x_r.
void rwkv6_key_receptance(at::Tensor w_k, at::Tensor w_r, at::Tensor x_k, at::Tensor x_r, at::Tensor h, at::Tensor rr,
                          double scale) {
  archbench::GemvArgs a = gemv_args({w_k, w_r}, {x_k, x_r}, {h, rr}, {}, false);
  a.relu_mask = 1u;
  a.relu_scale = (float)scale;
  launch_gemv(a, {w_k, w_r}, {x_k, x_r}, "rwkv6_key_receptance");
}

// The fused RWKV-4 decode step (decode7.cu, tmix4). r, k, v, out: [B, C]; decay, first: time_decay and
// time_first, fp32 [C]; state: [B, 3, C] fp32, updated in place; out = sigmoid(r) wkv scale.
void rwkv4_tmix_decode(at::Tensor r, at::Tensor k, at::Tensor v, at::Tensor decay, at::Tensor first, at::Tensor state,
                       at::Tensor out, double scale) {
  const c10::cuda::CUDAGuard guard(state.device());
  const int64_t B = r.size(0), C = r.size(1);
  for (const auto& t : {r, k, v, out})
    TORCH_CHECK(t.is_contiguous() && t.sizes() == r.sizes() && t.scalar_type() == r.scalar_type(),
                "rwkv4_tmix_decode: r, k, v and out must be contiguous [B, C] of one dtype");
  for (const auto& t : {decay, first})
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == C,
                "rwkv4_tmix_decode: time_decay and time_first must be fp32 with C values");
  TORCH_CHECK(state.scalar_type() == at::kFloat && state.is_contiguous() && state.sizes() == at::IntArrayRef({B, 3, C}),
              "rwkv4_tmix_decode: state must be fp32 [B, 3, C]");
  archbench::Tmix4Args p{};
  p.r = r.data_ptr(); p.k = k.data_ptr(); p.v = v.data_ptr();
  p.decay = decay.data_ptr<float>(); p.first = first.data_ptr<float>();
  p.state = state.data_ptr<float>();
  p.out = out.data_ptr();
  p.scale = (float)scale;
  check(archbench::tmix4_decode(dtype_code(r), (int)B, (int)C, p, at::cuda::getCurrentCUDAStream()), "rwkv4_tmix_decode");
}

// The fused RWKV-6 decode step (decode7.cu, mix6). xn, xp: [B, C] (the normed x, the old token
// shift); partial: [ksplit, B, 5 D] fp32 from rwkv7_lora_down; w2: time_maa_w2 [5, D, C]; maa: the
// five [C] interpolation weights (w, k, v, r, g); out: [5, B, C].
void rwkv6_mix(at::Tensor xn, at::Tensor xp, at::Tensor partial, at::Tensor w2, std::vector<at::Tensor> maa,
               at::Tensor out) {
  const c10::cuda::CUDAGuard guard(xn.device());
  TORCH_CHECK(maa.size() == 5 && w2.dim() == 3 && w2.size(0) == 5 && partial.dim() == 3 &&
                  partial.size(2) == 5 * w2.size(1) && out.dim() == 3 && out.size(0) == 5,
              "rwkv6_mix: bad shapes");
  archbench::Mix6Args p{};
  p.xn = xn.data_ptr(); p.xp = xp.data_ptr();
  p.partial = partial.data_ptr<float>();
  p.ksplit = partial.size(0);
  p.D = w2.size(1);
  p.w2 = w2.data_ptr();
  for (int m = 0; m < 5; ++m) p.maa[m] = maa[m].data_ptr();
  p.out = out.data_ptr();
  check(archbench::mix6(dtype_code(xn), xn.size(0), xn.size(1), p, at::cuda::getCurrentCUDAStream()), "rwkv6_mix");
}

// (decode7.cu, tmix6) r, k, v, g, out: [B, C] (g empty: no gate, RWKV-5.0); partial: [ksplit, B,
// D2] fp32; w2: time_decay_w2 [D2, C]; params: time_decay, time_faaaa (C values each, or H
// values each: time_decay and time_first of RWKV-5.0 / 5.1), ln_x weight, ln_x bias (C values),
// all fp32; state [B, H, N, N] fp32, updated in place; out times scale (the model's fp16
// rescaling, else 1).
void rwkv6_tmix_decode(at::Tensor r, at::Tensor k, at::Tensor v, at::Tensor g, at::Tensor partial, at::Tensor w2,
                       std::vector<at::Tensor> params, double lnx_eps, at::Tensor state, at::Tensor out, double scale) {
  const c10::cuda::CUDAGuard guard(state.device());
  TORCH_CHECK(params.size() == 4 && partial.dim() == 3 && w2.dim() == 2 && partial.size(2) == w2.size(0) &&
                  state.dim() == 4 && r.dim() == 2 && r.size(1) == state.size(1) * state.size(2),
              "rwkv6_tmix_decode: bad arguments");
  const int64_t C = r.size(1), H = state.size(1);
  const bool per_head = params[0].numel() == H;
  for (size_t i = 0; i < params.size(); ++i)
    TORCH_CHECK(params[i].scalar_type() == at::kFloat && params[i].is_contiguous() &&
                    params[i].numel() == (i < 2 && per_head ? H : C),
                "rwkv6_tmix_decode: time_decay and time_faaaa (C values) or time_decay and time_first (H values), "
                "and ln_x (C values), must be fp32");
  TORCH_CHECK(g.numel() == 0 || g.sizes() == r.sizes(), "rwkv6_tmix_decode: g must be empty or as r");
  archbench::Tmix6Args p{};
  p.r = r.data_ptr(); p.k = k.data_ptr(); p.v = v.data_ptr(); p.g = g.numel() ? g.data_ptr() : nullptr;
  p.per_head = per_head;
  p.partial = partial.data_ptr<float>();
  p.ksplit = partial.size(0);
  p.D2 = partial.size(2);
  p.w2 = w2.data_ptr();
  p.w0 = params[0].data_ptr<float>(); p.u = params[1].data_ptr<float>();
  p.lnx_w = params[2].data_ptr<float>(); p.lnx_b = params[3].data_ptr<float>();
  p.lnx_eps = (float)lnx_eps;
  p.state = state.data_ptr<float>();
  p.out = out.data_ptr();
  p.scale = (float)scale;
  check(archbench::tmix6_decode(dtype_code(r), state.size(0), state.size(1), state.size(2), p,
                                at::cuda::getCurrentCUDAStream()),
        "rwkv6_tmix_decode");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("wkv4", &wkv4);
  m.def("wkv4_parallel", &wkv4_parallel);
  m.def("wkv6", &wkv6);
  m.def("wkv6_chunked", &wkv6_chunked);
  m.def("wkv6_pieces", &wkv6_pieces);
  m.def("wkv6_pieces_workspace", &wkv6_pieces_workspace);
  m.def("wkv7", &wkv7);
  m.def("wkv7_chunked", &wkv7_chunked);
  m.def("wkv6_chunked_workspace", &wkv6_chunked_workspace);
  m.def("wkv7_chunked_workspace", &wkv7_chunked_workspace);
  m.def("rwkv7_norm_mix", &rwkv7_norm_mix);
  m.def("rwkv7_lora_down", &rwkv7_lora_down);
  m.def("rwkv7_tmix_decode", &rwkv7_tmix_decode);
  m.def("rwkv6_mix", &rwkv6_mix);
  m.def("rwkv6_tmix_decode", &rwkv6_tmix_decode);
  m.def("rwkv6_gemv_gated", &rwkv6_gemv_gated);
  m.def("rwkv6_key_receptance", &rwkv6_key_receptance);
  m.def("rwkv4_tmix_decode", &rwkv4_tmix_decode);
  m.def("rwkv7_gemv", &rwkv7_gemv);
  m.def("rwkv7_rkv_lora", &rwkv7_rkv_lora);
}
