/*
 * monitor.c — flags for stuck, noisy and often rejected devices, and the
 * round's metrics as a JSON line and as Prometheus text (see monitor.h).
 */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct mon_dev {
    char id[FMQ_ID_MAX + 1];
    bool online;
    bool updated;      /* a counted update this round */
    double norm;       /* its norm (NaN: none or unknown) */
    uint32_t silent;   /* cohort rounds in a row without a counted update */
    uint32_t rej_now;  /* rejections this round */
    uint8_t rej[64];   /* rejections per round, ring of rejected_window */
    char rej_last[FMQ_NAME_MAX + 1];
    uint64_t last_heard; /* round of the last event */
} mon_dev;

typedef struct mon_reason {
    char reason[FMQ_NAME_MAX + 1];
    uint64_t count;
} mon_reason;

struct fmq_monitor {
    fmq_monitor_cfg cfg;
    mon_dev *devs;
    size_t ndevs, cap;
    uint64_t round; /* rounds closed so far */
    uint64_t updates_total;
    mon_reason reasons[24];
    size_t nreasons;
};

void fmq_monitor_cfg_defaults(fmq_monitor_cfg *cfg)
{
    *cfg = (fmq_monitor_cfg){.stuck_rounds = 3, .noisy_z = 6,
                             .noisy_min = 5, .rejected_max = 3,
                             .rejected_window = 5, .forget_rounds = 100};
}

fmq_err fmq_monitor_new(const fmq_monitor_cfg *cfg, fmq_monitor **out)
{
    *out = NULL;
    fmq_monitor_cfg c;
    if (cfg)
        c = *cfg;
    else
        fmq_monitor_cfg_defaults(&c);
    if (c.rejected_window > 64 || (c.rejected_max && !c.rejected_window) ||
        !(c.noisy_z >= 0) || !isfinite(c.noisy_z))
        return FMQ_ERR_INVAL;
    if (c.noisy_min < 3)
        c.noisy_min = 3;
    fmq_monitor *m = fmq_calloc(1, sizeof *m);
    if (!m)
        return FMQ_ERR_NOMEM;
    m->cfg = c;
    *out = m;
    return FMQ_OK;
}

void fmq_monitor_destroy(fmq_monitor **mp)
{
    if (!mp || !*mp)
        return;
    fmq_free((*mp)->devs);
    fmq_free(*mp);
    *mp = NULL;
}

static mon_dev *find(fmq_monitor *m, const char *id, bool add)
{
    for (size_t i = 0; i < m->ndevs; i++)
        if (strcmp(m->devs[i].id, id) == 0)
            return &m->devs[i];
    if (!add || strlen(id) > FMQ_ID_MAX)
        return NULL;
    if (m->ndevs == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 16;
        mon_dev *d = fmq_realloc(m->devs, cap * sizeof *d);
        if (!d)
            return NULL;
        m->devs = d;
        m->cap = cap;
    }
    mon_dev *d = &m->devs[m->ndevs++];
    memset(d, 0, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", id);
    d->norm = NAN;
    return d;
}

fmq_err fmq_monitor_on_status(fmq_monitor *m, const char *device, bool online)
{
    mon_dev *d = find(m, device, true);
    if (!d)
        return FMQ_ERR_NOMEM;
    d->online = online;
    d->last_heard = m->round;
    return FMQ_OK;
}

fmq_err fmq_monitor_on_update(fmq_monitor *m, const char *device, double norm)
{
    mon_dev *d = find(m, device, true);
    if (!d)
        return FMQ_ERR_NOMEM;
    d->updated = true;
    d->online = true; /* it just spoke */
    d->norm = norm;
    d->last_heard = m->round;
    m->updates_total++;
    return FMQ_OK;
}

fmq_err fmq_monitor_on_reject(fmq_monitor *m, const char *device,
                              const char *reason)
{
    const char *why = reason && *reason ? reason : "unknown";
    size_t k = 0;
    while (k < m->nreasons && strcmp(m->reasons[k].reason, why) != 0)
        k++;
    if (k == m->nreasons && k < sizeof m->reasons / sizeof m->reasons[0]) {
        snprintf(m->reasons[k].reason, sizeof m->reasons[k].reason, "%s", why);
        m->nreasons++;
    }
    if (k < m->nreasons)
        m->reasons[k].count++;
    mon_dev *d = find(m, device, true);
    if (!d)
        return FMQ_ERR_NOMEM;
    if (d->rej_now < 255)
        d->rej_now++;
    snprintf(d->rej_last, sizeof d->rej_last, "%s", why);
    d->last_heard = m->round;
    return FMQ_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct flag_sink {
    fmq_monitor_flag *out;
    size_t max, n;
} flag_sink;

static void add_flag(flag_sink *fs, const char *dev, const char *why,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void add_flag(flag_sink *fs, const char *dev, const char *why,
                     const char *fmt, ...)
{
    if (fs->n < fs->max) {
        fmq_monitor_flag *f = &fs->out[fs->n];
        memset(f, 0, sizeof *f);
        snprintf(f->flag.device, sizeof f->flag.device, "%s", dev);
        snprintf(f->flag.why, sizeof f->flag.why, "%s", why);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->detail, sizeof f->detail, fmt, ap);
        va_end(ap);
    }
    fs->n++;
}

static int cmp_flag(const void *a, const void *b)
{
    const fmq_monitor_flag *x = a, *y = b;
    int c = strcmp(x->flag.device, y->flag.device);
    return c ? c : strcmp(x->flag.why, y->flag.why);
}

void fmq_monitor_close_round(fmq_monitor *m, fmq_monitor_member_fn member,
                             void *arg, fmq_monitor_flag *out, size_t max,
                             size_t *n)
{
    const fmq_monitor_cfg *c = &m->cfg;
    flag_sink fs = {out, out ? max : 0, 0};

    /* noisy: the modified z-score of each counted norm in this round */
    double med = NAN, mad = NAN;
    size_t nn = 0;
    double *v = m->ndevs ? fmq_alloc_array(m->ndevs, sizeof *v) : NULL;
    if (v) {
        for (size_t i = 0; i < m->ndevs; i++)
            if (m->devs[i].updated && isfinite(m->devs[i].norm))
                v[nn++] = m->devs[i].norm;
        if (c->noisy_z > 0 && nn >= c->noisy_min) {
            med = median_of(v, nn);
            for (size_t i = 0; i < nn; i++)
                v[i] = fabs(v[i] - med);
            mad = median_of(v, nn);
        }
        fmq_free(v);
    }

    uint32_t slot = c->rejected_window ? (uint32_t)(m->round % c->rejected_window)
                                       : 0;
    for (size_t i = 0; i < m->ndevs; i++) {
        mon_dev *d = &m->devs[i];
        bool in = !member || member(arg, d->id);
        if (d->updated)
            d->silent = 0;
        else if (in && d->online)
            d->silent++;
        if (c->stuck_rounds && !d->updated && d->silent >= c->stuck_rounds)
            add_flag(&fs, d->id, "stuck",
                     "online and in the cohort, silent for %u rounds",
                     d->silent);
        if (isfinite(mad) && d->updated && isfinite(d->norm)) {
            double dev = fabs(d->norm - med);
            double z = mad > 0 ? dev / (1.4826 * mad) : INFINITY;
            if (z > c->noisy_z && dev > 1e-6 * fmax(fabs(med), 1e-30))
                add_flag(&fs, d->id, "noisy",
                         "update norm %.4g, robust z %.1f (round median %.4g)",
                         d->norm, isfinite(z) ? z : 999.9, med);
        }
        if (c->rejected_max) {
            d->rej[slot] = (uint8_t)d->rej_now;
            uint32_t sum = 0;
            for (uint32_t k = 0; k < c->rejected_window; k++)
                sum += d->rej[k];
            if (sum >= c->rejected_max)
                add_flag(&fs, d->id, "rejected",
                         "%u updates rejected in the last %u rounds (last: %s)",
                         sum, c->rejected_window, d->rej_last);
        }
        d->updated = false;
        d->norm = NAN;
        d->rej_now = 0;
    }
    m->round++;
    if (c->rejected_window)
        for (size_t i = 0; i < m->ndevs; i++)
            m->devs[i].rej[m->round % c->rejected_window] = 0;
    /* forget devices not heard of for a long time */
    size_t w = 0;
    for (size_t i = 0; i < m->ndevs; i++)
        if (!c->forget_rounds ||
            m->round - m->devs[i].last_heard <= c->forget_rounds)
            m->devs[w++] = m->devs[i];
    m->ndevs = w;
    if (out)
        qsort(out, fs.n < fs.max ? fs.n : fs.max, sizeof *out, cmp_flag);
    *n = fs.n;
}

/* ------------------------------------------------------------ JSON text */
static fmq_err put(fmq_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static fmq_err put(fmq_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0)
        return FMQ_ERR_INVAL;
    if ((size_t)k < sizeof tmp)
        return fmq_buf_append(b, tmp, (size_t)k);
    char *big = fmq_malloc((size_t)k + 1);
    if (!big)
        return FMQ_ERR_NOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)k + 1, fmt, ap);
    va_end(ap);
    fmq_err e = fmq_buf_append(b, big, (size_t)k);
    fmq_free(big);
    return e;
}

/* A JSON string: quotes, backslashes and control characters escaped;
 * bytes >= 0x80 pass (ids and reasons are ASCII, details are ours). */
static fmq_err put_str(fmq_buf *b, const char *s)
{
    fmq_err e = fmq_buf_append(b, "\"", 1);
    for (; !e && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            e = put(b, "\\%c", ch);
        else if (ch < 0x20)
            e = put(b, "\\u%04x", ch);
        else
            e = fmq_buf_append(b, s, 1);
    }
    return e ? e : fmq_buf_append(b, "\"", 1);
}

/* JSON has no NaN: an absent or non-finite value is left out. */
static fmq_err put_num(fmq_buf *b, const char *key, double v)
{
    return isfinite(v) ? put(b, ",\"%s\":%.17g", key, v) : FMQ_OK;
}

fmq_err fmq_monitor_json(const fmq_msg_metrics *mt,
                         const fmq_monitor_flag *flags, size_t nflags,
                         fmq_buf *out)
{
    fmq_err e = put(out, "{\"fleet\":");
    if (!e) e = put_str(out, mt->fleet);
    if (!e) e = put(out, ",\"round\":%llu,\"version\":%llu,\"cohort\":%llu,"
                    "\"participants\":%llu,\"late\":%llu",
                    (unsigned long long)mt->round,
                    (unsigned long long)mt->version,
                    (unsigned long long)mt->cohort,
                    (unsigned long long)mt->participants,
                    (unsigned long long)mt->late);
    if (!e) e = put(out, ",\"rejected\":{");
    for (uint32_t i = 0; !e && i < mt->nrejected; i++) {
        if (i) e = put(out, ",");
        if (!e) e = put_str(out, mt->rejected[i].reason);
        if (!e) e = put(out, ":%llu", (unsigned long long)mt->rejected[i].count);
    }
    if (!e) e = put(out, "}");
    if (!e) e = put_num(out, "loss", mt->loss_mean);
    if (!e) e = put_num(out, "loss_std", mt->loss_std);
    if (!e) e = put_num(out, "test_loss", mt->test_loss);
    if (!e) e = put_num(out, "test_acc", mt->test_acc);
    if (!e) e = put(out, ",\"bytes_in\":%llu,\"bytes_out\":%llu",
                    (unsigned long long)mt->bytes_in,
                    (unsigned long long)mt->bytes_out);
    if (!e) e = put_num(out, "seconds", mt->seconds);
    if (!e && mt->strategy[0]) {
        e = put(out, ",\"strategy\":");
        if (!e) e = put_str(out, mt->strategy);
    }
    if (!e && mt->ts_ms && mt->ts_ms != FMQ_ABSENT)
        e = put(out, ",\"ts\":%llu", (unsigned long long)mt->ts_ms);
    if (!e) e = put(out, ",\"flags\":[");
    for (size_t i = 0; !e && i < nflags; i++) {
        e = put(out, "%s{\"device\":", i ? "," : "");
        if (!e) e = put_str(out, flags[i].flag.device);
        if (!e) e = put(out, ",\"why\":");
        if (!e) e = put_str(out, flags[i].flag.why);
        if (!e) e = put(out, ",\"detail\":");
        if (!e) e = put_str(out, flags[i].detail);
        if (!e) e = put(out, "}");
    }
    return e ? e : put(out, "]}\n");
}

/* ------------------------------------------------------------ Prometheus */
/* A label value: backslash, quote and newline escaped (exposition format). */
static fmq_err put_label(fmq_buf *b, const char *s)
{
    fmq_err e = FMQ_OK;
    for (; !e && *s; s++) {
        if (*s == '\\' || *s == '"')
            e = put(b, "\\%c", *s);
        else if (*s == '\n')
            e = put(b, "\\n");
        else
            e = fmq_buf_append(b, s, 1);
    }
    return e;
}

static fmq_err head(fmq_buf *b, const char *name, const char *type,
                    const char *help)
{
    return put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{fleet="F"[,k="v"]} value */
static fmq_err series(fmq_buf *b, const char *name, const char *fleet,
                      const char *k1, const char *v1, const char *k2,
                      const char *v2, double value)
{
    fmq_err e = put(b, "%s{fleet=\"", name);
    if (!e) e = put_label(b, fleet);
    if (!e && k1) {
        e = put(b, "\",%s=\"", k1);
        if (!e) e = put_label(b, v1);
    }
    if (!e && k2) {
        e = put(b, "\",%s=\"", k2);
        if (!e) e = put_label(b, v2);
    }
    return e ? e : put(b, "\"} %.17g\n", value);
}

static fmq_err gauge(fmq_buf *b, const char *fleet, const char *name,
                     const char *help, double v)
{
    if (!isfinite(v))
        return FMQ_OK;
    fmq_err e = head(b, name, "gauge", help);
    return e ? e : series(b, name, fleet, NULL, NULL, NULL, NULL, v);
}

fmq_err fmq_monitor_prometheus(const fmq_monitor *m, const fmq_msg_metrics *mt,
                               const fmq_monitor_flag *flags, size_t nflags,
                               fmq_buf *out)
{
    const char *fl = mt->fleet;
    fmq_err e = gauge(out, fl, "fedmq_round", "Last closed round.",
                      (double)mt->round);
    if (!e) e = gauge(out, fl, "fedmq_model_version",
                      "Model version the last round produced.",
                      (double)mt->version);
    if (!e) e = gauge(out, fl, "fedmq_cohort", "Cohort size of the last round.",
                      (double)mt->cohort);
    if (!e) e = gauge(out, fl, "fedmq_participants",
                      "Updates counted in the last round.",
                      (double)mt->participants);
    if (!e) e = gauge(out, fl, "fedmq_late_updates",
                      "Late updates in the last round (folded or dropped).",
                      (double)mt->late);
    if (!e) e = gauge(out, fl, "fedmq_train_loss",
                      "Mean training loss of the last round's updates.",
                      mt->loss_mean);
    if (!e) e = gauge(out, fl, "fedmq_train_loss_stddev",
                      "Standard deviation of the devices' training loss.",
                      mt->loss_std);
    if (!e) e = gauge(out, fl, "fedmq_test_loss", "Hold-out loss.",
                      mt->test_loss);
    if (!e) e = gauge(out, fl, "fedmq_test_accuracy",
                      "Hold-out accuracy, 0..1.", mt->test_acc);
    if (!e) e = gauge(out, fl, "fedmq_round_seconds",
                      "Wall time of the last round.", mt->seconds);
    if (!e) e = gauge(out, fl, "fedmq_round_bytes_in",
                      "Payload bytes received in the last round.",
                      (double)mt->bytes_in);
    if (!e) e = gauge(out, fl, "fedmq_round_bytes_out",
                      "Payload bytes published in the last round.",
                      (double)mt->bytes_out);
    if (!e && mt->nrejected) {
        e = head(out, "fedmq_round_rejected", "gauge",
                 "Updates rejected in the last round, by reason.");
        for (uint32_t i = 0; !e && i < mt->nrejected; i++)
            e = series(out, "fedmq_round_rejected", fl, "reason",
                       mt->rejected[i].reason, NULL, NULL,
                       (double)mt->rejected[i].count);
    }
    if (!e) e = gauge(out, fl, "fedmq_flagged_devices",
                      "Devices flagged after the last round.", (double)nflags);
    if (!e && nflags) {
        e = head(out, "fedmq_device_flagged", "gauge",
                 "1 for each flagged device and reason (stuck, noisy, "
                 "rejected).");
        for (size_t i = 0; !e && i < nflags; i++)
            e = series(out, "fedmq_device_flagged", fl, "device",
                       flags[i].flag.device, "why", flags[i].flag.why, 1);
    }
    if (!e && m) {
        e = head(out, "fedmq_rounds_total", "counter",
                 "Rounds closed since the aggregator started.");
        if (!e) e = series(out, "fedmq_rounds_total", fl, NULL, NULL, NULL,
                           NULL, (double)m->round);
        if (!e) e = head(out, "fedmq_updates_total", "counter",
                         "Updates counted since the aggregator started.");
        if (!e) e = series(out, "fedmq_updates_total", fl, NULL, NULL, NULL,
                           NULL, (double)m->updates_total);
        if (!e && m->nreasons)
            e = head(out, "fedmq_rejected_total", "counter",
                     "Updates rejected since the aggregator started, by "
                     "reason.");
        for (size_t i = 0; !e && i < m->nreasons; i++)
            e = series(out, "fedmq_rejected_total", fl, "reason",
                       m->reasons[i].reason, NULL, NULL,
                       (double)m->reasons[i].count);
    }
    return e;
}

fmq_err fmq_monitor_append(const char *path, const void *line, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno == ENOENT ? FMQ_ERR_NOTFOUND : FMQ_ERR_IO;
    const uint8_t *p = line;
    size_t done = 0;
    fmq_err e = FMQ_OK;
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            e = FMQ_ERR_IO;
            break;
        }
        done += (size_t)w;
    }
    if (!e && fdatasync(fd) != 0)
        e = FMQ_ERR_IO;
    if (close(fd) != 0 && !e)
        e = FMQ_ERR_IO;
    return e;
}
