# ---- CUDA kernels for the paged, compressed KV cache (kvcache/cuda/, issue 7). They are compiled
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
        gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)
      endforeach()
    endif()
  endif()
endif()
