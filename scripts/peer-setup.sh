#!/usr/bin/env bash
# Sets up the peer benchmark (`make bench-peer`, bench/peer_llama_cpp.py) in BUILD/peer:
#  - llama.cpp, built from the llama-cpp-python source distribution on PyPI (which vendors it)
#    with this machine's own instruction set (GGML_NATIVE), as a user of that package gets it:
#    llama-bench, llama-batched-bench, llama-quantize, libllama and libmtmd (its multimodal
#    library: the CLIP vision tower and projector, for bench/peer_demo_ttft.py), in
#    BUILD/peer/llama.cpp/bin;
#  - a virtual environment, BUILD/peer/venv, with the `gguf` writer from PyPI, the tokenizer
#    library and the Python dependencies of the package's own bindings (used from the source, on
#    the library built here, to check that both engines produce the same greedy tokens).
# Idempotent: finished steps are skipped. Not part of `make test`.
set -euo pipefail
BUILD="${1:-build}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
GGUF_VERSION="${GGUF_VERSION:-0.19.0}"
JOBS="${JOBS:-$(nproc)}"
PEER="$BUILD/peer"
SRC="$PEER/llama_cpp_python-$VERSION"
mkdir -p "$PEER"

VENV="$PEER/venv"
STAMP="$VENV/.peer-$VERSION-$GGUF_VERSION"
if [ ! -f "$STAMP" ]; then
  echo "peer-setup: creating $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "gguf==$GGUF_VERSION" numpy \
    sentencepiece==0.2.1 "diskcache>=5.6.1" "jinja2>=2.11.3" "typing-extensions>=4.5.0" \
    || { echo "peer-setup: pip could not install the peer environment (is PyPI reachable?)" >&2; exit 1; }
  touch "$STAMP"
fi
if [ ! -d "$SRC/vendor/llama.cpp" ]; then
  echo "peer-setup: downloading llama-cpp-python $VERSION (source) from PyPI"
  "$PEER/venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$VERSION" -d "$PEER" \
    || { echo "peer-setup: pip could not download llama-cpp-python $VERSION (is PyPI reachable?)" >&2; exit 1; }
  tar -xzf "$PEER/llama_cpp_python-$VERSION.tar.gz" -C "$PEER"
fi

LLAMA_BUILD="$PEER/llama.cpp"
if [ ! -x "$LLAMA_BUILD/bin/llama-bench" ] || [ ! -x "$LLAMA_BUILD/bin/llama-quantize" ] \
   || [ ! -x "$LLAMA_BUILD/bin/llama-batched-bench" ] \
   || [ ! -f "$LLAMA_BUILD/bin/libmtmd.so" ]; then
  echo "peer-setup: building llama.cpp (llama-bench, llama-batched-bench, llama-quantize, libllama, libmtmd; several minutes)"
  # The tools' directory (LLAMA_BUILD_TOOLS) is where the mtmd library target is defined.
  cmake -S "$SRC/vendor/llama.cpp" -B "$LLAMA_BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_CURL=OFF >/dev/null
  cmake --build "$LLAMA_BUILD" -j "$JOBS" \
    --target llama-bench llama-batched-bench llama-quantize llama mtmd >/dev/null
fi

echo "peer-setup: ready in $PEER"
