# dfs - one non-recursive Makefile for every binary, test and benchmark.
#
#   make            build every binary into build/bin
#   make test       deps + build + unit tests + fuzz smoke run + integration tests
#   make SANITIZE=1 test   the same with ASan + UBSan (objects in build-asan/)
#   make run / stop one-box cluster (1 metad + 3 chunkd) mounted at ./mnt
#   make bench      benchmarks (figures go to docs/BENCHMARKS.md by hand)
#   make fuzz       build the libFuzzer target (clang); FUZZ_SECONDS=600 make fuzz-run

SHELL := /bin/bash
# A failing command on the left of a pipe (e.g. the fuzzer piped to tail) must
# fail the recipe.
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := all

CC ?= cc
PKGS := fuse3 libuv msgpack libxxhash raft
DEB_PKGS := build-essential pkg-config libfuse3-dev fuse3 libuv1-dev libmsgpack-dev \
            libxxhash-dev check libraft-dev clang libclang-rt-14-dev attr acl git \
            iproute2 psmisc procps fio iperf3 curl

ifeq ($(SANITIZE),1)
B := build-asan
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1
else
B := build
SAN :=
OPT := -O2
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null)

WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow=local -Wformat=2 \
        -Wno-format-nonliteral
CFLAGS := -std=gnu11 $(OPT) -g $(WARN) $(SAN) -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
          -MMD -MP -Icommon $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS := $(SAN) $(EXTRA_LDFLAGS)
LDLIBS = $(PKG_LIBS) -lpthread -lm

# ----- sources -----
COMMON_SRC := $(wildcard common/*.c)
METAD_SRC := $(filter-out metad/main.c,$(wildcard metad/*.c))
CHUNKD_SRC := $(filter-out chunkd/main.c,$(wildcard chunkd/*.c))
FUSE_SRC := $(filter-out fuse-client/main.c,$(wildcard fuse-client/*.c))
TESTLIB_SRC := $(wildcard test/lib/*.c)
UNIT_SRC := $(wildcard test/unit/*.c)
BENCH_SRC := $(wildcard bench/*.c)
ITEST_SRC := $(wildcard test/integration/itest_*.c)

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))

LIB_COMMON := $(B)/lib/libdfscommon.a
LIB_METAD := $(B)/lib/libmetad.a
LIB_CHUNKD := $(B)/lib/libchunkd.a
LIB_FUSE := $(B)/lib/libdfsfuse.a
LIB_TEST := $(B)/lib/libdfstest.a
ALL_LIBS := $(LIB_METAD) $(LIB_CHUNKD) $(LIB_FUSE) $(LIB_COMMON)

BINS := $(B)/bin/metad $(B)/bin/chunkd $(B)/bin/dfsmount $(B)/bin/dfsctl
UNIT_BIN := $(B)/test/unit_tests
INTEG_BIN := $(B)/test/integration_runner
ITEST_BINS := $(patsubst test/integration/%.c,$(B)/test/%,$(ITEST_SRC))
BENCH_BINS := $(patsubst bench/%.c,$(B)/bench/%,$(BENCH_SRC))

.PHONY: all deps test unit integration fuzz fuzz-run bench run stop install clean format

all: $(BINS)

# ----- objects and libraries -----
common/codec_tables.h: common/proto.h tools/gen_codec_tables.py
	python3 tools/gen_codec_tables.py common/proto.h $@
$(B)/obj/common/codec.o: common/codec_tables.h

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(if $(filter test/% bench/%,$<),$(CHECK_CFLAGS) -Itest/lib -Imetad -Ichunkd -Ifuse-client) -c $< -o $@

define mklib
$(1): $(call obj,$(2))
	@mkdir -p $$(dir $$@)
	@rm -f $$@
	$$(AR) rcs $$@ $$^
endef
$(eval $(call mklib,$(LIB_COMMON),$(COMMON_SRC)))
$(eval $(call mklib,$(LIB_METAD),$(METAD_SRC)))
$(eval $(call mklib,$(LIB_CHUNKD),$(CHUNKD_SRC)))
$(eval $(call mklib,$(LIB_FUSE),$(FUSE_SRC)))
$(eval $(call mklib,$(LIB_TEST),$(TESTLIB_SRC)))

# ----- binaries -----
$(B)/bin/metad: $(call obj,metad/main.c) $(LIB_METAD) $(LIB_COMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(B)/bin/chunkd: $(call obj,chunkd/main.c) $(LIB_CHUNKD) $(LIB_COMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(B)/bin/dfsmount: $(call obj,fuse-client/main.c) $(LIB_FUSE) $(LIB_COMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(B)/bin/dfsctl: $(call obj,tools/dfsctl.c) $(LIB_COMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(UNIT_BIN): $(call obj,$(UNIT_SRC)) $(LIB_TEST) $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -Wl,--whole-archive $(LIB_TEST) -Wl,--no-whole-archive \
	  $(call obj,$(UNIT_SRC)) $(ALL_LIBS) $(CHECK_LIBS) $(LDLIBS) -o $@

# Per-area unit test binaries (test/unit/test_<area>_*.c), so one area can be
# built and tested while another is broken: make build/test/unit-chunkd
UNIT_MAIN := $(call obj,test/unit/main.c)
$(B)/test/unit-common: $(UNIT_MAIN) $(call obj,$(wildcard test/unit/test_common_*.c)) $(LIB_TEST) $(LIB_COMMON)
$(B)/test/unit-metad: $(UNIT_MAIN) $(call obj,$(wildcard test/unit/test_metad_*.c)) $(LIB_TEST) $(LIB_METAD) $(LIB_COMMON)
$(B)/test/unit-chunkd: $(UNIT_MAIN) $(call obj,$(wildcard test/unit/test_chunkd_*.c)) $(LIB_TEST) $(LIB_CHUNKD) $(LIB_COMMON)
$(B)/test/unit-fuse: $(UNIT_MAIN) $(call obj,$(wildcard test/unit/test_fuse_*.c)) $(LIB_TEST) $(LIB_FUSE) $(LIB_COMMON)
$(B)/test/unit-%:
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -Wl,--whole-archive $(LIB_TEST) -Wl,--no-whole-archive \
	  $(filter %.o,$^) $(filter-out $(LIB_TEST),$(filter %.a,$^)) $(CHECK_LIBS) $(LDLIBS) -o $@

$(INTEG_BIN): $(call obj,test/integration/runner.c) $(LIB_TEST) $(LIB_COMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(CHECK_LIBS) $(LDLIBS) -o $@

# C integration tests: each test/integration/itest_*.c is a Check program that
# starts real daemons (via test/lib) and is run by the integration runner.
$(B)/test/itest_%: $(call obj,test/integration/itest_%.c) $(LIB_TEST) $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(CHECK_LIBS) $(LDLIBS) -o $@

$(B)/bench/%: $(call obj,bench/%.c) $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# ----- dependencies (Debian 12) -----
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to apt-get install:$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null || exit 1; \
	fi

# ----- tests -----
FUZZ_SECONDS ?= 30

test: deps
	$(MAKE) all $(UNIT_BIN) $(INTEG_BIN) $(ITEST_BINS)
	$(MAKE) unit
	$(MAKE) fuzz-run FUZZ_SECONDS=$(FUZZ_SECONDS)
	$(MAKE) integration

unit: $(UNIT_BIN)
	$(UNIT_BIN)

integration: $(BINS) $(INTEG_BIN) $(ITEST_BINS)
	DFS_BIN_DIR=$(CURDIR)/$(B)/bin DFS_TEST_DIR=$(CURDIR)/$(B)/test DFS_SRC_DIR=$(CURDIR) $(INTEG_BIN)

# libFuzzer target: always built with clang, ASan and UBSan.
FUZZ_BIN := build-fuzz/fuzz_frame
FUZZ_CFLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
               -Icommon $(PKG_CFLAGS) -Wall -Wextra -Werror -Wno-unused-parameter
fuzz: $(FUZZ_BIN)
$(FUZZ_BIN): test/fuzz/fuzz_frame.c $(COMMON_SRC) common/*.h
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) test/fuzz/fuzz_frame.c $(COMMON_SRC) $(PKG_LIBS) -lpthread -o $@
fuzz-run: $(FUZZ_BIN)
	@mkdir -p build-fuzz/corpus
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
	  build-fuzz/corpus test/fuzz/seeds 2>&1 | tail -n 12

# ----- benchmarks -----
bench: all $(BENCH_BINS)
	DFS_BIN_DIR=$(CURDIR)/$(B)/bin bash bench/run.sh

# ----- one-box cluster -----
VAR ?= $(CURDIR)/var
MNT ?= $(CURDIR)/mnt
run: deps all
	VAR=$(VAR) MNT=$(MNT) DFS_BIN_DIR=$(CURDIR)/$(B)/bin bash tools/dfs-cluster.sh start
stop:
	VAR=$(VAR) MNT=$(MNT) DFS_BIN_DIR=$(CURDIR)/$(B)/bin bash tools/dfs-cluster.sh stop

PREFIX ?= /usr/local
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)/sbin
	install -m 755 $(B)/bin/dfsmount $(B)/bin/dfsctl $(DESTDIR)$(PREFIX)/bin/
	install -m 755 $(B)/bin/metad $(B)/bin/chunkd $(DESTDIR)$(PREFIX)/sbin/
	# mount.fuse3 looks the helper up in its own PATH (/sbin:/bin:/usr/sbin:/usr/bin).
	ln -sf $(PREFIX)/bin/dfsmount $(DESTDIR)/sbin/dfsmount

format:
	clang-format -i $(wildcard common/*.[ch] metad/*.[ch] chunkd/*.[ch] fuse-client/*.[ch] tools/*.c test/*/*.[ch] bench/*.c)

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
