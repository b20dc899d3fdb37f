# fedmq — one non-recursive Makefile for the whole tree.
#
#   make            build the library and programs into $(BUILD)
#   make test       install missing Debian packages, build, run every test,
#                   then run the unit tests again under ASan + UBSan
#   make demo       run a fleet against a real Mosquitto over TLS
#   make bench      benchmarks (not tests): ratios against same-run baselines
#   make fuzz       libFuzzer target per decoder, FUZZ_TIME seconds each
#   make install    PREFIX=/usr/local DESTDIR= (for packaging)
#   make clean
#
# Settings live in config.mk. Every output goes under $(BUILD); the source
# tree stays free of build products.

include config.mk

.DEFAULT_GOAL := all
.SUFFIXES:
.DELETE_ON_ERROR:

ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
            -fno-omit-frame-pointer
OPTFLAGS := -O1 -g
else
SANFLAGS :=
OPTFLAGS := $(OPT) -g
endif

CPPFLAGS_ALL = -Icommon -D_GNU_SOURCE $(CPPFLAGS)
CFLAGS_ALL = -std=c11 $(OPTFLAGS) $(WARN) $(SANFLAGS) -MMD -MP $(CFLAGS)
LDFLAGS_ALL = $(SANFLAGS) $(LDFLAGS)
LIBS_ALL = $(LIBS_PAHO) $(LIBS_MBED) $(LIBS_MSGPACK) $(LIBS_Z) $(LIBS_BLAS) $(LIBS_SYS)

# ------------------------------------------------------------ set-up stamp
# deploy/install-deps.sh installs what is missing; the stamp makes the
# second and later runs instant. Everything that compiles waits for it.
DEPS_STAMP := $(BUILD)/.deps-base
$(BUILD)/.deps-%: deploy/install-deps.sh
	@mkdir -p $(@D)
	deploy/install-deps.sh $*
	@touch $@

# ------------------------------------------------------------------ library
LIB_SRCS := $(sort $(wildcard common/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIB := $(BUILD)/lib/libfedmq.a

$(BUILD)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -c $< -o $@

# The quantizer's decode/accumulate loops are the aggregator's hot path;
# GCC's -O2 default cost model ("very cheap") will not vectorise loops whose
# trip count is not a known multiple of the vector width, so ask for the
# dynamic model here (no effect on the -O1 sanitizer build).
$(BUILD)/obj/common/quant.o: CFLAGS_ALL += -fvect-cost-model=dynamic
# The engine's kernels likewise; NN_CPPFLAGS selects OpenBLAS (config.mk).
$(BUILD)/obj/common/nn.o: CFLAGS_ALL += -fvect-cost-model=dynamic $(NN_CPPFLAGS)

$(LIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

# ----------------------------------------------------------------- programs
# Each program: its own folder's sources, linked against libfedmq.
PROGS :=
include $(wildcard device/prog.mk aggregator/prog.mk broker/prog.mk aggregator/status.mk deploy/dashboard.mk)

# -------------------------------------------------------------------- tests
# One CMocka binary per module: test/test_<module>.c. Each runs from the
# top of the tree (it may read proto/vectors/) and writes only under
# $(BUILD); its exit code is the number of failed cases.
TEST_SRCS := $(sort $(wildcard test/test_*.c))
TEST_BINS := $(TEST_SRCS:test/%.c=$(BUILD)/test/%)
TEST_HELPER_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard test/helper_*.c))

$(BUILD)/test/%: $(BUILD)/obj/test/%.o $(TEST_HELPER_OBJS) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_CMOCKA) $(LIBS_ALL)

all: $(LIB) $(PROGS)

# Unit tests (fast; also the sanitizer pass).
check-unit: $(TEST_BINS) $(PROGS)
	@fail=0; for t in $(TEST_BINS); do \
	  echo "== $$t"; \
	  FMQ_BUILD=$(BUILD) $$t || fail=$$((fail+1)); \
	done; \
	if [ $$fail -ne 0 ]; then echo "check-unit: $$fail test binaries failed"; exit 1; fi

# Test tools: test/tools/<name>.c -> $(BUILD)/tools/<name>.
TOOL_SRCS := $(sort $(wildcard test/tools/*.c))
TOOL_BINS := $(TOOL_SRCS:test/tools/%.c=$(BUILD)/tools/%)
$(BUILD)/tools/%: $(BUILD)/obj/test/tools/%.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_ALL)

# Golden vectors: proto/vectors/*.msgpack with a .json of what each means.
# Our decoder (vector_dump) and an independent one (Debian's
# python3-msgpack) must both agree with the JSON. `make vectors` rewrites
# them (deterministically) from test/tools/gen_vectors.c.
check-vectors: $(BUILD)/tools/vector_dump | $(DEPS_STAMP)
	$(PYTHON) test/check_vectors.py --dump $(BUILD)/tools/vector_dump proto/vectors

vectors: $(BUILD)/tools/gen_vectors
	$(BUILD)/tools/gen_vectors proto/vectors

# Integration tests: real Mosquitto, real TLS, real data (added by later
# issues as test/it_*.sh; each gets the build directory).
IT_SCRIPTS := $(sort $(wildcard test/it_*.sh))
check-it: all $(TEST_BINS) $(BUILD)/tools/fmq_forge
	@fail=0; for t in $(IT_SCRIPTS); do \
	  echo "== $$t"; \
	  FMQ_BUILD=$(BUILD) sh $$t || fail=$$((fail+1)); \
	done; \
	if [ $$fail -ne 0 ]; then echo "check-it: $$fail scripts failed"; exit 1; fi

test: $(DEPS_STAMP)
	$(MAKE) --no-print-directory all check-unit check-vectors check-it
	$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SAN=1 check-unit
	@echo "make test: all passed"

# -------------------------------------------------------------- benchmarks
# test/bench/bench_<what>.c; always optimised, never sanitized.
BENCH_SRCS := $(sort $(wildcard test/bench/bench_*.c))
BENCH_BINS := $(BENCH_SRCS:test/bench/%.c=$(BUILD)/bench/%)
$(BUILD)/bench/%: $(BUILD)/obj/test/bench/%.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_ALL)

bench: $(BUILD)/.deps-bench
	$(MAKE) --no-print-directory SAN=0 $(BENCH_BINS) all
	@for b in $(BENCH_BINS); do echo "== $$b"; FMQ_BUILD=$(BUILD) $$b || exit 1; done
	$(MAKE) --no-print-directory SAN=0 $(BUILD)/tools/raw_fleet
	@echo "== the runtime's round: fedmq-aggregator + fedmq-sim against raw_fleet (test/bench/fleet_bench.sh $(BUILD))"
	sh test/bench/fleet_bench.sh $(BUILD)
	sh test/bench/poison_bench.sh $(BUILD)
	sh test/bench/hetero_bench.sh $(BUILD)
	@echo "== NIID-Bench FedAvg, short run (10 rounds, 1 local epoch; full table: test/bench/niid_table.sh $(BUILD))"
	sh test/bench/niid_table.sh $(BUILD) 10 1
	sh test/bench/quant_study.sh $(BUILD)
	@echo "== plots of the runs above (test/bench/plots.sh $(BUILD)): $(BUILD)/bench/plots/"
	sh test/bench/plots.sh $(BUILD)

# -------------------------------------------------------------------- fuzz
# test/fuzz/fuzz_<decoder>.c, built with clang's libFuzzer and sanitizers
# against the library sources, seeded from proto/vectors. An allocation
# above FUZZ_MALLOC_MB or an RSS above FUZZ_RSS_MB counts as a failure.
FUZZ_SRCS := $(sort $(wildcard test/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_SRCS:test/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_FLAGS := -std=c11 -O1 -g -Icommon -D_GNU_SOURCE \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
$(BUILD)/fuzz/%: test/fuzz/%.c $(wildcard test/fuzz/*.h) $(LIB_SRCS) $(wildcard common/*.h) | $(BUILD)/.deps-fuzz
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) $< $(LIB_SRCS) -o $@ $(LIBS_ALL)

fuzz: $(BUILD)/.deps-fuzz $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do \
	  n=$$(basename $$f); c=$(BUILD)/fuzz/corpus-$$n; \
	  mkdir -p $$c; cp proto/vectors/*.msgpack $$c/ 2>/dev/null || true; \
	  echo "== $$n for $(FUZZ_TIME) s"; \
	  $$f -max_total_time=$(FUZZ_TIME) -rss_limit_mb=$(FUZZ_RSS_MB) \
	      -malloc_limit_mb=$(FUZZ_MALLOC_MB) -print_final_stats=1 \
	      -artifact_prefix=$(BUILD)/fuzz/$$n- $$c >$(BUILD)/fuzz/$$n.log 2>&1 \
	    || { tail -40 $(BUILD)/fuzz/$$n.log; exit 1; }; \
	  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' $(BUILD)/fuzz/$$n.log; \
	done; echo "make fuzz: no crash, no over-limit allocation"

# ------------------------------------------------------------ demo, install
demo: $(DEPS_STAMP)
	$(MAKE) --no-print-directory all
	@if [ -f deploy/demo.sh ]; then sh deploy/demo.sh $(BUILD); else \
	  echo "make demo: the MQTT runtime (device, aggregator) is not built yet;"; \
	  echo "           see README.md, Status."; exit 1; fi

include deploy/install.mk

clean:
	rm -rf $(BUILD)

.PHONY: all test check-unit check-vectors check-it vectors bench fuzz demo install clean

.SECONDARY:
-include $(shell find $(BUILD)/obj $(BUILD)/pic -name '*.d' 2>/dev/null)
