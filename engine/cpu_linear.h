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

namespace vlc::engine {

// Rows of x up to which DecodeLinear uses the streaming kernel: a decode step, and a prefill
// chunk of up to 64 tokens that rides in it. OpenBLAS's GEMM packs the whole weight matrix on
// every call, which costs most at few rows; far above this the GEMM's blocking wins.
inline constexpr int64_t kStreamingLinearMaxRows = 80;

// x [rows, in] (float32), w [out, in] (float32, contiguous), b [out] or undefined -> [rows, out].
at::Tensor DecodeLinear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});

}  // namespace vlc::engine
