# Smoke test of vlcache-bench-cuda (registered in cmake/cuda.cmake as
# CudaBench.QuickRunWritesItsFieldsOrExits2WithoutADevice). The binary's own probe says whether a
# device is visible (and nvidia-smi, where present, must agree: a GPU the runtime cannot see is a
# failure, not a skip). Without a device, `--quick` must exit 2 with a message naming the missing
# device and write no JSON; with one, it must exit 0 and write the device and every figure
# docs/BENCHMARKS.md reports, each a positive number.
#   cmake -DBENCH=path/to/vlcache-bench-cuda -DOUT=out.json -P bench_smoke.cmake
if(NOT BENCH OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DBENCH=<vlcache-bench-cuda> -DOUT=<json> -P bench_smoke.cmake")
endif()

execute_process(COMMAND "${BENCH}" --probe RESULT_VARIABLE rc OUTPUT_VARIABLE probe
                ERROR_VARIABLE probe_err)
if(NOT rc EQUAL 0 OR NOT probe MATCHES "cuda devices: ([0-9]+)")
  message(FATAL_ERROR "vlcache-bench-cuda --probe: exit ${rc}, output '${probe}' '${probe_err}'")
endif()
set(devices ${CMAKE_MATCH_1})

find_program(NVIDIA_SMI nvidia-smi)
if(NVIDIA_SMI)
  execute_process(COMMAND "${NVIDIA_SMI}" -L RESULT_VARIABLE smi_rc OUTPUT_VARIABLE smi
                  ERROR_QUIET)
  if(smi_rc EQUAL 0 AND smi MATCHES "GPU 0:" AND devices EQUAL 0)
    message(FATAL_ERROR "nvidia-smi lists a GPU but the CUDA runtime sees none:\n${smi}")
  endif()
endif()

file(REMOVE "${OUT}")
execute_process(COMMAND "${BENCH}" --quick --json "${OUT}" RESULT_VARIABLE rc
                OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr)

if(devices EQUAL 0)
  if(NOT rc EQUAL 2)
    message(FATAL_ERROR "no device: vlcache-bench-cuda --quick exited ${rc}, expected 2\n"
                        "${stdout}\n${stderr}")
  endif()
  if(NOT stderr MATCHES "no CUDA device")
    message(FATAL_ERROR "no device: the message does not name it: '${stderr}'")
  endif()
  if(EXISTS "${OUT}")
    message(FATAL_ERROR "no device: vlcache-bench-cuda still wrote ${OUT}")
  endif()
  message(STATUS "no CUDA device: vlcache-bench-cuda --quick exits 2 with: ${stderr}")
  return()
endif()

if(NOT rc EQUAL 0)
  message(FATAL_ERROR "vlcache-bench-cuda --quick exited with ${rc}\n${stdout}\n${stderr}")
endif()
if(NOT EXISTS "${OUT}")
  message(FATAL_ERROR "vlcache-bench-cuda --quick wrote no ${OUT}\n${stdout}")
endif()
file(READ "${OUT}" json)

function(expect_positive)  # a path of JSON keys
  string(JSON value ERROR_VARIABLE err GET "${json}" ${ARGN})
  if(err)
    message(FATAL_ERROR "${OUT}: no field '${ARGN}': ${err}")
  endif()
  if(NOT value GREATER 0)
    message(FATAL_ERROR "${OUT}: '${ARGN}' is ${value}, expected a positive number")
  endif()
endfunction()

string(JSON complete ERROR_VARIABLE err GET "${json}" complete)
if(err OR NOT complete)
  message(FATAL_ERROR "${OUT}: the run is not marked complete ${err}")
endif()
string(JSON name ERROR_VARIABLE err GET "${json}" device name)
if(err OR name STREQUAL "")
  message(FATAL_ERROR "${OUT}: no device name ${err}")
endif()
expect_positive(device memory_bytes)
expect_positive(device multiprocessors)
foreach(field bytes copy_ms copy_gbps read_ms read_gbps)
  expect_positive(copy ${field})
endforeach()

# Every decode case of the quick sizes fits on any card: none may be skipped.
string(JSON n LENGTH "${json}" decode)
if(NOT n GREATER 0)
  message(FATAL_ERROR "${OUT}: no decode cases")
endif()
math(EXPR last "${n} - 1")
foreach(i RANGE ${last})
  string(JSON skipped ERROR_VARIABLE not_skipped GET "${json}" decode ${i} skipped)
  if(NOT not_skipped)
    message(FATAL_ERROR "${OUT}: decode case ${i} skipped: ${skipped}")
  endif()
  foreach(field kv_heads context batch compressed_tokens full_ms compressed_ms ratio ideal_ratio
                full_kv_bytes compressed_kv_bytes full_gbps compressed_gbps full_fraction_of_copy
                compressed_fraction_of_copy)
    expect_positive(decode ${i} ${field})
  endforeach()
endforeach()

string(JSON n LENGTH "${json}" compression)
if(NOT n GREATER 0)
  message(FATAL_ERROR "${OUT}: no compression cases")
endif()
string(JSON with_gemm GET "${json}" gemm_reference)
math(EXPR last "${n} - 1")
foreach(i RANGE ${last})
  foreach(field kv_heads m scoring_rows keep observe_ms group_mean_ms topk_ms gather_ms total_ms)
    expect_positive(compression ${i} ${field})
  endforeach()
  if(with_gemm)
    expect_positive(compression ${i} layer_gemm_ms)
    expect_positive(compression ${i} total_over_layer_gemm)
  endif()
endforeach()
message(STATUS "vlcache-bench-cuda --quick on ${name}: ${OUT} has every field")
