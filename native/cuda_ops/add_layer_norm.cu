// The fp16 export's residual add and the layer norm that reads it, in one kernel: what the
// text tower does 24 times a pass (x + attention -> layer_norm2, x + MLP -> the next layer's
// layer_norm1; the first one adds the position embedding). Apart, they are two kernels, the sum
// written and read back; and PyTorch's fp16 layer norm of 512-wide rows reaches about a third
// of a current card's bandwidth (in a bulk pass the norms were 15% of the kernel time, the adds
// 6% more). Fused, a bulk pass serves ~10% more texts (docs/performance.md).
//
// Plain CUDA (no torch headers, so nvcc compiles it quickly with any host compiler); the op
// clip_kernels::add_layer_norm (add_layer_norm.cpp) calls clip_add_layer_norm_fp16.
//
// One warp per row; each lane holds width / 32 values in registers, loaded 8 halves (16 bytes)
// at a time, so the sum is read once and statistics take two exact passes over registers.
// Numerics follow PyTorch's: the sum is computed in fp32 and rounded to fp16 (what `x + delta`
// returns), the norm reads that rounded sum, mean and variance in fp32 (biased variance),
// (v - mean) * rsqrt(var + eps) * weight + bias in fp32, rounded once.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 4;  // one warp each
constexpr int kPack = 8;          // halves per 16-byte load

__device__ float WarpSum(float value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

template <int kChunks>  // width = kChunks * 32 lanes * 8 halves
__global__ void AddLayerNorm(
    const __half* __restrict__ x, const __half* __restrict__ delta, const __half* __restrict__ weight,
    const __half* __restrict__ bias, __half* __restrict__ sum, __half* __restrict__ out, int64_t rows, float eps) {
  constexpr int kWidth = kChunks * kWarp * kPack;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (row >= rows) return;
  const int lane = threadIdx.x;
  const int64_t base = row * kWidth;
  float v[kChunks * kPack];
  float total = 0.f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t at = base + (c * kWarp + lane) * kPack;
    uint4 a = *reinterpret_cast<const uint4*>(x + at);
    uint4 b = *reinterpret_cast<const uint4*>(delta + at);
    uint4 s;
    const __half* ah = reinterpret_cast<const __half*>(&a);
    const __half* bh = reinterpret_cast<const __half*>(&b);
    __half* sh = reinterpret_cast<__half*>(&s);
#pragma unroll
    for (int j = 0; j < kPack; ++j) {
      sh[j] = __float2half_rn(__half2float(ah[j]) + __half2float(bh[j]));
      v[c * kPack + j] = __half2float(sh[j]);
      total += v[c * kPack + j];
    }
    *reinterpret_cast<uint4*>(sum + at) = s;
  }
  const float mean = WarpSum(total) / kWidth;
  float squares = 0.f;
#pragma unroll
  for (int k = 0; k < kChunks * kPack; ++k) {
    const float d = v[k] - mean;
    squares += d * d;
  }
  const float rstd = rsqrtf(WarpSum(squares) / kWidth + eps);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int column = (c * kWarp + lane) * kPack;
    uint4 w = *reinterpret_cast<const uint4*>(weight + column);
    uint4 b = *reinterpret_cast<const uint4*>(bias + column);
    uint4 o;
    const __half* wh = reinterpret_cast<const __half*>(&w);
    const __half* bh = reinterpret_cast<const __half*>(&b);
    __half* oh = reinterpret_cast<__half*>(&o);
#pragma unroll
    for (int j = 0; j < kPack; ++j) {
      oh[j] = __float2half_rn((v[c * kPack + j] - mean) * rstd * __half2float(wh[j]) + __half2float(bh[j]));
    }
    *reinterpret_cast<uint4*>(out + base + column) = o;
  }
}

}  // namespace

// rows x width halves, every pointer 16-byte aligned and every row contiguous. Returns
// cudaErrorInvalidValue for a width it has no kernel for (256, 512, 768, 1024, 1280: CLIP's text
// widths, B to bigG), else the
// launch's error.
extern "C" cudaError_t clip_add_layer_norm_fp16(
    const void* x, const void* delta, const void* weight, const void* bias, void* sum, void* out, int64_t rows,
    int64_t width, float eps, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const dim3 block(kWarp, kRowsPerBlock);
  const dim3 grid(static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock));
  auto args = [&](auto kernel) {
    kernel<<<grid, block, 0, stream>>>(
        static_cast<const __half*>(x), static_cast<const __half*>(delta), static_cast<const __half*>(weight),
        static_cast<const __half*>(bias), static_cast<__half*>(sum), static_cast<__half*>(out), rows, eps);
  };
  switch (width) {
    case 256: args(AddLayerNorm<1>); break;
    case 512: args(AddLayerNorm<2>); break;
    case 768: args(AddLayerNorm<3>); break;
    case 1024: args(AddLayerNorm<4>); break;
    case 1280: args(AddLayerNorm<5>); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}
