// y = x W^T for the few rows of a decode step (and of a prefill chunk that rides in it). A decode
// step multiplies every weight matrix by one row per running sequence; measured here (OpenBLAS
// 0.3.21, 2 cores), the BLAS GEMM at 1 to 8 rows runs at a third of memory bandwidth and GEMV
// handles one row only. This kernel (AVX-512 or AVX2 and FMA, chosen at run time; elsewhere
// at::linear) streams each weight row from memory once and applies it to every row of x (in
// registers for four rows at a time, from L2 for the rest of the batch), so a small batch costs
// little more than one sequence. Each output element is summed in the same order whatever the
// batch, so batching never changes a sequence's numbers.
#pragma once

#include <ATen/core/Tensor.h>

#include "kvcache/huge_pages.h"  // HugePageEmpty: where the model's weights live

namespace vlc::engine {

// Rows of x up to which DecodeLinear uses the streaming kernel: a decode step, and a prefill
// chunk of up to 64 tokens that rides in it. OpenBLAS's GEMM packs the whole weight matrix on
// every call, which costs most at few rows; far above this the GEMM's blocking wins.
inline constexpr int64_t kStreamingLinearMaxRows = 80;

// x [rows, in] (float32, bfloat16 or half), w [out, in] (float32, bfloat16 or half, contiguous),
// b [out] or undefined -> [rows, out] in x's dtype. Half-precision weights are read as stored and
// widened to float32 in registers (a shift for bfloat16, F16C for half), so a decode step reads
// half the bytes of float32 weights; x is widened to float32 once and every sum is float32.
// Anything the kernel does not take (more rows, other dtypes, no AVX2) goes to at::linear.
//
// Where the CPU has them, two dot-product instructions replace the widening, which otherwise
// costs more instructions than the bytes it reads can feed (CpuLinearPath says which is taken):
//  - bfloat16 weights with bfloat16 x (a bfloat16 model's activations) go through AVX512-BF16's
//    VDPBF16PS: the products are exact as before, the float32 sums are added in another order.
//  - int8 weights go through AVX512-VNNI's VPDPBUSD, for which x is quantized too, per block of 64
//    inputs (scale max |x| / 127, rounded to nearest; llama.cpp's Q8_0 does the same per 32):
//    each x element's error is at most half its block's scale.
//
// Int8 weights (weight-only quantization, QuantizeInt8 below) take `scales` [out], one per output
// row: y = (x q^T) * scales + b, with q widened to float32 in registers (a quarter of float32's
// bytes) or multiplied as above; more rows than the kernel takes go through the dequantized
// matrix and at::linear.
at::Tensor DecodeLinear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {},
                        const at::Tensor& scales = {});

// Whether DecodeLinear takes x and w through the streaming kernel on this CPU.
bool DecodeLinearStreams(const at::Tensor& x, const at::Tensor& w);

enum class LinearPath {
  kLibrary,    // at::linear (or the dequantized matrix for int8)
  kWidening,   // the streaming kernel, weights widened to float32 in registers
  kBf16Dot,    // the streaming kernel on VDPBF16PS
  kInt8Dot,    // the streaming kernel on VPDPBUSD, x quantized per block of 64
};
// The path DecodeLinear takes for x and w on this CPU.
LinearPath CpuLinearPath(const at::Tensor& x, const at::Tensor& w);

// w (bfloat16, half, or int8 times `scales`, one per row) as a float32 matrix, widened with the
// kernel's vector loads; the same numbers as LibTorch's conversion (DequantizeInt8's for int8).
at::Tensor WidenToFloat(const at::Tensor& w, const at::Tensor& scales = {});

// How a prefill multiplies bfloat16 activations (a bfloat16 model's, or an int8 model's under
// bfloat16) by bfloat16 or int8 weights on the CPU: LibTorch's bfloat16 GEMM (oneDNN), or the
// weights widened to float32 (WidenToFloat) for the BLAS's float32 GEMM, the activations widened
// too and the result rounded back to bfloat16. Which is faster depends on the machine, not only
// on its instructions: on an AMD EPYC (Zen 4) oneDNN's bfloat16 prefill ran 2x the float32 one,
// on an Intel Xeon (Emerald Rapids, no AMX) float32 ran 2.1x oneDNN's bfloat16
// (docs/BENCHMARKS.md). The first such product in a process times both (on up to 128 of its
// rows, twice each) and keeps the faster for the process; VLC_CPU_BF16_GEMM=float32 or bfloat16
// fixes the choice instead. Both sum in float32; they differ in the order of the sums.
enum class Bf16PrefillGemm { kUndecided, kFloat32, kBFloat16 };
Bf16PrefillGemm BFloat16PrefillGemm();  // kUndecided before the first such product
// Fixes the choice (tests, benchmarks); kUndecided measures again at the next product.
void SetBFloat16PrefillGemm(Bf16PrefillGemm choice);

// Weight-only int8, symmetric per output channel: w ~= q * scale[row], q in [-127, 127],
// scale = max |w[row]| / 127 (0 for a row of zeros, whose q is all zeros). Rounding to nearest
// makes each weight's error at most scale / 2.
struct Int8Weight {
  at::Tensor q;      // int8 [out, in], contiguous
  at::Tensor scale;  // float32 [out]
};
Int8Weight QuantizeInt8(const at::Tensor& w);
// q * scale as a dense matrix of `dtype` (the path for many rows: prefill).
at::Tensor DequantizeInt8(const at::Tensor& q, const at::Tensor& scales, at::ScalarType dtype);

}  // namespace vlc::engine
