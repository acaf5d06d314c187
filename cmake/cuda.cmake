# ---- CUDA kernels for the paged, compressed KV cache (kvcache/cuda/). They are compiled
# whenever a CUDA toolkit is found (the development and CI machines have one, without a GPU), for
# sm_90 unless CMAKE_CUDA_ARCHITECTURES says otherwise, and run only where a GPU is present: their
# tests compare each kernel with the CPU reference (kvcache/cpu_ops.h, kvcache/attention.h) and
# skip themselves where no device is visible.
#
# The kernels take raw device pointers and a cudaStream_t, not at::Tensor: Debian's LibTorch has
# no CUDA, and a plain interface lets the same library and tests build here and run on the GPU
# machine. The GPU engine backend wraps them in LibTorch's CUDA tensors where LibTorch has CUDA.
set(VLC_WITH_CUDA "AUTO" CACHE STRING "Build the CUDA kernels: ON, OFF or AUTO (when nvcc is found)")

if(NOT VLC_WITH_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
  elseif(VLC_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "VLC_WITH_CUDA=ON but no CUDA compiler was found")
  endif()
endif()

if(CMAKE_CUDA_COMPILER)
  file(GLOB VLC_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kvcache/cuda/*.cu)
  if(VLC_CUDA_SOURCES)
    add_library(vlc_cuda_kernels STATIC ${VLC_CUDA_SOURCES})
    target_include_directories(vlc_cuda_kernels PUBLIC ${CMAKE_SOURCE_DIR})
    target_link_libraries(vlc_cuda_kernels PUBLIC CUDA::cudart)
    set_target_properties(vlc_cuda_kernels PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                                                      POSITION_INDEPENDENT_CODE ON)
    target_compile_options(vlc_cuda_kernels PRIVATE
                           $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo>)

    if(VLC_BUILD_TESTS)
      find_package(GTest REQUIRED)
      include(GoogleTest)
      file(GLOB VLC_CUDA_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/kvcache/cuda/*_test.cc)
      foreach(src ${VLC_CUDA_TESTS})
        get_filename_component(name ${src} NAME_WE)
        add_executable(${name} ${src})
        target_link_libraries(${name} PRIVATE vlc_cuda_kernels vlc_kvcache GTest::gtest
                              GTest::gtest_main)
        # Labelled, so that a run can take them apart: `ctest -L cuda` / `ctest -LE cuda`.
        gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600 LABELS cuda)
      endforeach()
    endif()

    # The GPU engine backend: PagedKvCache hands a pool on a GPU to these kernels
    # (kvcache/cuda_ops.cc, compiled with or without them). vlc_kvcache is defined before this
    # file is included.
    target_link_libraries(vlc_kvcache PUBLIC vlc_cuda_kernels)
    target_compile_definitions(vlc_kvcache PUBLIC VLC_HAVE_CUDA_KERNELS=1)
  endif()
endif()

# ---- Kernel benchmarks against the card's copy bandwidth (bench/cuda_bench.cu): no LibTorch.
if(TARGET vlc_cuda_kernels AND VLC_BUILD_BENCH)
  find_package(CLI11 CONFIG REQUIRED)
  add_executable(vlcache-bench-cuda ${CMAKE_SOURCE_DIR}/bench/cuda_bench.cu)
  target_link_libraries(vlcache-bench-cuda PRIVATE vlc_cuda_kernels CLI11::CLI11
                        nlohmann_json::nlohmann_json)
  set_target_properties(vlcache-bench-cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  # The GEMM reference (a layer's projections and MLP) needs cuBLAS; without it the benchmark
  # reports the kernels alone.
  if(TARGET CUDA::cublas)
    target_link_libraries(vlcache-bench-cuda PRIVATE CUDA::cublas)
    target_compile_definitions(vlcache-bench-cuda PRIVATE VLC_BENCH_CUBLAS=1)
  else()
    message(STATUS "cuBLAS not found: vlcache-bench-cuda is built without its GEMM reference")
  endif()
  if(VLC_BUILD_TESTS)
    # Without a device it exits 2 naming the missing device; with one, `--quick` writes every
    # field docs/BENCHMARKS.md reports.
    add_test(NAME CudaBench.QuickRunWritesItsFieldsOrExits2WithoutADevice
             COMMAND ${CMAKE_COMMAND} -DBENCH=$<TARGET_FILE:vlcache-bench-cuda>
                     -DOUT=${CMAKE_BINARY_DIR}/cuda-bench-smoke.json
                     -P ${CMAKE_SOURCE_DIR}/tests/kvcache/cuda/bench_smoke.cmake)
    set_tests_properties(CudaBench.QuickRunWritesItsFieldsOrExits2WithoutADevice
                         PROPERTIES TIMEOUT 300)
  endif()
endif()
