/*
 * fedmq-sim — a fleet of N devices in one process, each a full device
 * (device.h core and runner) with its own MQTT connection, its own client
 * id and its own share of the training set, so that one machine can play a
 * fleet of 1,000 against a real broker and a real aggregator.
 *
 * Device k (k = first_party .. first_party + devices - 1) is
 * "<id_prefix>-<k as 4 digits>", holds party k of the partition and trains
 * with fmq_trainer_seed(seed, round, k) — what fedmq-train's party k does
 * in process, so the two can be compared.
 *
 * Realism knobs, drawn per (device, round) from the cohort rule's hash
 * (common/cohort.h) with knob_seed, so a run is reproducible:
 *   offline  the device misses the round's global: it disconnects and
 *            comes back offline_ms later (its session keeps what the
 *            broker queued meanwhile);
 *   slow     it trains, then holds its update back slow_ms;
 *   drop     it trains and drops off before sending; it returns drop_ms
 *            later and sends the update then (late, usually).
 *
 * Device classes (classes "cell:0.3,hub:0.2"): each device falls in a
 * class with the given probability (a draw per device from knob_seed, so
 * the same ids get the same classes), the rest in none; a device sends
 * what the round tells its class (SPEC §6.1 uqc). save_dir writes each
 * device's model weights at the end, <dir>/<id>.bin (float32 LE, as
 * fedmq-aggregator --save), to compare them with the aggregator's.
 *
 * Hostile devices (hostile "dev-0008:scale:-10,dev-0009:noise:5"), for
 * testing robust aggregation: in every round it trains, the named device
 * replaces its honest delta before quantization (device.h tamper_fn):
 * scale:K multiplies it by K, noise:S sends Gaussian noise of std S per
 * coordinate, drawn from a generator seeded per (device, round) from
 * knob_seed. Everything else about the device (its samples count, its
 * sealing, its timing) stays honest.
 *
 * A few poller threads (threads, default one per core) drive the
 * devices: thread t owns devices t, t + threads, ... and runs their whole
 * work inline (verify and decode the global, train, quantize, seal,
 * publish), so a fleet's per-device work uses every core the way devices
 * on their own CPUs would; Paho's own threads do the network. A device is
 * only ever touched by its one poller (and, while it connects, by a
 * connector thread, never both). The run ends when a device
 * holds a global of round until_round, after max_seconds, or at SIGINT /
 * SIGTERM; then every device says offline and disconnects, and one
 * summary line is printed.
 */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cohort.h"
#include "device.h"
#include "nn.h"

static const fmq_conf_key keys[] = {
    FMQ_CLI_MQTT_KEYS,
    FMQ_CLI_DATA_KEYS,
    {"agg_key", FMQ_CONF_STR, NULL, "the aggregator's public key (PEM, EC "
     "P-256) that global models must be signed with; a comma list while a "
     "key rotates. Required unless no_verify", 0, 0, false},
    {"seal_key", FMQ_CONF_STR, NULL, "public key updates are sealed to "
     "(default: the agg_key that signed the global)", 0, 0, false},
    {"no_verify", FMQ_CONF_BOOL, "false", "take global models without "
     "checking their signature (debugging only)", 0, 0, false},
    {"no_seal", FMQ_CONF_BOOL, "false", "publish updates unsealed "
     "(debugging only: an aggregator requiring sealed updates rejects "
     "them)", 0, 0, false},
    {"devices", FMQ_CONF_UINT, "10", "devices to simulate", 1, 100000, false},
    {"first_party", FMQ_CONF_UINT, "0", "party index of the first device", 0,
     100000, false},
    {"id_prefix", FMQ_CONF_STR, "dev", "device ids are <prefix>-<party>", 0,
     0, false},
    {"trainer", FMQ_CONF_STR, "engine",
     "engine (the built-in trainer) or trivial (one cheap step: measures "
     "the runtime only)", 0, 0, false},
    {"state_dir", FMQ_CONF_STR, NULL,
     "keep each device's state in <dir>/<id>/ (unset: in memory only)", 0, 0,
     false},
    {"offline", FMQ_CONF_DOUBLE, "0", "fraction of devices offline per round",
     0, 1, false},
    {"offline_ms", FMQ_CONF_UINT, "5000", "how long an offline device stays "
     "away", 0, 86400000, false},
    {"slow", FMQ_CONF_DOUBLE, "0", "fraction of devices that are slow per "
     "round", 0, 1, false},
    {"slow_ms", FMQ_CONF_UINT, "2000", "delay of a slow device's update", 0,
     86400000, false},
    {"drop", FMQ_CONF_DOUBLE, "0", "fraction of devices that drop off "
     "mid-round", 0, 1, false},
    {"drop_ms", FMQ_CONF_UINT, "10000", "how long a dropped device stays "
     "away before sending", 0, 86400000, false},
    {"offline_rounds", FMQ_CONF_STR, NULL, "rounds the offline draw applies "
     "to, e.g. 1,4 (unset: all)", 0, 0, false},
    {"slow_rounds", FMQ_CONF_STR, NULL, "rounds the slow draw applies to "
     "(unset: all)", 0, 0, false},
    {"drop_rounds", FMQ_CONF_STR, NULL, "rounds the drop draw applies to "
     "(unset: all)", 0, 0, false},
    {"knob_seed", FMQ_CONF_UINT, "7", "seed of the offline/slow/drop draws "
     "and of hostile noise", 0, 0, false},
    {"hostile", FMQ_CONF_STR, NULL, "hostile devices, testing only: a comma "
     "list of <device id>:scale:K (delta times K) or <device id>:noise:S "
     "(delta replaced by Gaussian noise of std S), applied every round", 0,
     0, false},
    {"classes", FMQ_CONF_STR, NULL, "device classes: a comma list of "
     "<class>:<fraction> (e.g. cell:0.3,hub:0.2; fractions add up to at "
     "most 1, the rest have no class), drawn per device from knob_seed", 0,
     0, false},
    {"save_dir", FMQ_CONF_STR, NULL, "at the end, write each device's model "
     "to <dir>/<id>.bin (float32 LE)", 0, 0, false},
    {"until_round", FMQ_CONF_UINT, "0", "stop once a device holds the "
     "global of this round (0: run until stopped)", 0, 0, false},
    {"max_seconds", FMQ_CONF_DOUBLE, "0", "stop after this long (0: no "
     "limit)", 0, 1e9, false},
    {"connect_ms", FMQ_CONF_UINT, "15000", "first connection timeout per "
     "device", 100, 600000, false},
    {"tokens", FMQ_CONF_STR, NULL, "file of '<device id> <token>' lines "
     "(fedmq-keygen tokens): each device connects with its own token as "
     "its MQTT password (unset: the password option, if any, for all)", 0,
     0, false},
    {"threads", FMQ_CONF_UINT, "0", "poller threads sharing the devices "
     "(0: one per online core, at most 64)", 0, 64, false},
    {"ack_wait_ms", FMQ_CONF_UINT, "0", "wait this long for each update's "
     "PUBACK (0: never block; resend after reconnects)", 0, 60000, false},
};

/* The trust settings (agg_key, seal_key, no_verify, no_seal) into dc;
 * the keys live in ks. 0, or 2 after printing what is wrong. */
static int trust_setup(const fmq_conf *c, const char *prog,
                       fmq_device_keys *ks, fmq_device_cfg *dc)
{
    const char *ak = fmq_conf_str(c, "agg_key");
    dc->no_verify = fmq_conf_bool(c, "no_verify");
    dc->no_seal = fmq_conf_bool(c, "no_seal");
    if (!ak && (!dc->no_verify ||
                (!dc->no_seal && !fmq_conf_str(c, "seal_key")))) {
        fprintf(stderr, "%s: no agg_key: trust is on by default (global "
                "models must be signed by the aggregator, updates are "
                "sealed to it). Give --agg-key FILE (the aggregator's "
                "public key in PEM), or, for debugging only, --no-verify "
                "and --no-seal\n", prog);
        return 2;
    }
    if (fmq_device_keys_load(ks, ak, fmq_conf_str(c, "seal_key"), dc)) {
        fprintf(stderr, "%s: cannot load the trust keys (see above)\n",
                prog);
        return 2;
    }
    if (dc->no_verify || dc->no_seal)
        fprintf(stderr, "%s: WARNING: %s%s%s (debugging only)\n", prog,
                dc->no_verify ? "global models are not verified" : "",
                dc->no_verify && dc->no_seal ? ", " : "",
                dc->no_seal ? "updates are sent unsealed" : "");
    return 0;
}

static atomic_int stop; /* lock-free on every target: signal-safe */
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* ----------------------------------------------------- trivial trainer
 * Measures the runtime without the engine: the weights move by a small
 * deterministic step (O(P), no data touched). */
typedef struct trivial {
    float *w;
    uint32_t P, n;
} trivial;

static fmq_err trivial_init(void *state, const fmq_trainer_setup *s,
                            uint32_t *P)
{
    trivial *t = state;
    fmq_nn *nn;
    const struct fmq_dataset *ds = s->data;
    fmq_err e = fmq_nn_new(s->model, ds->c, ds->h, ds->w, ds->classes, &nn);
    if (e)
        return e;
    t->P = fmq_nn_nparams(nn);
    fmq_nn_destroy(&nn);
    t->n = s->n;
    if (!(t->w = fmq_alloc_array(t->P, sizeof(float))))
        return FMQ_ERR_NOMEM;
    *P = t->P;
    return FMQ_OK;
}

static fmq_err trivial_load(void *state, const float *w, uint32_t P)
{
    trivial *t = state;
    if (P != t->P)
        return FMQ_ERR_MODEL;
    memcpy(t->w, w, (size_t)P * sizeof(float));
    return FMQ_OK;
}

static fmq_err trivial_train(void *state, const fmq_trainer_round *r,
                             fmq_trainer_report *out)
{
    trivial *t = state;
    float step = r->lr * 1e-3f;
    for (uint32_t i = 0; i < t->P; i++)
        t->w[i] -= step * (float)((int)(i % 7) - 3);
    *out = (fmq_trainer_report){.samples = t->n ? t->n : 1,
                                .steps = t->n, .loss = 1.0, .seconds = 0};
    return FMQ_OK;
}

static fmq_err trivial_weights(void *state, float *w, uint32_t P)
{
    trivial *t = state;
    if (P != t->P)
        return FMQ_ERR_MODEL;
    memcpy(w, t->w, (size_t)P * sizeof(float));
    return FMQ_OK;
}

static void trivial_fini(void *state)
{
    trivial *t = state;
    fmq_free(t->w);
}

static const fmq_trainer_ops trivial_ops = {
    "trivial", sizeof(trivial), trivial_init, trivial_load, trivial_train,
    trivial_weights, trivial_fini};

/* ------------------------------------------------------------- devices */

typedef enum { ACT_NONE = 0, ACT_OFFLINE, ACT_DROP } act;

/* Connection state of a device without a runner. Connecting is done by a
 * pool of threads: Paho 1.3.12 (Debian 12) makes every connection after a
 * process's first wait about 2 s in its send thread (eclipse-paho
 * paho.mqtt.c issue 1430, fixed in later releases), so connecting 1,000
 * devices one after another would take half an hour; side by side the
 * waits overlap. The main loop never blocks on a connect. */
enum { CONN_IDLE = 0, CONN_QUEUED, CONN_READY, CONN_FAILED };

typedef struct simdev {
    struct sim *sim;
    char id[FMQ_ID_MAX + 1];
    fmq_device *d;
    fmq_devrun *r;
    act pending_act;
    double back_at;
    uint64_t considered; /* last round the knobs were drawn for */
    uint64_t off_round;  /* the round it is offline for (0: none) */
    uint64_t bytes_in, bytes_out, msgs_out; /* of finished connections */
    uint32_t offline_n, slow_n, drop_n;
    const char *token;  /* its MQTT password from the tokens file, or NULL */
    const char *cls;    /* its class (classes), or NULL */
    bool hostile;       /* attack applies (tamper_fn) */
    fmq_device_attack attack;
    atomic_int conn;    /* CONN_*, while r is NULL */
    fmq_devrun *r_new;  /* set by a connector thread (CONN_READY) */
    struct simdev *next_q;
} simdev;

typedef struct sim {
    double offline, slow, drop;
    uint32_t offline_ms, slow_ms, drop_ms, connect_ms, ack_wait_ms;
    uint64_t knob_seed;
    const char *offline_rounds, *slow_rounds, *drop_rounds;
    fmq_mqtt_cfg mc;
    /* connector pool: a queue of devices to connect */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    simdev *qhead, *qtail;
    bool qstop;
    /* pollers */
    simdev *devs;
    uint32_t n, npollers;
    uint64_t until;
    double t0, max_s;
} sim;

/* true when round is in the comma list (NULL: every round). */
static bool in_rounds(const char *list, uint64_t round)
{
    if (!list)
        return true;
    const char *p = list;
    while (*p) {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p)
            return false;
        if (v == round)
            return true;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return false;
    }
    return false;
}

/* A list of rounds, checked once at start. */
static bool rounds_ok(const char *list)
{
    if (!list)
        return true;
    for (const char *p = list; *p; p++)
        if (!((*p >= '0' && *p <= '9') || *p == ','))
            return false;
    return true;
}

static double knob(const sim *s, const char *what, uint64_t round,
                   const char *id)
{
    char tag[FMQ_ID_MAX + 16];
    snprintf(tag, sizeof tag, "%s/%s", what, id);
    return fmq_cohort_draw(s->knob_seed, round, tag);
}

static fmq_devrun_verdict filter(void *arg, fmq_devrun *r, uint64_t round)
{
    simdev *sd = arg;
    const sim *s = sd->sim;
    /* A reconnecting client subscribes again and the broker sends the
     * retained global again: an offline device keeps missing its round. */
    if (round != 0 && round == sd->off_round)
        return FMQ_DEVRUN_SKIP;
    if (round == 0 || round <= sd->considered)
        return FMQ_DEVRUN_TAKE;
    sd->considered = round;
    if (s->offline > 0 && in_rounds(s->offline_rounds, round) &&
        knob(s, "offline", round, sd->id) < s->offline) {
        sd->pending_act = ACT_OFFLINE;
        sd->off_round = round;
        sd->offline_n++;
        fmq_log_info("sim: %s offline for round %llu", sd->id,
                     (unsigned long long)round);
        return FMQ_DEVRUN_SKIP;
    }
    if (s->drop > 0 && in_rounds(s->drop_rounds, round) &&
        knob(s, "drop", round, sd->id) < s->drop) {
        sd->pending_act = ACT_DROP;
        sd->drop_n++;
        fmq_log_info("sim: %s drops off in round %llu", sd->id,
                     (unsigned long long)round);
        return FMQ_DEVRUN_HOLD;
    }
    if (s->slow > 0 && in_rounds(s->slow_rounds, round) &&
        knob(s, "slow", round, sd->id) < s->slow) {
        sd->slow_n++;
        fmq_devrun_hold(r, fmq_mono_seconds() + s->slow_ms / 1000.0);
    }
    return FMQ_DEVRUN_TAKE;
}

/* Runs on a connector thread: the device core is not touched until the
 * connection exists (fmq_devrun_new only reads its id and fleet). */
static fmq_err connect_dev(simdev *sd)
{
    const sim *s = sd->sim;
    fmq_devrun *r;
    fmq_mqtt_cfg mc = s->mc;
    if (sd->token)
        mc.password = sd->token;
    fmq_err e = fmq_devrun_new(sd->d, &mc, s->connect_ms, &r);
    if (e) {
        fmq_log_warn("sim: %s: connecting: %s", sd->id, fmq_strerror(e));
        atomic_store(&sd->conn, CONN_FAILED);
        return e;
    }
    fmq_devrun_set_filter(r, filter, sd);
    fmq_devrun_set_ack_wait(r, s->ack_wait_ms);
    sd->r_new = r;
    atomic_store(&sd->conn, CONN_READY);
    return FMQ_OK;
}

static void *connector(void *arg)
{
    sim *s = arg;
    pthread_mutex_lock(&s->qmu);
    for (;;) {
        while (!s->qhead && !s->qstop)
            pthread_cond_wait(&s->qcv, &s->qmu);
        if (s->qstop)
            break;
        simdev *sd = s->qhead;
        s->qhead = sd->next_q;
        if (!s->qhead)
            s->qtail = NULL;
        pthread_mutex_unlock(&s->qmu);
        (void)connect_dev(sd);
        pthread_mutex_lock(&s->qmu);
    }
    pthread_mutex_unlock(&s->qmu);
    return NULL;
}

static void enqueue(sim *s, simdev *sd)
{
    atomic_store(&sd->conn, CONN_QUEUED);
    sd->next_q = NULL;
    pthread_mutex_lock(&s->qmu);
    if (s->qtail)
        s->qtail->next_q = sd;
    else
        s->qhead = sd;
    s->qtail = sd;
    pthread_cond_signal(&s->qcv);
    pthread_mutex_unlock(&s->qmu);
}

/* Takes a finished connection; false while none is ready. */
static bool adopt(simdev *sd, double now)
{
    int st = atomic_load(&sd->conn);
    if (st == CONN_READY) {
        sd->r = sd->r_new;
        sd->r_new = NULL;
        atomic_store(&sd->conn, CONN_IDLE);
        return true;
    }
    if (st == CONN_FAILED) {
        atomic_store(&sd->conn, CONN_IDLE);
        sd->back_at = now + 1.0; /* try again in a second */
    }
    return false;
}

static void disconnect_dev(simdev *sd)
{
    if (!sd->r)
        return;
    fmq_mqtt_stats ms;
    fmq_devrun_mqtt_stats(sd->r, &ms);
    sd->bytes_in += ms.bytes_in;
    sd->bytes_out += ms.bytes_out;
    sd->msgs_out += ms.msgs_out;
    fmq_devrun_destroy(&sd->r);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The tokens file: one "<device id> <token>" per line, '#' comments and
 * blank lines skipped. Each device of devs gets the token of its id;
 * every device must have one. The file's text stays in *text (tokens
 * point into it). 0, or 2 after printing what is wrong. */
static int tokens_load(const char *path, const char *prog, simdev *devs,
                       uint32_t n, uint8_t **text)
{
    size_t len;
    fmq_err e = fmq_file_read(path, 64u << 20, text, &len);
    if (e) {
        fprintf(stderr, "%s: tokens file %s: %s\n", prog, path,
                fmq_strerror(e));
        return 2;
    }
    char *p = (char *)*text;
    p[len] = 0; /* fmq_file_read leaves room for a terminator */
    uint32_t lineno = 0;
    while (*p) {
        char *line = p, *nl = strchr(p, '\n');
        p = nl ? nl + 1 : p + strlen(p);
        if (nl)
            *nl = 0;
        lineno++;
        char *id = line + strspn(line, " \t\r");
        if (!*id || *id == '#')
            continue;
        char *sp = id + strcspn(id, " \t");
        if (!*sp) {
            fprintf(stderr, "%s: tokens file %s line %u: want '<device id> "
                            "<token>'\n", prog, path, lineno);
            return 2;
        }
        *sp++ = 0;
        char *tok = sp + strspn(sp, " \t");
        tok[strcspn(tok, " \t\r")] = 0;
        if (!*tok) {
            fprintf(stderr, "%s: tokens file %s line %u: no token for %s\n",
                    prog, path, lineno, id);
            return 2;
        }
        for (uint32_t i = 0; i < n; i++)
            if (strcmp(devs[i].id, id) == 0)
                devs[i].token = tok;
    }
    for (uint32_t i = 0; i < n; i++)
        if (!devs[i].token) {
            fprintf(stderr, "%s: tokens file %s has no token for device "
                            "%s\n", prog, path, devs[i].id);
            return 2;
        }
    return 0;
}

/* The tamper_fn of a hostile device: its attack, and one info line with
 * the L2 norms of the honest delta and of what is sent instead. */
static void hostile_tamper(void *arg, float *delta, uint32_t P,
                           uint64_t round)
{
    simdev *sd = arg;
    double honest = 0, sent = 0;
    for (uint32_t i = 0; i < P; i++)
        honest += (double)delta[i] * delta[i];
    fmq_device_attack_apply(&sd->attack, delta, P, round);
    for (uint32_t i = 0; i < P; i++)
        sent += (double)delta[i] * delta[i];
    fmq_log_info("sim: %s round %llu: hostile delta, L2 norm %.4g honest, "
                 "%.4g sent", sd->id, (unsigned long long)round, sqrt(honest),
                 sqrt(sent));
}

/* The hostile list: "<id>:scale:K" or "<id>:noise:S" items, comma
 * separated; each id must be one of devs and appear once. Each noise
 * attack gets its own seed from knob_seed and the id. 0, or 2 after
 * printing what is wrong. */
static int hostile_load(const char *list, const char *prog, uint64_t knob_seed,
                        simdev *devs, uint32_t n)
{
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[256];
        if (len == 0 || len >= sizeof item) {
            fprintf(stderr, "%s: hostile '%s': an empty or overlong item\n",
                    prog, list);
            return 2;
        }
        memcpy(item, p, len);
        item[len] = 0;
        p = end ? end + 1 : p + len;
        if (end && !*p) {
            fprintf(stderr, "%s: hostile '%s': an empty item at the end\n",
                    prog, list);
            return 2;
        }
        char *colon = strchr(item, ':');
        fmq_device_attack a;
        if (!colon || fmq_device_attack_parse(colon + 1, &a)) {
            fprintf(stderr, "%s: hostile '%s': want <device id>:scale:K or "
                    "<device id>:noise:S (S > 0)\n", prog, item);
            return 2;
        }
        *colon = 0;
        simdev *sd = NULL;
        for (uint32_t i = 0; i < n && !sd; i++)
            if (strcmp(devs[i].id, item) == 0)
                sd = &devs[i];
        if (!sd || sd->hostile) {
            fprintf(stderr, "%s: hostile: %s %s\n", prog, item,
                    sd ? "is named twice" : "is not a simulated device");
            return 2;
        }
        char tag[FMQ_ID_MAX + 16];
        snprintf(tag, sizeof tag, "hostile/%s", sd->id);
        a.seed = (uint64_t)ldexp(fmq_cohort_draw(knob_seed, 0, tag), 64);
        sd->attack = a;
        sd->hostile = true;
    }
    return 0;
}

/* The classes list: "<class>:<fraction>" items; each device gets the
 * class whose slice of [0, 1) its draw falls in. names holds the copied
 * class names (ids point into it). 0, or 2 after printing what is wrong. */
#define SIM_CLASSES_MAX 16
static int classes_load(const char *list, const char *prog, uint64_t seed,
                        simdev *devs, uint32_t n,
                        char names[SIM_CLASSES_MAX][FMQ_ID_MAX + 1],
                        uint32_t counts[SIM_CLASSES_MAX], uint32_t *ncls)
{
    double frac[SIM_CLASSES_MAX], sum = 0;
    uint32_t k = 0;
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[128];
        const char *colon = memchr(p, ':', len);
        if (len == 0 || len >= sizeof item || !colon || k == SIM_CLASSES_MAX) {
            fprintf(stderr, "%s: classes '%s': want up to %d items "
                    "<class>:<fraction>\n", prog, list, SIM_CLASSES_MAX);
            return 2;
        }
        memcpy(item, p, len);
        item[len] = 0;
        item[colon - p] = 0;
        char *e;
        double f = strtod(item + (colon - p) + 1, &e);
        if (!fmq_id_valid(item) || e == item + (colon - p) + 1 || *e ||
            !(f >= 0 && f <= 1)) {
            fprintf(stderr, "%s: classes: '%.*s': a class id and a fraction "
                    "in [0, 1]\n", prog, (int)len, p);
            return 2;
        }
        for (uint32_t i = 0; i < k; i++)
            if (strcmp(names[i], item) == 0) {
                fprintf(stderr, "%s: classes: %s named twice\n", prog, item);
                return 2;
            }
        memcpy(names[k], item, strlen(item) + 1); /* an id: <= 64 bytes */
        frac[k++] = f;
        sum += f;
        p = end ? end + 1 : p + len;
    }
    if (sum > 1 + 1e-9) {
        fprintf(stderr, "%s: classes: the fractions add up to %g > 1\n", prog,
                sum);
        return 2;
    }
    for (uint32_t i = 0; i < n; i++) {
        char tag[FMQ_ID_MAX + 16];
        snprintf(tag, sizeof tag, "class/%s", devs[i].id);
        double u = fmq_cohort_draw(seed, 0, tag), lo = 0;
        for (uint32_t c = 0; c < k; c++) {
            if (u >= lo && u < lo + frac[c]) {
                devs[i].cls = names[c];
                counts[c]++;
                break;
            }
            lo += frac[c];
        }
    }
    *ncls = k;
    return 0;
}

typedef struct poller {
    sim *s;
    uint32_t t;
    pthread_t th;
} poller;

/* Poller t: devices t, t + npollers, ... until stop. */
static void *poll_devices(void *arg)
{
    const poller *pl = arg;
    sim *s = pl->s;
    while (!atomic_load(&stop)) {
        bool any = false;
        double now = fmq_mono_seconds();
        for (uint32_t i = pl->t; i < s->n && !atomic_load(&stop);
             i += s->npollers) {
            simdev *sd = &s->devs[i];
            if (!sd->r) {
                if (!adopt(sd, now)) {
                    if (atomic_load(&sd->conn) == CONN_IDLE &&
                        now >= sd->back_at)
                        enqueue(s, sd);
                    continue;
                }
            }
            bool did = false;
            if (fmq_devrun_poll(sd->r, 0, &did))
                continue;
            any |= did;
            if (sd->pending_act != ACT_NONE) {
                double away = sd->pending_act == ACT_OFFLINE ? s->offline_ms
                                                             : s->drop_ms;
                sd->pending_act = ACT_NONE;
                disconnect_dev(sd);
                sd->back_at = fmq_mono_seconds() + away / 1000.0;
            }
            if (s->until) {
                fmq_device_stats st;
                fmq_device_get_stats(sd->d, &st);
                if (st.round >= s->until)
                    atomic_store(&stop, 1);
            }
        }
        if (s->max_s > 0 && fmq_mono_seconds() - s->t0 >= s->max_s)
            atomic_store(&stop, 1);
        if (!any)
            sleep_ms(1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *prog = "fedmq-sim";
    fmq_conf *c;
    if (fmq_conf_new(keys, sizeof keys / sizeof keys[0], &c))
        return 2;
    int pr = fmq_cli_parse(c, argc, argv, prog,
                           "A simulated fleet: N devices, each with its own "
                           "MQTT connection and data partition.");
    if (pr) {
        fmq_conf_destroy(&c);
        return pr == 1 ? 0 : 2;
    }
    uint32_t n = (uint32_t)fmq_conf_uint(c, "devices");
    uint32_t first = (uint32_t)fmq_conf_uint(c, "first_party");
    uint32_t parties = (uint32_t)fmq_conf_uint(c, "parties");
    if ((uint64_t)first + n > parties) {
        fprintf(stderr, "%s: devices %u from party %u need at least %llu "
                        "parties (parties = %u)\n", prog, n, first,
                (unsigned long long)first + n, parties);
        return 2;
    }
    const char *tname = fmq_conf_str(c, "trainer");
    const fmq_trainer_ops *ops;
    if (strcmp(tname, "engine") == 0)
        ops = &fmq_trainer_builtin;
    else if (strcmp(tname, "trivial") == 0)
        ops = &trivial_ops;
    else {
        fprintf(stderr, "%s: trainer '%s': use engine or trivial\n", prog,
                tname);
        return 2;
    }
    fmq_dataset ds;
    fmq_partition part;
    if (fmq_cli_data(c, prog, &ds, &part))
        return 1;
    /* many devices share the cores: one BLAS thread each (the default) */
    sim s = {.offline = fmq_conf_double(c, "offline"),
             .slow = fmq_conf_double(c, "slow"),
             .drop = fmq_conf_double(c, "drop"),
             .offline_ms = (uint32_t)fmq_conf_uint(c, "offline_ms"),
             .slow_ms = (uint32_t)fmq_conf_uint(c, "slow_ms"),
             .drop_ms = (uint32_t)fmq_conf_uint(c, "drop_ms"),
             .connect_ms = (uint32_t)fmq_conf_uint(c, "connect_ms"),
             .ack_wait_ms = (uint32_t)fmq_conf_uint(c, "ack_wait_ms"),
             .knob_seed = fmq_conf_uint(c, "knob_seed"),
             .offline_rounds = fmq_conf_str(c, "offline_rounds"),
             .slow_rounds = fmq_conf_str(c, "slow_rounds"),
             .drop_rounds = fmq_conf_str(c, "drop_rounds")};
    if (!rounds_ok(s.offline_rounds) || !rounds_ok(s.slow_rounds) ||
        !rounds_ok(s.drop_rounds)) {
        fprintf(stderr, "%s: *_rounds take a comma list of round numbers\n",
                prog);
        return 2;
    }
    fmq_cli_mqtt(c, &s.mc);
    fmq_device_cfg trust = {0};
    fmq_device_keys ks;
    if (trust_setup(c, prog, &ks, &trust))
        return 2;
    simdev *devs = calloc(n, sizeof *devs);
    if (!devs)
        return 1;
    const char *fleet = fmq_conf_str(c, "fleet");
    const char *sdir = fmq_conf_str(c, "state_dir");
    uint64_t seed = fmq_conf_uint(c, "seed");
    int rc = 0;
    double t0 = fmq_mono_seconds();
    uint8_t *tokens_text = NULL;
    for (uint32_t i = 0; i < n; i++)
        snprintf(devs[i].id, sizeof devs[i].id, "%s-%04u",
                 fmq_conf_str(c, "id_prefix"), first + i);
    const char *tokens = fmq_conf_str(c, "tokens");
    if (tokens && tokens_load(tokens, prog, devs, n, &tokens_text)) {
        fmq_free(tokens_text);
        free(devs);
        return 2;
    }
    const char *hostile = fmq_conf_str(c, "hostile");
    uint32_t nhostile = 0;
    if (hostile) {
        if (hostile_load(hostile, prog, s.knob_seed, devs, n)) {
            fmq_free(tokens_text);
            free(devs);
            return 2;
        }
        for (uint32_t i = 0; i < n; i++)
            if (devs[i].hostile) {
                nhostile++;
                fprintf(stderr, "%s: WARNING: %s is hostile: %s:%g in every "
                        "round (testing only)\n", prog, devs[i].id,
                        devs[i].attack.kind == FMQ_DEVICE_ATTACK_SCALE
                            ? "scale" : "noise",
                        devs[i].attack.param);
            }
    }
    static char cls_names[SIM_CLASSES_MAX][FMQ_ID_MAX + 1];
    uint32_t cls_counts[SIM_CLASSES_MAX] = {0}, ncls = 0;
    const char *classes = fmq_conf_str(c, "classes");
    if (classes) {
        if (classes_load(classes, prog, s.knob_seed, devs, n, cls_names,
                         cls_counts, &ncls)) {
            fmq_free(tokens_text);
            free(devs);
            return 2;
        }
        uint32_t none = n;
        for (uint32_t k = 0; k < ncls; k++) {
            printf("fedmq-sim: class %s: %u devices\n", cls_names[k],
                   cls_counts[k]);
            none -= cls_counts[k];
        }
        printf("fedmq-sim: no class: %u devices\n", none);
    }
    /* settle the library's lazily initialised globals (error names, log
     * level, BLAS threads) before any other thread can race for them */
    (void)fmq_errname(FMQ_OK);
    (void)fmq_log_get_level();
    if (!getenv("OPENBLAS_NUM_THREADS"))
        fmq_nn_set_threads(1);
    pthread_mutex_init(&s.qmu, NULL);
    pthread_cond_init(&s.qcv, NULL);
    uint32_t nworkers = n < 64 ? n : 64, started = 0;
    pthread_t workers[64];
    for (; started < nworkers; started++)
        if (pthread_create(&workers[started], NULL, connector, &s))
            break;
    if (!started) {
        fprintf(stderr, "%s: cannot start connector threads\n", prog);
        return 1;
    }
    uint32_t opened = 0;
    for (uint32_t i = 0; i < n; i++, opened++) {
        simdev *sd = &devs[i];
        uint32_t k = first + i;
        sd->sim = &s;
        snprintf(sd->id, sizeof sd->id, "%s-%04u",
                 fmq_conf_str(c, "id_prefix"), k);
        char dir[1024];
        if (sdir)
            snprintf(dir, sizeof dir, "%s/%s", sdir, sd->id);
        fmq_device_cfg dc = {
            .fleet = fleet, .id = sd->id, .state_dir = sdir ? dir : NULL,
            .cls = sd->cls,
            .trainer = ops,
            .setup = {.data = &ds, .idx = part.idx + part.off[k],
                      .n = fmq_partition_size(&part, k)},
            .seed = seed, .party = k, .quant_seed = seed * 1000003u + k,
            .agg_keys = trust.agg_keys, .nagg_keys = trust.nagg_keys,
            .seal_key = trust.seal_key, .no_verify = trust.no_verify,
            .no_seal = trust.no_seal,
            .tamper_fn = sd->hostile ? hostile_tamper : NULL,
            .tamper_arg = sd->hostile ? sd : NULL};
        fmq_err e = fmq_device_open(&dc, &sd->d);
        if (e) {
            fprintf(stderr, "%s: device %s: %s\n", prog, sd->id,
                    fmq_strerror(e));
            rc = 1;
            break;
        }
        enqueue(&s, sd);
    }
    /* wait for the first connections (a device that fails here is tried
     * again by the loop below, like one that returns from offline) */
    uint32_t connected = 0, failed = 0;
    while (!rc && connected + failed < opened) {
        connected = failed = 0;
        for (uint32_t i = 0; i < opened; i++) {
            int st = atomic_load(&devs[i].conn);
            connected += st == CONN_READY;
            failed += st == CONN_FAILED;
        }
        sleep_ms(5);
    }
    n = opened;
    if (!rc && connected == 0) {
        fprintf(stderr, "%s: no device could connect to %s\n", prog,
                s.mc.uri);
        rc = 1;
    }
    if (rc)
        goto done;
    printf("fedmq-sim: %u of %u devices connected to %s in %.2f s (fleet "
           "%s, partition %s, trainer %s)\n",
           connected, n, s.mc.uri, fmq_mono_seconds() - t0, fleet,
           fmq_conf_str(c, "partition"), tname);
    fflush(stdout);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    s.devs = devs;
    s.n = n;
    s.until = fmq_conf_uint(c, "until_round");
    s.max_s = fmq_conf_double(c, "max_seconds");
    s.t0 = t0;
    uint32_t np = (uint32_t)fmq_conf_uint(c, "threads");
    if (!np) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        np = cpus < 1 ? 1 : cpus > 64 ? 64 : (uint32_t)cpus;
    }
    if (np > n)
        np = n;
    s.npollers = np;
    poller pollers[64];
    uint32_t running = 0;
    for (; running < np; running++) {
        pollers[running] = (poller){.s = &s, .t = running};
        if (pthread_create(&pollers[running].th, NULL, poll_devices,
                           &pollers[running]))
            break;
    }
    if (running < np) {
        /* fewer threads than asked: poll every device from this one */
        fprintf(stderr, "%s: started %u of %u poller threads; polling "
                        "from the main thread\n", prog, running, np);
        atomic_store(&stop, 1);
        for (uint32_t i = 0; i < running; i++)
            pthread_join(pollers[i].th, NULL);
        atomic_store(&stop, 0);
        s.npollers = 1;
        poll_devices(&(poller){.s = &s, .t = 0});
    } else {
        for (uint32_t i = 0; i < running; i++)
            pthread_join(pollers[i].th, NULL);
    }
done:
    pthread_mutex_lock(&s.qmu);
    s.qstop = true;
    s.qhead = s.qtail = NULL;
    pthread_cond_broadcast(&s.qcv);
    pthread_mutex_unlock(&s.qmu);
    for (uint32_t i = 0; i < started; i++)
        pthread_join(workers[i], NULL);
    for (uint32_t i = 0; i < n; i++)
        if (!devs[i].r && atomic_load(&devs[i].conn) == CONN_READY)
            adopt(&devs[i], 0);
    uint64_t trained = 0, refused = 0, bin = 0, bout = 0, rounds_max = 0;
    uint64_t ndeltas = 0, nbehind = 0;
    const char *save_dir = fmq_conf_str(c, "save_dir");
    if (save_dir && fmq_mkdir_p(save_dir) != FMQ_OK) {
        fprintf(stderr, "%s: save_dir %s cannot be made\n", prog, save_dir);
        rc = 1;
        save_dir = NULL;
    }
    uint32_t offn = 0, slown = 0, dropn = 0;
    fmq_reason_count why[16];
    uint32_t nwhy = 0;
    for (uint32_t i = 0; i < n; i++) {
        simdev *sd = &devs[i];
        disconnect_dev(sd);
        if (sd->d) {
            fmq_device_stats st;
            fmq_device_get_stats(sd->d, &st);
            trained += st.trained;
            refused += st.refused;
            ndeltas += st.deltas;
            nbehind += st.behind;
            uint32_t P;
            const float *wts = fmq_device_weights(sd->d, &P);
            if (save_dir && wts) {
                char path[1200];
                snprintf(path, sizeof path, "%s/%s.bin", save_dir, sd->id);
                if (fmq_cli_save_weights(prog, path, wts, P))
                    rc = 1;
            }
            for (uint32_t j = 0; j < st.nreasons; j++) {
                uint32_t w = 0;
                while (w < nwhy && strcmp(why[w].reason,
                                          st.reasons[j].reason) != 0)
                    w++;
                if (w == nwhy && nwhy < 16)
                    why[nwhy++] = (fmq_reason_count){.count = 0};
                if (w < nwhy) {
                    memcpy(why[w].reason, st.reasons[j].reason,
                           sizeof why[w].reason);
                    why[w].count += st.reasons[j].count;
                }
            }
            if (st.round > rounds_max)
                rounds_max = st.round;
        }
        bin += sd->bytes_in;
        bout += sd->bytes_out;
        offn += sd->offline_n;
        slown += sd->slow_n;
        dropn += sd->drop_n;
        fmq_device_destroy(&sd->d);
    }
    char whys[256] = "";
    size_t off = 0;
    for (uint32_t j = 0; j < nwhy && off < sizeof whys; j++) {
        int k = snprintf(whys + off, sizeof whys - off, "%s%s:%llu",
                         j ? "," : " (", why[j].reason,
                         (unsigned long long)why[j].count);
        off = k < 0 ? sizeof whys : off + (size_t)k;
    }
    if (nwhy && off < sizeof whys - 1)
        snprintf(whys + off, sizeof whys - off, ")");
    printf("fedmq-sim: %u devices, %llu updates trained, %llu globals "
           "refused%s, offline %u, slow %u, dropped %u, hostile %u, deltas "
           "applied %llu, full fetches %llu; bytes up %llu, down %llu; peak "
           "RSS %.1f MB; %.1f s\n",
           n, (unsigned long long)trained, (unsigned long long)refused, whys,
           offn, slown, dropn, nhostile, (unsigned long long)ndeltas,
           (unsigned long long)nbehind, (unsigned long long)bout,
           (unsigned long long)bin,
           fmq_cli_peak_rss() / 1048576.0, fmq_mono_seconds() - t0);
    free(devs);
    fmq_free(tokens_text);
    fmq_device_keys_fini(&ks);
    fmq_partition_fini(&part);
    fmq_data_fini(&ds);
    fmq_conf_destroy(&c);
    return rc;
}
