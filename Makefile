# Thin wrapper over CMake: the README's commands.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test bench clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

configure: $(BUILD)/CMakeCache.txt

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: deps
	@$(MAKE) --no-print-directory build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Engine throughput at hidden size 4096 (2 layers), against this machine's copy bandwidth.
bench: build
	@$(BUILD)/bin/vlcache-bench-engine --hidden 4096 --intermediate 11008 --layers 2 --json $(BUILD)/bench-engine.json

clean:
	@rm -rf $(BUILD)
