/*
 * mqtt.h — fedmq's one MQTT client, a small wrapper over Paho's MQTTAsync
 * with MQTT 5, used by devices and the aggregator alike (proto/SPEC.md §1).
 *
 * What it does for its callers:
 *   - TLS with CA verification on by default (server certificate checked
 *     against the fleet's CA and the host name; only that CA is trusted when
 *     ca_file is given), optional client certificate.
 *   - Persistent sessions: clean start off and a session expiry by default,
 *     so QoS 1 messages published while a client is away reach it when it
 *     returns.
 *   - A last will, set at connect.
 *   - After the first successful fmq_mqtt_connect, automatic reconnection
 *     with jittered exponential back-off on a thread of its own; when the
 *     broker has lost the session (CONNACK session present = 0) every
 *     subscription is made again before fmq_mqtt_connected() turns true.
 *   - Incoming messages are copied into a bounded, thread-safe queue that
 *     the caller drains with fmq_mqtt_next(), so devices and the aggregator
 *     run one single-threaded loop and never see Paho's threads.
 *   - Paho return codes and MQTT reason codes become fmq_err; the raw code
 *     and Paho's text for it are logged.
 *
 * Thread-safety: every function may be called from any thread, except that
 * fmq_mqtt_destroy must not race with other calls on the same client.
 * Nothing here calls back into the caller.
 */
#ifndef FMQ_MQTT_H
#define FMQ_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fmq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fmq_mqtt fmq_mqtt;

/* One received message. fmq_mqtt_next() hands the caller ownership of
 * topic (NUL-terminated) and payload (len bytes, followed by one NUL byte
 * that len does not count, so a text payload can be read as a string;
 * never NULL, even when len is 0). Release with fmq_mqtt_msg_free. */
typedef struct fmq_mqtt_msg {
    char *topic;
    uint8_t *payload;
    size_t len;
    bool retained; /* delivered from the broker's retained store */
} fmq_mqtt_msg;

/* Frees topic and payload and zeroes *m. NULL and a zeroed message are
 * fine. */
void fmq_mqtt_msg_free(fmq_mqtt_msg *m);

/* Everything a client needs. The strings and the will payload are borrowed
 * during fmq_mqtt_new only (it copies them). Start from
 * fmq_mqtt_cfg_defaults(). */
typedef struct fmq_mqtt_cfg {
    /* "mqtts://127.0.0.1:8883" (TLS) or "mqtt://host:1883" (plain TCP;
     * tests and loopback only). ssl:// and tcp:// are accepted too. */
    const char *uri;
    /* Required, 1..64 bytes: the device id, or fedmq-agg-<fleet>. The
     * broker keeps the persistent session under this name. */
    const char *client_id;
    const char *username, *password; /* NULL = none (password: a JWT) */
    /* PEM files. ca_file: the fleet's CA; NULL = the system's trust store.
     * cert_file/key_file: client certificate for mTLS (both or neither). */
    const char *ca_file, *cert_file, *key_file;
    /* Default true: verify the server's certificate chain and host name.
     * false is for tests and is logged as a warning at every connect. */
    bool verify;
    /* Seconds the broker keeps the session after a disconnect (default
     * 86400; SPEC §1: devices 7 days, aggregator 1 day; 0 = the session
     * ends with the connection; UINT32_MAX = never expires). */
    uint32_t session_expiry_s;
    /* Default false. true discards the broker's session at the first
     * connect; reconnects never do. */
    bool clean_start;
    uint32_t keepalive_s; /* default 30 */
    /* Last will: published by the broker when the connection ends without
     * a DISCONNECT (crash, kill, network loss). NULL topic = no will. */
    const char *will_topic;
    const void *will_payload;
    size_t will_len;
    bool will_retain;
    int will_qos; /* default 1 */
    /* Paho's file persistence for messages in flight (created 0700 if
     * missing); NULL = memory only, lost with the process. */
    const char *persist_dir;
    /* QoS 1/2 messages this client keeps in flight (default 1000; the
     * broker's receive maximum also limits it, see deploy/broker.sh). */
    uint32_t max_inflight;
    /* Reconnect back-off: the n-th failed attempt in a row waits a random
     * time in [d/2, d] with d = min(max, min * 2^n) (default 500 ms and
     * 30 s). */
    uint32_t reconnect_min_ms, reconnect_max_ms;
    /* Bound on the receive queue (topic + payload bytes, default 128 MiB).
     * A message that does not fit is dropped, logged and counted in
     * fmq_mqtt_stats.dropped (it has been acknowledged to the broker). */
    size_t max_queue_bytes;
} fmq_mqtt_cfg;

void fmq_mqtt_cfg_defaults(fmq_mqtt_cfg *cfg);

/* Creates a client; it does not connect. FMQ_ERR_INVAL for a missing or
 * malformed uri or client id, a will without topic or with a bad QoS, a
 * key without certificate; FMQ_ERR_NOMEM; FMQ_ERR_IO when persist_dir
 * cannot be made; FMQ_ERR_MQTT when Paho refuses (logged). On error *out
 * is NULL. */
FMQ_NODISCARD fmq_err fmq_mqtt_new(const fmq_mqtt_cfg *cfg, fmq_mqtt **out);

/* Disconnects cleanly (DISCONNECT with reason 0: the broker does not
 * publish the will; the session stays for session_expiry_s), waiting up to
 * 1 s for messages in flight, then frees everything; queued incoming
 * messages are discarded. *mp = NULL. NULL or *mp == NULL: nothing. */
void fmq_mqtt_destroy(fmq_mqtt **mp);

/* The first connection: blocks until the broker's CONNACK or timeout_ms
 * (0 = 30 s). Subscriptions made before it are sent before it returns.
 *   FMQ_OK            connected (also when already connected)
 *   FMQ_ERR_TIMEOUT   no answer in time (the attempt is abandoned)
 *   FMQ_ERR_DENIED    the broker refused the credentials or the client
 *                     (CONNACK 0x86, 0x87, 0x8A, 0x8C)
 *   FMQ_ERR_MQTT      any other failure: TCP, TLS (certificate not
 *                     trusted, host name mismatch), other refusals
 * Paho's code and text (and OpenSSL's reason for TLS) are logged. After a
 * failure it may be called again. After the first success the client
 * reconnects by itself whenever the connection is lost, until destroyed. */
FMQ_NODISCARD fmq_err fmq_mqtt_connect(fmq_mqtt *m, uint32_t timeout_ms);

/* True while connected and, after a reconnect, re-subscribed. */
bool fmq_mqtt_connected(const fmq_mqtt *m);

/* Subscribes to a topic filter (wildcards allowed) at QoS 0..2. The filter
 * is remembered and made again when the broker loses the session. When
 * connected, blocks until the SUBACK (up to 10 s); when not, returns
 * FMQ_OK and subscribes at the next connect. Subscribing again to the
 * same filter updates its QoS.
 *   FMQ_ERR_INVAL    empty or over-long filter, bad QoS
 *   FMQ_ERR_DENIED   the broker refused it (SUBACK 0x87, e.g. an ACL);
 *                    the filter is then forgotten
 *   FMQ_ERR_TIMEOUT  no SUBACK in 10 s (it stays remembered)
 *   FMQ_ERR_MQTT     other refusals (logged) */
FMQ_NODISCARD fmq_err fmq_mqtt_subscribe(fmq_mqtt *m, const char *filter,
                                         int qos);
/* Forgets a filter and, when connected, unsubscribes (waits for the
 * UNSUBACK up to 10 s). FMQ_ERR_NOTFOUND when it was not subscribed. */
FMQ_NODISCARD fmq_err fmq_mqtt_unsubscribe(fmq_mqtt *m, const char *filter);

/* Publishes len bytes (copied; borrowed during the call) to topic (no
 * wildcards). Allowed once the first connect has succeeded; while the
 * connection is down the message is buffered by Paho and sent after the
 * reconnect (with persist_dir it survives a restart of the process too).
 * wait_ms = 0: returns once queued. wait_ms > 0 and qos >= 1: blocks until
 * the broker's PUBACK (PUBCOMP for QoS 2) or wait_ms; a timeout does not
 * cancel the message, which may still be delivered. QoS 0 never waits.
 *   FMQ_ERR_STATE      never connected
 *   FMQ_ERR_INVAL      bad topic or QoS
 *   FMQ_ERR_TOO_LARGE  payload over 256 MiB (MQTT's limit), or the broker
 *                      said so (reason 0x95)
 *   FMQ_ERR_BUSY       too many messages buffered (Paho's limit, 65535)
 *   FMQ_ERR_DENIED     PUBACK 0x87: the broker's ACL refused the topic
 *                      (only seen with wait_ms > 0; otherwise logged)
 *   FMQ_ERR_TIMEOUT    no PUBACK within wait_ms
 *   FMQ_ERR_MQTT       other failures (logged) */
FMQ_NODISCARD fmq_err fmq_mqtt_publish(fmq_mqtt *m, const char *topic,
                                       const void *payload, size_t len,
                                       int qos, bool retain, uint32_t wait_ms);

/* Pops the oldest received message into *out (the caller then owns it;
 * see fmq_mqtt_msg). Waits up to timeout_ms (0 = just look).
 * FMQ_ERR_TIMEOUT when none arrived; *out is then zeroed. */
FMQ_NODISCARD fmq_err fmq_mqtt_next(fmq_mqtt *m, uint32_t timeout_ms,
                                    fmq_mqtt_msg *out);

/* Counters since fmq_mqtt_new. Bytes are payload + topic. msgs_out and
 * bytes_out count messages accepted by fmq_mqtt_publish; msgs_in and
 * bytes_in count messages put in the receive queue; dropped counts those
 * that did not fit (or had a topic with a NUL in it); reconnects counts
 * successful reconnections after the first connect. */
typedef struct fmq_mqtt_stats {
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
    uint64_t reconnects, dropped;
} fmq_mqtt_stats;

void fmq_mqtt_get_stats(const fmq_mqtt *m, fmq_mqtt_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_MQTT_H */
