// The start-up hook of common/process_env.h: OpenBLAS's kernels for CPUs its table does not know,
// and sleeping OpenMP workers for the programs that ask for them (this test binary asks).
#include "common/process_env.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/device.h"

VLC_PREFER_SLEEPING_OPENMP_WORKERS();

namespace vlc {
namespace {

CpuIdentity Cpu(CpuVendor vendor, int family, int model, bool avx2, bool avx512) {
  CpuIdentity cpu;
  cpu.vendor = vendor;
  cpu.family = family;
  cpu.model = model;
  cpu.avx2 = avx2;
  cpu.avx512 = avx512;
  return cpu;
}

std::string Core(const CpuIdentity& cpu) {
  const char* core = OpenBlasCoreFor(cpu);
  return core == nullptr ? "(its own choice)" : core;
}

constexpr CpuVendor kIntel = CpuVendor::kIntel;

TEST(OpenBlasCoreFor, CpusItChoosesForKeepItsChoice) {
  // In its table: Skylake-X, Sapphire Rapids, Haswell, Alder Lake.
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0x55, true, true)), "(its own choice)");
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0x8f, true, true)), "(its own choice)");
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0x3c, true, false)), "(its own choice)");
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0x97, true, false)), "(its own choice)");
  // Unknown, but chosen for by features: Meteor Lake (0xAA), Granite Rapids (0xAD), Intel's next
  // family, AMD's Zen 5 (family 0x1A), Hygon, Zhaoxin.
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0xaa, true, false)), "(its own choice)");
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0xad, true, true)), "(its own choice)");
  EXPECT_EQ(Core(Cpu(kIntel, 0x13, 0x01, true, true)), "(its own choice)");
  EXPECT_EQ(Core(Cpu(CpuVendor::kAmd, 0x1a, 0x44, true, true)), "(its own choice)");
  EXPECT_EQ(Core(Cpu(CpuVendor::kHygon, 0x18, 0x02, true, false)), "(its own choice)");
  EXPECT_EQ(Core(Cpu(CpuVendor::kOther, 7, 0x3b, true, false)), "(its own choice)");
}

TEST(OpenBlasCoreFor, ModelsItSendsToPrescottGetTheirFeaturesKernels) {
  // Raptor Lake (0xB7), Arrow Lake (0xC6), Emerald Rapids (0xCF), the last model of family 6.
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0xb7, true, false)), "Haswell");
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0xc6, true, false)), "Haswell");
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0xcf, true, true)), "SkylakeX");
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0xff, true, true)), "SkylakeX");
  // The first model past its table's reach, and the last within it.
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0xb0, true, false)), "Haswell");
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0xaf, true, false)), "(its own choice)");
  // An OS that does not save the zmm registers leaves AVX-512 out (ReadCpuIdentity's avx512).
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0xcf, true, false)), "Haswell");
}

TEST(OpenBlasCoreFor, WithoutAvx2ItsFallbackStands) {
  EXPECT_EQ(Core(Cpu(kIntel, 6, 0xcf, false, false)), "(its own choice)");
}

// The identity read with CPUID matches what the kernel reports in /proc/cpuinfo (whose flags
// also leave out what the OS does not enable).
TEST(ReadCpuIdentity, MatchesProcCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  ASSERT_TRUE(in) << "no /proc/cpuinfo";
  std::string line, vendor;
  int family = -1, model = -1;
  std::set<std::string> flags;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) {
      if (family >= 0) break;  // the first processor's block is enough
      continue;
    }
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "vendor_id") vendor = value;
    if (key == "cpu family") family = std::stoi(value);
    if (key == "model") model = std::stoi(value);
    if (key == "flags") {
      std::istringstream words(value);
      flags.insert(std::istream_iterator<std::string>(words), {});
    }
  }
  ASSERT_FALSE(flags.empty());
  const CpuIdentity cpu = ReadCpuIdentity();
  EXPECT_EQ(cpu.family, family);
  EXPECT_EQ(cpu.model, model);
  EXPECT_EQ(cpu.vendor == CpuVendor::kIntel, vendor == "GenuineIntel");
  EXPECT_EQ(cpu.vendor == CpuVendor::kAmd, vendor == "AuthenticAMD");
  EXPECT_EQ(cpu.avx2, flags.count("avx2") && flags.count("fma"));
  EXPECT_EQ(cpu.avx512, cpu.avx2 && flags.count("avx512f") && flags.count("avx512dq") &&
                            flags.count("avx512bw") && flags.count("avx512vl"));
}

std::vector<std::string> StartingEnvironment() {
  std::ifstream in("/proc/self/environ", std::ios::binary);
  std::vector<std::string> env;
  std::string entry;
  while (std::getline(in, entry, '\0')) env.push_back(entry);
  return env;
}

bool Has(const std::vector<std::string>& env, const std::string& prefix) {
  for (const auto& e : env) {
    if (e.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

// This binary links the engine, so LibTorch and, on Debian, OpenBLAS: on a CPU with AVX2 OpenBLAS
// must not be left on its generic kernels.
TEST(ProcessEnvironment, OpenBlasRunsKernelsForThisCpu) {
  using CoreName = char* (*)();
  const auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (core_name == nullptr) {  // the GPU machine's LibTorch uses MKL: then nothing was loaded
    EXPECT_FALSE(OpenBlasLoaded()) << "OpenBLAS is loaded but has no openblas_get_corename";
    return;
  }
  EXPECT_TRUE(OpenBlasLoaded());
  const CpuIdentity cpu = ReadCpuIdentity();
  const std::string chosen = core_name();
  EXPECT_NE(chosen, "unknown");
  if (cpu.avx2) EXPECT_NE(chosen, "Prescott") << "OpenBLAS fell back to its SSE3 kernels";
  if (OpenBlasCoreFor(cpu) != nullptr) {
    EXPECT_TRUE(Has(StartingEnvironment(), "OPENBLAS_CORETYPE="));
  }
}

// The engine's thread setting reaches OpenBLAS as well as LibTorch: OpenBLAS otherwise runs every
// GEMM on as many threads as the machine has cores, whatever LibTorch was told.
TEST(ProcessEnvironment, TheThreadSettingReachesOpenBlas) {
  using GetThreads = int (*)();
  const auto blas_threads =
      reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  engine::SetCpuThreads(1);
  EXPECT_EQ(at::get_num_threads(), 1);
  if (blas_threads == nullptr) {
    EXPECT_FALSE(SetOpenBlasThreads(1)) << "no OpenBLAS to set";
    return;
  }
  EXPECT_EQ(blas_threads(), 1);
  const int cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  if (cores >= 2) {
    engine::SetCpuThreads(2);
    EXPECT_EQ(at::get_num_threads(), 2);
    EXPECT_EQ(blas_threads(), 2);
  }
}

TEST(ProcessEnvironment, AProgramThatAsksGetsSleepingWorkers) {
  const auto env = StartingEnvironment();
  EXPECT_TRUE(Has(env, "OMP_WAIT_POLICY=")) << "the hook did not run";
  EXPECT_TRUE(Has(env, "OPENBLAS_THREAD_TIMEOUT="));
}

}  // namespace
}  // namespace vlc
