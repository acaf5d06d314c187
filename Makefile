# Thin wrapper over CMake: the README's commands.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test bench bench-peer serve clean fuzz soak sanitize

# The model `make serve` runs: the shipped demo model when present, else a tiny random one.
MODEL ?= $(if $(wildcard models/demo/config.json),models/demo,$(BUILD)/models/tiny)
LISTEN ?= 127.0.0.1:50051
METRICS_LISTEN ?= 127.0.0.1:9464
HTTP_LISTEN ?= 127.0.0.1:8000
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
SOAK_SECONDS ?= 600
SANITIZE_TESTS ?=

all: build

deps:
	@./scripts/install-deps.sh
	@./scripts/python-venv.sh $(BUILD)/venv

$(BUILD)/CMakeCache.txt:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

configure: $(BUILD)/CMakeCache.txt

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: deps
	@$(MAKE) --no-print-directory build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The benchmarks of docs/BENCHMARKS.md: engine throughput at hidden size 4096 against memory
# bandwidth, the compressed cache against the full one, and AVH's metrics and learning against one
# pass over the bytes.
bench: build
	@$(BUILD)/bin/vlcache-bench-engine --hidden 4096 --intermediate 11008 --layers 2 --json $(BUILD)/bench-engine.json
	@$(BUILD)/bin/vlcache-bench-kvcache --prompts 2048,8192,32768 --budget 0.1 --repeats 3 --steps 6 --json $(BUILD)/bench-kvcache.json
	@$(BUILD)/bin/vlcache-bench-dq --json $(BUILD)/bench-dq.json

# vlcache against llama.cpp on the same random weights (bench/peer_llama_cpp.py): builds llama.cpp
# from the llama-cpp-python source on PyPI into $(BUILD)/peer once (scripts/peer-setup.sh), checks
# that both engines give the same greedy tokens, alternates them PEER_ROUNDS times and rewrites
# the peer table of docs/BENCHMARKS.md. Not part of `make test`; about 30 minutes the first time
# (the build, then 5 rounds of 4 to 7 minutes).
PEER_ROUNDS ?= 5
bench-peer: build
	@JOBS=$(JOBS) ./scripts/peer-setup.sh $(BUILD)
	@$(BUILD)/peer/venv/bin/python bench/peer_llama_cpp.py --build $(BUILD) --rounds $(PEER_ROUNDS) \
	  --json $(BUILD)/bench-peer.json --markdown docs/BENCHMARKS.md

serve: deps
	@$(MAKE) --no-print-directory build
	@if [ "$(MODEL)" = "$(BUILD)/models/tiny" ] && [ ! -f $(BUILD)/models/tiny/config.json ]; then \
	  echo "models/demo is not in this checkout yet: serving a tiny random model (answers are noise)"; \
	  $(BUILD)/bin/vlcache-make-tiny --out $(BUILD)/models/tiny --seed 1; fi
	@$(BUILD)/bin/vlcache-server --model $(MODEL) --listen $(LISTEN) --metrics-listen $(METRICS_LISTEN) \
	  --http-listen $(HTTP_LISTEN)

# Coverage-guided fuzzing of the parsers of outside bytes (fuzz/; clang, ASan and UBSan, in
# build-fuzz): FUZZ_SECONDS per target (60), FUZZ_TARGETS to choose. docs/RELIABILITY.md.
fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGETS="$(FUZZ_TARGETS)" JOBS=$(JOBS) ./scripts/fuzz.sh

# The project and its tests under AddressSanitizer, LeakSanitizer and UBSan (build-asan, every
# test), and under ThreadSanitizer (build-tsan, the engine loop's and the server's suites).
# SANITIZE=asan or tsan for one; SANITIZE_TESTS=regex for a subset. docs/RELIABILITY.md.
SANITIZE ?= asan tsan
sanitize: deps
	@SANITIZE="$(SANITIZE)" SANITIZE_TESTS="$(SANITIZE_TESTS)" JOBS=$(JOBS) ./scripts/sanitize.sh

# A bounded soak under churn against the real server (scripts/soak.py): SOAK_SECONDS of mixed
# traffic with cancellations, expiring deadlines, abandoned sessions and broken requests, then
# checks that the pool, memory, descriptors and threads came back. docs/RELIABILITY.md.
soak: build
	@python3 scripts/soak.py --seconds $(SOAK_SECONDS) --json $(BUILD)/soak.json

clean:
	@rm -rf $(BUILD)
