/*
 * run.c — one device on one MQTT connection (the runner, see device.h).
 *
 * Poll loop, one step:
 *   1. (re)connected since the last step: publish the retained status
 *      "online"; send the pending update unless the broker acknowledged
 *      it; at the first connection, handle the global held from
 *      device.state again (a round interrupted by a crash is trained now).
 *   2. a held-back update (slow device) whose time has come: publish it.
 *   3. one received message: a global or a delta goes to the core; an
 *      update it produces is published at QoS 1 on
 *      fedmq/<fleet>/update/<id>.
 * Subscriptions (proto/SPEC.md §6.6, §9.1): model/global while the device
 * holds no model or the aggregator publishes no deltas (the model message
 * last taken does not say gd); otherwise model/delta only. A delta that
 * does not continue from the model held (FMQ_DEV_BEHIND) starts a fetch:
 * subscribe to model/global, take the retained global, unsubscribe; the
 * latest delta that arrives meanwhile is parked and handed to the core
 * after the global (it applies when it continues from it).
 * Updates are published only while connected: when the connection is
 * down they stay pending in the core (and in device.state) and step 1
 * sends them when it returns.
 */
#include "device.h"
#include "sysinfo.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

struct fmq_devrun {
    fmq_device *d;
    fmq_mqtt *mq;
    char t_global[FMQ_ID_MAX + 32];
    char t_delta[FMQ_ID_MAX + 32];
    bool sub_global, sub_delta; /* what this client subscribed to */
    bool fetch;       /* behind: take the retained global */
    uint32_t stray;   /* globals that came while not subscribed */
    fmq_buf parked;   /* the latest delta that came during a fetch */
    char t_update[2 * FMQ_ID_MAX + 32];
    char t_status[2 * FMQ_ID_MAX + 32];
    char fleet[FMQ_ID_MAX + 1];
    bool was_connected, fed_held;
    bool hold_pending; /* an update waits for hold_until */
    double hold_until;
    uint32_t ack_wait_ms;
    fmq_devrun_filter_fn filter;
    void *filter_arg;
    fmq_device_result last;
    fmq_buf upd;
    /* battery and temperature as last read from /sys, at sys_at
     * (fmq_mono_seconds; sys_read false: never): a status each round per
     * device would otherwise scan sysfs each time (fedmq-sim: N per round) */
    bool sys_read;
    double sys_at;
    float battery_pct, temp_c;
};

/* How old a battery or temperature reading a status may carry: both move
 * over seconds, and a round can be a few tens of milliseconds. */
#define FMQ_DEVRUN__SYS_TTL_S 1.0

static void status_fill(fmq_devrun *r, bool online, fmq_msg_status *s)
{
    fmq_msg_status_init(s);
    snprintf(s->fleet, sizeof s->fleet, "%s", r->fleet);
    snprintf(s->device, sizeof s->device, "%s", fmq_device_id(r->d));
    s->online = online;
    s->ts_ms = fmq_now_ms();
    if (!online)
        return;
    fmq_device_stats st;
    fmq_device_get_stats(r->d, &st);
    if (st.version)
        s->version = st.version;
    if (st.last_trained)
        s->last_round = st.last_trained;
    if (st.samples)
        s->samples = st.samples;
    if (isfinite(st.last_train_s))
        s->train_s = (float)st.last_train_s;
    if (isfinite(st.last_norm) && st.last_norm < 3e38)
        s->norm = (float)st.last_norm;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        s->rss_bytes = (uint64_t)ru.ru_maxrss * 1024u;
    /* the process's: in fedmq-sim, every device reports the whole fleet's */
    double cpu = fmq_sys_cpu_seconds();
    if (isfinite(cpu))
        s->cpu_s = (float)cpu;
    double now = fmq_mono_seconds();
    if (!r->sys_read || now - r->sys_at >= FMQ_DEVRUN__SYS_TTL_S) {
        r->battery_pct = fmq_sys_battery_pct(NULL); /* NaN: not sent */
        r->temp_c = fmq_sys_temp_c(NULL);
        r->sys_at = now;
        r->sys_read = true;
    }
    s->battery_pct = r->battery_pct;
    s->temp_c = r->temp_c;
}

static void publish_status(fmq_devrun *r, bool online)
{
    fmq_msg_status s;
    status_fill(r, online, &s);
    fmq_buf b;
    fmq_buf_init(&b);
    fmq_err e = fmq_codec_encode_status(&s, &b);
    if (!e)
        e = fmq_mqtt_publish(r->mq, r->t_status, b.data, b.len, 1, true,
                             online ? 0 : 2000);
    if (e)
        fmq_log_warn("device %s: status: %s", fmq_device_id(r->d),
                     fmq_strerror(e));
    fmq_buf_fini(&b);
}

/* Publishes the core's pending update (if any, and if not acknowledged). */
static void send_pending(fmq_devrun *r, const char *why)
{
    const uint8_t *p;
    size_t len;
    bool acked;
    if (fmq_device_pending(r->d, &p, &len, &acked) || acked)
        return;
    if (!fmq_mqtt_connected(r->mq))
        return; /* step 1 sends it after the reconnect */
    fmq_err e = fmq_mqtt_publish(r->mq, r->t_update, p, len, 1, false,
                                 r->ack_wait_ms);
    if (e) {
        fmq_log_warn("device %s: publishing the update (%s): %s; it stays "
                     "pending", fmq_device_id(r->d), why, fmq_strerror(e));
        return;
    }
    fmq_log_debug("device %s: update published (%s, %zu bytes)",
                  fmq_device_id(r->d), why, len);
    if (r->ack_wait_ms && fmq_device_mark_acked(r->d))
        fmq_log_warn("device %s: could not record the acknowledgement",
                     fmq_device_id(r->d));
}

/* Subscribes to what the device should read now (new filters first, so
 * that nothing is missed between the two) and unsubscribes from the rest:
 * model/delta while it follows deltas, model/global when it does not or
 * while it fetches. Errors of subscribe (logged here); an unsubscribe that
 * fails is only logged. */
static fmq_err sync_subs(fmq_devrun *r)
{
    bool want_delta = fmq_device_follows_deltas(r->d);
    bool want_global = !want_delta || r->fetch;
    fmq_err e = FMQ_OK;
    if (want_delta && !r->sub_delta) {
        if ((e = fmq_mqtt_subscribe(r->mq, r->t_delta, 1)) == FMQ_OK)
            r->sub_delta = true;
    }
    if (!e && want_global && !r->sub_global) {
        if ((e = fmq_mqtt_subscribe(r->mq, r->t_global, 1)) == FMQ_OK)
            r->sub_global = true;
    }
    if (e) {
        fmq_log_warn("device %s: subscribing: %s", fmq_device_id(r->d),
                     fmq_strerror(e));
        return e;
    }
    if (!want_delta && r->sub_delta) {
        r->sub_delta = false;
        e = fmq_mqtt_unsubscribe(r->mq, r->t_delta);
    }
    if (!want_global && r->sub_global) {
        r->sub_global = false;
        fmq_err e2 = fmq_mqtt_unsubscribe(r->mq, r->t_global);
        e = e ? e : e2;
    }
    if (e && e != FMQ_ERR_NOTFOUND)
        fmq_log_warn("device %s: unsubscribing: %s", fmq_device_id(r->d),
                     fmq_strerror(e));
    return FMQ_OK;
}

fmq_err fmq_devrun_new(fmq_device *d, const fmq_mqtt_cfg *mc,
                       uint32_t connect_ms, fmq_devrun **out)
{
    *out = NULL;
    fmq_devrun *r = fmq_calloc(1, sizeof *r);
    if (!r)
        return FMQ_ERR_NOMEM;
    r->d = d;
    fmq_buf_init(&r->upd);
    fmq_buf_init(&r->parked);
    fmq_err e = FMQ_OK;
    fmq_buf will;
    fmq_buf_init(&will);
    const char *id = fmq_device_id(d);
    snprintf(r->fleet, sizeof r->fleet, "%s", fmq_device_fleet(d));
    snprintf(r->t_global, sizeof r->t_global, "fedmq/%s/model/global",
             r->fleet);
    snprintf(r->t_delta, sizeof r->t_delta, "fedmq/%s/model/delta",
             r->fleet);
    snprintf(r->t_update, sizeof r->t_update, "fedmq/%s/update/%s", r->fleet,
             id);
    snprintf(r->t_status, sizeof r->t_status, "fedmq/%s/status/%s", r->fleet,
             id);
    fmq_msg_status ws;
    status_fill(r, false, &ws);
    if ((e = fmq_codec_encode_status(&ws, &will)))
        goto fail;
    fmq_mqtt_cfg c = *mc;
    c.client_id = id;
    c.will_topic = r->t_status;
    c.will_payload = will.data;
    c.will_len = will.len;
    c.will_retain = true;
    c.will_qos = 1;
    if ((e = fmq_mqtt_new(&c, &r->mq)))
        goto fail;
    if ((e = sync_subs(r)))
        goto fail;
    if ((e = fmq_mqtt_connect(r->mq, connect_ms)))
        goto fail;
    fmq_buf_fini(&will);
    *out = r;
    return FMQ_OK;
fail:
    fmq_buf_fini(&will);
    fmq_mqtt_destroy(&r->mq);
    fmq_buf_fini(&r->upd);
    fmq_buf_fini(&r->parked);
    fmq_free(r);
    return e;
}

void fmq_devrun_destroy(fmq_devrun **rp)
{
    if (!rp || !*rp)
        return;
    fmq_devrun *r = *rp;
    if (r->mq && fmq_mqtt_connected(r->mq)) {
        /* a fetch in progress: the session must not keep model/global
         * for the next client of this id, which follows deltas */
        if (r->sub_global && fmq_device_follows_deltas(r->d) &&
            fmq_mqtt_unsubscribe(r->mq, r->t_global) != FMQ_OK)
            fmq_log_debug("device %s: unsubscribing at the end failed",
                          fmq_device_id(r->d));
        publish_status(r, false);
    }
    fmq_mqtt_destroy(&r->mq);
    fmq_buf_fini(&r->upd);
    fmq_buf_fini(&r->parked);
    fmq_free(r);
    *rp = NULL;
}

void fmq_devrun_set_ack_wait(fmq_devrun *r, uint32_t ack_wait_ms)
{
    r->ack_wait_ms = ack_wait_ms;
}

void fmq_devrun_set_filter(fmq_devrun *r, fmq_devrun_filter_fn fn, void *arg)
{
    r->filter = fn;
    r->filter_arg = arg;
}

/* The round of a global (inside its signed envelope, NOT verified: the
 * filter only plays offline/slow devices in a simulation; the core
 * verifies), 0 when it does not decode. */
static uint64_t peek_round(const uint8_t *p, size_t len)
{
    fmq_msg_type t = FMQ_MSG_UNKNOWN;
    if (fmq_codec_peek(p, len, NULL, &t, NULL) == FMQ_OK &&
        t == FMQ_MSG_SIGNED) {
        fmq_msg_signed m;
        if (fmq_codec_decode_signed(p, len, NULL, &m, NULL) != FMQ_OK)
            return 0;
        p = m.body;
        len = m.body_len;
    }
    uint64_t round = 0;
    if (fmq_codec_peek(p, len, NULL, &t, NULL) == FMQ_OK &&
        t == FMQ_MSG_DELTA) {
        fmq_msg_delta dm;
        if (fmq_codec_decode_delta(p, len, NULL, &dm, NULL) == FMQ_OK)
            round = dm.g.round;
        fmq_msg_delta_fini(&dm);
        return round;
    }
    fmq_msg_global g;
    fmq_msg_global_init(&g);
    if (fmq_codec_decode_global(p, len, NULL, &g, NULL) == FMQ_OK)
        round = g.round;
    fmq_msg_global_fini(&g);
    return round;
}

void fmq_devrun_hold(fmq_devrun *r, double hold_until)
{
    r->hold_until = hold_until;
}

const fmq_device_result *fmq_devrun_last(const fmq_devrun *r)
{
    return &r->last;
}

void fmq_devrun_mqtt_stats(const fmq_devrun *r, fmq_mqtt_stats *out)
{
    fmq_mqtt_get_stats(r->mq, out);
}

/* Hands one model message (global or delta) to the core and publishes
 * what it answers; via_global: it came on model/global (a fetch ends
 * with the first one the core takes). */
static void handle_model(fmq_devrun *r, const uint8_t *p, size_t len,
                         bool via_global);

static void handle_global(fmq_devrun *r, const uint8_t *p, size_t len,
                          bool via_global)
{
    /* SPEC §9.1: a newer global while an update is held back (a slow
     * device): send it first, late; the aggregator decides what it is. */
    if (r->hold_pending) {
        r->hold_pending = false;
        r->hold_until = 0;
        send_pending(r, "late, before the next global");
    }
    /* a refusal is logged (reason, what was wrong) and counted by the
     * core; the device keeps its model and its pending update */
    if (fmq_device_on_global(r->d, p, len, &r->last, &r->upd) != FMQ_OK)
        return;
    if (r->last.action == FMQ_DEV_BEHIND) {
        /* keep the delta: it may continue from the global fetched */
        fmq_buf_reset(&r->parked);
        if (fmq_buf_append(&r->parked, p, len) != FMQ_OK)
            fmq_buf_reset(&r->parked);
        if (!r->fetch)
            fmq_log_info("device %s: fetching the retained global",
                         fmq_device_id(r->d));
        r->fetch = true;
        (void)sync_subs(r);
        return;
    }
    if (via_global)
        r->fetch = false;
    if (r->last.action == FMQ_DEV_TRAINED) {
        fmq_log_info("device %s: round %llu trained: %llu samples, loss "
                     "%.4f, %.2f s, update %zu bytes",
                     fmq_device_id(r->d), (unsigned long long)r->last.round,
                     (unsigned long long)r->last.samples, r->last.loss,
                     r->last.train_s, r->upd.len);
        publish_status(r, true);
    }
    if (r->last.action == FMQ_DEV_TRAINED || r->last.action == FMQ_DEV_RESEND) {
        if (r->hold_until > fmq_mono_seconds())
            r->hold_pending = true;
        else
            send_pending(r, r->last.action == FMQ_DEV_TRAINED ? "trained"
                                                               : "resend");
    }
}

static void handle_model(fmq_devrun *r, const uint8_t *p, size_t len,
                         bool via_global)
{
    handle_global(r, p, len, via_global);
    (void)sync_subs(r);
    if (r->fetch || !r->parked.len)
        return;
    /* the fetch is over: the delta that came meanwhile, if it goes on
     * from here (an older one is refused stale, a later break fetches
     * again) */
    fmq_buf pk = r->parked;
    fmq_buf_init(&r->parked);
    handle_global(r, pk.data, pk.len, false);
    fmq_buf_fini(&pk);
    (void)sync_subs(r);
}

fmq_err fmq_devrun_poll(fmq_devrun *r, uint32_t wait_ms, bool *did)
{
    if (did)
        *did = false;
    if (!r || !r->mq)
        return FMQ_ERR_STATE;
    bool conn = fmq_mqtt_connected(r->mq);
    if (conn && !r->was_connected) {
        publish_status(r, true);
        if (!r->hold_pending)
            send_pending(r, r->fed_held ? "reconnected" : "started");
        if (!r->fed_held) {
            const uint8_t *p;
            size_t len;
            r->fed_held = true;
            if (fmq_device_held_global(r->d, &p, &len) == FMQ_OK) {
                /* copy: the core replaces its held bytes as it goes */
                fmq_buf g;
                fmq_buf_init(&g);
                if (fmq_buf_append(&g, p, len) == FMQ_OK)
                    handle_model(r, g.data, g.len, false);
                fmq_buf_fini(&g);
            }
        }
    }
    r->was_connected = conn;
    if (r->hold_pending && fmq_mono_seconds() >= r->hold_until) {
        r->hold_pending = false;
        send_pending(r, "after a delay");
    }
    fmq_mqtt_msg m;
    if (fmq_mqtt_next(r->mq, wait_ms, &m) != FMQ_OK)
        return FMQ_OK;
    if (did)
        *did = true;
    bool on_global = strcmp(m.topic, r->t_global) == 0;
    if (on_global || strcmp(m.topic, r->t_delta) == 0) {
        fmq_devrun_verdict v = FMQ_DEVRUN_TAKE;
        if (r->filter)
            v = r->filter(r->filter_arg, r, peek_round(m.payload, m.len));
        if (v == FMQ_DEVRUN_HOLD)
            r->hold_until = INFINITY;
        if (v != FMQ_DEVRUN_SKIP)
            handle_model(r, m.payload, m.len, on_global);
        /* Globals keep coming while not subscribed: the broker's session
         * still has model/global from an earlier client of this id (one or
         * two are messages in flight at an unsubscribe). Drop it, once. */
        if (on_global && !r->sub_global && ++r->stray == 3 &&
            fmq_mqtt_connected(r->mq) &&
            fmq_mqtt_subscribe(r->mq, r->t_global, 1) == FMQ_OK &&
            fmq_mqtt_unsubscribe(r->mq, r->t_global) != FMQ_OK)
            fmq_log_debug("device %s: unsubscribing a stray model/global "
                          "failed", fmq_device_id(r->d));
    }
    else
        fmq_log_debug("device %s: ignored a message on %s",
                      fmq_device_id(r->d), m.topic);
    fmq_mqtt_msg_free(&m);
    return FMQ_OK;
}
