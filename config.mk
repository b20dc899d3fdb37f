# config.mk — build settings for fedmq. Override any of them on the command
# line (make CC=clang OPT=-O0) or in config.local.mk (not tracked).

# Where `make install` puts things; DESTDIR is prepended for packaging.
PREFIX ?= /usr/local
DESTDIR ?=

# Build directory. `make test` re-runs the tests in $(BUILD)/asan with
# AddressSanitizer + UBSan (SAN=1).
BUILD ?= build

CC ?= cc
# Optimisation for normal builds. Benchmarks always build with this.
OPT ?= -O2
# Warnings are errors so that the tree stays clean with -Wall -Wextra.
WARN ?= -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wformat=2 -Wno-unused-parameter -Werror
# 1 = build with -fsanitize=address,undefined (set by `make test` itself).
SAN ?= 0
# Clang for libFuzzer targets (`make fuzz`).
FUZZ_CC ?= clang
# Seconds each fuzz target runs, and its memory limit in MB (an allocation
# past the limit counts as a failure).
FUZZ_TIME ?= 60
FUZZ_RSS_MB ?= 512
FUZZ_MALLOC_MB ?= 64

# Debian's Python (it has python3-msgpack and, for `make bench`,
# python3-numpy/python3-torch); a python3 earlier on PATH (pyenv, venv) may not.
PYTHON ?= /usr/bin/python3

# System libraries (Debian 12 package names in deploy/install-deps.sh).
# Libraries with a pkg-config file are asked through it (lazily, after
# install-deps.sh has run). Paho: the asynchronous, TLS-enabled library. mbedTLS 2.28 has no
# pkg-config file.
LIBS_PAHO ?= -lpaho-mqtt3as
LIBS_MBED ?= -lmbedtls -lmbedx509 -lmbedcrypto
LIBS_MSGPACK ?= $(shell pkg-config --libs msgpack 2>/dev/null || echo -lmsgpackc)
LIBS_Z ?= $(shell pkg-config --libs zlib 2>/dev/null || echo -lz)
LIBS_CMOCKA ?= $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)
LIBS_SYS ?= -lm -lpthread

# Matrix products of the training engine (common/nn.c): `openblas` hands
# float GEMMs to Debian's OpenBLAS (libopenblas-dev, in deploy/install-deps.sh),
# `portable` keeps only fedmq's own register-blocked C kernels. The portable
# kernels are always compiled in; with openblas a program can still switch to
# them at run time (fmq_nn_set_blas), which is how `make bench` reports both.
FMQ_BLAS ?= openblas
ifeq ($(FMQ_BLAS),openblas)
NN_CPPFLAGS ?= -DFMQ_NN_BLAS=1 $(shell pkg-config --cflags openblas 2>/dev/null)
LIBS_BLAS ?= $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
else
NN_CPPFLAGS ?=
LIBS_BLAS ?=
endif

-include config.local.mk
