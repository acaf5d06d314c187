# ---- training: the trainable LLaVA (autograd over the engine's function) and its export.
# LibTorch only, like the engine core; its test also drives engine::Pipeline where media and the
# tokenizer are built.
add_library(vlc_train STATIC tools/train/trainable_llava.cc)
target_link_libraries(vlc_train PUBLIC vlc_engine_core vlc_random_weights ${TORCH_LIBRARIES})
target_compile_options(vlc_train PRIVATE -Wall -Wextra -Wno-unused-parameter)
if(VLC_USE_PCH)
  target_precompile_headers(vlc_train REUSE_FROM vlc_engine_core)
endif()

if(VLC_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
  add_executable(trainable_llava_test tests/tools/trainable_llava_test.cc)
  target_link_libraries(trainable_llava_test PRIVATE vlc_train GTest::gtest GTest::gtest_main)
  if(TARGET vlc_make_tiny)
    # The export is also checked end to end through Pipeline::Load with make_tiny's tokenizer.
    target_link_libraries(trainable_llava_test PRIVATE vlc_make_tiny)
    target_include_directories(trainable_llava_test PRIVATE ${OPENCV_INCLUDE_DIR})
    target_compile_definitions(trainable_llava_test PRIVATE VLC_TRAIN_TEST_PIPELINE=1)
  endif()
  if(VLC_USE_PCH)
    target_precompile_headers(trainable_llava_test REUSE_FROM vlc_engine_core)
  endif()
  gtest_discover_tests(trainable_llava_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)
endif()
