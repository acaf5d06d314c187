#!/usr/bin/env bash
# `make sanitize`: the project and its tests built with sanitizers, each in its own build
# directory, and the tests run there.
#   asan  AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer (build-asan): every test
#         of `make test`, the real server processes the integration tests start included.
#   tsan  ThreadSanitizer (build-tsan): the multi-threaded parts, the engine loop's suites
#         (scheduler, sessions, media workers) and the server's suites against the real server.
# An ASan, LSan or UBSan report fails the test it happens in (halt_on_error, exitcode 66); TSan's
# reports are sorted after the run (scripts/sanitizers/tsan_reports.py): one in the project's own
# code fails it, one whose accesses are all inside an uninstrumented library (Debian's gRPC) is
# listed. Logs go to BUILD/sanitize-logs/. Reports in libraries built without the sanitizer that
# can be matched narrowly are suppressed by scripts/sanitizers/*.supp, each with its reason.
#   make sanitize                   both
#   make sanitize SANITIZE=tsan     one
#   SANITIZE_TESTS=regex            a subset of the tests (ctest -R)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
WHICH="${SANITIZE:-asan tsan}"
JOBS="${JOBS:-$(nproc)}"
SUPP="$ROOT/scripts/sanitizers"

# The project's Python environment serves the sanitized builds too (the tests find it in their
# build directory).
link_venv() {
  local build="$1"
  ./scripts/python-venv.sh build/venv
  mkdir -p "$build"
  [ -e "$build/venv" ] || ln -s "$ROOT/build/venv" "$build/venv"
}

configure() {  # build-dir flags
  cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=Release -DVLC_BUILD_BENCH=OFF -DVLC_WITH_CUDA=OFF \
    -DCMAKE_C_FLAGS="$2" -DCMAKE_CXX_FLAGS="$2" \
    -DCMAKE_EXE_LINKER_FLAGS="$3" -DCMAKE_SHARED_LINKER_FLAGS="$3" >/dev/null
}

status=0
for s in $WHICH; do
  case "$s" in
  asan)
    B=build-asan
    FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g1"
    link_venv "$B"
    configure "$B" "$FLAGS" "-fsanitize=address,undefined"
    start=$(date +%s)
    cmake --build "$B" -j "$JOBS"
    built=$(date +%s)
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:exitcode=66:abort_on_error=0:detect_stack_use_after_return=0:allocator_may_return_null=1:log_path=$ROOT/$B/sanitize-logs/asan"
    export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="suppressions=$SUPP/ubsan.supp:print_stacktrace=1:halt_on_error=1:log_path=$ROOT/$B/sanitize-logs/ubsan"
    TESTS="${SANITIZE_TESTS:-.}"
    PIN=""
    ;;
  tsan)
    B=build-tsan
    FLAGS="-fsanitize=thread -fno-omit-frame-pointer -g1"
    link_venv "$B"
    configure "$B" "$FLAGS" "-fsanitize=thread"
    start=$(date +%s)
    cmake --build "$B" -j "$JOBS" --target scheduler_test session_test media_test \
      server_session_test integration_test server_startup_test cpp_client_test http_gateway_test \
      observability_test metrics_test telemetry_watch_test self_watch_test data_quality_test \
      loadtest_test
    built=$(date +%s)
    # OpenMP (libgomp) and OpenBLAS are not instrumented: their barriers are invisible to TSan.
    # The tests run pinned to one core (taskset below), so the engine sizes its thread pool to 1
    # and its parallel loops run on the calling thread; every thread of the project's own (the
    # engine loop, media workers, gRPC callbacks, the HTTP gateway, the watchers) still runs.
    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    # A report does not stop the process: scripts/sanitizers/tsan_reports.py sorts them after
    # the run into the project's (which fail it) and those inside uninstrumented libraries.
    export TSAN_OPTIONS="suppressions=$SUPP/tsan.supp:halt_on_error=0:exitcode=0:second_deadlock_stack=1:log_path=$ROOT/$B/sanitize-logs/tsan"
    PIN="taskset -c 0"
    # The suites TSan can judge. Those that drive the server through gRPC's callback client
    # (CppClientTest, CppClientExample, LoadtestTest, ServerStartupTest, ServerTest,
    # ObservabilityTest) drown in reports on the messages and tags grpcpp's templates hand to
    # Debian's uninstrumented gRPC; docs/RELIABILITY.md. SANITIZE_TESTS runs them.
    TESTS="${SANITIZE_TESTS:-^(SchedulerTest|SessionMoveTest|GeneratorSession|DecodeVideoTest|SessionServerTest|HttpGatewayTest|Metrics|TelemetryWatchTest|SelfWatchTest|DataQualityServiceTest)[.]}"
    ;;
  *) echo "sanitize: unknown sanitizer '$s' (asan, tsan)" >&2; exit 2 ;;
  esac
  rm -rf "$B/sanitize-logs"; mkdir -p "$B/sanitize-logs"
  echo "sanitize: $s built in $((built - start)) s; running the tests"
  # setarch -R: ThreadSanitizer needs the address space layout it was built for, which the
  # kernel's mmap randomisation (vm.mmap_rnd_bits 28 and up) can break.
  # deploy.Image checks that the release binary needs only the runtime image's packages; a
  # sanitized binary also needs the sanitizers' runtimes, so it is left out here.
  if ! (cd "$B" && $PIN setarch "$(uname -m)" -R ctest --output-on-failure -j "$JOBS" -R "$TESTS" \
        -E '^deploy[.]Image$' --timeout 1200 2>&1 | tee sanitize-ctest.log | tail -n 40); then
    status=1
  fi
  if grep -qE "[1-9][0-9]* tests failed out of" "$B/sanitize-ctest.log"; then status=1; fi
  done_at=$(date +%s)
  echo "sanitize: $s tests ran in $((done_at - built)) s"
  if [ "$s" = tsan ]; then
    if ls "$B"/sanitize-logs/* >/dev/null 2>&1 &&
       ! python3 "$SUPP/tsan_reports.py" "$ROOT" "$B"/sanitize-logs/*; then
      echo "sanitize: tsan found races in the project's code: $B/sanitize-logs" >&2
      status=1
    fi
  elif ls "$B"/sanitize-logs/* >/dev/null 2>&1; then
    echo "sanitize: $s reports in $B/sanitize-logs:" >&2
    ls "$B"/sanitize-logs >&2
    status=1
  fi
done
exit $status
