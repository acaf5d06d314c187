// Memory for tensors that are streamed end to end on every step: the model's weights (a decode
// step reads each once) and the KV page pool (decode attention reads every page of a sequence).
#pragma once

#include <ATen/core/Tensor.h>

namespace vlc::kvcache {

// A CPU tensor whose memory is backed by 2 MiB transparent huge pages where the kernel allows them
// (MADV_HUGEPAGE on a 2 MiB-aligned private mapping, before any page is touched). A decode step
// reads every weight once in long streams; with 4 KiB pages every 4 KiB costs a TLB miss, and
// measured here (Zen 4, 2 cores, THP in `madvise` mode; `vlcache-bench-engine --kernel`, in
// docs/BENCHMARKS.md) a plain two-thread read of a large matrix streams 5-10% faster from huge
// pages. Below 2 MiB, or where the kernel has THP off or no huge page free, it is ordinary memory;
// the contents are uninitialised.
at::Tensor HugePageEmpty(at::IntArrayRef sizes, at::ScalarType dtype);
// `t` copied into HugePageEmpty memory (CPU tensors of 2 MiB and more; others are returned as
// they are).
at::Tensor OnHugePages(const at::Tensor& t);

}  // namespace vlc::kvcache
