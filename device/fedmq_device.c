/*
 * fedmq-device — one device: waits for global models on
 * fedmq/<fleet>/model/global, trains on its own data when it is in the
 * round's cohort, and publishes its quantized update. Its state (model,
 * error-feedback residual, pending update, last round trained) is kept in
 * state_dir, so a restart, a reboot or a week without a broker loses
 * nothing. Settings come from a mosquitto.conf-style file (--config FILE,
 * `key value` lines) and command-line flags, which override it; --help
 * lists them all.
 *
 * The data is the device's share of the Fashion-MNIST training set
 * (party `party` of partition `partition` over `parties`), the same split
 * fedmq-train makes for the same seed.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "device.h"

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
    {"party", FMQ_CONF_UINT, "0", "which part of the partition this device "
     "holds", 0, 99999, false},
    {"id", FMQ_CONF_STR, NULL, "device id (default dev-<party, 4 digits>)",
     0, 0, false},
    {"class", FMQ_CONF_STR, NULL, "device class, for per-class quantization",
     0, 0, false},
    {"state_dir", FMQ_CONF_STR, "fedmq-device",
     "directory for device.state", 0, 0, false},
    {"ack_wait_ms", FMQ_CONF_UINT, "5000", "wait this long for the broker "
     "to acknowledge an update", 0, 60000, false},
    {"connect_ms", FMQ_CONF_UINT, "30000", "first connection timeout", 100,
     600000, false},
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

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    const char *prog = "fedmq-device";
    fmq_conf *c;
    if (fmq_conf_new(keys, sizeof keys / sizeof keys[0], &c))
        return 2;
    int pr = fmq_cli_parse(c, argc, argv, prog,
                           "One fedmq device: trains on its own data and "
                           "publishes quantized updates over MQTT.");
    if (pr) {
        fmq_conf_destroy(&c);
        return pr == 1 ? 0 : 2;
    }
    uint32_t party = (uint32_t)fmq_conf_uint(c, "party");
    if (party >= fmq_conf_uint(c, "parties")) {
        fprintf(stderr, "%s: party %u of %llu parties\n", prog, party,
                (unsigned long long)fmq_conf_uint(c, "parties"));
        return 2;
    }
    char id[FMQ_ID_MAX + 1];
    if (fmq_conf_str(c, "id"))
        snprintf(id, sizeof id, "%s", fmq_conf_str(c, "id"));
    else
        snprintf(id, sizeof id, "dev-%04u", party);
    fmq_dataset ds;
    fmq_partition part;
    if (fmq_cli_data(c, prog, &ds, &part))
        return 1;
    uint64_t seed = fmq_conf_uint(c, "seed");
    fmq_device_cfg dc = {
        .fleet = fmq_conf_str(c, "fleet"), .id = id,
        .cls = fmq_conf_str(c, "class"),
        .state_dir = fmq_conf_str(c, "state_dir"),
        .setup = {.data = &ds, .idx = part.idx + part.off[party],
                  .n = fmq_partition_size(&part, party)},
        .seed = seed, .party = party, .quant_seed = seed * 1000003u + party};
    fmq_device_keys ks;
    if (trust_setup(c, prog, &ks, &dc))
        return 2;
    fmq_device *d;
    fmq_err e = fmq_device_open(&dc, &d);
    if (e) {
        fprintf(stderr, "%s: %s: %s\n", prog, id, fmq_strerror(e));
        return 1;
    }
    fmq_mqtt_cfg mc;
    fmq_cli_mqtt(c, &mc);
    fmq_devrun *r;
    if ((e = fmq_devrun_new(d, &mc, (uint32_t)fmq_conf_uint(c, "connect_ms"),
                            &r))) {
        fprintf(stderr, "%s: %s: %s\n", prog, mc.uri, fmq_strerror(e));
        fmq_device_destroy(&d);
        return 1;
    }
    fmq_devrun_set_ack_wait(r, (uint32_t)fmq_conf_uint(c, "ack_wait_ms"));
    printf("%s: %s (fleet %s, %u samples) connected to %s\n", prog, id,
           dc.fleet, dc.setup.n, mc.uri);
    fflush(stdout);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int rc = 0;
    while (!stop) {
        if (fmq_devrun_poll(r, 200, NULL)) {
            rc = 1;
            break;
        }
    }
    fmq_device_stats st;
    fmq_device_get_stats(d, &st);
    char why[256] = "";
    size_t off = 0;
    for (uint32_t i = 0; i < st.nreasons && off < sizeof why; i++) {
        int k = snprintf(why + off, sizeof why - off, "%s%s:%llu",
                         i ? "," : " (", st.reasons[i].reason,
                         (unsigned long long)st.reasons[i].count);
        off = k < 0 ? sizeof why : off + (size_t)k;
    }
    if (st.nreasons && off < sizeof why - 1)
        snprintf(why + off, sizeof why - off, ")");
    printf("%s: %s: %llu rounds trained, %llu globals refused%s, model "
           "version %llu\n", prog, id, (unsigned long long)st.trained,
           (unsigned long long)st.refused, why,
           (unsigned long long)st.version);
    fmq_devrun_destroy(&r);
    fmq_device_destroy(&d);
    fmq_device_keys_fini(&ks);
    fmq_partition_fini(&part);
    fmq_data_fini(&ds);
    fmq_conf_destroy(&c);
    return rc;
}
