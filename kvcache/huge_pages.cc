#include "kvcache/huge_pages.h"

#include <ATen/ATen.h>
#include <sys/mman.h>

#include <cstdint>

namespace vlc::kvcache {

at::Tensor HugePageEmpty(at::IntArrayRef sizes, at::ScalarType dtype) {
  constexpr int64_t kHuge = int64_t{2} << 20;
  int64_t numel = 1;
  for (int64_t d : sizes) numel *= d;
  const int64_t bytes = numel * static_cast<int64_t>(c10::elementSize(dtype));
  if (bytes < kHuge) return at::empty(sizes, at::TensorOptions().dtype(dtype));
  // One huge page of slack lets the data start on a 2 MiB boundary, so every 2 MiB of it can be
  // one huge page.
  const size_t rounded = static_cast<size_t>((bytes + kHuge - 1) / kHuge * kHuge);
  const size_t length = rounded + static_cast<size_t>(kHuge);
  void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return at::empty(sizes, at::TensorOptions().dtype(dtype));
  const auto addr = reinterpret_cast<uintptr_t>(base);
  void* data = reinterpret_cast<void*>((addr + kHuge - 1) / kHuge * kHuge);
  (void)madvise(data, rounded, MADV_HUGEPAGE);  // advice only: without THP it is plain memory
  return at::from_blob(
      data, sizes, [base, length](void*) { munmap(base, length); },
      at::TensorOptions().dtype(dtype));
}

at::Tensor OnHugePages(const at::Tensor& t) {
  if (!t.defined() || !t.device().is_cpu() ||
      t.numel() * static_cast<int64_t>(t.element_size()) < (int64_t{2} << 20)) {
    return t;
  }
  at::Tensor out = HugePageEmpty(t.sizes(), t.scalar_type());
  out.copy_(t);
  return out;
}

}  // namespace vlc::kvcache
