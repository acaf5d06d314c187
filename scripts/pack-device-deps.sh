#!/usr/bin/env bash
# Packs the small dependencies the GPU machine lacks (it has LibTorch, CUDA and CMake, and no
# package registry) into .devdeps/, an ignored folder that `device` carries: abseil (headers and
# shared libraries), and the header-only nlohmann-json and CLI11, and GoogleTest, with their CMake
# configs. Run here before a device check.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.devdeps
rm -rf "$out"
mkdir -p "$out/usr/include" "$out/usr/lib/x86_64-linux-gnu/cmake" "$out/usr/share/cmake"
lib=/usr/lib/x86_64-linux-gnu
cp -a /usr/include/absl /usr/include/nlohmann /usr/include/CLI /usr/include/gtest /usr/include/gmock "$out/usr/include/"
cp -a $lib/libabsl_*.so* $lib/libgtest*.a $lib/libgmock*.a "$out/usr/lib/x86_64-linux-gnu/"
cp -a $lib/cmake/absl $lib/cmake/GTest "$out/usr/lib/x86_64-linux-gnu/cmake/"
cp -a /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$out/usr/share/cmake/"
du -sh "$out"
