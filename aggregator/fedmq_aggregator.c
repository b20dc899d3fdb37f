/*
 * fedmq-aggregator — runs federated rounds over MQTT.
 *
 * A thin loop around the round core (agg.h) and the MQTT wrapper
 * (common/mqtt.h): publish the retained global model, collect updates on
 * fedmq/<fleet>/update/+, close rounds, evaluate on the hold-out set,
 * checkpoint, publish metrics and the next model. One progress line per
 * round on stdout. SIGINT/SIGTERM stop it cleanly (aggregator status
 * offline); SIGKILL at any moment is survived through the checkpoint.
 *
 * Trust is on by default (proto/SPEC.md §7): the aggregator will not start
 * without its private key (sign_key), with which it signs every global
 * model and opens the sealed updates (seal_key when that is another key),
 * and it rejects unsealed updates. It never makes a key itself: keys come
 * from the operator (broker/fedmq_keygen or any P-256 PEM). --no-sign and
 * --no-seal turn each half off, for debugging only, and say so.
 *
 * Aggregation: --strategy NAME[:PARAMS] (aggregator/strategy.h; README.md,
 * "Aggregation strategies") with its hyper-parameters as keys of their own
 * (server_lr, beta1, beta2, tau_adapt, server_momentum, mu, buffer_k,
 * dp_clip, dp_noise, dp_seed), and a norm bound before any strategy
 * (norm_clip, norm_clip_median, norm_action).
 */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg.h"
#include "classes.h"
#include "cli.h"
#include "codec.h"
#include "data.h"
#include "monitor.h"
#include "mqtt.h"
#include "nn.h"

typedef struct opts {
    const char *broker, *client_id;
    const char *fleet, *model, *state_dir, *holdout, *late, *scheme;
    const char *global_scheme, *save, *strategy, *norm_action;
    const char *global_delta, *class_scheme;
    uint32_t rounds, cohort, quorum, round_ms, max_staleness, block;
    uint32_t epochs, batch;
    float lr, momentum, weight_decay;
    double norm_clip, norm_median, target_acc;
    fmq_strategy_hparams hp;
    uint64_t seed;
    bool stochastic, no_ef, no_sign, no_seal;
    const char *sign_key, *seal_key;
    const char *metrics_file, *prom_file;
    fmq_monitor_cfg mon;
    uint32_t checkpoint_ms;
    fmq_mqtt_cfg mc;
} opts;

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* The aggregator's settings: a mosquitto.conf-style file (--config FILE)
 * and flags of the same names (common/conf.h), e.g. `round_ms 30000` in
 * the file or `--round-ms 30000` on the command line. */
static const fmq_conf_key keys[] = {
    FMQ_CLI_MQTT_KEYS,
    {"client_id", FMQ_CONF_STR, NULL, "MQTT client id (default "
     "fedmq-agg-<fleet>)", 0, 0, false},
    {"model", FMQ_CONF_STR, "mlp:128", "logreg, mlp:H[,H...] or cnn", 0, 0,
     false},
    {"seed", FMQ_CONF_UINT, "1", "model initialisation", 0, 0, false},
    {"rounds", FMQ_CONF_UINT, "10", "stop after this many rounds (0 = "
     "forever)", 0, UINT32_MAX, false},
    {"target_acc", FMQ_CONF_DOUBLE, "0", "stop once hold-out accuracy "
     "reaches this (0 = off)", 0, 1, false},
    {"cohort", FMQ_CONF_UINT, "10", "updates per round that close it early",
     1, 1000000, false},
    {"quorum", FMQ_CONF_UINT, "0", "fewest updates a round may close with "
     "(0 = the cohort)", 0, 1000000, false},
    {"round_ms", FMQ_CONF_UINT, "30000", "round deadline, milliseconds", 1,
     UINT32_MAX, false},
    {"late", FMQ_CONF_STR, "drop", "late updates: drop, or fold with weight "
     "1/sqrt(1+tau)", 0, 0, false},
    {"max_staleness", FMQ_CONF_UINT, "2", "rounds a folded late update may "
     "be behind", 0, 1000, false},
    {"strategy", FMQ_CONF_STR, "fedavg", "aggregation: fedavg, fedprox, "
     "fedavgm, fedadam, fedyogi, fedadagrad, fedbuff (asynchronous), median, "
     "trimmed-mean[:BETA], krum:F, multi-krum:F[,M], dp-fedavg (README.md, "
     "Aggregation strategies)", 0, 0, false},
    {"server_lr", FMQ_CONF_DOUBLE, NULL, "server learning rate eta of "
     "fedavgm (default 1), fedadam and fedyogi (0.01), fedadagrad (0.1), "
     "fedbuff and dp-fedavg (1)", 0, 1e6, false},
    {"beta1", FMQ_CONF_DOUBLE, NULL, "first-moment decay of fedadam, "
     "fedyogi, fedadagrad (default 0.9)", 0, 1, false},
    {"beta2", FMQ_CONF_DOUBLE, NULL, "second-moment decay of fedadam, "
     "fedyogi (default 0.99)", 0, 1, false},
    {"tau_adapt", FMQ_CONF_DOUBLE, NULL, "adaptivity tau (epsilon) of "
     "fedadam, fedyogi, fedadagrad (default 1e-3)", 0, 1e6, false},
    {"server_momentum", FMQ_CONF_DOUBLE, NULL, "server momentum of fedavgm "
     "(default 0.9; the key momentum is the devices' local one)", 0, 1,
     false},
    {"buffer_k", FMQ_CONF_UINT, NULL, "fedbuff: updates per new model "
     "version (default 10)", 1, 1000000, false},
    {"dp_clip", FMQ_CONF_DOUBLE, NULL, "dp-fedavg: per-update L2 clip S "
     "(default 1)", 0, 1e30, false},
    {"dp_noise", FMQ_CONF_DOUBLE, NULL, "dp-fedavg: noise multiplier z, "
     "Gaussian noise of std z*S on the sum (default 1)", 0, 1e6, false},
    {"dp_seed", FMQ_CONF_UINT, NULL, "dp-fedavg: noise seed (default: a "
     "secret one from the system; a fixed seed is for tests only)", 1,
     1.8e19, false},
    {"norm_clip", FMQ_CONF_DOUBLE, "0", "norm bound before any strategy: "
     "updates with a larger L2 norm are clipped or rejected (norm_action; "
     "0 = off)", 0, 1e30, false},
    {"norm_clip_median", FMQ_CONF_DOUBLE, "0", "norm bound at this multiple "
     "(>= 1) of the median L2 norm: the round's for median, trimmed-mean, "
     "krum, multi-krum, the previous round's otherwise (0 = off)", 0, 1e30,
     false},
    {"norm_action", FMQ_CONF_STR, "clip", "over the norm bound: clip "
     "(scale down to it) or reject (reason norm)", 0, 0, false},
    {"norm_bound", FMQ_CONF_STR, NULL, "another spelling of the norm "
     "bound: X (= norm_clip X) or median:M (= norm_clip_median M)", 0, 0,
     false},
    {"scheme", FMQ_CONF_STR, "q8", "update quantization: f32 f16 q8 q4 q1",
     0, 0, false},
    {"block", FMQ_CONF_UINT, "256", "quantization block", 1, 65536, false},
    {"stochastic", FMQ_CONF_BOOL, "false", "stochastic rounding on devices",
     0, 0, false},
    {"no_error_feedback", FMQ_CONF_BOOL, "false", "devices send without "
     "error feedback", 0, 0, false},
    {"global_scheme", FMQ_CONF_STR, "f32", "the global model as f32 or f16",
     0, 0, false},
    {"global_delta", FMQ_CONF_STR, "auto", "also publish each new version "
     "as a delta on model/delta (devices that hold the version before take "
     "it instead of the full model): q8 q4 f16 f32 off, or auto = q8 when "
     "the updates are q8, q4 or q1, off with f32 or f16 updates", 0, 0,
     false},
    {"class_scheme", FMQ_CONF_STR, NULL, "per-class update schemes, e.g. "
     "cell:q4,hub:q8 (CLASS:SCHEME[/BLOCK]); other devices use scheme", 0,
     0, false},
    {"epochs", FMQ_CONF_UINT, "1", "local epochs per round", 1, 1000,
     false},
    {"batch", FMQ_CONF_UINT, "64", "local batch size", 1, 65536, false},
    {"lr", FMQ_CONF_DOUBLE, "0.01", "local learning rate", 0, 100, false},
    {"momentum", FMQ_CONF_DOUBLE, "0.9", "local momentum", 0, 1, false},
    {"weight_decay", FMQ_CONF_DOUBLE, "0", "local weight decay", 0, 1,
     false},
    {"mu", FMQ_CONF_DOUBLE, NULL, "fedprox: the proximal term mu sent to "
     "devices (default 0.01; other strategies send none)", 0, 1000, false},
    {"holdout", FMQ_CONF_STR, "fashion-mnist", "evaluation set: "
     "fashion-mnist or none", 0, 0, false},
    {"state_dir", FMQ_CONF_STR, "fedmq-agg", "checkpoint directory", 0, 0,
     false},
    {"checkpoint_ms", FMQ_CONF_UINT, "1000", "also checkpoint mid-round "
     "this often, milliseconds", 0, UINT32_MAX, false},
    {"sign_key", FMQ_CONF_STR, NULL, "the aggregator's private key (PEM, EC "
     "P-256): signs every global model; also opens sealed updates unless "
     "seal_key is set. Required unless no_sign and no_seal", 0, 0, false},
    {"seal_key", FMQ_CONF_STR, NULL, "private key (PEM, EC P-256) that sealed "
     "updates are opened with (default: sign_key); devices seal to its "
     "public key", 0, 0, false},
    {"no_sign", FMQ_CONF_BOOL, "false", "publish unsigned global models "
     "(debugging only: devices refuse them unless no_verify)", 0, 0, false},
    {"no_seal", FMQ_CONF_BOOL, "false", "also accept plain (unsealed) "
     "updates (debugging only)", 0, 0, false},
    {"save", FMQ_CONF_STR, NULL, "at the end, write the model as float32 LE "
     "(the format of fedmq-train --save)", 0, 0, false},
    {"metrics_file", FMQ_CONF_STR, NULL, "append one JSON line per round "
     "(the metrics and the flags) to this file (default: "
     "<state_dir>/metrics.jsonl; '-' for none)", 0, 0, false},
    {"prom_file", FMQ_CONF_STR, NULL, "write the round's metrics in "
     "Prometheus text format to this file, atomically, for node_exporter's "
     "textfile collector (e.g. /var/lib/prometheus/node-exporter/fedmq.prom;"
     " unset: none)", 0, 0, false},
    {"flag_stuck_rounds", FMQ_CONF_UINT, "3", "flag a device online and in "
     "the cohort that sent nothing counted for this many rounds (0: off)", 0,
     1000000, false},
    {"flag_noisy_z", FMQ_CONF_DOUBLE, "6", "flag a device whose update "
     "norm has a robust z-score above this in its round (0: off)", 0, 1e6,
     false},
    {"flag_rejected", FMQ_CONF_UINT, "3", "flag a device with this many "
     "rejected updates (duplicates aside) in flag_window rounds (0: off)", 0,
     1000000, false},
    {"flag_window", FMQ_CONF_UINT, "5", "rounds flag_rejected counts over",
     1, 64, false},
};

/* A key without a default: NaN when it is not given. */
static double opt_double(const fmq_conf *c, const char *key)
{
    return fmq_conf_str(c, key) ? fmq_conf_double(c, key) : NAN;
}

/* norm_bound's value: "X" or "median:M". */
static bool parse_norm_bound(const char *s, double *fixed, double *median)
{
    char *end;
    bool med = strncmp(s, "median:", 7) == 0;
    const char *num = med ? s + 7 : s;
    double v = strtod(num, &end);
    if (!*num || *end || !isfinite(v) || v < 0 || (med && v < 1))
        return false;
    *(med ? median : fixed) = v;
    return true;
}

/* 0 to go on, 1 after --help, 2 on an error (printed). */
static int parse(int argc, char **argv, fmq_conf *c, opts *o)
{
    const char *prog = "fedmq-aggregator";
    int pr = fmq_cli_parse(c, argc, argv, prog,
                           "Runs federated rounds over MQTT: publishes the "
                           "global model, collects and validates updates, "
                           "averages them, checkpoints.");
    if (pr)
        return pr;
    *o = (opts){
        .broker = fmq_conf_str(c, "broker"),
        .client_id = fmq_conf_str(c, "client_id"),
        .fleet = fmq_conf_str(c, "fleet"),
        .model = fmq_conf_str(c, "model"),
        .state_dir = fmq_conf_str(c, "state_dir"),
        .holdout = fmq_conf_str(c, "holdout"),
        .late = fmq_conf_str(c, "late"),
        .scheme = fmq_conf_str(c, "scheme"),
        .global_scheme = fmq_conf_str(c, "global_scheme"),
        .global_delta = fmq_conf_str(c, "global_delta"),
        .class_scheme = fmq_conf_str(c, "class_scheme"),
        .save = fmq_conf_str(c, "save"),
        .metrics_file = fmq_conf_str(c, "metrics_file"),
        .prom_file = fmq_conf_str(c, "prom_file"),
        .rounds = (uint32_t)fmq_conf_uint(c, "rounds"),
        .cohort = (uint32_t)fmq_conf_uint(c, "cohort"),
        .quorum = (uint32_t)fmq_conf_uint(c, "quorum"),
        .round_ms = (uint32_t)fmq_conf_uint(c, "round_ms"),
        .max_staleness = (uint32_t)fmq_conf_uint(c, "max_staleness"),
        .block = (uint32_t)fmq_conf_uint(c, "block"),
        .epochs = (uint32_t)fmq_conf_uint(c, "epochs"),
        .batch = (uint32_t)fmq_conf_uint(c, "batch"),
        .lr = (float)fmq_conf_double(c, "lr"),
        .momentum = (float)fmq_conf_double(c, "momentum"),
        .weight_decay = (float)fmq_conf_double(c, "weight_decay"),
        .strategy = fmq_conf_str(c, "strategy"),
        .norm_action = fmq_conf_str(c, "norm_action"),
        .norm_clip = fmq_conf_double(c, "norm_clip"),
        .norm_median = fmq_conf_double(c, "norm_clip_median"),
        .target_acc = fmq_conf_double(c, "target_acc"),
        .seed = fmq_conf_uint(c, "seed"),
        .stochastic = fmq_conf_bool(c, "stochastic"),
        .no_ef = fmq_conf_bool(c, "no_error_feedback"),
        .no_sign = fmq_conf_bool(c, "no_sign"),
        .no_seal = fmq_conf_bool(c, "no_seal"),
        .sign_key = fmq_conf_str(c, "sign_key"),
        .seal_key = fmq_conf_str(c, "seal_key"),
        .checkpoint_ms = (uint32_t)fmq_conf_uint(c, "checkpoint_ms"),
    };
    fmq_cli_mqtt(c, &o->mc);
    o->hp = fmq_strategy_hparams_none();
    o->hp.server_lr = opt_double(c, "server_lr");
    o->hp.beta1 = opt_double(c, "beta1");
    o->hp.beta2 = opt_double(c, "beta2");
    o->hp.tau_adapt = opt_double(c, "tau_adapt");
    o->hp.server_momentum = opt_double(c, "server_momentum");
    o->hp.mu = opt_double(c, "mu");
    o->hp.buffer_k = (uint32_t)fmq_conf_uint(c, "buffer_k");
    o->hp.dp_clip = opt_double(c, "dp_clip");
    o->hp.dp_noise = opt_double(c, "dp_noise");
    o->hp.dp_seed = fmq_conf_uint(c, "dp_seed");
    fmq_monitor_cfg_defaults(&o->mon);
    o->mon.stuck_rounds = (uint32_t)fmq_conf_uint(c, "flag_stuck_rounds");
    o->mon.noisy_z = fmq_conf_double(c, "flag_noisy_z");
    o->mon.rejected_max = (uint32_t)fmq_conf_uint(c, "flag_rejected");
    o->mon.rejected_window = (uint32_t)fmq_conf_uint(c, "flag_window");
    if (strcmp(o->norm_action, "clip") && strcmp(o->norm_action, "reject")) {
        fprintf(stderr, "%s: norm_action '%s': use clip or reject\n", prog,
                o->norm_action);
        return 2;
    }
    const char *nb = fmq_conf_str(c, "norm_bound");
    if (nb && (fmq_conf_is_set(c, "norm_clip") ||
               fmq_conf_is_set(c, "norm_clip_median"))) {
        fprintf(stderr, "%s: norm_bound is another spelling of norm_clip and "
                "norm_clip_median: give one of them\n", prog);
        return 2;
    }
    if (nb && !parse_norm_bound(nb, &o->norm_clip, &o->norm_median)) {
        fprintf(stderr, "%s: norm_bound '%s': use a number X (a fixed L2 "
                "bound) or median:M (M >= 1 times the median norm)\n", prog,
                nb);
        return 2;
    }
    if (o->norm_median > 0 && o->norm_median < 1) {
        fprintf(stderr, "%s: norm_clip_median %g: use 0 (off) or a multiple "
                ">= 1 of the median norm\n", prog, o->norm_median);
        return 2;
    }
    /* mu is FedProx's: sent by no other strategy */
    if (o->hp.mu > 0 && strcmp(o->strategy, "fedprox") != 0) {
        fprintf(stderr, "%s: mu %g is FedProx's proximal term: use "
                "--strategy fedprox\n", prog, o->hp.mu);
        return 2;
    }
    if (!o->quorum)
        o->quorum = o->cohort;
    if (o->quorum > o->cohort) {
        fprintf(stderr, "%s: quorum %u is larger than the cohort %u\n", prog,
                o->quorum, o->cohort);
        return 2;
    }
    if (strcmp(o->late, "drop") && strcmp(o->late, "fold")) {
        fprintf(stderr, "%s: late '%s': use drop or fold\n", prog, o->late);
        return 2;
    }
    if (!o->seal_key)
        o->seal_key = o->sign_key;
    if ((!o->no_sign && !o->sign_key) || (!o->no_seal && !o->seal_key)) {
        fprintf(stderr, "%s: no key: trust is on by default (signed global "
                "models, sealed updates). Give --sign-key FILE (an EC P-256 "
                "private key in PEM; its public half goes to every device "
                "as agg_key), or, for debugging only, --no-sign and "
                "--no-seal\n", prog);
        return 2;
    }
    if (strcmp(o->holdout, "fashion-mnist") && strcmp(o->holdout, "none")) {
        fprintf(stderr, "%s: holdout '%s': use fashion-mnist or none\n", prog,
                o->holdout);
        return 2;
    }
    return 0;
}

/* Loads a private key for `what` (path NULL: none). 0, or -1 (printed). */
static int load_key(const char *what, const char *path, fmq_trust_key **out)
{
    *out = NULL;
    if (!path)
        return 0;
    fmq_err e = fmq_trust_key_load_private(path, out);
    if (e) {
        fprintf(stderr, "fedmq-aggregator: %s %s: %s (an EC P-256 private "
                "key in PEM is needed)\n", what, path, fmq_strerror(e));
        return -1;
    }
    return 0;
}

static int save_weights(const char *path, const float *w, uint32_t P)
{
    return fmq_cli_save_weights("fedmq-aggregator", path, w, P) ? -1 : 0;
}

/* fedmq/<fleet>/model/delta (SPEC §6.6) */
static char t_delta[160];

/* The retained global, then (deltas on) the same version as a delta. */
static int publish_global(fmq_agg *a, fmq_mqtt *mq, const char *topic)
{
    fmq_buf b;
    fmq_buf_init(&b);
    uint64_t now = fmq_now_ms();
    fmq_err e = fmq_agg_encode_global(a, now, &b);
    if (!e)
        e = fmq_mqtt_publish(mq, topic, b.data, b.len, 1, true, 0);
    if (!e)
        fmq_agg_count_out(a, b.len);
    fmq_buf_reset(&b);
    fmq_err de = e ? e : fmq_agg_encode_delta(a, now, &b);
    if (!de)
        de = fmq_mqtt_publish(mq, t_delta, b.data, b.len, 1, false, 0);
    if (!de)
        fmq_agg_count_out(a, b.len);
    else if (!e && de != FMQ_ERR_NOTFOUND)
        fprintf(stderr, "fedmq-aggregator: publishing the delta: %s (devices "
                "fetch the global)\n", fmq_strerror(de));
    fmq_buf_fini(&b);
    if (e)
        fprintf(stderr, "fedmq-aggregator: publishing the global model: %s\n",
                fmq_strerror(e));
    return e ? -1 : 0;
}

/* wait_ms: how long to wait for the broker's PUBACK (0: not at all, as
 * after each round, where waiting would delay the next global). */
static void publish_agg_status(fmq_mqtt *mq, const char *fleet, bool on,
                               const fmq_agg *a, const char *topic,
                               uint32_t wait_ms)
{
    fmq_msg_agg s;
    fmq_msg_agg_init(&s);
    snprintf(s.fleet, sizeof s.fleet, "%s", fleet);
    s.online = on;
    if (a) {
        s.round = fmq_agg_round(a);
        s.version = fmq_agg_version(a);
    }
    s.ts_ms = fmq_now_ms();
    fmq_buf b;
    fmq_buf_init(&b);
    fmq_err e = fmq_codec_encode_agg(&s, &b);
    if (!e)
        e = fmq_mqtt_publish(mq, topic, b.data, b.len, 1, true, wait_ms);
    if (e)
        fprintf(stderr, "fedmq-aggregator: publishing the status: %s\n",
                fmq_strerror(e));
    fmq_buf_fini(&b);
}

/* A device's status (SPEC §6.3) on fedmq/<fleet>/status/<dev>: online or
 * not, for the stuck flag. The topic names the device; a status naming
 * another is ignored. */
static void on_device_status(fmq_monitor *mon, const char *dev,
                             const uint8_t *p, size_t len)
{
    fmq_msg_status st;
    if (fmq_codec_decode_status(p, len, NULL, &st, NULL) != FMQ_OK) {
        fmq_log_info("aggregator: status of %s does not decode; ignored", dev);
        return;
    }
    if (strcmp(st.device, dev) != 0) {
        fmq_log_info("aggregator: status on %s's topic names %s; ignored", dev,
                     st.device);
        return;
    }
    (void)fmq_monitor_on_status(mon, dev, st.online);
}

/* After a round: flags (logged, in the metrics), the retained metrics
 * message, a JSON line, the Prometheus file. A failure here is logged and
 * the rounds go on. */
static void report_round(fmq_agg *a, const fmq_agg_report *rep, uint64_t now,
                         fmq_monitor *mon, fmq_mqtt *mq, const char *t_metrics,
                         const char *jsonl, const char *prom)
{
    enum { MAXF = 64 };
    fmq_monitor_flag mf[MAXF];
    fmq_flag fl[MAXF];
    size_t nf;
    fmq_monitor_close_round(mon, NULL, NULL, mf, MAXF, &nf);
    size_t kept = nf < MAXF ? nf : MAXF;
    for (size_t i = 0; i < kept; i++) {
        fl[i] = mf[i].flag;
        fmq_log_warn("aggregator: round %llu: flagged %s: %s (%s)",
                     (unsigned long long)rep->round, mf[i].flag.device,
                     mf[i].flag.why, mf[i].detail);
    }
    if (nf > kept)
        fmq_log_warn("aggregator: round %llu: %zu more flags not listed",
                     (unsigned long long)rep->round, nf - kept);
    fmq_msg_metrics mt;
    fmq_agg_metrics(a, rep, now, &mt);
    mt.flags = fl;
    mt.nflags = (uint32_t)kept;
    fmq_buf b;
    fmq_buf_init(&b);
    fmq_err e = fmq_codec_encode_metrics(&mt, &b);
    if (!e)
        e = fmq_mqtt_publish(mq, t_metrics, b.data, b.len, 1, true, 0);
    if (e)
        fprintf(stderr, "fedmq-aggregator: metrics: %s\n", fmq_strerror(e));
    if (jsonl[0]) {
        b.len = 0;
        if ((e = fmq_monitor_json(&mt, mf, kept, &b)) ||
            (e = fmq_monitor_append(jsonl, b.data, b.len)))
            fprintf(stderr, "fedmq-aggregator: metrics file %s: %s\n", jsonl,
                    fmq_strerror(e));
    }
    if (prom) {
        b.len = 0;
        if ((e = fmq_monitor_prometheus(mon, &mt, mf, kept, &b)) ||
            (e = fmq_file_write_atomic(prom, b.data, b.len)))
            fprintf(stderr, "fedmq-aggregator: Prometheus file %s: %s\n",
                    prom, fmq_strerror(e));
    }
    fmq_buf_fini(&b);
}

int main(int argc, char **argv)
{
    opts o;
    fmq_conf *conf;
    if (fmq_conf_new(keys, sizeof keys / sizeof keys[0], &conf))
        return 2;
    int pr = parse(argc, argv, conf, &o);
    if (pr) {
        fmq_conf_destroy(&conf);
        return pr == 1 ? 0 : 2;
    }
    fmq_agg_cfg cfg = {
        .fleet = o.fleet, .model = o.model, .in_c = 1, .in_h = 28, .in_w = 28,
        .classes = 10, .seed = o.seed, .cohort_size = o.cohort,
        .quorum = o.quorum, .round_ms = o.round_ms,
        .late = strcmp(o.late, "fold") == 0 ? FMQ_AGG_LATE_FOLD
                                            : FMQ_AGG_LATE_DROP,
        .max_staleness = o.max_staleness,
        .strategy = o.strategy, .hp = &o.hp,
        .norm_bound = o.norm_clip, .norm_median = o.norm_median,
        .norm_action = strcmp(o.norm_action, "reject") == 0 ? FMQ_NORM_REJECT
                                                           : FMQ_NORM_CLIP,
        .train = {.epochs = o.epochs, .batch = o.batch, .lr = o.lr,
                  .momentum = o.momentum, .weight_decay = o.weight_decay},
        .uq = {.block = o.block, .stochastic = o.stochastic,
               .error_feedback = !o.no_ef},
        .state_dir = o.state_dir,
    };
    if (fmq_scheme_parse(o.scheme, &cfg.uq.scheme) ||
        fmq_scheme_parse(o.global_scheme, &cfg.global_scheme)) {
        fprintf(stderr, "fedmq-aggregator: unknown scheme\n");
        return 2;
    }
    if (fmq_gdelta_parse(o.global_delta, cfg.uq.scheme, o.block,
                         &cfg.global_delta, &cfg.gdelta)) {
        fprintf(stderr, "fedmq-aggregator: global_delta '%s': use q8, q4, "
                "f16, f32, off or auto\n", o.global_delta);
        return 2;
    }
    fmq_uq_class *uq_classes = NULL;
    char why[200] = "";
    if (fmq_classes_parse(o.class_scheme, &cfg.uq, &uq_classes,
                          &cfg.n_uq_classes, why, sizeof why)) {
        fprintf(stderr, "fedmq-aggregator: class_scheme: %s\n", why);
        return 2;
    }
    cfg.uq_classes = uq_classes;
    fmq_trust_key *sign_key = NULL, *seal_key = NULL;
    if (load_key("sign_key", o.no_sign ? NULL : o.sign_key, &sign_key) ||
        load_key("seal_key", o.seal_key, &seal_key))
        return 1;
    cfg.sign_key = sign_key;
    cfg.seal_key = seal_key;
    cfg.require_seal = !o.no_seal;
    fmq_dataset holdout = {0};
    bool have_holdout = strcmp(o.holdout, "none") != 0;
    if (have_holdout &&
        fmq_data_load_fashion_mnist(NULL, false, &holdout) != FMQ_OK) {
        fprintf(stderr, "fedmq-aggregator: cannot read the Fashion-MNIST test "
                        "set (package dataset-fashion-mnist)\n");
        return 1;
    }
    fmq_agg *a;
    fmq_err e = fmq_agg_open(&cfg, &a);
    fmq_free(uq_classes); /* the core keeps a copy */
    if (e) {
        fprintf(stderr, "fedmq-aggregator: %s\n", fmq_strerror(e));
        return 1;
    }
    char t_global[160], t_updates[160], t_metrics[160], t_status[160];
    char t_devstatus[160], p_devstatus[160], p_update[160];
    snprintf(t_devstatus, sizeof t_devstatus, "fedmq/%s/status/+", o.fleet);
    snprintf(p_devstatus, sizeof p_devstatus, "fedmq/%s/status/", o.fleet);
    snprintf(p_update, sizeof p_update, "fedmq/%s/update/", o.fleet);
    /* The operators' view (common/monitor.h): flags, the JSON-lines file,
     * the Prometheus file. */
    fmq_monitor *mon;
    if ((e = fmq_monitor_new(&o.mon, &mon))) {
        fprintf(stderr, "fedmq-aggregator: flags: %s\n", fmq_strerror(e));
        return 1;
    }
    char jsonl[1024] = "";
    if (!o.metrics_file)
        snprintf(jsonl, sizeof jsonl, "%s/metrics.jsonl", o.state_dir);
    else if (strcmp(o.metrics_file, "-") != 0)
        snprintf(jsonl, sizeof jsonl, "%s", o.metrics_file);
    snprintf(t_global, sizeof t_global, "fedmq/%s/model/global", o.fleet);
    snprintf(t_delta, sizeof t_delta, "fedmq/%s/model/delta", o.fleet);
    snprintf(t_updates, sizeof t_updates, "fedmq/%s/update/+", o.fleet);
    snprintf(t_metrics, sizeof t_metrics, "fedmq/%s/metrics", o.fleet);
    snprintf(t_status, sizeof t_status, "fedmq/%s/aggregator/status",
             o.fleet);
    /* last will: aggregator offline */
    fmq_msg_agg will;
    fmq_msg_agg_init(&will);
    snprintf(will.fleet, sizeof will.fleet, "%s", o.fleet);
    fmq_buf wb;
    fmq_buf_init(&wb);
    if (fmq_codec_encode_agg(&will, &wb))
        return 1;
    char cid[128];
    snprintf(cid, sizeof cid, "fedmq-agg-%s", o.fleet); /* SPEC §1 */
    fmq_mqtt_cfg mc = o.mc;
    mc.client_id = o.client_id ? o.client_id : cid;
    mc.will_topic = t_status;
    mc.will_payload = wb.data;
    mc.will_len = wb.len;
    mc.will_retain = true;
    mc.will_qos = 1;
    fmq_mqtt *mq;
    if ((e = fmq_mqtt_new(&mc, &mq)) || (e = fmq_mqtt_connect(mq, 10000))) {
        fprintf(stderr, "fedmq-aggregator: %s: %s\n", o.broker,
                fmq_strerror(e));
        return 1;
    }
    if ((e = fmq_mqtt_subscribe(mq, t_updates, 1)) ||
        (e = fmq_mqtt_subscribe(mq, t_devstatus, 1))) {
        fprintf(stderr, "fedmq-aggregator: subscribe: %s\n", fmq_strerror(e));
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    publish_agg_status(mq, o.fleet, true, a, t_status, 2000);
    printf("fedmq-aggregator: fleet %s, model %s (%u parameters), round %llu%s, "
           "cohort %u, quorum %u, updates %s, strategy %s\n",
           o.fleet, o.model, fmq_agg_nparams(a),
           (unsigned long long)fmq_agg_round(a),
           fmq_agg_resumed(a) ? " (resumed)" : "", o.cohort, o.quorum,
           o.scheme, o.strategy);
    char kid_sign[FMQ_KID_LEN + 1] = "", kid_seal[FMQ_KID_LEN + 1] = "";
    if (sign_key)
        snprintf(kid_sign, sizeof kid_sign, "%s", fmq_trust_key_id(sign_key));
    if (seal_key)
        snprintf(kid_seal, sizeof kid_seal, "%s", fmq_trust_key_id(seal_key));
    printf("fedmq-aggregator: globals %s%s, updates %s%s%s\n",
           sign_key ? "signed by key " : "UNSIGNED (--no-sign)", kid_sign,
           o.no_seal ? "sealed or plain (--no-seal)" : "sealed to key ",
           o.no_seal && seal_key ? ", key " : "", kid_seal);
    /* what goes down, and what each class sends up */
    char gdl[64] = "off";
    if (cfg.global_delta)
        snprintf(gdl, sizeof gdl, "%s%s%.0u on %s",
                 fmq_scheme_name(cfg.gdelta.scheme),
                 fmq_scheme_has_scales(cfg.gdelta.scheme) ? "/" : "",
                 fmq_scheme_has_scales(cfg.gdelta.scheme) ? cfg.gdelta.block
                                                          : 0u, "model/delta");
    printf("fedmq-aggregator: global model %s retained, deltas %s%s%s\n",
           o.global_scheme, gdl, o.class_scheme ? "; class schemes " : "",
           o.class_scheme ? o.class_scheme : "");
    fflush(stdout);
    if (publish_global(a, mq, t_global))
        return 1;
    uint64_t last_ckpt = fmq_now_ms();
    uint32_t done = 0;
    uint64_t n_updates = 0, update_bytes = 0;
    double t_start = fmq_mono_seconds(), last_acc = NAN;
    int rc = 0;
    bool was_connected = true;
    while (!stop) {
        /* Back after a lost connection: the broker may have lost its
         * retained copy and the updates it had not yet passed on (a
         * restart without a saved database). Publishing the global again
         * (same round and version, new timestamp) restores it and makes
         * every device that already trained this round send its update
         * again (SPEC §9.1); what was counted already is a duplicate. */
        bool conn = fmq_mqtt_connected(mq);
        if (conn && !was_connected) {
            fmq_log_notice("aggregator: reconnected; publishing round %llu "
                           "again", (unsigned long long)fmq_agg_round(a));
            publish_agg_status(mq, o.fleet, true, a, t_status, 2000);
            if (publish_global(a, mq, t_global)) {
                rc = 1;
                break;
            }
        }
        was_connected = conn;
        fmq_mqtt_msg m;
        e = fmq_mqtt_next(mq, 50, &m);
        uint64_t now = fmq_now_ms();
        if (e == FMQ_OK) {
            if (strncmp(m.topic, p_devstatus, strlen(p_devstatus)) == 0)
                on_device_status(mon, m.topic + strlen(p_devstatus),
                                 m.payload, m.len);
            else {
                fmq_agg_verdict v;
                /* a rejection is counted and logged by the core; the loop
                 * goes on whatever the bytes were */
                fmq_err ue = fmq_agg_on_update(a, m.topic, m.payload, m.len,
                                               now, &v);
                const char *dev = strncmp(m.topic, p_update,
                                          strlen(p_update)) == 0
                                      ? m.topic + strlen(p_update)
                                      : "?";
                if (ue == FMQ_OK)
                    fmq_log_debug("update on %s: verdict %d", m.topic, (int)v);
                if (ue == FMQ_OK && (v == FMQ_AGG_COUNTED || v == FMQ_AGG_FOLDED))
                    (void)fmq_monitor_on_update(mon, dev, fmq_agg_last_norm(a));
                /* a duplicate is a device's ordinary resend */
                else if (ue && ue != FMQ_ERR_DUPLICATE)
                    (void)fmq_monitor_on_reject(mon, dev, fmq_errname(ue));
            }
            fmq_mqtt_msg_free(&m);
        }
        if (fmq_agg_dirty(a) && now - last_ckpt >= o.checkpoint_ms) {
            if ((e = fmq_agg_checkpoint(a)))
                fprintf(stderr, "fedmq-aggregator: checkpoint: %s\n",
                        fmq_strerror(e));
            last_ckpt = now;
        }
        if (!fmq_agg_tick(a, now))
            continue;
        fmq_agg_report rep;
        if ((e = fmq_agg_close(a, have_holdout ? &holdout : NULL, now,
                               &rep))) {
            fprintf(stderr, "fedmq-aggregator: closing round %llu: %s\n",
                    (unsigned long long)fmq_agg_round(a), fmq_strerror(e));
            rc = 1;
            break;
        }
        char line[512];
        fmq_agg_format_report(&rep, line, sizeof line);
        printf("%s\n", line);
        fflush(stdout);
        report_round(a, &rep, now, mon, mq, t_metrics, jsonl, o.prom_file);
        done++;
        n_updates += rep.participants + rep.late;
        update_bytes += rep.bytes_in;
        last_acc = rep.test_acc;
        /* the new model goes out even after the last round, so devices
         * end on the final weights */
        if (publish_global(a, mq, t_global)) {
            rc = 1;
            break;
        }
        /* the round it is in, for dashboards (not waited for) */
        publish_agg_status(mq, o.fleet, true, a, t_status, 0);
        if ((o.rounds && rep.round >= o.rounds) ||
            (o.target_acc > 0 && rep.test_acc >= o.target_acc)) {
            printf("fedmq-aggregator: done after round %llu (test acc %.4f)\n",
                   (unsigned long long)rep.round, rep.test_acc);
            break;
        }
    }
    if (done && n_updates) {
        double per = (double)update_bytes / (double)n_updates;
        double f32 = 4.0 * fmq_agg_nparams(a);
        printf("fedmq-aggregator: summary: %u rounds, test accuracy %.4f, "
               "%llu updates of %.1f KB on average (float32 deltas: %.1f KB, "
               "%.2fx larger), %.1f s, peak RSS %.1f MB\n",
               done, last_acc, (unsigned long long)n_updates, per / 1000.0,
               f32 / 1000.0, f32 / per, fmq_mono_seconds() - t_start,
               (double)fmq_cli_peak_rss() / 1e6);
    }
    if (o.save && save_weights(o.save, fmq_agg_weights(a), fmq_agg_nparams(a)))
        rc = 1;
    publish_agg_status(mq, o.fleet, false, a, t_status, 2000);
    fmq_monitor_destroy(&mon);
    fmq_mqtt_destroy(&mq);
    fmq_buf_fini(&wb);
    fmq_agg_destroy(&a);
    fmq_trust_key_destroy(&sign_key);
    fmq_trust_key_destroy(&seal_key);
    fmq_data_fini(&holdout);
    fmq_conf_destroy(&conf);
    return rc;
}
