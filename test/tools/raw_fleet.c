/*
 * raw_fleet — the raw broker baseline of the fleet benchmark
 * (test/bench/fleet_bench.sh): the same number and size of MQTT messages
 * as a fedmq round, through the same Mosquitto and the same MQTT layer
 * (common/mqtt.h), with no fedmq logic at all — no codec, no quantizer, no
 * averaging, no checkpoint, no training.
 *
 * One "aggregator" client and N "device" clients in one process. A round:
 * the aggregator publishes a global_bytes retained QoS 1 message on
 * raw/<fleet>/model/global; every device, when it receives it, publishes
 * an update_bytes QoS 1 message on raw/<fleet>/update/<id>; the round ends
 * when the aggregator holds N updates of that round. Its time is measured
 * from the global's publish to the N-th update, like the round seconds of
 * fedmq-aggregator's progress line. The first 8 bytes of each payload are
 * the round (little-endian); the rest is filler.
 *
 * As in fedmq-sim, one thread drives every device (polling each client's
 * queue) while Paho's threads do the network, and up to 64 threads make
 * the first connections in parallel. The aggregator loop runs on the main
 * thread. Output: one line per round and a summary line
 *
 *   raw_fleet: N devices, R rounds, median S s per round (rounds 2..R),
 *              global G B, update U B, peak RSS M MB
 *
 * The retained global is cleared (empty retained message) at the end.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const fmq_conf_key keys[] = {
    FMQ_CLI_MQTT_KEYS,
    {"devices", FMQ_CONF_UINT, "50", "device clients", 1, 100000, false},
    {"rounds", FMQ_CONF_UINT, "10", "rounds", 1, 100000, false},
    {"global_bytes", FMQ_CONF_UINT, "407200", "bytes of each global",
     8, 256u << 20, false},
    {"update_bytes", FMQ_CONF_UINT, "103500", "bytes of each update",
     8, 256u << 20, false},
    {"round_timeout_ms", FMQ_CONF_UINT, "120000", "give up on a round "
     "after this long", 100, 86400000, false},
    {"connect_ms", FMQ_CONF_UINT, "30000", "first connection timeout per "
     "client", 100, 600000, false},
};

typedef struct rdev {
    fmq_mqtt *m;
    char id[32];
    char topic[160];
    uint64_t last_round;
} rdev;

typedef struct fleet {
    rdev *devs;
    uint32_t n;
    fmq_mqtt_cfg mc;
    uint32_t connect_ms;
    char gtopic[160];
    uint8_t *upd;
    size_t upd_len;
    atomic_uint next;   /* next device to connect */
    atomic_uint failed; /* devices that could not connect */
    atomic_int stop;
} fleet;

static uint64_t get_round(const uint8_t *p)
{
    uint64_t r = 0;
    for (int i = 7; i >= 0; i--)
        r = r << 8 | p[i];
    return r;
}

static void put_round(uint8_t *p, uint64_t r)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(r >> (8 * i));
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *connector(void *arg)
{
    fleet *f = arg;
    for (;;) {
        unsigned i = atomic_fetch_add(&f->next, 1);
        if (i >= f->n)
            return NULL;
        rdev *d = &f->devs[i];
        fmq_mqtt_cfg mc = f->mc;
        mc.client_id = d->id;
        mc.clean_start = true;
        mc.session_expiry_s = 0;
        fmq_err e = fmq_mqtt_new(&mc, &d->m);
        if (!e)
            e = fmq_mqtt_subscribe(d->m, f->gtopic, 1);
        if (!e)
            e = fmq_mqtt_connect(d->m, f->connect_ms);
        if (e) {
            fprintf(stderr, "raw_fleet: %s: %s\n", d->id, fmq_strerror(e));
            fmq_mqtt_destroy(&d->m);
            atomic_fetch_add(&f->failed, 1);
        }
    }
}

/* The devices' thread: answer each new round's global with one update. */
static void *devices(void *arg)
{
    fleet *f = arg;
    while (!atomic_load(&f->stop)) {
        bool any = false;
        for (uint32_t i = 0; i < f->n; i++) {
            rdev *d = &f->devs[i];
            fmq_mqtt_msg msg;
            if (!d->m || fmq_mqtt_next(d->m, 0, &msg))
                continue;
            any = true;
            if (msg.len >= 8) {
                uint64_t r = get_round(msg.payload);
                if (r > d->last_round) {
                    d->last_round = r;
                    put_round(f->upd, r);
                    fmq_err e = fmq_mqtt_publish(d->m, d->topic, f->upd,
                                                 f->upd_len, 1, false, 0);
                    if (e)
                        fprintf(stderr, "raw_fleet: %s publish: %s\n", d->id,
                                fmq_strerror(e));
                }
            }
            fmq_mqtt_msg_free(&msg);
        }
        if (!any)
            sleep_ms(1);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *prog = "raw_fleet";
    fmq_conf *c;
    if (fmq_conf_new(keys, sizeof keys / sizeof keys[0], &c))
        return 2;
    int pr = fmq_cli_parse(c, argc, argv, prog,
                           "The raw broker baseline: a fleet's messages with "
                           "no fedmq logic.");
    if (pr) {
        fmq_conf_destroy(&c);
        return pr == 1 ? 0 : 2;
    }
    if (fmq_cli_log(c, prog))
        return 2;
    fleet f = {.n = (uint32_t)fmq_conf_uint(c, "devices"),
               .connect_ms = (uint32_t)fmq_conf_uint(c, "connect_ms"),
               .upd_len = (size_t)fmq_conf_uint(c, "update_bytes")};
    uint32_t rounds = (uint32_t)fmq_conf_uint(c, "rounds");
    size_t glen = (size_t)fmq_conf_uint(c, "global_bytes");
    double rto = (double)fmq_conf_uint(c, "round_timeout_ms") / 1000.0;
    const char *fl = fmq_conf_str(c, "fleet");
    fmq_cli_mqtt(c, &f.mc);
    snprintf(f.gtopic, sizeof f.gtopic, "raw/%s/model/global", fl);
    char utopics[160];
    snprintf(utopics, sizeof utopics, "raw/%s/update/+", fl);
    f.devs = calloc(f.n, sizeof *f.devs);
    f.upd = calloc(1, f.upd_len);
    uint8_t *glob = calloc(1, glen);
    double *secs = calloc(rounds, sizeof *secs);
    if (!f.devs || !f.upd || !glob || !secs) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 1;
    }
    memset(f.upd + 8, 0x5a, f.upd_len - 8);
    memset(glob + 8, 0xa5, glen - 8);
    for (uint32_t i = 0; i < f.n; i++) {
        snprintf(f.devs[i].id, sizeof f.devs[i].id, "raw-%s-%05u", fl, i);
        snprintf(f.devs[i].topic, sizeof f.devs[i].topic, "raw/%s/update/%s",
                 fl, f.devs[i].id);
    }

    /* the aggregator first, so it sees every update */
    fmq_mqtt *agg = NULL;
    char aid[80];
    snprintf(aid, sizeof aid, "raw-agg-%s", fl);
    fmq_mqtt_cfg mc = f.mc;
    mc.client_id = aid;
    mc.clean_start = true;
    mc.session_expiry_s = 0;
    fmq_err e = fmq_mqtt_new(&mc, &agg);
    if (!e)
        e = fmq_mqtt_subscribe(agg, utopics, 1);
    if (!e)
        e = fmq_mqtt_connect(agg, f.connect_ms);
    if (e) {
        fprintf(stderr, "%s: aggregator client: %s\n", prog, fmq_strerror(e));
        return 1;
    }
    /* no retained global from an earlier run may start a round */
    if (fmq_mqtt_publish(agg, f.gtopic, "", 0, 1, true, 5000))
        fprintf(stderr, "%s: could not clear the retained global\n", prog);

    double t0 = fmq_mono_seconds();
    uint32_t nthr = f.n < 64 ? f.n : 64;
    pthread_t thr[64];
    for (uint32_t i = 0; i < nthr; i++)
        if (pthread_create(&thr[i], NULL, connector, &f)) {
            fprintf(stderr, "%s: cannot start threads\n", prog);
            return 1;
        }
    for (uint32_t i = 0; i < nthr; i++)
        pthread_join(thr[i], NULL);
    uint32_t failed = atomic_load(&f.failed);
    printf("raw_fleet: %u of %u devices connected in %.2f s\n", f.n - failed,
           f.n, fmq_mono_seconds() - t0);
    fflush(stdout);
    if (failed) {
        fprintf(stderr, "%s: %u devices could not connect\n", prog, failed);
        return 1;
    }
    pthread_t dthr;
    if (pthread_create(&dthr, NULL, devices, &f)) {
        fprintf(stderr, "%s: cannot start the device thread\n", prog);
        return 1;
    }
    int rc = 0;
    uint32_t done = 0;
    for (uint32_t r = 1; r <= rounds; r++) {
        put_round(glob, r);
        double ts = fmq_mono_seconds();
        e = fmq_mqtt_publish(agg, f.gtopic, glob, glen, 1, true, 0);
        if (e) {
            fprintf(stderr, "%s: round %u publish: %s\n", prog, r,
                    fmq_strerror(e));
            rc = 1;
            break;
        }
        uint32_t got = 0;
        while (got < f.n && fmq_mono_seconds() - ts < rto) {
            fmq_mqtt_msg msg;
            if (fmq_mqtt_next(agg, 100, &msg))
                continue;
            if (msg.len >= 8 && get_round(msg.payload) == r)
                got++;
            fmq_mqtt_msg_free(&msg);
        }
        secs[r - 1] = fmq_mono_seconds() - ts;
        printf("raw round %u: %u/%u updates, %.3f s\n", r, got, f.n,
               secs[r - 1]);
        fflush(stdout);
        if (got < f.n) {
            fprintf(stderr, "%s: round %u timed out with %u of %u updates\n",
                    prog, r, got, f.n);
            rc = 1;
            break;
        }
        done = r;
    }
    atomic_store(&f.stop, 1);
    pthread_join(dthr, NULL);
    if (fmq_mqtt_publish(agg, f.gtopic, "", 0, 1, true, 5000))
        fprintf(stderr, "%s: could not clear the retained global\n", prog);
    if (done >= 2) {
        qsort(secs + 1, done - 1, sizeof *secs, cmp_double);
        uint32_t k = done - 1;
        double med = k % 2 ? secs[1 + k / 2]
                           : (secs[k / 2] + secs[1 + k / 2]) / 2;
        printf("raw_fleet: %u devices, %u rounds, median %.4f s per round "
               "(rounds 2..%u), global %zu B, update %zu B, peak RSS %.1f "
               "MB\n", f.n, done, med, done, glen, f.upd_len,
               (double)fmq_cli_peak_rss() / 1e6);
    } else if (!rc) {
        fprintf(stderr, "%s: need at least 2 rounds for a median\n", prog);
        rc = 1;
    }
    for (uint32_t i = 0; i < f.n; i++)
        fmq_mqtt_destroy(&f.devs[i].m);
    fmq_mqtt_destroy(&agg);
    free(f.devs);
    free(f.upd);
    free(glob);
    free(secs);
    fmq_conf_destroy(&c);
    return rc;
}
