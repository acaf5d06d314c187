# ---- the demo model: its task encoding (VQA items -> model inputs), the trainer and the evaluator.
# Needs the whole engine (tokenizer, media), the VQA generator and the trainable model.
if(TARGET vlc_engine AND TARGET vlc_vqa AND TARGET vlc_train)
  add_library(vlc_demo STATIC tools/train/demo_task.cc)
  target_link_libraries(vlc_demo PUBLIC vlc_train vlc_vqa vlc_engine)
  target_compile_options(vlc_demo PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(VLC_USE_PCH)
    target_precompile_headers(vlc_demo REUSE_FROM vlc_engine_core)
  endif()

  add_executable(vlcache-train tools/train/train_main.cc)
  target_link_libraries(vlcache-train PRIVATE vlc_demo vlc_make_tiny CLI11::CLI11)

  add_executable(vlcache-eval tools/eval_main.cc)
  target_link_libraries(vlcache-eval PRIVATE vlc_vqa vlc_engine CLI11::CLI11)

  if(VLC_BUILD_TESTS)
    find_package(GTest REQUIRED)
    include(GoogleTest)
    add_executable(demo_task_test tests/tools/demo_task_test.cc)
    target_link_libraries(demo_task_test PRIVATE vlc_demo vlc_make_tiny GTest::gtest
                          GTest::gtest_main)
    if(VLC_USE_PCH)
      target_precompile_headers(demo_task_test REUSE_FROM vlc_engine_core)
    endif()
    gtest_discover_tests(demo_task_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)

    # The shipped model (models/demo) answers held-out items; vlcache-eval writes its JSON.
    add_executable(demo_model_test tests/tools/demo_model_test.cc)
    target_link_libraries(demo_model_test PRIVATE vlc_vqa vlc_engine GTest::gtest GTest::gtest_main)
    target_compile_definitions(demo_model_test PRIVATE VLC_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
                                                       VLC_BIN_DIR="${CMAKE_BINARY_DIR}/bin")
    add_dependencies(demo_model_test vlcache-eval)
    if(VLC_USE_PCH)
      target_precompile_headers(demo_model_test REUSE_FROM vlc_engine_core)
    endif()
    gtest_discover_tests(demo_model_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)
  endif()
endif()
