/*
 * mqtt.c — fedmq's MQTT client over Paho MQTTAsync (MQTT 5), see mqtt.h.
 *
 * Paho runs two threads of its own (send and receive) and calls us back on
 * them. Three rules keep that safe:
 *   1. We never hold one of our locks while calling into Paho. Paho calls
 *      some callbacks with its own mutex held (QoS 0 completions, from
 *      inside MQTTAsync_processCommand), so holding ours across a Paho call
 *      could deadlock against a callback waiting for ours.
 *   2. Paho never sees a pointer to our memory as a callback context, only
 *      a client id from a process-wide registry. A callback looks the id up
 *      and holds the client (cb_enter/cb_leave); fmq_mqtt_destroy removes
 *      the id after MQTTAsync_destroy and waits for callbacks still running
 *      (Paho calls messageArrived without its mutex, so one can still be in
 *      progress while the client is destroyed).
 *   3. A thread waiting for an acknowledgement (PUBACK, SUBACK, UNSUBACK)
 *      registers the Paho token on its own stack. An acknowledgement that
 *      arrives before the waiter has registered (possible: the token is only
 *      known when MQTTAsync_sendMessage returns) is parked as an "orphan"
 *      with its arrival time, and the waiter takes it only if it arrived
 *      after its own call began; tokens are MQTT packet ids and are reused.
 *
 * Reconnection is ours, not Paho's automaticReconnect: Paho's retry
 * intervals are whole seconds and its reconnect does not tell us whether
 * the session survived in a way we can act on before the application sees
 * "connected". One thread per client waits for a lost connection, sleeps a
 * jittered back-off and reconnects (clean start off), then re-subscribes
 * when CONNACK says the session is gone.
 */
#include "mqtt.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <MQTTAsync.h>

enum {
    FMQ_MQTT__ACK_TIMEOUT_MS = 10000,  /* SUBACK, UNSUBACK */
    FMQ_MQTT__DISCONNECT_MS = 1000,    /* in-flight grace at destroy */
    FMQ_MQTT__DEFAULT_CONNECT_MS = 30000,
    FMQ_MQTT__MAX_BUFFERED = 65535,    /* Paho's queue of unsent publishes */
    FMQ_MQTT__ORPHANS = 32,
    FMQ_MQTT__MAX_TOPIC = 65535,       /* MQTT string length limit */
};
/* MQTT's largest packet: remaining length 268,435,455 bytes, of which the
 * topic (2 + length), packet id (2) and properties (>= 1) take some. */
#define FMQ_MQTT__MAX_PACKET 268435455u

typedef struct fmq_mqtt__node {
    struct fmq_mqtt__node *next;
    fmq_mqtt_msg msg;
} fmq_mqtt__node;

typedef struct fmq_mqtt__sub {
    char *filter;
    int qos;
    bool active; /* the broker has acknowledged it in the current session */
} fmq_mqtt__sub;

/* A thread waiting for one acknowledgement; lives on that thread's stack
 * while linked into fmq_mqtt.waits. */
typedef struct fmq_mqtt__wait {
    struct fmq_mqtt__wait *next;
    int token;
    bool done;
    int code;   /* Paho's code, MQTTASYNC_SUCCESS when acknowledged */
    int reason; /* the MQTT reason code of the acknowledgement */
} fmq_mqtt__wait;

typedef struct fmq_mqtt__orphan {
    bool used;
    int token, code, reason;
    double t; /* fmq_mono_seconds() at arrival */
} fmq_mqtt__orphan;

struct fmq_mqtt {
    uintptr_t id; /* Paho's callback context, see the registry below */
    MQTTAsync h;

    /* Configuration: our own copies. */
    char *uri, *client_id, *username, *password;
    char *ca_file, *cert_file, *key_file, *will_topic, *persist_dir;
    uint8_t *will_payload;
    size_t will_len;
    bool will_retain, verify, clean_start, tls;
    int will_qos;
    uint32_t keepalive_s, max_inflight, reconnect_min_ms, reconnect_max_ms;
    size_t max_queue_bytes;
    /* Session expiry interval. Made and freed only while m->h exists:
     * Paho allocates properties through its heap tracker, which
     * MQTTAsync_create starts and the last MQTTAsync_destroy stops; a
     * block allocated outside that window is never really freed. */
    MQTTProperties conn_props;

    /* mu guards everything below except the atomics and conn_mu's fields. */
    pthread_mutex_t mu;
    pthread_cond_t state_cv; /* connect results, acks, loss, closing */
    pthread_cond_t queue_cv; /* a message was queued */
    bool mu_ok, state_cv_ok, queue_cv_ok;

    fmq_mqtt__node *q_head, *q_tail;
    size_t q_bytes;
    fmq_mqtt_stats stats;

    atomic_int connected;  /* what fmq_mqtt_connected reports */
    bool ever_connected;   /* a first connect succeeded */
    bool closing;          /* fmq_mqtt_destroy has begun */
    bool lost;             /* the reconnect thread has work */
    uint64_t epoch;        /* +1 at every lost connection */

    /* The connect attempt in progress; conn_mu serialises attempts. */
    pthread_mutex_t conn_mu;
    bool conn_mu_ok;
    int conn_state; /* 0 none, 1 waiting for Paho, 2 answered */
    int conn_code;  /* Paho's code; > 0 is a CONNACK reason code */
    bool conn_session_present;
    char conn_msg[160];
    char tls_err[200];
    uint32_t attempt_ms; /* timeout of reconnect attempts */
    bool disc_done;

    fmq_mqtt__sub *subs;
    size_t nsubs, capsubs;

    fmq_mqtt__wait *waits;
    fmq_mqtt__orphan orphans[FMQ_MQTT__ORPHANS];
    unsigned orphan_next;

    pthread_t thread;
    bool thread_ok;
    fmq_rng rng; /* back-off jitter; used by the reconnect thread only */

    int cb_active; /* callbacks running; guarded by g_reg_mu */
};

/* ------------------------------------------------------------- registry
 * Live clients by id. Linear search: a process holds a handful of clients
 * (a fleet simulator a few thousand), and a lookup is far cheaper than the
 * copy of the message that follows it. */
static pthread_mutex_t g_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_reg_cv = PTHREAD_COND_INITIALIZER;
static fmq_mqtt **g_reg;
static size_t g_reg_n, g_reg_cap;
static uintptr_t g_reg_next_id = 1;

static fmq_err reg_add(fmq_mqtt *m)
{
    fmq_err e = FMQ_OK;
    pthread_mutex_lock(&g_reg_mu);
    if (g_reg_n == g_reg_cap) {
        size_t cap = g_reg_cap ? g_reg_cap * 2 : 16;
        fmq_mqtt **r = fmq_realloc(g_reg, cap * sizeof *r);
        if (!r) {
            e = FMQ_ERR_NOMEM;
            goto out;
        }
        g_reg = r;
        g_reg_cap = cap;
    }
    m->id = g_reg_next_id++;
    g_reg[g_reg_n++] = m;
out:
    pthread_mutex_unlock(&g_reg_mu);
    return e;
}

/* Removes m and waits until no callback holds it. The registry's storage
 * is freed with the last client, so a program that ends without clients
 * ends without leaks. */
static void reg_remove(fmq_mqtt *m)
{
    pthread_mutex_lock(&g_reg_mu);
    for (size_t i = 0; i < g_reg_n; i++) {
        if (g_reg[i] == m) {
            g_reg[i] = g_reg[--g_reg_n];
            break;
        }
    }
    while (m->cb_active > 0)
        pthread_cond_wait(&g_reg_cv, &g_reg_mu);
    if (g_reg_n == 0) {
        fmq_free(g_reg);
        g_reg = NULL;
        g_reg_cap = 0;
    }
    pthread_mutex_unlock(&g_reg_mu);
}

static fmq_mqtt *cb_enter(void *ctx)
{
    uintptr_t id = (uintptr_t)ctx;
    fmq_mqtt *m = NULL;
    pthread_mutex_lock(&g_reg_mu);
    for (size_t i = 0; i < g_reg_n; i++) {
        if (g_reg[i]->id == id) {
            m = g_reg[i];
            m->cb_active++;
            break;
        }
    }
    pthread_mutex_unlock(&g_reg_mu);
    return m;
}

static void cb_leave(fmq_mqtt *m)
{
    pthread_mutex_lock(&g_reg_mu);
    if (--m->cb_active == 0)
        pthread_cond_broadcast(&g_reg_cv);
    pthread_mutex_unlock(&g_reg_mu);
}

static void *ctx_of(const fmq_mqtt *m) { return (void *)m->id; }

/* ---------------------------------------------------------------- time */
static void deadline_in(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* false once the deadline has passed */
static bool wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
                       const struct timespec *dl)
{
    return pthread_cond_timedwait(cv, mu, dl) != ETIMEDOUT;
}

static fmq_err cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0)
        return FMQ_ERR_NOMEM;
    int rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc == 0 ? FMQ_OK : FMQ_ERR_NOMEM;
}

/* ------------------------------------------------------ error vocabulary */
static const char *paho_text(int rc)
{
    const char *s = MQTTAsync_strerror(rc);
    return s ? s : "unknown Paho error";
}

static const char *reason_text(int reason)
{
    const char *s = MQTTReasonCode_toString((enum MQTTReasonCodes)reason);
    return s ? s : "unknown reason code";
}

/* A reason code >= 0x80 in a CONNACK, PUBACK, SUBACK, UNSUBACK. */
static fmq_err reason_err(int reason)
{
    switch (reason) {
    case MQTTREASONCODE_BAD_USER_NAME_OR_PASSWORD:
    case MQTTREASONCODE_NOT_AUTHORIZED:
    case MQTTREASONCODE_BANNED:
    case MQTTREASONCODE_BAD_AUTHENTICATION_METHOD:
        return FMQ_ERR_DENIED;
    case MQTTREASONCODE_PACKET_TOO_LARGE:
        return FMQ_ERR_TOO_LARGE;
    case MQTTREASONCODE_SERVER_BUSY:
    case MQTTREASONCODE_QUOTA_EXCEEDED:
    case MQTTREASONCODE_MESSAGE_RATE_TOO_HIGH:
    case MQTTREASONCODE_CONNECTION_RATE_EXCEEDED:
        return FMQ_ERR_BUSY;
    case MQTTREASONCODE_TOPIC_FILTER_INVALID:
    case MQTTREASONCODE_TOPIC_NAME_INVALID:
        return FMQ_ERR_INVAL;
    default:
        return FMQ_ERR_MQTT;
    }
}

/* A Paho return code (< 0) from a call or a failure callback. */
static fmq_err paho_err(int rc)
{
    switch (rc) {
    case MQTTASYNC_SUCCESS:
        return FMQ_OK;
    case MQTTASYNC_PERSISTENCE_ERROR:
        return FMQ_ERR_IO;
    case MQTTASYNC_DISCONNECTED:
        return FMQ_ERR_STATE;
    case MQTTASYNC_MAX_MESSAGES_INFLIGHT:
    case MQTTASYNC_NO_MORE_MSGIDS:
    case MQTTASYNC_MAX_BUFFERED_MESSAGES:
    case MQTTASYNC_COMMAND_IGNORED:
        return FMQ_ERR_BUSY;
    case MQTTASYNC_BAD_UTF8_STRING:
    case MQTTASYNC_NULL_PARAMETER:
    case MQTTASYNC_TOPICNAME_TRUNCATED:
    case MQTTASYNC_BAD_STRUCTURE:
    case MQTTASYNC_BAD_QOS:
    case MQTTASYNC_BAD_PROTOCOL:
    case MQTTASYNC_BAD_MQTT_OPTION:
    case MQTTASYNC_WRONG_MQTT_VERSION:
    case MQTTASYNC_0_LEN_WILL_TOPIC:
    case MQTTASYNC_MAX_BUFFERED:
        return FMQ_ERR_INVAL;
    case MQTTASYNC_SSL_NOT_SUPPORTED:
        return FMQ_ERR_CONFIG;
    default:
        return FMQ_ERR_MQTT;
    }
}

/* Paho fills MQTTAsync_failureData5.reasonCode only on some paths (others
 * leave it uninitialised), so a reason is believed only when it is one. */
static int plausible_reason(int r)
{
    return r >= MQTTREASONCODE_UNSPECIFIED_ERROR &&
                   r <= MQTTREASONCODE_WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
               ? r
               : 0;
}

/* ------------------------------------------------------------ callbacks */
static void on_lost(void *ctx, char *cause)
{
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    atomic_store(&m->connected, 0);
    m->epoch++;
    if (m->ever_connected && !m->closing)
        m->lost = true;
    bool closing = m->closing;
    pthread_cond_broadcast(&m->state_cv);
    pthread_mutex_unlock(&m->mu);
    if (!closing)
        fmq_log_warn("mqtt %s: connection to %s lost%s%s; reconnecting",
                     m->client_id, m->uri, cause ? ": " : "",
                     cause ? cause : "");
    cb_leave(m);
}

/* The broker sent DISCONNECT (session taken over, shutting down...).
 * Paho then closes the connection and calls on_lost. */
static void on_disconnected(void *ctx, MQTTProperties *props,
                            enum MQTTReasonCodes reason)
{
    (void)props;
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        return;
    fmq_log_warn("mqtt %s: broker disconnected us: reason %d (%s)",
                 m->client_id, (int)reason, reason_text((int)reason));
    cb_leave(m);
}

static int on_message(void *ctx, char *topic, int topic_len,
                      MQTTAsync_message *msg)
{
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        goto done;
    /* topic_len > 0 means the topic may hold NUL bytes, which MQTT
     * forbids in topic names; such a message is dropped. */
    size_t tlen = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    bool bad_topic = topic_len > 0 && memchr(topic, '\0', tlen) != NULL;
    size_t plen = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    size_t need = tlen + plen;
    bool fits = false;
    uint64_t dropped = 0;
    size_t used = 0;

    pthread_mutex_lock(&m->mu);
    if (!bad_topic && m->q_bytes <= m->max_queue_bytes &&
        need <= m->max_queue_bytes - m->q_bytes) {
        m->q_bytes += need; /* reserved while we copy outside the lock */
        fits = true;
    } else {
        dropped = ++m->stats.dropped;
        used = m->q_bytes;
    }
    pthread_mutex_unlock(&m->mu);

    if (fits) {
        fmq_mqtt__node *n = fmq_calloc(1, sizeof *n);
        char *t = fmq_malloc(tlen + 1);
        uint8_t *p = fmq_malloc(plen + 1);
        if (n && t && p) {
            memcpy(t, topic, tlen);
            t[tlen] = '\0';
            if (plen)
                memcpy(p, msg->payload, plen);
            p[plen] = 0;
            n->msg.topic = t;
            n->msg.payload = p;
            n->msg.len = plen;
            n->msg.retained = msg->retained != 0;
            pthread_mutex_lock(&m->mu);
            if (m->q_tail)
                m->q_tail->next = n;
            else
                m->q_head = n;
            m->q_tail = n;
            m->stats.msgs_in++;
            m->stats.bytes_in += need;
            pthread_cond_signal(&m->queue_cv);
            pthread_mutex_unlock(&m->mu);
        } else {
            fmq_free(n);
            fmq_free(t);
            fmq_free(p);
            pthread_mutex_lock(&m->mu);
            m->q_bytes -= need;
            m->stats.dropped++;
            pthread_mutex_unlock(&m->mu);
            fmq_log_err("mqtt %s: out of memory: dropped a %zu-byte message",
                        m->client_id, plen);
        }
    } else if (bad_topic) {
        fmq_log_warn("mqtt %s: dropped a message whose topic holds a NUL byte",
                     m->client_id);
    } else if (dropped == 1 || dropped % 1000 == 0) {
        fmq_log_warn("mqtt %s: receive queue full (%zu of %zu bytes): dropped "
                     "a %zu-byte message on %.*s (%llu dropped so far)",
                     m->client_id, used, m->max_queue_bytes, plen,
                     (int)(tlen > 200 ? 200 : tlen), topic,
                     (unsigned long long)dropped);
    }
    cb_leave(m);
done:
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

static void on_connect_ok(void *ctx, MQTTAsync_successData5 *d)
{
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    if (m->conn_state == 1) {
        m->conn_state = 2;
        m->conn_code = MQTTASYNC_SUCCESS;
        m->conn_session_present = d && d->alt.connect.sessionPresent;
        pthread_cond_broadcast(&m->state_cv);
    }
    pthread_mutex_unlock(&m->mu);
    cb_leave(m);
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData5 *d)
{
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    if (m->conn_state == 1) {
        m->conn_state = 2;
        /* A CONNACK refusal arrives as a positive code: the reason code. */
        m->conn_code = d ? d->code : MQTTASYNC_FAILURE;
        if (m->conn_code == MQTTASYNC_SUCCESS)
            m->conn_code = MQTTASYNC_FAILURE;
        snprintf(m->conn_msg, sizeof m->conn_msg, "%s",
                 d && d->message ? d->message : "");
        pthread_cond_broadcast(&m->state_cv);
    }
    pthread_mutex_unlock(&m->mu);
    cb_leave(m);
}

/* OpenSSL's error queue, through ERR_print_errors_cb. Without this Paho
 * prints it to stderr itself. */
static int on_ssl_error(const char *str, size_t len, void *ctx)
{
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        return 1;
    while (len > 0 && (str[len - 1] == '\n' || str[len - 1] == '\r'))
        len--;
    int n = len > 190 ? 190 : (int)len;
    pthread_mutex_lock(&m->mu);
    snprintf(m->tls_err, sizeof m->tls_err, "%.*s", n, str);
    pthread_mutex_unlock(&m->mu);
    fmq_log_debug("mqtt %s: openssl: %.*s", m->client_id, n, str);
    cb_leave(m);
    return 1;
}

/* An acknowledgement for a waiting thread (or an orphan, see the top). */
static void ack_complete(fmq_mqtt *m, int token, int code, int reason)
{
    pthread_mutex_lock(&m->mu);
    fmq_mqtt__wait *w = m->waits;
    while (w && w->token != token)
        w = w->next;
    if (w) {
        w->done = true;
        w->code = code;
        w->reason = reason;
        pthread_cond_broadcast(&m->state_cv);
    } else {
        fmq_mqtt__orphan *o = &m->orphans[m->orphan_next++ % FMQ_MQTT__ORPHANS];
        o->used = true;
        o->token = token;
        o->code = code;
        o->reason = reason;
        o->t = fmq_mono_seconds();
    }
    pthread_mutex_unlock(&m->mu);
}

static void on_ack_ok(void *ctx, MQTTAsync_successData5 *d)
{
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        return;
    ack_complete(m, d->token, MQTTASYNC_SUCCESS, (int)d->reasonCode);
    cb_leave(m);
}

static void on_ack_fail(void *ctx, MQTTAsync_failureData5 *d)
{
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        return;
    int code = d->code == MQTTASYNC_SUCCESS ? MQTTASYNC_FAILURE : d->code;
    ack_complete(m, d->token, code, plausible_reason((int)d->reasonCode));
    cb_leave(m);
}

/* A publish nobody waits for failed: nobody else will hear of it. */
static void on_pub_fail(void *ctx, MQTTAsync_failureData5 *d)
{
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        return;
    int reason = plausible_reason((int)d->reasonCode);
    if (reason)
        fmq_log_warn("mqtt %s: publish (token %d) refused: reason %d (%s)",
                     m->client_id, d->token, reason, reason_text(reason));
    else
        fmq_log_warn("mqtt %s: publish (token %d) failed: Paho %d (%s)",
                     m->client_id, d->token, d->code, paho_text(d->code));
    cb_leave(m);
}

static void on_disc_done(fmq_mqtt *m)
{
    pthread_mutex_lock(&m->mu);
    m->disc_done = true;
    pthread_cond_broadcast(&m->state_cv);
    pthread_mutex_unlock(&m->mu);
}

static void on_disc_ok(void *ctx, MQTTAsync_successData5 *d)
{
    (void)d;
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        return;
    on_disc_done(m);
    cb_leave(m);
}

static void on_disc_fail(void *ctx, MQTTAsync_failureData5 *d)
{
    (void)d;
    fmq_mqtt *m = cb_enter(ctx);
    if (!m)
        return;
    on_disc_done(m);
    cb_leave(m);
}

/* ------------------------------------------------------ acknowledgements
 * Waits for the acknowledgement of token, whose request was made at
 * fmq_mono_seconds() == t0. what/name are for the log. */
static fmq_err wait_ack(fmq_mqtt *m, int token, double t0, uint32_t ms,
                        const char *what, const char *name)
{
    fmq_mqtt__wait w = {.token = token};
    struct timespec dl;
    deadline_in(&dl, ms);
    bool closing;

    pthread_mutex_lock(&m->mu);
    for (unsigned i = 0; i < FMQ_MQTT__ORPHANS; i++) {
        fmq_mqtt__orphan *o = &m->orphans[i];
        if (o->used && o->token == token && o->t >= t0) {
            w.done = true;
            w.code = o->code;
            w.reason = o->reason;
            o->used = false;
            break;
        }
    }
    if (!w.done) {
        w.next = m->waits;
        m->waits = &w;
        while (!w.done && !m->closing &&
               wait_until(&m->state_cv, &m->mu, &dl))
            ;
        fmq_mqtt__wait **pp = &m->waits;
        while (*pp != &w)
            pp = &(*pp)->next;
        *pp = w.next;
    }
    closing = m->closing;
    pthread_mutex_unlock(&m->mu);

    if (!w.done) {
        if (closing)
            return FMQ_ERR_STATE;
        fmq_log_warn("mqtt %s: %s %s: no acknowledgement within %u ms",
                     m->client_id, what, name, ms);
        return FMQ_ERR_TIMEOUT;
    }
    if (w.code == MQTTASYNC_SUCCESS && w.reason < MQTTREASONCODE_UNSPECIFIED_ERROR)
        return FMQ_OK;
    if (w.reason >= MQTTREASONCODE_UNSPECIFIED_ERROR) {
        fmq_log_warn("mqtt %s: %s %s refused: reason %d (%s)", m->client_id,
                     what, name, w.reason, reason_text(w.reason));
        return reason_err(w.reason);
    }
    fmq_log_warn("mqtt %s: %s %s failed: Paho %d (%s)", m->client_id, what,
                 name, w.code, paho_text(w.code));
    return paho_err(w.code);
}

/* ------------------------------------------------------- subscriptions */
static fmq_mqtt__sub *sub_find(fmq_mqtt *m, const char *filter)
{
    for (size_t i = 0; i < m->nsubs; i++)
        if (strcmp(m->subs[i].filter, filter) == 0)
            return &m->subs[i];
    return NULL;
}

static void sub_remove(fmq_mqtt *m, const char *filter)
{
    fmq_mqtt__sub *s = sub_find(m, filter);
    if (!s)
        return;
    fmq_free(s->filter);
    *s = m->subs[--m->nsubs];
}

static fmq_err send_subscribe(fmq_mqtt *m, const char *filter, int qos)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess5 = on_ack_ok;
    ro.onFailure5 = on_ack_fail;
    ro.context = ctx_of(m);
    double t0 = fmq_mono_seconds();
    int rc = MQTTAsync_subscribe(m->h, filter, qos, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        fmq_log_warn("mqtt %s: subscribe %s: Paho %d (%s)", m->client_id,
                     filter, rc, paho_text(rc));
        return paho_err(rc);
    }
    return wait_ack(m, ro.token, t0, FMQ_MQTT__ACK_TIMEOUT_MS, "subscribe",
                    filter);
}

/* Subscribes every filter the broker does not hold (all of them when the
 * session is new), then reports connected unless the connection was lost
 * again meanwhile (epoch). Called with conn_mu held, mu not held. */
static void after_connect(fmq_mqtt *m, bool session_present, uint64_t epoch)
{
    for (;;) {
        char *filter = NULL;
        int qos = 0;
        pthread_mutex_lock(&m->mu);
        if (!session_present) {
            for (size_t i = 0; i < m->nsubs; i++)
                m->subs[i].active = false;
            session_present = true; /* only once */
        }
        bool stop = m->closing || m->epoch != epoch;
        for (size_t i = 0; !stop && i < m->nsubs; i++) {
            if (!m->subs[i].active) {
                filter = fmq_strdup(m->subs[i].filter);
                qos = m->subs[i].qos;
                if (!filter)
                    stop = true;
                break;
            }
        }
        pthread_mutex_unlock(&m->mu);
        if (stop || !filter)
            break;
        fmq_err e = send_subscribe(m, filter, qos);
        pthread_mutex_lock(&m->mu);
        fmq_mqtt__sub *s = sub_find(m, filter);
        if (s && e == FMQ_OK && s->qos == qos)
            s->active = true;
        else if (s && (e == FMQ_ERR_DENIED || e == FMQ_ERR_INVAL))
            sub_remove(m, filter);
        bool again = e == FMQ_OK || e == FMQ_ERR_DENIED || e == FMQ_ERR_INVAL;
        pthread_mutex_unlock(&m->mu);
        if (e != FMQ_OK)
            fmq_log_err("mqtt %s: re-subscribing %s: %s", m->client_id, filter,
                        fmq_strerror(e));
        fmq_free(filter);
        if (!again)
            break; /* lost or timed out: the next reconnect tries again */
    }
    pthread_mutex_lock(&m->mu);
    bool all = true;
    for (size_t i = 0; i < m->nsubs; i++)
        all = all && m->subs[i].active;
    if (m->epoch == epoch && !m->closing && all) {
        atomic_store(&m->connected, 1);
        pthread_cond_broadcast(&m->state_cv);
    } else if (m->epoch == epoch && !m->closing) {
        /* connected but a subscription is missing: try again soon */
        m->lost = true;
        pthread_cond_broadcast(&m->state_cv);
    }
    pthread_mutex_unlock(&m->mu);
}

/* -------------------------------------------------------------- connect */
static int clamp_int(uint32_t v, int lo, int hi)
{
    return v < (uint32_t)lo ? lo : v > (uint32_t)hi ? hi : (int)v;
}

/* One attempt. Called with conn_mu held. */
static fmq_err do_connect(fmq_mqtt *m, uint32_t timeout_ms, bool clean,
                          bool *session_present)
{
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer5;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;

    co.keepAliveInterval = clamp_int(m->keepalive_s, 0, 65535);
    co.cleanstart = clean;
    co.maxInflight = clamp_int(m->max_inflight, 1, 65535);
    co.connectTimeout = (int)(timeout_ms / 1000) + 2; /* ours fires first */
    co.automaticReconnect = 0;
    co.username = m->username;
    co.password = m->password;
    co.connectProperties = m->conn_props.count ? &m->conn_props : NULL;
    if (m->will_topic) {
        will.topicName = m->will_topic;
        will.message = NULL;
        will.payload.len = (int)m->will_len;
        will.payload.data = m->will_payload;
        will.retained = m->will_retain;
        will.qos = m->will_qos;
        co.will = &will;
    }
    if (m->tls) {
        ssl.trustStore = m->ca_file;
        ssl.keyStore = m->cert_file;
        ssl.privateKey = m->key_file;
        ssl.enableServerCertAuth = m->verify;
        ssl.verify = m->verify; /* host name against the certificate */
        /* Trust the fleet's CA only, not every CA the system knows. */
        ssl.disableDefaultTrustStore = m->ca_file != NULL;
        ssl.ssl_error_cb = on_ssl_error;
        ssl.ssl_error_context = ctx_of(m);
        co.ssl = &ssl;
        if (!m->verify)
            fmq_log_warn("mqtt %s: TLS certificate verification is off",
                         m->client_id);
    }
    co.onSuccess5 = on_connect_ok;
    co.onFailure5 = on_connect_fail;
    co.context = ctx_of(m);

    pthread_mutex_lock(&m->mu);
    m->conn_state = 1;
    m->conn_msg[0] = '\0';
    m->tls_err[0] = '\0';
    pthread_mutex_unlock(&m->mu);

    int rc = MQTTAsync_connect(m->h, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        pthread_mutex_lock(&m->mu);
        m->conn_state = 0;
        pthread_mutex_unlock(&m->mu);
        fmq_log_err("mqtt %s: connect to %s: Paho %d (%s)", m->client_id,
                    m->uri, rc, paho_text(rc));
        return paho_err(rc);
    }

    struct timespec dl;
    deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&m->mu);
    while (m->conn_state == 1 && !m->closing &&
           wait_until(&m->state_cv, &m->mu, &dl))
        ;
    bool answered = m->conn_state == 2;
    bool closing = m->closing;
    int code = m->conn_code;
    bool sp = m->conn_session_present;
    char msg[sizeof m->conn_msg], tls[sizeof m->tls_err];
    memcpy(msg, m->conn_msg, sizeof msg);
    memcpy(tls, m->tls_err, sizeof tls);
    m->conn_state = 0; /* a late answer is ignored */
    pthread_mutex_unlock(&m->mu);

    if (!answered) {
        /* Abandon the attempt so that it cannot complete behind our back. */
        MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer5;
        dopt.timeout = 0;
        (void)MQTTAsync_disconnect(m->h, &dopt);
        if (closing)
            return FMQ_ERR_STATE;
        fmq_log_err("mqtt %s: connect to %s: no CONNACK within %u ms",
                    m->client_id, m->uri, timeout_ms);
        return FMQ_ERR_TIMEOUT;
    }
    if (code == MQTTASYNC_SUCCESS) {
        *session_present = sp;
        return FMQ_OK;
    }
    if (code > 0) {
        fmq_log_err("mqtt %s: connect to %s refused: reason %d (%s)",
                    m->client_id, m->uri, code, reason_text(code));
        return reason_err(code) == FMQ_ERR_DENIED ? FMQ_ERR_DENIED
                                                   : FMQ_ERR_MQTT;
    }
    fmq_log_err("mqtt %s: connect to %s failed: Paho %d (%s)%s%s%s%s",
                m->client_id, m->uri, code, paho_text(code), msg[0] ? ": " : "",
                msg, tls[0] ? "; TLS: " : "", tls);
    return FMQ_ERR_MQTT;
}

fmq_err fmq_mqtt_connect(fmq_mqtt *m, uint32_t timeout_ms)
{
    if (!m)
        return FMQ_ERR_INVAL;
    if (timeout_ms == 0)
        timeout_ms = FMQ_MQTT__DEFAULT_CONNECT_MS;
    pthread_mutex_lock(&m->conn_mu);
    if (atomic_load(&m->connected)) {
        pthread_mutex_unlock(&m->conn_mu);
        return FMQ_OK;
    }
    pthread_mutex_lock(&m->mu);
    bool first = !m->ever_connected;
    uint64_t epoch = m->epoch;
    pthread_mutex_unlock(&m->mu);

    bool sp = false;
    fmq_err e = do_connect(m, timeout_ms, m->clean_start && first, &sp);
    if (e == FMQ_OK) {
        pthread_mutex_lock(&m->mu);
        m->ever_connected = true;
        m->attempt_ms = timeout_ms;
        if (m->epoch == epoch)
            m->lost = false;
        pthread_mutex_unlock(&m->mu);
        fmq_log_info("mqtt %s: connected to %s (session present %d)",
                     m->client_id, m->uri, (int)sp);
        after_connect(m, sp, epoch);
    }
    pthread_mutex_unlock(&m->conn_mu);
    return e;
}

bool fmq_mqtt_connected(const fmq_mqtt *m)
{
    return m && atomic_load(&m->connected) != 0;
}

/* The reconnect thread: sleeps until a connection is lost, then tries
 * again with back-off until it succeeds or the client is destroyed. */
static void *reconnect_main(void *arg)
{
    fmq_mqtt *m = arg;
    unsigned failures = 0;

    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->closing && !m->lost)
            pthread_cond_wait(&m->state_cv, &m->mu);
        if (m->closing)
            break;
        uint64_t d = m->reconnect_min_ms;
        for (unsigned i = 0; i < failures && d < m->reconnect_max_ms; i++)
            d *= 2;
        if (d > m->reconnect_max_ms)
            d = m->reconnect_max_ms;
        uint32_t delay = (uint32_t)(d / 2 + fmq_rng_below(&m->rng, d / 2 + 1));
        struct timespec dl;
        deadline_in(&dl, delay);
        while (!m->closing && wait_until(&m->state_cv, &m->mu, &dl))
            ;
        if (m->closing)
            break;
        uint64_t epoch = m->epoch;
        uint32_t attempt_ms = m->attempt_ms;
        pthread_mutex_unlock(&m->mu);

        pthread_mutex_lock(&m->conn_mu);
        bool sp = false;
        fmq_err e = FMQ_OK;
        if (!MQTTAsync_isConnected(m->h))
            e = do_connect(m, attempt_ms, false, &sp);
        else
            sp = true; /* fmq_mqtt_connect got there first */
        if (e == FMQ_OK) {
            pthread_mutex_lock(&m->mu);
            if (m->epoch == epoch)
                m->lost = false;
            m->stats.reconnects++;
            pthread_mutex_unlock(&m->mu);
            fmq_log_notice("mqtt %s: reconnected to %s (session present %d)",
                           m->client_id, m->uri, (int)sp);
            after_connect(m, sp, epoch);
            failures = 0;
        } else if (failures < 32) {
            failures++;
        }
        pthread_mutex_unlock(&m->conn_mu);
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */
void fmq_mqtt_cfg_defaults(fmq_mqtt_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->verify = true;
    cfg->session_expiry_s = 86400;
    cfg->clean_start = false;
    cfg->keepalive_s = 30;
    cfg->will_qos = 1;
    cfg->max_inflight = 1000;
    cfg->reconnect_min_ms = 500;
    cfg->reconnect_max_ms = 30000;
    cfg->max_queue_bytes = (size_t)128 << 20;
}

void fmq_mqtt_msg_free(fmq_mqtt_msg *msg)
{
    if (!msg)
        return;
    fmq_free(msg->topic);
    fmq_free(msg->payload);
    memset(msg, 0, sizeof *msg);
}

static bool has_wildcard(const char *t) { return strpbrk(t, "+#") != NULL; }

static fmq_err dup_opt(const char *s, char **out)
{
    *out = NULL;
    if (!s)
        return FMQ_OK;
    *out = fmq_strdup(s);
    return *out ? FMQ_OK : FMQ_ERR_NOMEM;
}

static void mqtt_free(fmq_mqtt *m)
{
    for (fmq_mqtt__node *n = m->q_head, *next; n; n = next) {
        next = n->next;
        fmq_mqtt_msg_free(&n->msg);
        fmq_free(n);
    }
    for (size_t i = 0; i < m->nsubs; i++)
        fmq_free(m->subs[i].filter);
    fmq_free(m->subs);
    fmq_free(m->uri);
    fmq_free(m->client_id);
    fmq_free(m->username);
    fmq_free(m->password);
    fmq_free(m->ca_file);
    fmq_free(m->cert_file);
    fmq_free(m->key_file);
    fmq_free(m->will_topic);
    fmq_free(m->will_payload);
    fmq_free(m->persist_dir);
    if (m->queue_cv_ok)
        pthread_cond_destroy(&m->queue_cv);
    if (m->state_cv_ok)
        pthread_cond_destroy(&m->state_cv);
    if (m->mu_ok)
        pthread_mutex_destroy(&m->mu);
    if (m->conn_mu_ok)
        pthread_mutex_destroy(&m->conn_mu);
    fmq_free(m);
}

/* Frees what Paho allocated for us, then the Paho client (see conn_props). */
static void paho_destroy(fmq_mqtt *m)
{
    MQTTProperties empty = MQTTProperties_initializer;
    MQTTProperties_free(&m->conn_props);
    m->conn_props = empty;
    MQTTAsync_destroy(&m->h);
}

static fmq_err check_cfg(const fmq_mqtt_cfg *c, bool *tls)
{
    static const struct {
        const char *prefix;
        bool tls;
    } schemes[] = {{"mqtts://", true}, {"ssl://", true},
                   {"mqtt://", false}, {"tcp://", false}};
    if (!c->uri)
        return FMQ_ERR_INVAL;
    size_t i;
    for (i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncmp(c->uri, schemes[i].prefix, strlen(schemes[i].prefix)) == 0)
            break;
    if (i == sizeof schemes / sizeof schemes[0] ||
        c->uri[strlen(schemes[i].prefix)] == '\0') {
        fmq_log_err("mqtt: uri '%s' is not mqtts://host:port or "
                    "mqtt://host:port", c->uri);
        return FMQ_ERR_INVAL;
    }
    *tls = schemes[i].tls;
    if (!c->client_id || !c->client_id[0] || strlen(c->client_id) > 64) {
        fmq_log_err("mqtt: a client id of 1..64 bytes is required");
        return FMQ_ERR_INVAL;
    }
    if (c->will_topic && (!c->will_topic[0] || has_wildcard(c->will_topic) ||
                          strlen(c->will_topic) > FMQ_MQTT__MAX_TOPIC ||
                          c->will_qos < 0 || c->will_qos > 2 ||
                          c->will_len > INT_MAX ||
                          (c->will_len && !c->will_payload))) {
        fmq_log_err("mqtt %s: bad last will (topic, QoS or payload)",
                    c->client_id);
        return FMQ_ERR_INVAL;
    }
    if ((c->key_file != NULL) != (c->cert_file != NULL)) {
        fmq_log_err("mqtt %s: cert_file and key_file go together",
                    c->client_id);
        return FMQ_ERR_INVAL;
    }
    if (c->max_queue_bytes == 0)
        return FMQ_ERR_INVAL;
    return FMQ_OK;
}

fmq_err fmq_mqtt_new(const fmq_mqtt_cfg *cfg, fmq_mqtt **out)
{
    fmq_err e;
    bool tls = false;
    if (!out)
        return FMQ_ERR_INVAL;
    *out = NULL;
    if (!cfg)
        return FMQ_ERR_INVAL;
    if ((e = check_cfg(cfg, &tls)) != FMQ_OK)
        return e;

    fmq_mqtt *m = fmq_calloc(1, sizeof *m);
    if (!m)
        return FMQ_ERR_NOMEM;
    MQTTProperties empty = MQTTProperties_initializer;
    m->conn_props = empty;
    m->tls = tls;
    m->verify = cfg->verify;
    m->clean_start = cfg->clean_start;
    m->keepalive_s = cfg->keepalive_s;
    m->will_retain = cfg->will_retain;
    m->will_qos = cfg->will_qos;
    m->max_inflight = cfg->max_inflight ? cfg->max_inflight : 1000;
    m->reconnect_min_ms = cfg->reconnect_min_ms ? cfg->reconnect_min_ms : 1;
    m->reconnect_max_ms = cfg->reconnect_max_ms > m->reconnect_min_ms
                              ? cfg->reconnect_max_ms
                              : m->reconnect_min_ms;
    m->max_queue_bytes = cfg->max_queue_bytes;
    m->attempt_ms = FMQ_MQTT__DEFAULT_CONNECT_MS;

    if ((e = dup_opt(cfg->uri, &m->uri)) || (e = dup_opt(cfg->client_id, &m->client_id)) ||
        (e = dup_opt(cfg->username, &m->username)) ||
        (e = dup_opt(cfg->password, &m->password)) ||
        (e = dup_opt(cfg->ca_file, &m->ca_file)) ||
        (e = dup_opt(cfg->cert_file, &m->cert_file)) ||
        (e = dup_opt(cfg->key_file, &m->key_file)) ||
        (e = dup_opt(cfg->will_topic, &m->will_topic)) ||
        (e = dup_opt(cfg->persist_dir, &m->persist_dir)))
        goto fail;
    if (cfg->will_topic) {
        m->will_len = cfg->will_len;
        if (!(m->will_payload = fmq_malloc(cfg->will_len + 1))) {
            e = FMQ_ERR_NOMEM;
            goto fail;
        }
        if (cfg->will_len)
            memcpy(m->will_payload, cfg->will_payload, cfg->will_len);
    }
    if (m->persist_dir && (e = fmq_mkdir_p(m->persist_dir)) != FMQ_OK) {
        fmq_log_err("mqtt %s: cannot create %s: %s", m->client_id,
                    m->persist_dir, fmq_strerror(e));
        goto fail;
    }

    e = FMQ_ERR_NOMEM;
    if (pthread_mutex_init(&m->mu, NULL) != 0)
        goto fail;
    m->mu_ok = true;
    if (pthread_mutex_init(&m->conn_mu, NULL) != 0)
        goto fail;
    m->conn_mu_ok = true;
    if (cond_init_mono(&m->state_cv) != FMQ_OK)
        goto fail;
    m->state_cv_ok = true;
    if (cond_init_mono(&m->queue_cv) != FMQ_OK)
        goto fail;
    m->queue_cv_ok = true;

    if ((e = reg_add(m)) != FMQ_OK)
        goto fail;

    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
    /* Publishes made while the connection is down wait in Paho's queue
     * (and its file store) until the reconnect. MQTTAsync_send counts
     * every queued publish against maxBufferedMessages, connected or not,
     * so Paho's default of 100 refuses bursts; fmq_mqtt_publish checks
     * "connected once" itself. */
    co.sendWhileDisconnected = 1;
    co.allowDisconnectedSendAtAnyTime = 1;
    co.maxBufferedMessages = FMQ_MQTT__MAX_BUFFERED;
    co.deleteOldestMessages = 0;
    co.restoreMessages = 1;
    co.persistQoS0 = 0;
    int rc = MQTTAsync_createWithOptions(
        &m->h, m->uri, m->client_id,
        m->persist_dir ? MQTTCLIENT_PERSISTENCE_DEFAULT : MQTTCLIENT_PERSISTENCE_NONE,
        m->persist_dir, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        fmq_log_err("mqtt %s: cannot create a client for %s: Paho %d (%s)",
                    m->client_id, m->uri, rc, paho_text(rc));
        e = paho_err(rc) == FMQ_ERR_IO ? FMQ_ERR_IO : FMQ_ERR_MQTT;
        goto fail_reg;
    }
    if ((rc = MQTTAsync_setCallbacks(m->h, ctx_of(m), on_lost, on_message,
                                     NULL)) != MQTTASYNC_SUCCESS ||
        (rc = MQTTAsync_setDisconnected(m->h, ctx_of(m), on_disconnected)) !=
            MQTTASYNC_SUCCESS) {
        fmq_log_err("mqtt %s: setting callbacks: Paho %d (%s)", m->client_id,
                    rc, paho_text(rc));
        e = FMQ_ERR_MQTT;
        goto fail_paho;
    }
    if (cfg->session_expiry_s > 0) {
        MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL};
        p.value.integer4 = cfg->session_expiry_s;
        if (MQTTProperties_add(&m->conn_props, &p) != 0) {
            e = FMQ_ERR_NOMEM;
            goto fail_paho;
        }
    }
    fmq_rng_seed(&m->rng, fmq_now_ms() ^ ((uint64_t)m->id << 32) ^
                              (uint64_t)(uintptr_t)m);
    if (pthread_create(&m->thread, NULL, reconnect_main, m) != 0) {
        e = FMQ_ERR_NOMEM;
        goto fail_paho;
    }
    m->thread_ok = true;
    *out = m;
    return FMQ_OK;

fail_paho:
    paho_destroy(m);
fail_reg:
    reg_remove(m);
fail:
    mqtt_free(m);
    return e;
}

void fmq_mqtt_destroy(fmq_mqtt **mp)
{
    if (!mp || !*mp)
        return;
    fmq_mqtt *m = *mp;
    *mp = NULL;

    pthread_mutex_lock(&m->mu);
    m->closing = true;
    pthread_cond_broadcast(&m->state_cv);
    pthread_cond_broadcast(&m->queue_cv);
    pthread_mutex_unlock(&m->mu);
    if (m->thread_ok)
        pthread_join(m->thread, NULL);

    if (MQTTAsync_isConnected(m->h)) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
        d.timeout = FMQ_MQTT__DISCONNECT_MS;
        d.onSuccess5 = on_disc_ok;
        d.onFailure5 = on_disc_fail;
        d.context = ctx_of(m);
        pthread_mutex_lock(&m->mu);
        m->disc_done = false;
        pthread_mutex_unlock(&m->mu);
        int rc = MQTTAsync_disconnect(m->h, &d);
        if (rc == MQTTASYNC_SUCCESS) {
            struct timespec dl;
            deadline_in(&dl, FMQ_MQTT__DISCONNECT_MS + 2000);
            pthread_mutex_lock(&m->mu);
            while (!m->disc_done && wait_until(&m->state_cv, &m->mu, &dl))
                ;
            pthread_mutex_unlock(&m->mu);
        } else {
            fmq_log_info("mqtt %s: disconnect: Paho %d (%s)", m->client_id, rc,
                         paho_text(rc));
        }
    }
    paho_destroy(m);
    reg_remove(m);
    mqtt_free(m);
}

/* ---------------------------------------------------------- operations */
fmq_err fmq_mqtt_subscribe(fmq_mqtt *m, const char *filter, int qos)
{
    if (!m || !filter || !filter[0] || strlen(filter) > FMQ_MQTT__MAX_TOPIC ||
        qos < 0 || qos > 2)
        return FMQ_ERR_INVAL;

    pthread_mutex_lock(&m->mu);
    fmq_mqtt__sub *s = sub_find(m, filter);
    if (s) {
        s->active = s->active && s->qos == qos;
        s->qos = qos;
    } else {
        if (m->nsubs == m->capsubs) {
            size_t cap = m->capsubs ? m->capsubs * 2 : 4;
            fmq_mqtt__sub *ns = fmq_realloc(m->subs, cap * sizeof *ns);
            if (!ns) {
                pthread_mutex_unlock(&m->mu);
                return FMQ_ERR_NOMEM;
            }
            m->subs = ns;
            m->capsubs = cap;
        }
        char *f = fmq_strdup(filter);
        if (!f) {
            pthread_mutex_unlock(&m->mu);
            return FMQ_ERR_NOMEM;
        }
        m->subs[m->nsubs++] = (fmq_mqtt__sub){.filter = f, .qos = qos};
    }
    pthread_mutex_unlock(&m->mu);

    if (!MQTTAsync_isConnected(m->h))
        return FMQ_OK; /* made at the next connect */
    fmq_err e = send_subscribe(m, filter, qos);
    pthread_mutex_lock(&m->mu);
    s = sub_find(m, filter);
    if (s && e == FMQ_OK && s->qos == qos)
        s->active = true;
    else if (s && (e == FMQ_ERR_DENIED || e == FMQ_ERR_INVAL))
        sub_remove(m, filter);
    pthread_mutex_unlock(&m->mu);
    /* Lost the connection in between: the reconnect makes it. */
    return e == FMQ_ERR_STATE ? FMQ_OK : e;
}

fmq_err fmq_mqtt_unsubscribe(fmq_mqtt *m, const char *filter)
{
    if (!m || !filter || !filter[0])
        return FMQ_ERR_INVAL;
    pthread_mutex_lock(&m->mu);
    bool known = sub_find(m, filter) != NULL;
    sub_remove(m, filter);
    pthread_mutex_unlock(&m->mu);
    if (!known)
        return FMQ_ERR_NOTFOUND;
    if (!MQTTAsync_isConnected(m->h))
        return FMQ_OK; /* a new session will not have it; an old one might */

    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess5 = on_ack_ok;
    ro.onFailure5 = on_ack_fail;
    ro.context = ctx_of(m);
    double t0 = fmq_mono_seconds();
    int rc = MQTTAsync_unsubscribe(m->h, filter, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        fmq_log_warn("mqtt %s: unsubscribe %s: Paho %d (%s)", m->client_id,
                     filter, rc, paho_text(rc));
        return rc == MQTTASYNC_DISCONNECTED ? FMQ_OK : paho_err(rc);
    }
    return wait_ack(m, ro.token, t0, FMQ_MQTT__ACK_TIMEOUT_MS, "unsubscribe",
                    filter);
}

fmq_err fmq_mqtt_publish(fmq_mqtt *m, const char *topic, const void *payload,
                         size_t len, int qos, bool retain, uint32_t wait_ms)
{
    if (!m || !topic || !topic[0] || has_wildcard(topic) || qos < 0 ||
        qos > 2 || (len && !payload))
        return FMQ_ERR_INVAL;
    size_t tlen = strlen(topic);
    if (tlen > FMQ_MQTT__MAX_TOPIC)
        return FMQ_ERR_INVAL;
    if (len > FMQ_MQTT__MAX_PACKET - tlen - 64) {
        fmq_log_err("mqtt %s: a %zu-byte payload exceeds MQTT's packet limit",
                    m->client_id, len);
        return FMQ_ERR_TOO_LARGE;
    }
    pthread_mutex_lock(&m->mu);
    bool ever = m->ever_connected;
    pthread_mutex_unlock(&m->mu);
    if (!ever)
        return FMQ_ERR_STATE;

    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = len ? (void *)payload : (void *)"";
    msg.payloadlen = (int)len;
    msg.qos = qos;
    msg.retained = retain;
    bool wait = wait_ms > 0 && qos > 0;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess5 = wait ? on_ack_ok : NULL;
    ro.onFailure5 = wait ? on_ack_fail : on_pub_fail;
    ro.context = ctx_of(m);
    double t0 = fmq_mono_seconds();
    int rc = MQTTAsync_sendMessage(m->h, topic, &msg, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        fmq_log_warn("mqtt %s: publish %s (%zu bytes): Paho %d (%s)",
                     m->client_id, topic, len, rc, paho_text(rc));
        return paho_err(rc);
    }
    pthread_mutex_lock(&m->mu);
    m->stats.msgs_out++;
    m->stats.bytes_out += len + tlen;
    pthread_mutex_unlock(&m->mu);
    if (!wait)
        return FMQ_OK;
    return wait_ack(m, ro.token, t0, wait_ms, "publish", topic);
}

fmq_err fmq_mqtt_next(fmq_mqtt *m, uint32_t timeout_ms, fmq_mqtt_msg *out)
{
    if (!out)
        return FMQ_ERR_INVAL;
    memset(out, 0, sizeof *out);
    if (!m)
        return FMQ_ERR_INVAL;
    pthread_mutex_lock(&m->mu);
    if (!m->q_head && timeout_ms > 0) {
        struct timespec dl;
        deadline_in(&dl, timeout_ms);
        while (!m->q_head && !m->closing &&
               wait_until(&m->queue_cv, &m->mu, &dl))
            ;
    }
    fmq_mqtt__node *n = m->q_head;
    if (n) {
        m->q_head = n->next;
        if (!m->q_head)
            m->q_tail = NULL;
        m->q_bytes -= n->msg.len + strlen(n->msg.topic);
    }
    pthread_mutex_unlock(&m->mu);
    if (!n)
        return FMQ_ERR_TIMEOUT;
    *out = n->msg;
    fmq_free(n);
    return FMQ_OK;
}

void fmq_mqtt_get_stats(const fmq_mqtt *cm, fmq_mqtt_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!cm)
        return;
    fmq_mqtt *m = (fmq_mqtt *)cm; /* the lock is not part of the value */
    pthread_mutex_lock(&m->mu);
    *out = m->stats;
    pthread_mutex_unlock(&m->mu);
}
