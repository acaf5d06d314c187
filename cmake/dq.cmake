# ---- dq: Auto-Validate-by-History (docs/METHODS.md). Plain C++ over Abseil, nlohmann_json,
# Boost.Math (header-only: the chi-squared and normal distributions) and Eigen (header-only), no
# LibTorch: the module uses neither the engine nor the server (the layout in docs/ARCHITECTURE.md).
find_package(Boost 1.74 REQUIRED)
# Least squares for the stationarity tests (augmented Dickey-Fuller).
find_package(Eigen3 3.3 REQUIRED NO_MODULE)
# The AVH history (runs, metric values, learned programs) lives in SQLite: dq/store.h.
find_package(SQLite3 REQUIRED)

# ==== vlc_dq sources: one line per file; each change adds its own files here.
set(VLC_DQ_SOURCES
  # foundations: runs as tables, CSV/JSON readers, the metric library, Kolmogorov distribution
  dq/table.cc
  dq/io.cc
  dq/kolmogorov.cc
  dq/metrics.cc
  # stationarity (ADF test, MacKinnon tables, transform search) and FPR bounds / Q(M, k)
  dq/stationarity.cc
  dq/bounds.cc
  # the AVH history persisted in SQLite
  dq/store.cc
  # synthetic issues (recall estimate), learning AVH programs and validating runs with them
  dq/issues.cc
  dq/avh.cc
  # the anchors AVH is compared with, and the evaluation harness
  dq/baselines.cc
  dq/evaluate.cc
  # a pipeline's history in the store: append and re-learn, validate (CLI and gRPC service)
  dq/pipeline_service.cc
)
# ==== end of vlc_dq sources

add_library(vlc_dq STATIC ${VLC_DQ_SOURCES})
target_include_directories(vlc_dq PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(vlc_dq PUBLIC absl::status absl::statusor absl::strings absl::flat_hash_map
                      nlohmann_json::nlohmann_json
                      PRIVATE Boost::headers Eigen3::Eigen SQLite::SQLite3)
target_compile_options(vlc_dq PRIVATE -Wall -Wextra -Wno-unused-parameter)

# The command line: learn / validate / eval (tools/dq_main.cc).
find_package(CLI11 CONFIG REQUIRED)
add_executable(vlcache-dq tools/dq_main.cc)
target_link_libraries(vlcache-dq PRIVATE vlc_dq CLI11::CLI11)
target_compile_options(vlcache-dq PRIVATE -Wall -Wextra -Wno-unused-parameter)

if(VLC_BUILD_TESTS)
  # tests/CMakeLists.txt finds GTest too, but it is added after this file.
  find_package(GTest REQUIRED)
  include(GoogleTest)
  # One executable per tests/dq/*_test.cc, named dq_<file> because other modules have files of
  # the same names (tests/server/metrics_test.cc). The suites are named Dq*, so `ctest -R Dq`
  # runs them all.
  file(GLOB VLC_DQ_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/dq/*_test.cc)
  foreach(src ${VLC_DQ_TESTS})
    get_filename_component(stem ${src} NAME_WE)
    set(name dq_${stem})
    add_executable(${name} ${src})
    target_link_libraries(${name} PRIVATE vlc_dq GTest::gtest GTest::gtest_main)
    # The real data sets are in the repository (tests/data/avh) and are read in place.
    target_compile_definitions(${name} PRIVATE VLC_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
    if(name STREQUAL dq_cli_test)
      # The CLI test runs the real binary, as a user would.
      target_compile_definitions(${name} PRIVATE VLC_BIN_DIR="${CMAKE_RUNTIME_OUTPUT_DIRECTORY}")
      add_dependencies(${name} vlcache-dq)
    endif()
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)
  endforeach()
  # The throughput benchmark (bench/dq_bench.cc, defined with the other benchmarks): its --quick
  # run must finish and write every field docs/BENCHMARKS.md reports.
  if(TARGET vlcache-bench-dq)
    add_test(NAME DqBench.QuickRunWritesItsFields
             COMMAND ${CMAKE_COMMAND} -DBENCH=$<TARGET_FILE:vlcache-bench-dq>
                     -DOUT=${CMAKE_BINARY_DIR}/dq-bench-smoke.json
                     -P ${CMAKE_SOURCE_DIR}/tests/dq/bench_smoke.cmake)
    set_tests_properties(DqBench.QuickRunWritesItsFields PROPERTIES TIMEOUT 300)
  endif()
endif()
