#!/usr/bin/env bash
# Installs the Debian 12 packages vlcache builds and tests with. Idempotent and quiet when
# everything is already present; run by `make deps` (and so by `make test`).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libtorch-dev libopenblas0-pthread          # LibTorch; OpenBLAS replaces the slow reference BLAS
  libabsl-dev                                # absl::Status / StatusOr
  nlohmann-json3-dev libspdlog-dev libcli11-dev
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libopencv-videoio-dev
  ffmpeg                                     # video codecs behind OpenCV's videoio
  libgtest-dev libbenchmark-dev
  openssl                                    # the TLS test makes its own certificate
  libboost-math-dev libeigen3-dev            # data quality: chi-squared p-values, least squares
  libsqlite3-dev                             # data quality: the AVH history store (dq/store.h)
  libcpp-httplib-dev                         # the Open Inference Protocol's HTTP/REST binding
  libssl-dev zlib1g-dev                      # session snapshots: SHA-256, CRC-32
  # the gRPC service
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  prometheus-cpp-dev libyaml-cpp-dev
  python3-grpcio python3-protobuf             # the Python client, tested with Debian's python3
  prometheus                                  # a real Prometheus server and promtool, for tests
  nginx                                       # the replicas' proxy (deploy/proxy), for tests
  python3-venv python3-yaml                   # the PyPI checkers' environment; manifest tests
  python3-pip python3-setuptools              # the Python client package, built for Debian's python
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/vlcache-apt.log 2>&1; then
  $SUDO apt-get update -q >/tmp/vlcache-apt.log 2>&1
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/vlcache-apt.log 2>&1 \
    || { tail -n 30 /tmp/vlcache-apt.log >&2; exit 1; }
fi
echo "install-deps: done"
