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
# EXTRA_CFLAGS/EXTRA_LDFLAGS: added flags (debian/rules passes dpkg-buildflags').
CFLAGS := -std=gnu11 -Wall -Wextra -Werror $(OPT) -g -D_GNU_SOURCE -I. -MMD -MP $(SANFLAGS) $(EXTRA_CFLAGS)
LDFLAGS := $(SANFLAGS) $(EXTRA_LDFLAGS)
LIBS := -luring -llz4 -ljansson -lssl -lcrypto -lz -lcpg -lvotequorum -lcmap -lqb -lmicrohttpd -lpthread
TEST_LIBS := -lcmocka

CORE_SRCS := $(wildcard common/*.c) $(wildcard proto/*.c) $(wildcard dirtylog/*.c) $(wildcard migrate/*.c) \
	$(wildcard ha/*.c) $(wildcard fencing/*.c)
VMM_SRCS := $(filter-out node-vmm/main.c,$(wildcard node-vmm/*.c))
AGENT_SRCS := $(filter-out agent/main.c,$(wildcard agent/*.c))
CLI_SRCS := $(filter-out cli/main.c,$(wildcard cli/*.c))
# One archive: each program links only the objects it uses.
LIB := $(BUILD)/libtern.a
LIB_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(CORE_SRCS) $(VMM_SRCS) $(AGENT_SRCS) $(CLI_SRCS))
PROGRAMS := $(BUILD)/tern-vmm $(if $(wildcard agent/main.c),$(BUILD)/ternd) \
	$(if $(wildcard cli/main.c),$(BUILD)/ternctl) \
	$(if $(wildcard tests/tools/tern-testhosts.c),$(BUILD)/tern-testhosts) \
	$(if $(wildcard tests/tools/tern-vmm-standin.c),$(BUILD)/tern-vmm-standin) \
	$(if $(wildcard tests/tools/tern-watchdog-standin.c),$(BUILD)/tern-watchdog-standin)

UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(wildcard tests/unit/test_*.c))
INTEGRATION_TESTS := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(wildcard tests/integration/test_*.c))
# kvm_skip.c and ternd_assert.c use cmocka: only the test programs link them.
TEST_CMOCKA_SRCS := tests/support/kvm_skip.c tests/support/ternd_assert.c
# An agent in the test's own process on a one-node corosync stand-in
# (tests/support/inproc_agent.h): its cs_link_* functions replace
# corosync_link.o, so only the programs that ask for it link it, before the
# library (INPROC_AGENT_TESTS, fuzz_agent_request).
INPROC_AGENT_SRCS := tests/support/inproc_agent.c tests/support/fake_corosync.c
INPROC_AGENT_TESTS := $(BUILD)/tests/unit/test_agent_api
TEST_SUPPORT_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out $(TEST_CMOCKA_SRCS) $(INPROC_AGENT_SRCS),$(wildcard tests/support/*.c)))
TEST_CMOCKA_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(TEST_CMOCKA_SRCS))
INPROC_AGENT_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(INPROC_AGENT_SRCS))

# The spin models (docs/cluster-state.md, "The model"); `make model-deep`
# runs the slow checks too.
MODEL_TESTS := $(BUILD)/tests/model/test_models

all: $(PROGRAMS) $(BUILD)/testguest.elf $(UNIT_TESTS) $(INTEGRATION_TESTS) $(MODEL_TESTS) bench dist

# What `--version` prints (common/version.h): scripts/version.sh, unless given
# (debian/rules passes the package's version).
ifeq ($(origin VERSION),undefined)
VERSION := $(shell scripts/version.sh)
endif
# Installed layout (FHS); docs/install.md. ternd's default vmm_path is
# compiled in, so build with the PREFIX you install with.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
LIBEXECDIR ?= $(PREFIX)/libexec
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
# Objects that bake these strings in are rebuilt when they change.
BAKED := $(VERSION) $(LIBEXECDIR)
$(BUILD)/baked.txt: FORCE
	@mkdir -p $(dir $@)
	@echo '$(BAKED)' | cmp -s - $@ || echo '$(BAKED)' > $@
$(BUILD)/obj/common/version.o: CFLAGS += -DTERN_VERSION='"$(VERSION)"'
$(BUILD)/obj/agent/config.o: CFLAGS += -DTERN_LIBEXECDIR='"$(LIBEXECDIR)"'
$(BUILD)/obj/common/version.o $(BUILD)/obj/agent/config.o: $(BUILD)/baked.txt

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

# A VMM stand-in for agent tests on machines without KVM (it runs no guest).
$(BUILD)/tern-vmm-standin: $(BUILD)/obj/tests/tools/tern-vmm-standin.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# A watchdog device stand-in for tests (this machine has no /dev/watchdog):
# kills a test host's cgroup when not fed (docs/fencing.md).
$(BUILD)/tern-watchdog-standin: $(BUILD)/obj/tests/tools/tern-watchdog-standin.o
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(TEST_SUPPORT_OBJS) $(TEST_CMOCKA_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(TEST_LIBS)

$(INPROC_AGENT_TESTS): $(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(INPROC_AGENT_OBJS) \
		$(TEST_SUPPORT_OBJS) $(TEST_CMOCKA_OBJS) $(LIB)
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

# What a host needs (docs/install.md): the programs, man pages (scdoc
# sources in docs/man), the systemd unit, ternd.conf, bash completion.
INSTALL_PROGRAMS := $(BUILD)/ternd $(BUILD)/ternctl $(BUILD)/tern-vmm
MAN_PAGES := $(patsubst docs/man/%.scd,$(BUILD)/man/%,$(wildcard docs/man/*.scd))
dist: $(INSTALL_PROGRAMS) $(MAN_PAGES) $(BUILD)/ternd.service
$(BUILD)/man/%: docs/man/%.scd
	@mkdir -p $(dir $@)
	scdoc < $< > $@
$(BUILD)/ternd.service: dist/systemd/ternd.service.in $(BUILD)/baked.txt
	sed 's|@SBINDIR@|$(SBINDIR)|g' $< > $@

install: dist
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR)/tern \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(SYSCONFDIR)/tern \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BUILD)/ternd $(DESTDIR)$(SBINDIR)/ternd
	install -m 0755 $(BUILD)/ternctl $(DESTDIR)$(BINDIR)/ternctl
	install -m 0755 $(BUILD)/tern-vmm $(DESTDIR)$(LIBEXECDIR)/tern/tern-vmm
	install -m 0644 $(BUILD)/ternd.service $(DESTDIR)$(UNITDIR)/ternd.service
	install -m 0644 dist/bash-completion/ternctl $(DESTDIR)$(BASHCOMPDIR)/ternctl
	for m in $(MAN_PAGES); do install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/; done
	@# An edited ternd.conf is never overwritten.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/tern/ternd.conf ]; then \
	    echo "keeping $(DESTDIR)$(SYSCONFDIR)/tern/ternd.conf (the shipped one is dist/ternd.conf)"; \
	else install -m 0644 dist/ternd.conf $(DESTDIR)$(SYSCONFDIR)/tern/ternd.conf; fi

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/ternd $(DESTDIR)$(BINDIR)/ternctl \
	    $(DESTDIR)$(LIBEXECDIR)/tern/tern-vmm $(DESTDIR)$(UNITDIR)/ternd.service \
	    $(DESTDIR)$(BASHCOMPDIR)/ternctl $(foreach m,$(MAN_PAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m)))
	-rmdir $(DESTDIR)$(LIBEXECDIR)/tern
	@# ternd.conf only if unchanged; /etc/tern/tls and /var/lib/tern stay.
	@if cmp -s dist/ternd.conf $(DESTDIR)$(SYSCONFDIR)/tern/ternd.conf; then \
	    rm -f $(DESTDIR)$(SYSCONFDIR)/tern/ternd.conf; \
	elif [ -e $(DESTDIR)$(SYSCONFDIR)/tern/ternd.conf ]; then \
	    echo "keeping the edited $(DESTDIR)$(SYSCONFDIR)/tern/ternd.conf"; fi

# The Debian package (debian/): build-deb/tern_VERSION_amd64.deb and
# lintian's report. `make test-deb` also installs it here, checks it and
# purges it (tests/deb/test_deb.sh), and runs it under systemd in a
# container (tests/deb/test_systemd.sh). Not in `make test`: it changes the
# machine's packages and takes about a minute.
deb:
	@scripts/build-deb.sh

test-deb: deb
	@tests/run-tests.sh $(BUILD) deb

deps:
	@scripts/install-deps.sh

# Tests install what they need first, so a fresh machine needs nothing by hand.
test: deps
	@$(MAKE) --no-print-directory all
	@tests/run-tests.sh $(BUILD) unit integration packaging model

test-unit: deps
	@$(MAKE) --no-print-directory all
	@tests/run-tests.sh $(BUILD) unit packaging

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

# ternd's loop under a wedged VMM and slow clients (stand-in VMMs: no KVM).
bench-agent-loop: all
	@$(BUILD)/bench/agent_loop $(BUILD)

# A host killed -> its HA VMs running elsewhere: fence_dummy, fence_ipmilan
# through a test BMC, watchdog only; 1 and 8 VMs (stand-in VMMs: no KVM).
bench-failover: all
	@$(BUILD)/bench/failover $(BUILD) $(RUNS)

# Fuzzers (clang + libFuzzer): every tests/fuzz/fuzz_X.c, linked with the
# library, run for FUZZ_SECONDS each, from build-fuzz/fuzz_X.corpus and the
# seeds in tests/fuzz/fuzz_X.seeds/ if there are any. Crashes are left in
# build-fuzz/, and fail the target.
FUZZ_SECONDS ?= 30
# The library is compiled once into its own archive (fuzzer-instrumented),
# and each harness links against it.
FUZZ_CFLAGS := -std=gnu11 -D_GNU_SOURCE -I. -g -O1 -MMD -MP
FUZZ_LIB := build-fuzz/libtern-fuzz.a
FUZZ_OBJS := $(patsubst %.c,build-fuzz/obj/%.o,$(CORE_SRCS) $(VMM_SRCS) $(AGENT_SRCS) $(CLI_SRCS))
FUZZERS := $(patsubst tests/fuzz/%.c,build-fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
build-fuzz/obj/common/version.o: FUZZ_CFLAGS += -DTERN_VERSION='"$(VERSION)"'
build-fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@
$(FUZZ_LIB): $(FUZZ_OBJS)
	@rm -f $@
	ar rcs $@ $^
# fuzz_agent_request runs a real agent on a one-node corosync stand-in
# (INPROC_AGENT_SRCS above), linked before the library so that its
# corosync_link.o is never pulled in (two definitions would stop the link).
FUZZ_EXTRA_fuzz_agent_request := $(patsubst %.c,build-fuzz/obj/%.o,$(INPROC_AGENT_SRCS))
build-fuzz/fuzz_agent_request: $(FUZZ_EXTRA_fuzz_agent_request)
build-fuzz/%: tests/fuzz/%.c $(FUZZ_LIB)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_EXTRA_$*) $(FUZZ_LIB) $(LIBS)
fuzz: deps
	@command -v clang >/dev/null || apt-get install -y -qq clang >/dev/null
	@$(MAKE) --no-print-directory $(FUZZERS)
	@# Each one's output goes to build-fuzz/NAME.log, its last lines shown;
	@# a fuzzer that fails (a crash, a leak, its own check) fails the target.
	@for f in $(FUZZERS); do mkdir -p $$f.corpus && echo "== $$f" && \
	    dict=tests/fuzz/$$(basename $$f).dict; \
	    (cd build-fuzz && ./$$(basename $$f) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        $$( [ -f ../$$dict ] && echo -dict=../$$dict ) $$(basename $$f).corpus \
	        $$( [ -d ../tests/fuzz/$$(basename $$f).seeds ] && echo ../tests/fuzz/$$(basename $$f).seeds ) \
	        > $$(basename $$f).log 2>&1; rc=$$?; tail -5 $$(basename $$f).log; exit $$rc) || \
	    { echo "$$f failed: build-fuzz/$$(basename $$f).log"; exit 1; }; done

clean:
	rm -rf build build-asan build-fuzz

FORCE:

.PHONY: FORCE all dist install uninstall deb test-deb deps demo demo-down test test-unit test-slow model-deep asan bench bench-boot bench-snapshot bench-migrate bench-agent bench-agent-loop bench-failover fuzz clean

-include $(shell find $(BUILD)/obj build-fuzz/obj -name '*.d' 2>/dev/null)
