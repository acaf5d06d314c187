# ---- vqa: the synthetic visual question-answering set (tools/vqa/) that trains the demo model and
# measures accuracy against KV-cache budget. Plain C++ and OpenCV, no LibTorch, so the generator
# builds and runs fast and the evaluator can link it beside the engine.
if(VLC_WITH_MEDIA)
  # Debian ships OpenCV without a CMake config (see the media section of CMakeLists.txt); these
  # find the same cached paths.
  find_path(OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
  set(VLC_VQA_OPENCV_LIBS)
  foreach(m core imgproc imgcodecs)
    find_library(OPENCV_${m}_LIBRARY opencv_${m} REQUIRED)
    list(APPEND VLC_VQA_OPENCV_LIBS ${OPENCV_${m}_LIBRARY})
  endforeach()

  add_library(vlc_vqa STATIC tools/vqa/vqa.cc tools/vqa/second_renderer.cc)
  target_include_directories(vlc_vqa PUBLIC ${CMAKE_SOURCE_DIR} ${OPENCV_INCLUDE_DIR})
  target_link_libraries(vlc_vqa PUBLIC ${VLC_VQA_OPENCV_LIBS} absl::status absl::statusor
                        absl::strings nlohmann_json::nlohmann_json)
  target_compile_options(vlc_vqa PRIVATE -Wall -Wextra -Wno-unused-parameter)

  find_package(CLI11 CONFIG REQUIRED)
  add_executable(vlcache-vqa tools/vqa/vqa_main.cc)
  target_link_libraries(vlcache-vqa PRIVATE vlc_vqa CLI11::CLI11)

  if(VLC_BUILD_TESTS)
    # tests/CMakeLists.txt finds GTest too, but it is added after this file.
    find_package(GTest REQUIRED)
    include(GoogleTest)
    add_executable(vqa_test tests/tools/vqa_test.cc tests/tools/second_renderer_test.cc)
    target_link_libraries(vqa_test PRIVATE vlc_vqa GTest::gtest GTest::gtest_main)
    target_compile_definitions(vqa_test PRIVATE VLC_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
    # The suite runs the command-line tool as a user would.
    add_dependencies(vqa_test vlcache-vqa)
    # The prefix lets `ctest -R vqa` find the suites (VqaGenerator, VqaRender, ...): -R is
    # case-sensitive.
    gtest_discover_tests(vqa_test TEST_PREFIX "vqa." DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)
  endif()
endif()
