#include "kvcache/huge_pages.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <fstream>

namespace vlc::kvcache {
namespace {

// From 2 MiB up the data starts on a 2 MiB boundary (so every 2 MiB of it can be one huge
// page), has the asked shape and dtype, and holds whatever is written; smaller tensors are
// ordinary memory.
TEST(HugePages, LargeTensorsStartOnA2MiBBoundaryAndHoldTheirData) {
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16, at::kChar}) {
    at::Tensor t = HugePageEmpty({1500, 1024}, dt);
    EXPECT_EQ(t.sizes(), (at::IntArrayRef{1500, 1024}));
    EXPECT_EQ(t.scalar_type(), dt);
    EXPECT_TRUE(t.is_contiguous());
    if (t.numel() * t.element_size() >= (int64_t{2} << 20)) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % (uintptr_t{2} << 20), 0u)
          << at::toString(dt);
    }
    t.fill_(3);
    EXPECT_EQ(t.to(at::kDouble).sum().item<double>(), 3.0 * 1500 * 1024) << at::toString(dt);
  }
  at::Tensor small = HugePageEmpty({16, 16}, at::kFloat);
  EXPECT_EQ(small.numel(), 256);
  small.fill_(1);
  EXPECT_EQ(small.sum().item<float>(), 256.0f);
}

TEST(HugePages, CopiesEqualTheOriginalAndOutliveIt) {
  at::Tensor copy;
  {
    at::Tensor w = at::randn({2048, 512});
    copy = OnHugePages(w);
    EXPECT_NE(copy.data_ptr(), w.data_ptr());
    EXPECT_TRUE(at::equal(copy, w));
  }
  EXPECT_TRUE(at::isfinite(copy).all().item<bool>());
  // Small tensors, and empty ones, come back as they are.
  at::Tensor small = at::randn({4, 4});
  EXPECT_EQ(OnHugePages(small).data_ptr(), small.data_ptr());
  EXPECT_FALSE(OnHugePages(at::Tensor()).defined());
}

// Each mapping goes with its tensor: 64 tensors of 32 MiB, every byte written, leave the
// process's resident memory where it was (2 GiB would remain if the mappings leaked).
int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

TEST(HugePages, ReleasedWithTheirTensors) {
  const int64_t before = ResidentBytes();
  for (int i = 0; i < 64; ++i) {
    at::Tensor t = HugePageEmpty({int64_t{32} << 20}, at::kChar);
    t.fill_(static_cast<int8_t>(i));
    EXPECT_EQ(t[12345].item<int8_t>(), static_cast<int8_t>(i));
  }
  EXPECT_LT(ResidentBytes() - before, int64_t{256} << 20);
}

}  // namespace
}  // namespace vlc::kvcache
