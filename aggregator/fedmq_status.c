/*
 * fedmq-status — the fleet at a glance in a terminal, for a hub without a
 * browser: the facts the web dashboard (deploy/dashboard/) shows, from the
 * same three retained topics (proto/SPEC.md §2): every device's
 * fedmq/<fleet>/status/<device> (§6.3), the last round's
 * fedmq/<fleet>/metrics (§6.4) and fedmq/<fleet>/aggregator/status (§6.5).
 *
 * It connects with a dashboard identity (a token made with `fedmq-keygen
 * token --role dashboard --sub <client id>`, given as the password; the
 * broker's fedmq_auth plugin lets that identity read these topics and
 * publish nothing), keeps no session, decodes every message with
 * common/codec.h and prints one table: one line per device (id, online,
 * model version, last round trained, last seen, training seconds, peak
 * RSS, flags the aggregator raised in the last metrics) and a fleet line
 * (round, participants/cohort, accuracy, losses, rejected, late).
 *
 *   --interval S   print again every S seconds (default 2) until SIGINT or
 *                  SIGTERM; on a terminal the screen is cleared first
 *   --once         wait for the retained messages, print once, exit 0
 *   --json         one JSON object per print (one line) instead of a table
 *
 * A message whose device id is not its topic's, or that does not decode,
 * is not shown: it is counted ("refused") and logged at info level. The
 * history of rounds is not on the broker (metrics is one retained message,
 * the last round's); late and rejected totals count the rounds this
 * process saw close.
 *
 * Exit codes: 0 done (--once, or stopped by a signal), 1 could not
 * connect or subscribe (refused token, unreachable broker), 2 bad usage.
 */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "codec.h"
#include "mqtt.h"

static const fmq_conf_key keys[] = {
    FMQ_CLI_MQTT_KEYS,
    {"client_id", FMQ_CONF_STR, "dashboard-status", "MQTT client id: the "
     "sub of the dashboard token given as password", 0, 0, false},
    {"once", FMQ_CONF_BOOL, "false", "wait for the retained messages, print "
     "once and exit 0", 0, 0, false},
    {"json", FMQ_CONF_BOOL, "false", "print one JSON object (one line) "
     "instead of a table", 0, 0, false},
    {"interval", FMQ_CONF_DOUBLE, "2", "seconds between prints (without "
     "--once)", 0.1, 3600, false},
    {"wait_ms", FMQ_CONF_UINT, "5000", "longest wait for the connection and, "
     "with --once, for the retained messages", 100, 600000, false},
    {"quiet_ms", FMQ_CONF_UINT, "300", "with --once: the retained messages "
     "are taken as all there once none came for this long", 10, 60000,
     false},
    {"max_devices", FMQ_CONF_UINT, "100000", "devices kept (more are "
     "counted as refused)", 1, 10000000, false},
};

/* One device as its retained status says, plus when it arrived. */
typedef struct dev_row {
    fmq_msg_status st;
    uint64_t seen_ms; /* local clock when a live status arrived; 0 for a
                         retained copy (it may be days old) */
} dev_row;

/* Everything shown. devs is sorted by id. */
typedef struct view {
    const char *fleet;
    dev_row *devs;
    size_t ndevs, cap, max_devs;
    bool have_agg, have_metrics;
    fmq_msg_agg agg;
    fmq_msg_metrics m; /* owns its rejected and flags lists */
    uint64_t refused;
    /* totals over the rounds this process saw close */
    uint64_t rounds_seen, late_total, rej_total, last_counted;
} view;

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static uint64_t rej_sum(const fmq_msg_metrics *m)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < m->nrejected; i++)
        s += m->rejected[i].count;
    return s;
}

/* Index of id in v->devs, or where it would go (*found false). */
static size_t dev_find(const view *v, const char *id, bool *found)
{
    size_t lo = 0, hi = v->ndevs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v->devs[mid].st.device, id);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* fedmq/<fleet>/status/<id>: payload len 0 is a cleared retained status
 * (the device is forgotten). */
static void on_status(view *v, const char *id, const fmq_mqtt_msg *msg)
{
    bool found;
    size_t i = dev_find(v, id, &found);
    if (msg->len == 0) {
        if (found) {
            memmove(v->devs + i, v->devs + i + 1,
                    (v->ndevs - i - 1) * sizeof *v->devs);
            v->ndevs--;
        }
        return;
    }
    fmq_msg_status s;
    fmq_codec_detail d = {{0}};
    fmq_err e = fmq_codec_decode_status(msg->payload, msg->len, NULL, &s, &d);
    if (!e && strcmp(s.device, id) != 0) {
        e = FMQ_ERR_INVAL; /* SPEC §2: the topic names the device */
        snprintf(d.what, sizeof d.what, "it names device '%s'", s.device);
    }
    if (!e && strcmp(s.fleet, v->fleet) != 0) {
        e = FMQ_ERR_FLEET;
        snprintf(d.what, sizeof d.what, "it names fleet '%s'", s.fleet);
    }
    if (e) {
        v->refused++;
        fmq_log_info("status on %s refused: %s%s%s", msg->topic,
                     fmq_strerror(e), d.what[0] ? ": " : "", d.what);
        return;
    }
    if (!found) {
        if (v->ndevs >= v->max_devs) {
            v->refused++;
            fmq_log_info("status on %s: more than %zu devices, not kept",
                         msg->topic, v->max_devs);
            return;
        }
        if (v->ndevs == v->cap) {
            size_t nc = v->cap ? 2 * v->cap : 64;
            dev_row *nd = fmq_realloc(v->devs, nc * sizeof *nd);
            if (!nd) {
                v->refused++;
                return;
            }
            v->devs = nd;
            v->cap = nc;
        }
        memmove(v->devs + i + 1, v->devs + i,
                (v->ndevs - i) * sizeof *v->devs);
        v->ndevs++;
    }
    v->devs[i].st = s;
    v->devs[i].seen_ms = msg->retained ? 0 : fmq_now_ms();
}

static void on_metrics(view *v, const fmq_mqtt_msg *msg)
{
    if (msg->len == 0) {
        fmq_msg_metrics_fini(&v->m);
        fmq_msg_metrics_init(&v->m);
        v->have_metrics = false;
        return;
    }
    fmq_msg_metrics m;
    fmq_codec_detail d = {{0}};
    fmq_err e = fmq_codec_decode_metrics(msg->payload, msg->len, NULL, &m, &d);
    if (!e && strcmp(m.fleet, v->fleet) != 0)
        e = FMQ_ERR_FLEET;
    if (e) {
        fmq_msg_metrics_fini(&m);
        v->refused++;
        fmq_log_info("metrics refused: %s%s%s", fmq_strerror(e),
                     d.what[0] ? ": " : "", d.what);
        return;
    }
    /* each closed round once in the totals, also when the retained copy
     * comes again after a reconnect */
    if (!v->rounds_seen || m.round > v->last_counted) {
        v->rounds_seen++;
        v->late_total += m.late;
        v->rej_total += rej_sum(&m);
        v->last_counted = m.round;
    }
    fmq_msg_metrics_fini(&v->m);
    v->m = m;
    v->have_metrics = true;
}

static void on_agg(view *v, const fmq_mqtt_msg *msg)
{
    if (msg->len == 0) {
        v->have_agg = false;
        return;
    }
    fmq_msg_agg a;
    fmq_codec_detail d = {{0}};
    fmq_err e = fmq_codec_decode_agg(msg->payload, msg->len, NULL, &a, &d);
    if (!e && strcmp(a.fleet, v->fleet) != 0)
        e = FMQ_ERR_FLEET;
    if (e) {
        v->refused++;
        fmq_log_info("aggregator status refused: %s%s%s", fmq_strerror(e),
                     d.what[0] ? ": " : "", d.what);
        return;
    }
    v->agg = a;
    v->have_agg = true;
}

/* Routes one message by its topic (the broker only sends what we
 * subscribed to; anything else is refused too). */
static void on_message(view *v, const fmq_mqtt_msg *msg)
{
    char pre[FMQ_ID_MAX + 16];
    int k = snprintf(pre, sizeof pre, "fedmq/%s/", v->fleet);
    size_t pl = (size_t)k;
    if (strncmp(msg->topic, pre, pl) != 0) {
        v->refused++;
        return;
    }
    const char *rest = msg->topic + pl;
    if (strncmp(rest, "status/", 7) == 0 && fmq_id_valid(rest + 7))
        on_status(v, rest + 7, msg);
    else if (strcmp(rest, "metrics") == 0)
        on_metrics(v, msg);
    else if (strcmp(rest, "aggregator/status") == 0)
        on_agg(v, msg);
    else
        v->refused++;
}

/* The flags of the last metrics for device id, "a,b" or "" (buf). */
static const char *dev_flags(const view *v, const char *id, char *buf,
                             size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    if (!v->have_metrics)
        return buf;
    for (uint32_t i = 0; i < v->m.nflags && off + 1 < len; i++) {
        if (strcmp(v->m.flags[i].device, id) != 0)
            continue;
        int k = snprintf(buf + off, len - off, "%s%s", off ? "," : "",
                         v->m.flags[i].why);
        if (k < 0)
            break;
        off += (size_t)k;
    }
    return buf;
}

/* When the device last spoke: its own report time, or when its status
 * arrived here live when it sent none; FMQ_ABSENT when neither is known (a
 * retained last will has no time). */
static uint64_t dev_seen(const dev_row *r)
{
    if (r->st.ts_ms != FMQ_ABSENT && r->st.ts_ms)
        return r->st.ts_ms;
    return r->seen_ms ? r->seen_ms : FMQ_ABSENT;
}

static void fmt_age(char *buf, size_t len, uint64_t now, uint64_t then)
{
    double s = now > then ? (now - then) / 1000.0 : 0;
    if (s < 60)
        snprintf(buf, len, "%.1f s", s);
    else if (s < 3600)
        snprintf(buf, len, "%.0f min", s / 60);
    else if (s < 86400 * 2)
        snprintf(buf, len, "%.1f h", s / 3600);
    else
        snprintf(buf, len, "%.0f d", s / 86400);
}

static void fmt_u64(char *buf, size_t len, uint64_t x)
{
    if (x == FMQ_ABSENT)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%llu", (unsigned long long)x);
}

static size_t count_online(const view *v)
{
    size_t n = 0;
    for (size_t i = 0; i < v->ndevs; i++)
        n += v->devs[i].st.online;
    return n;
}

/* The round in progress: the later of the aggregator's status (published
 * when it starts or reconnects) and the round after the last closed one
 * (metrics come at every close); 0 when nothing is known. */
static uint64_t current_round(const view *v)
{
    uint64_t r = 0;
    if (v->have_agg && v->agg.round != FMQ_ABSENT)
        r = v->agg.round;
    if (v->have_metrics && v->m.round + 1 > r)
        r = v->m.round + 1;
    return r;
}

static void print_table(const view *v, bool connected, FILE *out)
{
    uint64_t now = fmq_now_ms();
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    char when[32];
    localtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(out, "fedmq fleet %s, %s%s\n", v->fleet, when,
            connected ? "" : " (not connected to the broker: last known)");
    uint64_t cur = current_round(v);
    if (cur)
        fprintf(out, "round %llu in progress, ", (unsigned long long)cur);
    if (v->have_agg)
        fprintf(out, "aggregator %s\n", v->agg.online ? "online" : "OFFLINE");
    else
        fprintf(out, "no aggregator status yet\n");
    if (v->have_metrics) {
        const fmq_msg_metrics *m = &v->m;
        fprintf(out, "round %llu closed: %llu/%llu devices, ",
                (unsigned long long)m->round,
                (unsigned long long)m->participants,
                (unsigned long long)m->cohort);
        if (isnan(m->test_acc))
            fprintf(out, "test acc -, ");
        else
            fprintf(out, "test acc %.2f %%, ", 100.0 * m->test_acc);
        if (isnan(m->test_loss))
            fprintf(out, "test loss -, ");
        else
            fprintf(out, "test loss %.4f, ", m->test_loss);
        if (isnan(m->loss_mean))
            fprintf(out, "train loss -, ");
        else
            fprintf(out, "train loss %.4f, ", m->loss_mean);
        fprintf(out, "rejected %llu", (unsigned long long)rej_sum(m));
        for (uint32_t i = 0; i < m->nrejected; i++)
            fprintf(out, "%s%s %llu", i ? ", " : " (", m->rejected[i].reason,
                    (unsigned long long)m->rejected[i].count);
        fprintf(out, "%s, late %llu, %.2f s\n", m->nrejected ? ")" : "",
                (unsigned long long)m->late, m->seconds);
        fprintf(out, "seen closing here: %llu rounds, %llu rejected, %llu "
                "late\n", (unsigned long long)v->rounds_seen,
                (unsigned long long)v->rej_total,
                (unsigned long long)v->late_total);
    } else {
        fprintf(out, "no round closed yet\n");
    }
    fprintf(out, "devices: %zu known, %zu online", v->ndevs, count_online(v));
    if (v->refused)
        fprintf(out, " (%llu messages refused)",
                (unsigned long long)v->refused);
    fprintf(out, "\n\n%-20s %-6s %7s %10s %10s %8s %8s  %s\n", "id", "online",
            "version", "last round", "last seen", "train s", "RSS MB",
            "flags");
    for (size_t i = 0; i < v->ndevs; i++) {
        const dev_row *r = &v->devs[i];
        char mv[24], lr[24], age[24], tts[24], rss[24], fl[256];
        fmt_u64(mv, sizeof mv, r->st.version);
        fmt_u64(lr, sizeof lr, r->st.last_round);
        if (dev_seen(r) == FMQ_ABSENT)
            snprintf(age, sizeof age, "-");
        else
            fmt_age(age, sizeof age, now, dev_seen(r));
        if (isnan(r->st.train_s))
            snprintf(tts, sizeof tts, "-");
        else
            snprintf(tts, sizeof tts, "%.2f", r->st.train_s);
        if (r->st.rss_bytes == FMQ_ABSENT)
            snprintf(rss, sizeof rss, "-");
        else
            snprintf(rss, sizeof rss, "%.1f", r->st.rss_bytes / 1e6);
        dev_flags(v, r->st.device, fl, sizeof fl);
        fprintf(out, "%-20s %-6s %7s %10s %10s %8s %8s  %s\n", r->st.device,
                r->st.online ? "yes" : "no", mv, lr, age, tts, rss,
                fl[0] ? fl : "-");
    }
}

/* JSON values. Ids and reason names are plain ASCII already (SPEC §3.3);
 * quoting is still done properly. */
static void json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void json_u64(FILE *out, uint64_t x)
{
    if (x == FMQ_ABSENT)
        fputs("null", out);
    else
        fprintf(out, "%llu", (unsigned long long)x);
}

static void json_num(FILE *out, double x)
{
    if (isfinite(x))
        fprintf(out, "%.17g", x);
    else
        fputs("null", out);
}

static void print_json(const view *v, bool connected, FILE *out)
{
    uint64_t now = fmq_now_ms();
    fputs("{\"fleet\":", out);
    json_str(out, v->fleet);
    fprintf(out, ",\"time_ms\":%llu,\"connected\":%s,\"round\":",
            (unsigned long long)now, connected ? "true" : "false");
    json_u64(out, current_round(v) ? current_round(v) : FMQ_ABSENT);
    fputs(",\"aggregator\":", out);
    if (v->have_agg) {
        fprintf(out, "{\"online\":%s,\"round\":",
                v->agg.online ? "true" : "false");
        json_u64(out, v->agg.round);
        fputs(",\"version\":", out);
        json_u64(out, v->agg.version);
        fputs(",\"ts_ms\":", out);
        json_u64(out, v->agg.ts_ms ? v->agg.ts_ms : FMQ_ABSENT);
        fputc('}', out);
    } else {
        fputs("null", out);
    }
    fputs(",\"last_round\":", out);
    if (v->have_metrics) {
        const fmq_msg_metrics *m = &v->m;
        fprintf(out, "{\"round\":%llu,\"version\":%llu,\"cohort\":%llu,"
                "\"participants\":%llu,\"late\":%llu,\"rejected\":%llu,"
                "\"rejected_by_reason\":{",
                (unsigned long long)m->round, (unsigned long long)m->version,
                (unsigned long long)m->cohort,
                (unsigned long long)m->participants,
                (unsigned long long)m->late,
                (unsigned long long)rej_sum(m));
        for (uint32_t i = 0; i < m->nrejected; i++) {
            if (i)
                fputc(',', out);
            json_str(out, m->rejected[i].reason);
            fprintf(out, ":%llu", (unsigned long long)m->rejected[i].count);
        }
        fputs("},\"test_acc\":", out);
        json_num(out, m->test_acc);
        fputs(",\"test_loss\":", out);
        json_num(out, m->test_loss);
        fputs(",\"train_loss\":", out);
        json_num(out, m->loss_mean);
        fputs(",\"train_loss_std\":", out);
        json_num(out, m->loss_std);
        fputs(",\"seconds\":", out);
        json_num(out, m->seconds);
        fprintf(out, ",\"bytes_in\":%llu,\"bytes_out\":%llu,\"flags\":[",
                (unsigned long long)m->bytes_in,
                (unsigned long long)m->bytes_out);
        for (uint32_t i = 0; i < m->nflags; i++) {
            fputs(i ? ",{\"dev\":" : "{\"dev\":", out);
            json_str(out, m->flags[i].device);
            fputs(",\"why\":", out);
            json_str(out, m->flags[i].why);
            fputc('}', out);
        }
        fputs("]}", out);
    } else {
        fputs("null", out);
    }
    fprintf(out, ",\"seen\":{\"rounds\":%llu,\"rejected\":%llu,\"late\":%llu}",
            (unsigned long long)v->rounds_seen,
            (unsigned long long)v->rej_total,
            (unsigned long long)v->late_total);
    fprintf(out, ",\"devices_known\":%zu,\"devices_online\":%zu,"
            "\"refused\":%llu,\"devices\":[",
            v->ndevs, count_online(v), (unsigned long long)v->refused);
    for (size_t i = 0; i < v->ndevs; i++) {
        const dev_row *r = &v->devs[i];
        fputs(i ? ",{\"id\":" : "{\"id\":", out);
        json_str(out, r->st.device);
        fprintf(out, ",\"online\":%s,\"version\":",
                r->st.online ? "true" : "false");
        json_u64(out, r->st.version);
        fputs(",\"last_round\":", out);
        json_u64(out, r->st.last_round);
        fputs(",\"samples\":", out);
        json_u64(out, r->st.samples);
        fputs(",\"last_seen_ms\":", out);
        json_u64(out, dev_seen(r));
        fputs(",\"train_s\":", out);
        json_num(out, r->st.train_s);
        fputs(",\"rss_bytes\":", out);
        json_u64(out, r->st.rss_bytes);
        fputs(",\"flags\":[", out);
        bool first = true;
        for (uint32_t k = 0; v->have_metrics && k < v->m.nflags; k++) {
            if (strcmp(v->m.flags[k].device, r->st.device) != 0)
                continue;
            if (!first)
                fputc(',', out);
            json_str(out, v->m.flags[k].why);
            first = false;
        }
        fputs("]}", out);
    }
    fputs("]}\n", out);
}

/* clear: a terminal, redraw in place; sep: a blank line after a table
 * (refreshes into a pipe or file). */
static void print_view(const view *v, bool connected, bool json, bool clear,
                       bool sep)
{
    if (clear)
        fputs("\033[H\033[2J", stdout);
    if (json)
        print_json(v, connected, stdout);
    else
        print_table(v, connected, stdout);
    if (sep && !json && !clear)
        fputc('\n', stdout);
    fflush(stdout);
}

/* Takes every queued message; returns how many. */
static unsigned drain(fmq_mqtt *mq, view *v, uint32_t first_wait_ms)
{
    unsigned n = 0;
    fmq_mqtt_msg msg;
    uint32_t wait = first_wait_ms;
    while (fmq_mqtt_next(mq, wait, &msg) == FMQ_OK) {
        on_message(v, &msg);
        fmq_mqtt_msg_free(&msg);
        n++;
        wait = 0;
    }
    return n;
}

int main(int argc, char **argv)
{
    const char *prog = "fedmq-status";
    fmq_conf *conf;
    if (fmq_conf_new(keys, sizeof keys / sizeof keys[0], &conf))
        return 2;
    int pr = fmq_cli_parse(conf, argc, argv, prog,
                           "Shows a fleet's devices and rounds in a terminal "
                           "(status/+, metrics, aggregator/status) with a "
                           "read-only dashboard identity: a token made by "
                           "`fedmq-keygen token --role dashboard --sub "
                           "<client_id>` as the password (put it in a 0600 "
                           "--config file: `password <token>`).");
    if (pr) {
        fmq_conf_destroy(&conf);
        return pr == 1 ? 0 : 2;
    }
    view v;
    memset(&v, 0, sizeof v);
    v.fleet = fmq_conf_str(conf, "fleet");
    v.max_devs = (size_t)fmq_conf_uint(conf, "max_devices");
    fmq_msg_agg_init(&v.agg);
    fmq_msg_metrics_init(&v.m);
    const char *cid = fmq_conf_str(conf, "client_id");
    bool once = fmq_conf_bool(conf, "once");
    bool json = fmq_conf_bool(conf, "json");
    double interval = fmq_conf_double(conf, "interval");
    uint32_t wait_ms = (uint32_t)fmq_conf_uint(conf, "wait_ms");
    uint32_t quiet_ms = (uint32_t)fmq_conf_uint(conf, "quiet_ms");
    if (!fmq_id_valid(v.fleet) || !fmq_id_valid(cid)) {
        fprintf(stderr, "%s: fleet and client_id must be ids "
                "([A-Za-z0-9._-], 1..64)\n", prog);
        fmq_conf_destroy(&conf);
        return 2;
    }
    char t_status[FMQ_ID_MAX + 32], t_metrics[FMQ_ID_MAX + 32],
        t_agg[FMQ_ID_MAX + 32], t_barrier[2 * FMQ_ID_MAX + 32];
    snprintf(t_status, sizeof t_status, "fedmq/%s/status/+", v.fleet);
    snprintf(t_metrics, sizeof t_metrics, "fedmq/%s/metrics", v.fleet);
    snprintf(t_agg, sizeof t_agg, "fedmq/%s/aggregator/status", v.fleet);
    /* A status topic no device uses (the dashboard's own id; the ACL lets
     * a dashboard read status/<one id>): its SUBACK comes after the
     * retained messages of the subscriptions made before it. */
    snprintf(t_barrier, sizeof t_barrier, "fedmq/%s/status/%s", v.fleet, cid);

    /* A viewer keeps no session: clean start, none left behind. */
    fmq_mqtt_cfg mc;
    fmq_cli_mqtt(conf, &mc);
    mc.client_id = cid;
    mc.clean_start = true;
    mc.session_expiry_s = 0;
    if (!mc.username)
        mc.username = cid; /* the plugin accepts none or the client id */
    int rc = 0;
    fmq_mqtt *mq = NULL;
    fmq_err e;
    if ((e = fmq_mqtt_new(&mc, &mq)) || (e = fmq_mqtt_connect(mq, wait_ms))) {
        fprintf(stderr, "%s: %s: %s%s\n", prog, mc.uri, fmq_strerror(e),
                e == FMQ_ERR_DENIED ? " (a dashboard token for this client "
                                      "id and fleet?)" : "");
        rc = 1;
        goto done;
    }
    /* QoS 0: a viewer needs no acknowledgements, and the retained copies
     * then come without the broker's in-flight window. */
    const char *subs[] = {t_agg, t_metrics, t_status, t_barrier};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if ((e = fmq_mqtt_subscribe(mq, subs[i], 0))) {
            fprintf(stderr, "%s: subscribe %s: %s\n", prog, subs[i],
                    fmq_strerror(e));
            rc = 1;
            goto done;
        }
    }
    if ((e = fmq_mqtt_unsubscribe(mq, t_barrier)))
        fmq_log_info("unsubscribe %s: %s", t_barrier, fmq_strerror(e));
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    /* The retained messages: everything queued by now, then until a quiet
     * spell (belt and braces for a busy broker), within wait_ms. */
    double t_end = fmq_mono_seconds() + wait_ms / 1000.0;
    drain(mq, &v, 0);
    while (!stop && fmq_mono_seconds() < t_end && drain(mq, &v, quiet_ms))
        ;
    if (once) {
        print_view(&v, fmq_mqtt_connected(mq), json, false, false);
        goto done;
    }
    bool clear = !json && isatty(STDOUT_FILENO);
    double next = fmq_mono_seconds();
    while (!stop) {
        double now = fmq_mono_seconds();
        if (now >= next) {
            print_view(&v, fmq_mqtt_connected(mq), json, clear, true);
            next = now + interval;
        }
        double left = next - fmq_mono_seconds();
        uint32_t w = left > 0 ? (uint32_t)(left * 1000) + 1 : 0;
        drain(mq, &v, w > 200 ? 200 : w);
    }
done:
    fmq_mqtt_destroy(&mq);
    fmq_free(v.devs);
    fmq_msg_metrics_fini(&v.m);
    fmq_conf_destroy(&conf);
    return rc;
}
