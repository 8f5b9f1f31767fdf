// Thin torch binding of the WKV kernels: pointers, sizes and the current stream in, no
// allocation (outputs and states are allocated by the Python ops), so a call can be
// captured in a CUDA graph. Input checks live in the Python ops (kernels/wkvN/op.py).
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>
#include <torch/extension.h>

namespace archbench {
cudaError_t wkv4_forward(int dtype, int B, int T, int C, const float* w, const float* u, const void* k,
                         const void* v, float* state, void* y, cudaStream_t stream);
cudaError_t wkv6_forward(int dtype, bool token_decay, int B, int T, int H, int N, int variant, const void* r,
                         const void* k, const void* v, const void* w, const float* u, float* state, void* y,
                         cudaStream_t stream);
cudaError_t wkv7_forward(int dtype, int B, int T, int H, int N, int variant, const void* r, const void* w,
                         const void* k, const void* v, const void* a, const void* b, float* state, void* y,
                         cudaStream_t stream);
}  // namespace archbench

static int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return 0;
    case at::kHalf: return 1;
    case at::kBFloat16: return 2;
    default: TORCH_CHECK(false, "WKV kernels take float32, float16 or bfloat16, got ", t.scalar_type());
  }
}

static void check(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, " launch failed: ", cudaGetErrorString(err));
}

// k, v, y: [B, T, C]; w, u: [C] fp32; state: [B, 3, C] fp32 (updated in place)
void wkv4(at::Tensor w, at::Tensor u, at::Tensor k, at::Tensor v, at::Tensor state, at::Tensor y) {
  const int B = k.size(0), T = k.size(1), C = k.size(2);
  check(archbench::wkv4_forward(dtype_code(k), B, T, C, w.data_ptr<float>(), u.data_ptr<float>(), k.data_ptr(),
                                v.data_ptr(), state.data_ptr<float>(), y.data_ptr(),
                                at::cuda::getCurrentCUDAStream()), "wkv4");
}

// r, k, v, y: [B, T, H, N]; w: [B, T, H, N] (token_decay) or [H, N] fp32; u: [H, N] fp32;
// state: [B, H, N, N] fp32 (updated in place)
void wkv6(at::Tensor r, at::Tensor k, at::Tensor v, at::Tensor w, at::Tensor u, at::Tensor state, at::Tensor y,
          bool token_decay, int64_t variant) {
  const int B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  check(archbench::wkv6_forward(dtype_code(r), token_decay, B, T, H, N, (int)variant, r.data_ptr(), k.data_ptr(),
                                v.data_ptr(), w.data_ptr(), u.data_ptr<float>(), state.data_ptr<float>(), y.data_ptr(),
                                at::cuda::getCurrentCUDAStream()), "wkv6");
}

// r, w, k, v, a, b, y: [B, T, H, N]; state: [B, H, N, N] fp32 (updated in place)
void wkv7(at::Tensor r, at::Tensor w, at::Tensor k, at::Tensor v, at::Tensor a, at::Tensor b, at::Tensor state,
          at::Tensor y, int64_t variant) {
  const int B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  check(archbench::wkv7_forward(dtype_code(r), B, T, H, N, (int)variant, r.data_ptr(), w.data_ptr(), k.data_ptr(),
                                v.data_ptr(), a.data_ptr(), b.data_ptr(), state.data_ptr<float>(), y.data_ptr(),
                                at::cuda::getCurrentCUDAStream()), "wkv7");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("wkv4", &wkv4);
  m.def("wkv6", &wkv6);
  m.def("wkv7", &wkv7);
}
