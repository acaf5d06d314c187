# Smoke test of vlcache-bench-dq (registered in cmake/dq.cmake as DqBench.QuickRunWritesItsFields):
# runs `--quick --json OUT` and checks that the JSON has the fields docs/BENCHMARKS.md reports,
# each a positive number, and a non-empty breakdown for every part.
#   cmake -DBENCH=path/to/vlcache-bench-dq -DOUT=out.json -P bench_smoke.cmake
if(NOT BENCH OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DBENCH=<vlcache-bench-dq> -DOUT=<json> -P bench_smoke.cmake")
endif()
file(REMOVE "${OUT}")
execute_process(COMMAND "${BENCH}" --quick --json "${OUT}" RESULT_VARIABLE rc
                OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "vlcache-bench-dq --quick exited with ${rc}\n${stdout}\n${stderr}")
endif()
if(NOT EXISTS "${OUT}")
  message(FATAL_ERROR "vlcache-bench-dq --quick wrote no ${OUT}\n${stdout}")
endif()
file(READ "${OUT}" json)

set(positive
  "config rows" "config columns" "config runs" "config repeats" "config threads")
foreach(part numeric_metrics string_metrics)
  foreach(field rows value_bytes seconds rows_per_s mb_per_s limit_seconds limit_mb_per_s
                ratio_to_limit)
    list(APPEND positive "${part} ${field}")
  endforeach()
endforeach()
list(APPEND positive "string_metrics hash_count_seconds" "string_metrics before_seconds"
  "numeric_metrics before_seconds")
foreach(field columns numeric_columns string_columns runs history_value_bytes seconds cpu_seconds
              seconds_per_column seconds_per_numeric_column seconds_per_string_column
              metrics_seconds metrics_share limit_seconds ratio_to_limit constraints
              append_and_learn_seconds)
  list(APPEND positive "learn ${field}")
endforeach()
# A difference of two timings, clamped at 0: present and not negative.
set(non_negative "learn append_and_learn_store_seconds")

foreach(path IN LISTS positive)
  string(REPLACE " " ";" keys "${path}")
  string(JSON value ERROR_VARIABLE err GET "${json}" ${keys})
  if(err)
    message(FATAL_ERROR "${OUT}: no field '${path}': ${err}")
  endif()
  if(NOT value GREATER 0)
    message(FATAL_ERROR "${OUT}: '${path}' is ${value}, expected a positive number")
  endif()
endforeach()

foreach(path IN LISTS non_negative)
  string(REPLACE " " ";" keys "${path}")
  string(JSON value ERROR_VARIABLE err GET "${json}" ${keys})
  if(err OR value LESS 0)
    message(FATAL_ERROR "${OUT}: '${path}' is missing or negative: ${value} ${err}")
  endif()
endforeach()

string(JSON share GET "${json}" learn metrics_share)
if(share GREATER 1.5)
  message(FATAL_ERROR "${OUT}: learn metrics_share ${share}: the parts exceed the whole")
endif()
foreach(part numeric_metrics string_metrics learn)
  string(JSON n ERROR_VARIABLE err LENGTH "${json}" ${part} breakdown)
  if(err OR NOT n GREATER 0)
    message(FATAL_ERROR "${OUT}: '${part} breakdown' is missing or empty ${err}")
  endif()
  math(EXPR last "${n} - 1")
  foreach(i RANGE ${last})
    string(JSON phase ERROR_VARIABLE err GET "${json}" ${part} breakdown ${i} phase)
    string(JSON seconds ERROR_VARIABLE err2 GET "${json}" ${part} breakdown ${i} seconds)
    if(err OR err2 OR phase STREQUAL "" OR seconds LESS 0)
      message(FATAL_ERROR "${OUT}: '${part} breakdown ${i}' lacks a phase or seconds >= 0")
    endif()
  endforeach()
endforeach()
message(STATUS "vlcache-bench-dq --quick: ${OUT} has every field")
