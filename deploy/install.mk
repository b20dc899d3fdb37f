# deploy/install.mk — `make install` (included by the Makefile).
#
#   make install PREFIX=/usr/local DESTDIR=  SYSCONFDIR=/etc
#
# installs the programs, the library (static libfedmq.a and shared
# libfedmq.so.1: common/ and the device core, device/device.c and run.c),
# the headers (include/fedmq/), a pkg-config file (fedmq.pc), the
# Mosquitto plugin (lib/fedmq/fedmq_auth.so), example configuration files
# (share/fedmq/examples/), the dashboard (share/fedmq/dashboard/: point a
# Mosquitto websockets listener's http_dir at it), systemd units (lib/systemd/system/) and man
# pages (share/man/: one per program, made from its --help by help2man,
# and fedmq.conf(5)). Nothing is written outside DESTDIR$(PREFIX) but the
# units' and examples' paths, which name SYSCONFDIR.

SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
FMQ_VERSION := 0.1.0
FMQ_SOVERSION := 1

# Position-independent objects for the shared library (the static one
# and the programs keep using $(BUILD)/obj).
DIST_SRCS := $(LIB_SRCS) device/device.c device/run.c
DIST_PIC := $(DIST_SRCS:%.c=$(BUILD)/pic/%.o)
$(BUILD)/pic/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) -Idevice $(filter-out $(SANFLAGS),$(CFLAGS_ALL)) -fPIC -c $< -o $@
$(BUILD)/pic/common/quant.o: CFLAGS_ALL += -fvect-cost-model=dynamic
$(BUILD)/pic/common/nn.o: CFLAGS_ALL += -fvect-cost-model=dynamic $(NN_CPPFLAGS)

DIST_SO := $(BUILD)/dist/libfedmq.so.$(FMQ_SOVERSION)
DIST_A := $(BUILD)/dist/libfedmq.a
$(DIST_SO): $(DIST_PIC)
	@mkdir -p $(@D)
	$(CC) -shared -Wl,-soname,libfedmq.so.$(FMQ_SOVERSION) -Wl,--no-undefined \
	  $^ -o $@ $(LIBS_ALL)
$(DIST_A): $(LIB_OBJS) $(BUILD)/obj/device/device.o $(BUILD)/obj/device/run.o
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

# Man pages from each program's --help (help2man, deploy/install-deps.sh).
MAN_PROGS := $(notdir $(PROGS))
MAN_PAGES := $(MAN_PROGS:%=$(BUILD)/man/%.1)
$(BUILD)/man/%.1: $(BUILD)/bin/% | $(DEPS_STAMP)
	@mkdir -p $(@D)
	help2man --no-info --no-discard-stderr --version-string=$(FMQ_VERSION) \
	  --name="$$(sed -n 's/^$*	//p' deploy/man/names)" \
	  --include=deploy/man/common.h2m --output=$@ $<

# @PREFIX@ and friends in the .in files.
SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@BINDIR@|$(PREFIX)/bin|g' \
            -e 's|@LIBDIR@|$(PREFIX)/lib|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
            -e 's|@VERSION@|$(FMQ_VERSION)|g' -e 's|@LIBS_PRIVATE@|$(LIBS_ALL)|g'

install: all $(DIST_SO) $(DIST_A) $(MAN_PAGES)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	  $(DESTDIR)$(PREFIX)/include/fedmq $(DESTDIR)$(PREFIX)/lib/fedmq \
	  $(DESTDIR)$(PREFIX)/lib/systemd/system \
	  $(DESTDIR)$(PREFIX)/share/fedmq/examples \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 0755 $(PROGS) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(DIST_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 0755 $(DIST_SO) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libfedmq.so.$(FMQ_SOVERSION) $(DESTDIR)$(PREFIX)/lib/libfedmq.so
	install -m 0644 common/*.h device/device.h $(DESTDIR)$(PREFIX)/include/fedmq/
	$(SUBST) deploy/fedmq.pc.in >$(DESTDIR)$(PREFIX)/lib/pkgconfig/fedmq.pc
	for u in deploy/systemd/*.service.in; do \
	  $(SUBST) $$u >$(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u .in); \
	done
	install -m 0644 deploy/examples/*.conf broker/fedmq-broker.conf \
	  $(DESTDIR)$(PREFIX)/share/fedmq/examples/
	install -m 0644 $(MAN_PAGES) $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 deploy/man/fedmq.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	rm -rf $(DESTDIR)$(PREFIX)/share/fedmq/dashboard
	cp -R $(BUILD)/dashboard $(DESTDIR)$(PREFIX)/share/fedmq/dashboard
	$(INSTALL_EXTRA)
	@echo "installed under $(DESTDIR)$(PREFIX); systemd units name $(SYSCONFDIR)/fedmq (deploy/README.md)"

.PHONY: install
