// clip_kernels::add_layer_norm(x, delta, weight, bias, eps) -> (x + delta, layer_norm(x + delta)):
// the fp16 export's residual add and the layer norm after it (add_layer_norm.cu says why one
// kernel). fp16 CUDA tensors of a width the kernel has run on one kernel; anything else (the
// CPU, fp32, another width, an unaligned view) gets the same two ATen ops the unfused tower runs,
// so the op is correct wherever the file is loaded.
//
// Built into the library with the CUDA-graph ops (clip_triton_build.cuda_graphs).

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

extern "C" cudaError_t clip_add_layer_norm_fp16(
    const void* x, const void* delta, const void* weight, const void* bias, void* sum, void* out, int64_t rows,
    int64_t width, float eps, cudaStream_t stream);

namespace {

bool Aligned(const at::Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0; }

bool Fusable(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& weight, const at::Tensor& bias) {
  const int64_t width = x.dim() > 0 ? x.size(-1) : 0;
  const bool widths = width == 256 || width == 512 || width == 768 || width == 1024 || width == 1280;
  for (const at::Tensor* t : {&x, &delta, &weight, &bias}) {
    if (!t->is_cuda() || t->scalar_type() != at::kHalf || !t->is_contiguous() || !Aligned(*t)) return false;
    if (t->get_device() != x.get_device()) return false;
  }
  return widths && x.sizes() == delta.sizes() && weight.dim() == 1 && weight.size(0) == width && bias.dim() == 1 &&
         bias.size(0) == width;
}

std::tuple<at::Tensor, at::Tensor> add_layer_norm(
    const at::Tensor& x, const at::Tensor& delta, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  if (!Fusable(x, delta, weight, bias)) {
    at::Tensor total = x + delta;
    return {total, at::layer_norm(total, {total.size(-1)}, weight, bias, eps)};
  }
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor total = at::empty_like(x);
  at::Tensor out = at::empty_like(x);
  const int64_t width = x.size(-1);
  C10_CUDA_CHECK(clip_add_layer_norm_fp16(
      x.data_ptr(), delta.data_ptr(), weight.data_ptr(), bias.data_ptr(), total.data_ptr(), out.data_ptr(),
      x.numel() / width, width, static_cast<float>(eps), c10::cuda::getCurrentCUDAStream()));
  return {total, out};
}

}  // namespace

TORCH_LIBRARY(clip_kernels, m) {
  m.def("add_layer_norm(Tensor x, Tensor delta, Tensor weight, Tensor bias, float eps) -> (Tensor, Tensor)");
  m.impl("add_layer_norm", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(add_layer_norm));
}
