// The CUDA support code every kernel suite relies on: the device probe never fails (0 devices
// where there is no driver), and a tensor survives the round trip through device memory.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/kvcache/cuda/cuda_test_util.h"

namespace vlc::kvcache::cuda {
namespace {

TEST(CudaCommon, DeviceCountIsNeverNegativeAndErrorsHaveNames) {
  EXPECT_GE(DeviceCount(), 0);
  EXPECT_EQ(std::string(ErrorString(0)), "no error");
  EXPECT_NE(std::string(ErrorString(100)).find("no CUDA-capable device"), std::string::npos);
}

TEST(CudaCommon, TensorsRoundTripThroughDeviceMemory) {
  VLC_REQUIRE_CUDA_DEVICE();
  at::manual_seed(1);
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    at::Tensor x = at::randn({3, 5, 7}).to(dtype);
    auto buf = testing::DeviceBuffer::From(x);
    ASSERT_NE(buf.get(), nullptr);
    EXPECT_TRUE(at::equal(buf.ToCpu(x.sizes(), dtype), x));
  }
}

}  // namespace
}  // namespace vlc::kvcache::cuda
