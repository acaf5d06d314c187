// The start-up hook of common/process_env.h. Every executable that links the engine compiles this
// file itself (an interface source of vlc_kvcache): a .preinit_array entry in a static library
// would never be linked, since nothing refers to it.
#include "common/process_env.h"

#include <cpuid.h>
#include <dlfcn.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern "C" __attribute__((weak)) const bool vlc_prefer_sleeping_openmp_workers;

namespace vlc {
namespace {

unsigned long long ReadXcr0() {
  unsigned int eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

}  // namespace

CpuIdentity ReadCpuIdentity() {
  CpuIdentity cpu;
  unsigned int eax, ebx, ecx, edx;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) == 0) return cpu;
  const unsigned int max_leaf = eax;
  char vendor[13];
  memcpy(vendor, &ebx, 4);
  memcpy(vendor + 4, &edx, 4);
  memcpy(vendor + 8, &ecx, 4);
  vendor[12] = '\0';
  if (strcmp(vendor, "GenuineIntel") == 0) cpu.vendor = CpuVendor::kIntel;
  if (strcmp(vendor, "AuthenticAMD") == 0) cpu.vendor = CpuVendor::kAmd;
  if (strcmp(vendor, "HygonGenuine") == 0) cpu.vendor = CpuVendor::kHygon;

  __cpuid(1, eax, ebx, ecx, edx);
  const int base_family = (eax >> 8) & 0xf;
  const int base_model = (eax >> 4) & 0xf;
  cpu.family = base_family == 0xf ? base_family + ((eax >> 20) & 0xff) : base_family;
  cpu.model = (base_family == 0x6 || base_family == 0xf) ? (((eax >> 16) & 0xf) << 4) | base_model
                                                         : base_model;
  const bool fma = ecx & (1u << 12), osxsave = ecx & (1u << 27), avx = ecx & (1u << 28);
  if (!osxsave || !avx || max_leaf < 7) return cpu;
  const unsigned long long xcr0 = ReadXcr0();
  const bool ymm_saved = (xcr0 & 0x6) == 0x6;
  const bool zmm_saved = (xcr0 & 0xe6) == 0xe6;  // plus opmask, ZMM_Hi256, Hi16_ZMM

  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool avx2 = ebx & (1u << 5);
  const bool avx512 = (ebx & (1u << 16)) && (ebx & (1u << 17)) && (ebx & (1u << 30)) &&
                      (ebx & (1u << 31));  // F, DQ, BW, VL
  cpu.avx2 = avx2 && fma && ymm_saved;
  cpu.avx512 = cpu.avx2 && avx512 && zmm_saved;
  return cpu;
}

const char* OpenBlasCoreFor(const CpuIdentity& cpu) {
  // OpenBLAS 0.3.21 (driver/others/dynamic.c) looks family-6 CPUs up by extended model, 0 to 10,
  // and sends a model it does not know in those to a choice by features (AVX-512, AVX2, AVX). An
  // extended model of 11 or more (display models 0xB0 on: Raptor Lake, Arrow Lake, Emerald and
  // Granite Rapids and later) falls through its switch into the Pentium 4 case: Prescott. Other
  // vendors' and families' unknown CPUs reach the choice by features.
  if (cpu.vendor != CpuVendor::kIntel || cpu.family != 6 || cpu.model < 0xb0) return nullptr;
  // Its choice by features would name Cooperlake where AVX512_BF16 is present, but its
  // OPENBLAS_CORETYPE lookup stops one name short of Cooperlake; SkylakeX has the same float32
  // kernels (Cooperlake adds bfloat16 ones, which LibTorch does not call).
  if (cpu.avx512) return "SkylakeX";
  if (cpu.avx2) return "Haswell";
  return nullptr;
}

bool OpenBlasLoaded() {
  bool found = false;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        if (info->dlpi_name == nullptr || strstr(info->dlpi_name, "openblas") == nullptr) return 0;
        *static_cast<bool*>(out) = true;
        return 1;
      },
      &found);
  return found;
}

bool SetOpenBlasThreads(int n) {
  using SetThreads = void (*)(int);
  auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set == nullptr) return false;
  set(n);
  return true;
}

namespace {

const char* FindEnv(char** envp, const char* name) {
  const size_t n = strlen(name);
  for (char** e = envp; *e != nullptr; ++e) {
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  }
  return nullptr;
}

// Runs before libc's own initialisation and any C++ constructor: only libc calls that need
// neither (getenv would not work yet; the environment is read from envp).
void PrepareProcessEnvironment(int, char** argv, char** envp) {
  if (argv == nullptr || envp == nullptr) return;
  const char* preload = FindEnv(envp, "LD_PRELOAD");
  if (preload != nullptr && strstr(preload, "vgpreload") != nullptr) return;  // valgrind

  const char* additions[3];
  int n_additions = 0;
  if (FindEnv(envp, "OPENBLAS_CORETYPE") == nullptr) {
    const char* core = OpenBlasLoaded() ? OpenBlasCoreFor(ReadCpuIdentity()) : nullptr;
    if (core != nullptr) {
      static char setting[64] = "OPENBLAS_CORETYPE=";
      strncat(setting, core, sizeof(setting) - strlen(setting) - 1);
      additions[n_additions++] = setting;
    }
  }
  if (&vlc_prefer_sleeping_openmp_workers != nullptr && vlc_prefer_sleeping_openmp_workers) {
    if (FindEnv(envp, "OMP_WAIT_POLICY") == nullptr) {
      additions[n_additions++] = "OMP_WAIT_POLICY=PASSIVE";
    }
    if (FindEnv(envp, "OPENBLAS_THREAD_TIMEOUT") == nullptr) {
      additions[n_additions++] = "OPENBLAS_THREAD_TIMEOUT=4";
    }
  }
  if (n_additions == 0) return;

  size_t n_env = 0;
  while (envp[n_env] != nullptr) ++n_env;
  char** env = static_cast<char**>(malloc((n_env + n_additions + 1) * sizeof(char*)));
  if (env == nullptr) return;
  memcpy(env, envp, n_env * sizeof(char*));
  for (int i = 0; i < n_additions; ++i) env[n_env + i] = const_cast<char*>(additions[i]);
  env[n_env + n_additions] = nullptr;
  execve("/proc/self/exe", argv, env);
  free(env);  // no /proc: the program runs with the environment it has
}

using StartupHook = void (*)(int, char**, char**);
__attribute__((section(".preinit_array"), used)) const StartupHook kPrepareProcessEnvironment =
    &PrepareProcessEnvironment;

}  // namespace
}  // namespace vlc
