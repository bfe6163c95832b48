# Tern build. `make` builds into build/, `make test` runs every test,
# `make SAN=1 test` (or `make asan`) does the same with ASan+UBSan in
# build-asan/. See README.md.

ifeq ($(SAN),1)
BUILD ?= build-asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD ?= build
SANFLAGS :=
endif

CC ?= cc
OPT ?= -O2
CFLAGS := -std=gnu11 -Wall -Wextra -Werror $(OPT) -g -D_GNU_SOURCE -I. -MMD -MP $(SANFLAGS)
LDFLAGS := $(SANFLAGS)
LIBS := -luring -llz4 -ljansson -lssl -lcrypto -lz -lcpg -lvotequorum -lcmap -lqb -lpthread
TEST_LIBS := -lcmocka

CORE_SRCS := $(wildcard common/*.c) $(wildcard proto/*.c) $(wildcard dirtylog/*.c) $(wildcard migrate/*.c) \
	$(wildcard ha/*.c)
VMM_SRCS := $(filter-out node-vmm/main.c,$(wildcard node-vmm/*.c))
AGENT_SRCS := $(filter-out agent/main.c,$(wildcard agent/*.c))
CLI_SRCS := $(filter-out cli/main.c,$(wildcard cli/*.c))
# One archive: each program links only the objects it uses.
LIB := $(BUILD)/libtern.a
LIB_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(CORE_SRCS) $(VMM_SRCS) $(AGENT_SRCS) $(CLI_SRCS))
PROGRAMS := $(BUILD)/tern-vmm $(if $(wildcard agent/main.c),$(BUILD)/ternd) \
	$(if $(wildcard cli/main.c),$(BUILD)/ternctl) \
	$(if $(wildcard tests/tools/tern-testhosts.c),$(BUILD)/tern-testhosts)

UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(wildcard tests/unit/test_*.c))
INTEGRATION_TESTS := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(wildcard tests/integration/test_*.c))
# The spin models (docs/cluster-state.md, "The model"); `make model-deep`
# runs the slow checks too.
MODEL_TESTS := $(BUILD)/tests/model/test_models
# kvm_skip.c uses cmocka: only the test programs link it.
TEST_SUPPORT_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out tests/support/kvm_skip.c,$(wildcard tests/support/*.c)))
TEST_CMOCKA_OBJS := $(BUILD)/obj/tests/support/kvm_skip.o

all: $(PROGRAMS) $(BUILD)/testguest.elf $(UNIT_TESTS) $(INTEGRATION_TESTS) $(MODEL_TESTS) bench

include tests/guest/guest.mk

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/tern-vmm: $(BUILD)/obj/node-vmm/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/ternd: $(BUILD)/obj/agent/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/ternctl: $(BUILD)/obj/cli/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tern-testhosts: $(BUILD)/obj/tests/tools/tern-testhosts.o $(TEST_SUPPORT_OBJS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(TEST_SUPPORT_OBJS) $(TEST_CMOCKA_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(TEST_LIBS)

$(BUILD)/tests/integration/%: $(BUILD)/obj/tests/integration/%.o $(TEST_SUPPORT_OBJS) $(TEST_CMOCKA_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(TEST_LIBS)

# The spin models: a wrapper that runs tests/model/run-models.sh on $(BUILD).
$(MODEL_TESTS): tests/model/run-models.sh
	@mkdir -p $(dir $@)
	@printf '#!/bin/sh\nexec "%s/tests/model/run-models.sh" "%s" "$$@"\n' "$(CURDIR)" "$(abspath $(BUILD))" > $@
	@chmod +x $@

model-deep: deps
	@tests/model/run-models.sh $(BUILD) --deep

BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
bench: $(BENCH_BINS)
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(TEST_SUPPORT_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

deps:
	@scripts/install-deps.sh

# Tests install what they need first, so a fresh machine needs nothing by hand.
test: deps
	@$(MAKE) --no-print-directory all
	@tests/run-tests.sh $(BUILD) unit integration model

test-unit: deps
	@$(MAKE) --no-print-directory all
	@tests/run-tests.sh $(BUILD) unit

test-slow: deps
	@$(MAKE) --no-print-directory all
	@tests/slow/linux-banner.sh $(BUILD)

# The main job: a three-host demo cluster on this machine (README).
# KEEP=1 leaves it running; `make demo-down` removes it.
demo:
	@scripts/require-kvm.sh "make demo"
	@scripts/install-deps.sh
	@$(MAKE) --no-print-directory all
	@KEEP=$(KEEP) scripts/demo.sh $(BUILD)

demo-down:
	@scripts/demo.sh $(BUILD) down

asan:
	@$(MAKE) --no-print-directory SAN=1 test

bench-boot:
	@scripts/require-kvm.sh "make bench-boot"
	@$(MAKE) --no-print-directory all
	@$(BUILD)/bench/boot $(BUILD)

bench-snapshot:
	@scripts/require-kvm.sh "make bench-snapshot"
	@$(MAKE) --no-print-directory all
	@$(BUILD)/bench/snapshot $(BUILD)

bench-migrate:
	@scripts/require-kvm.sh "make bench-migrate"
	@$(MAKE) --no-print-directory all
	@$(BUILD)/bench/migrate $(BUILD)

bench-agent: all
	@$(BUILD)/bench/agent $(BUILD)

# Fuzzers (clang + libFuzzer): every tests/fuzz/fuzz_X.c, linked with the
# library, run for FUZZ_SECONDS each. Crashes are left in build-fuzz/.
FUZZ_SECONDS ?= 30
# The library is compiled once into its own archive (fuzzer-instrumented),
# and each harness links against it.
FUZZ_CFLAGS := -std=gnu11 -D_GNU_SOURCE -I. -g -O1 -MMD -MP
FUZZ_LIB := build-fuzz/libtern-fuzz.a
FUZZ_OBJS := $(patsubst %.c,build-fuzz/obj/%.o,$(CORE_SRCS) $(VMM_SRCS) $(AGENT_SRCS) $(CLI_SRCS))
FUZZERS := $(patsubst tests/fuzz/%.c,build-fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
build-fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@
$(FUZZ_LIB): $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^
build-fuzz/%: tests/fuzz/%.c $(FUZZ_LIB)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_LIB) $(LIBS)
fuzz: deps
	@command -v clang >/dev/null || apt-get install -y -qq clang >/dev/null
	@$(MAKE) --no-print-directory $(FUZZERS)
	@for f in $(FUZZERS); do mkdir -p $$f.corpus && echo "== $$f" && \
	    dict=tests/fuzz/$$(basename $$f).dict; \
	    (cd build-fuzz && ./$$(basename $$f) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        $$( [ -f ../$$dict ] && echo -dict=../$$dict ) $$(basename $$f).corpus 2>&1 | tail -4) || exit 1; done

clean:
	rm -rf build build-asan build-fuzz

.PHONY: all deps demo demo-down test test-unit test-slow model-deep asan bench bench-boot bench-snapshot bench-migrate bench-agent fuzz clean

-include $(shell find $(BUILD)/obj build-fuzz/obj -name '*.d' 2>/dev/null)
