# broker/: what a fedmq broker runs beside Mosquitto (broker/README.md).
#   fedmq_auth.so   Mosquitto plugin (API v5): identity from an ES256 JWT or
#                   a client certificate, ACL by identity (SPEC §2)
#   fedmq-keygen    issuer keys, key ids and tokens

LIBS_JWT ?= -ljwt

PROGS += $(BUILD)/bin/fedmq-keygen
$(BUILD)/bin/fedmq-keygen: $(BUILD)/obj/broker/fedmq_keygen.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_ALL) $(LIBS_JWT)

# The plugin is loaded by /usr/sbin/mosquitto: position-independent, never
# sanitized (the broker has no sanitizer runtime), and linked without
# -lmosquitto (the broker exports mosquitto_*; X509_free comes from the
# broker's libcrypto too).
AUTH_SO := $(BUILD)/lib/fedmq_auth.so
$(BUILD)/obj/broker/fedmq_auth.pic.o: broker/fedmq_auth.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(filter-out $(SANFLAGS),$(CFLAGS_ALL)) -fPIC -c $< -o $@
$(AUTH_SO): $(BUILD)/obj/broker/fedmq_auth.pic.o
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -shared -fPIC $^ -o $@ $(LIBS_JWT) -lmbedcrypto

all: $(AUTH_SO)
INSTALL_EXTRA += install -d $(DESTDIR)$(PREFIX)/lib/fedmq && \
                 install -m 0644 $(AUTH_SO) $(DESTDIR)$(PREFIX)/lib/fedmq/;
