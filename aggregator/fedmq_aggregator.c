/*
 * fedmq-aggregator — runs federated rounds over MQTT.
 *
 * A thin loop around the round core (agg.h) and the MQTT wrapper
 * (common/mqtt.h): publish the retained global model, collect updates on
 * fedmq/<fleet>/update/+, close rounds, evaluate on the hold-out set,
 * checkpoint, publish metrics and the next model. One progress line per
 * round on stdout. SIGINT/SIGTERM stop it cleanly (aggregator status
 * offline); SIGKILL at any moment is survived through the checkpoint.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg.h"
#include "cli.h"
#include "codec.h"
#include "data.h"
#include "mqtt.h"
#include "nn.h"

typedef struct opts {
    const char *broker, *ca, *cert, *key, *user, *pass, *client_id;
    const char *fleet, *model, *state_dir, *holdout, *late, *scheme;
    const char *global_scheme, *save;
    uint32_t rounds, cohort, quorum, round_ms, max_staleness, block;
    uint32_t epochs, batch;
    float lr, momentum, weight_decay, mu;
    double norm_bound, target_acc;
    uint64_t seed;
    bool stochastic, no_ef;
    uint32_t checkpoint_ms;
} opts;

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: fedmq-aggregator [options]\n"
        "  --broker URI          mqtts://127.0.0.1:8883 (mqtt:// for plain TCP)\n"
        "  --ca FILE             CA certificate that signed the broker's\n"
        "  --cert FILE --key FILE  client certificate (mTLS), optional\n"
        "  --username U --password P   MQTT credentials (token), optional\n"
        "  --client-id ID        default fedmq-agg-<fleet>\n"
        "  --fleet ID            fleet name (default demo)\n"
        "  --model SPEC          logreg, mlp:H[,H...], cnn (default mlp:128)\n"
        "  --seed N              model initialisation (default 1)\n"
        "  --rounds N            stop after N rounds (default 10; 0 = forever)\n"
        "  --target-acc X        stop once hold-out accuracy reaches X\n"
        "  --cohort N            updates per round that close it early (10)\n"
        "  --quorum N            fewest updates a round may close with (= cohort)\n"
        "  --round-ms MS         round deadline (default 30000)\n"
        "  --late drop|fold      late updates: drop, or fold with 1/sqrt(1+tau)\n"
        "  --max-staleness N     rounds a late update may be behind (fold; 2)\n"
        "  --norm-bound X        reject updates with a larger L2 norm (0 = off)\n"
        "  --scheme S            update quantization f32 f16 q8 q4 q1 (q8)\n"
        "  --block N             quantization block (256)\n"
        "  --stochastic          stochastic rounding on devices\n"
        "  --no-error-feedback   devices send without error feedback\n"
        "  --global-scheme S     the global model as f32 or f16 (f32)\n"
        "  --epochs N --batch N --lr X --momentum X --weight-decay X --mu X\n"
        "                        round instructions (1, 64, 0.01, 0.9, 0, 0)\n"
        "  --holdout fashion-mnist|none   evaluation set (fashion-mnist)\n"
        "  --state-dir DIR       checkpoint directory (default ./fedmq-agg)\n"
        "  --checkpoint-ms MS    also checkpoint mid-round this often (1000)\n"
        "  --save FILE           at the end, write the model as float32 LE\n"
        "                        (the format of fedmq-train --save)\n"
        "  --log-level L         err, warning, notice, info, debug (notice)\n");
}

static const char *lo_name(const struct option *lo, int c)
{
    for (; lo->name; lo++)
        if (lo->val == c)
            return lo->name;
    return "?";
}

static int parse(int argc, char **argv, opts *o)
{
    *o = (opts){.broker = "mqtts://127.0.0.1:8883", .fleet = "demo",
                .model = "mlp:128", .state_dir = "fedmq-agg",
                .holdout = "fashion-mnist", .late = "drop", .scheme = "q8",
                .global_scheme = "f32", .rounds = 10, .cohort = 10,
                .round_ms = 30000, .max_staleness = 2, .block = 256,
                .epochs = 1, .batch = 64, .lr = 0.01f, .momentum = 0.9f,
                .seed = 1, .checkpoint_ms = 1000};
    static const struct option lo[] = {
        {"broker", 1, 0, 'B'}, {"ca", 1, 0, 'C'}, {"cert", 1, 0, 'c'},
        {"key", 1, 0, 'k'}, {"username", 1, 0, 'U'}, {"password", 1, 0, 'W'},
        {"client-id", 1, 0, 'I'}, {"fleet", 1, 0, 'f'}, {"model", 1, 0, 'm'},
        {"seed", 1, 0, 's'}, {"rounds", 1, 0, 'r'}, {"target-acc", 1, 0, 'T'},
        {"cohort", 1, 0, 'n'}, {"quorum", 1, 0, 'q'}, {"round-ms", 1, 0, 'D'},
        {"late", 1, 0, 'L'}, {"max-staleness", 1, 0, 'S'},
        {"norm-bound", 1, 0, 'N'}, {"scheme", 1, 0, 'Q'}, {"block", 1, 0, 'b'},
        {"stochastic", 0, 0, 'R'}, {"no-error-feedback", 0, 0, 'F'},
        {"global-scheme", 1, 0, 'G'}, {"epochs", 1, 0, 'e'},
        {"batch", 1, 0, 'z'}, {"lr", 1, 0, 'l'}, {"momentum", 1, 0, 'M'},
        {"weight-decay", 1, 0, 'w'}, {"mu", 1, 0, 'u'},
        {"holdout", 1, 0, 'H'}, {"state-dir", 1, 0, 'd'},
        {"checkpoint-ms", 1, 0, 'K'}, {"save", 1, 0, 'O'},
        {"log-level", 1, 0, 'V'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        unsigned long v = 0;
        double d = 0;
        if (optarg && c && strchr("srnqDSbezK", c)) {
            /* whole non-negative integers only, within 32 bits (the seed
             * within 64) */
            char *end;
            errno = 0;
            unsigned long long u = strtoull(optarg, &end, 10);
            if (!optarg[0] || *end || optarg[0] == '-' || errno ||
                (c != 's' && u > UINT32_MAX)) {
                fprintf(stderr, "fedmq-aggregator: --%s '%s': expected a "
                                "whole number%s\n", lo_name(lo, c), optarg,
                        c == 's' ? "" : " below 2^32");
                return -1;
            }
            v = (unsigned long)u;
        }
        if (optarg && c && strchr("TNlMwu", c)) {
            char *end;
            d = strtod(optarg, &end);
            if (!optarg[0] || *end || !isfinite(d) || d < 0) {
                fprintf(stderr, "fedmq-aggregator: --%s '%s': expected a "
                                "finite number >= 0\n", lo_name(lo, c),
                        optarg);
                return -1;
            }
        }
        switch (c) {
        case 'B': o->broker = optarg; break;
        case 'C': o->ca = optarg; break;
        case 'c': o->cert = optarg; break;
        case 'k': o->key = optarg; break;
        case 'U': o->user = optarg; break;
        case 'W': o->pass = optarg; break;
        case 'I': o->client_id = optarg; break;
        case 'f': o->fleet = optarg; break;
        case 'm': o->model = optarg; break;
        case 's': o->seed = strtoull(optarg, NULL, 10); break;
        case 'r': o->rounds = (uint32_t)v; break;
        case 'T': o->target_acc = d; break;
        case 'n': o->cohort = (uint32_t)v; break;
        case 'q': o->quorum = (uint32_t)v; break;
        case 'D': o->round_ms = (uint32_t)v; break;
        case 'L': o->late = optarg; break;
        case 'S': o->max_staleness = (uint32_t)v; break;
        case 'N': o->norm_bound = d; break;
        case 'Q': o->scheme = optarg; break;
        case 'b': o->block = (uint32_t)v; break;
        case 'R': o->stochastic = true; break;
        case 'F': o->no_ef = true; break;
        case 'G': o->global_scheme = optarg; break;
        case 'e': o->epochs = (uint32_t)v; break;
        case 'z': o->batch = (uint32_t)v; break;
        case 'l': o->lr = (float)d; break;
        case 'M': o->momentum = (float)d; break;
        case 'w': o->weight_decay = (float)d; break;
        case 'u': o->mu = (float)d; break;
        case 'H': o->holdout = optarg; break;
        case 'd': o->state_dir = optarg; break;
        case 'K': o->checkpoint_ms = (uint32_t)v; break;
        case 'O': o->save = optarg; break;
        case 'V':
            if (fmq_log_level_parse(optarg) < 0) {
                fprintf(stderr, "fedmq-aggregator: --log-level %s\n", optarg);
                return -1;
            }
            fmq_log_set_level(fmq_log_level_parse(optarg));
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "fedmq-aggregator: unexpected argument '%s'\n",
                argv[optind]);
        return -1;
    }
    if (!o->quorum)
        o->quorum = o->cohort;
    if (strcmp(o->late, "drop") && strcmp(o->late, "fold")) {
        fprintf(stderr, "fedmq-aggregator: --late is drop or fold\n");
        return -1;
    }
    return 0;
}

static int save_weights(const char *path, const float *w, uint32_t P)
{
    return fmq_cli_save_weights("fedmq-aggregator", path, w, P) ? -1 : 0;
}

static int publish_global(fmq_agg *a, fmq_mqtt *mq, const char *topic)
{
    fmq_buf b;
    fmq_buf_init(&b);
    fmq_err e = fmq_agg_encode_global(a, fmq_now_ms(), &b);
    if (!e)
        e = fmq_mqtt_publish(mq, topic, b.data, b.len, 1, true, 0);
    if (!e)
        fmq_agg_count_out(a, b.len);
    fmq_buf_fini(&b);
    if (e)
        fprintf(stderr, "fedmq-aggregator: publishing the global model: %s\n",
                fmq_strerror(e));
    return e ? -1 : 0;
}

static void publish_agg_status(fmq_mqtt *mq, const char *fleet, bool on,
                               const fmq_agg *a, const char *topic)
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
        e = fmq_mqtt_publish(mq, topic, b.data, b.len, 1, true, 2000);
    if (e)
        fprintf(stderr, "fedmq-aggregator: publishing the status: %s\n",
                fmq_strerror(e));
    fmq_buf_fini(&b);
}

int main(int argc, char **argv)
{
    opts o;
    if (parse(argc, argv, &o))
        return 2;
    fmq_agg_cfg cfg = {
        .fleet = o.fleet, .model = o.model, .in_c = 1, .in_h = 28, .in_w = 28,
        .classes = 10, .seed = o.seed, .cohort_size = o.cohort,
        .quorum = o.quorum, .round_ms = o.round_ms,
        .late = strcmp(o.late, "fold") == 0 ? FMQ_AGG_LATE_FOLD
                                            : FMQ_AGG_LATE_DROP,
        .max_staleness = o.max_staleness, .norm_bound = o.norm_bound,
        .train = {.epochs = o.epochs, .batch = o.batch, .lr = o.lr,
                  .momentum = o.momentum, .weight_decay = o.weight_decay,
                  .mu = o.mu},
        .uq = {.block = o.block, .stochastic = o.stochastic,
               .error_feedback = !o.no_ef},
        .state_dir = o.state_dir,
    };
    if (fmq_scheme_parse(o.scheme, &cfg.uq.scheme) ||
        fmq_scheme_parse(o.global_scheme, &cfg.global_scheme)) {
        fprintf(stderr, "fedmq-aggregator: unknown scheme\n");
        return 2;
    }
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
    if (e) {
        fprintf(stderr, "fedmq-aggregator: %s\n", fmq_strerror(e));
        return 1;
    }
    char t_global[160], t_updates[160], t_metrics[160], t_status[160];
    snprintf(t_global, sizeof t_global, "fedmq/%s/model/global", o.fleet);
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
    fmq_mqtt_cfg mc;
    fmq_mqtt_cfg_defaults(&mc);
    mc.uri = o.broker;
    mc.client_id = o.client_id ? o.client_id : cid;
    mc.username = o.user;
    mc.password = o.pass;
    mc.ca_file = o.ca;
    mc.cert_file = o.cert;
    mc.key_file = o.key;
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
    if ((e = fmq_mqtt_subscribe(mq, t_updates, 1))) {
        fprintf(stderr, "fedmq-aggregator: subscribe: %s\n", fmq_strerror(e));
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    publish_agg_status(mq, o.fleet, true, a, t_status);
    printf("fedmq-aggregator: fleet %s, model %s (%u parameters), round %llu%s, "
           "cohort %u, quorum %u, updates %s\n",
           o.fleet, o.model, fmq_agg_nparams(a),
           (unsigned long long)fmq_agg_round(a),
           fmq_agg_resumed(a) ? " (resumed)" : "", o.cohort, o.quorum,
           o.scheme);
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
            publish_agg_status(mq, o.fleet, true, a, t_status);
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
            fmq_agg_verdict v;
            /* a rejection is counted and logged by the core; the loop
             * goes on whatever the bytes were */
            if (fmq_agg_on_update(a, m.topic, m.payload, m.len, now, &v) ==
                FMQ_OK)
                fmq_log_debug("update on %s: verdict %d", m.topic, (int)v);
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
        fmq_buf mb;
        fmq_buf_init(&mb);
        if ((e = fmq_agg_encode_metrics(a, &rep, now, &mb)) ||
            (e = fmq_mqtt_publish(mq, t_metrics, mb.data, mb.len, 1, true, 0)))
            fprintf(stderr, "fedmq-aggregator: metrics: %s\n",
                    fmq_strerror(e));
        fmq_buf_fini(&mb);
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
               "%.2fx larger), %.1f s\n",
               done, last_acc, (unsigned long long)n_updates, per / 1000.0,
               f32 / 1000.0, f32 / per, fmq_mono_seconds() - t_start);
    }
    if (o.save && save_weights(o.save, fmq_agg_weights(a), fmq_agg_nparams(a)))
        rc = 1;
    publish_agg_status(mq, o.fleet, false, a, t_status);
    fmq_mqtt_destroy(&mq);
    fmq_buf_fini(&wb);
    fmq_agg_destroy(&a);
    fmq_data_fini(&holdout);
    return rc;
}
