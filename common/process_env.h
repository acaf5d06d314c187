// Settings the CPU libraries read once, when they load, and the hook that gives them.
//
// Debian 12's OpenBLAS (0.3.21, the BLAS under LibTorch's float32 matrix products) picks its
// kernels from the CPU's vendor, family and model when its library initialiser runs, and sends
// Intel CPUs from display model 0xB0 on to its generic Prescott (SSE3) kernels: on an Intel Xeon
// of family 6, model 207 (Emerald Rapids) every float32 matrix product ran 4.7x slower than with
// the AVX-512 kernels the CPU can run (docs/BENCHMARKS.md, "Against llama.cpp").
// OPENBLAS_CORETYPE overrides the choice, but only if it is in the environment before the library
// initialises.
//
// LibTorch's CPU kernels run on OpenMP threads and OpenBLAS runs its GEMMs on threads of its own;
// both keep spinning (OpenMP) or yielding (OpenBLAS) for a while after their work ends, and on a
// machine with as many threads as cores they then take the core the other kind needs. Measured
// (2 cores, docs/BENCHMARKS.md, "Serving core"), with 4 streams decoding while a long prompt is
// prefilled in chunks: the streams' p99 gap was 287 ms with spinning OpenMP workers and 111 ms with
// sleeping ones (64-token chunks), and 4.5x against 3.8x their median with OpenBLAS's default yield
// timeout and the shortest (16-token chunks); whole-prompt prefill and decode did not change.
// Programs that serve (VLC_PREFER_SLEEPING_OPENMP_WORKERS below) want OMP_WAIT_POLICY=PASSIVE and
// OPENBLAS_THREAD_TIMEOUT=4 (the shortest).
//
// Every program that links the engine carries common/process_env.cc, whose hook runs from the
// executable's .preinit_array: after the shared libraries are mapped, before any of their
// initialisers. When a setting is missing it executes the program again at once with the settings
// added (libc's own start-up would discard a setenv made that early); nothing has initialised yet,
// so the second start costs only the dynamic loader's work. A value already in the environment is
// always kept: `OPENBLAS_CORETYPE=Prescott` (or any core name) takes the choice back. Under
// valgrind, which reports no AVX-512 and would not follow the new process, nothing is changed.
#pragma once

namespace vlc {

enum class CpuVendor { kIntel, kAmd, kHygon, kOther };

// What OpenBLAS's choice depends on, read with CPUID and XGETBV.
struct CpuIdentity {
  CpuVendor vendor = CpuVendor::kOther;
  int family = 0;     // the displayed family: base, plus the extended family where base is 15
  int model = 0;      // the displayed model: the extended model in the high nibble (families 6, 15)
  bool avx2 = false;  // AVX2 and FMA, and the OS saves the ymm registers
  bool avx512 = false;  // AVX-512 F, DQ, BW and VL, and the OS saves zmm and mask registers
};

CpuIdentity ReadCpuIdentity();

// The OPENBLAS_CORETYPE to give OpenBLAS 0.3.21 on this CPU, or nullptr where its own choice
// stands. It sends Intel family-6 CPUs of display model 0xB0 and later to its generic Prescott
// kernels; those get "SkylakeX" with AVX-512 and "Haswell" with AVX2, what it picks itself for
// the CPUs it knows with those features.
const char* OpenBlasCoreFor(const CpuIdentity& cpu);

// Whether an OpenBLAS library is loaded in this process (Debian's LibTorch links it; the GPU
// machine's uses MKL instead). Usable before libc has initialised.
bool OpenBlasLoaded();

// Sets the threads OpenBLAS runs each matrix product on. It starts as many as the machine has
// cores, whatever LibTorch is told (at::set_num_threads sets OpenMP's count, and MKL's where that
// is the BLAS, not OpenBLAS's): a program asked for one thread still ran every float32 GEMM on
// two, handing half of each to a worker and yielding until it finished, which on the vision
// tower's small products cost more than the work. False where no OpenBLAS is loaded.
bool SetOpenBlasThreads(int n);

}  // namespace vlc

// Put at namespace scope in the file of a program's main() to have its OpenMP workers sleep.
#define VLC_PREFER_SLEEPING_OPENMP_WORKERS() \
  extern "C" const bool vlc_prefer_sleeping_openmp_workers = true
