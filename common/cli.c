/*
 * cli.c — the keys and set-up fedmq's programs share (see cli.h).
 */
#include "cli.h"

#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

fmq_err fmq_cli_log(const fmq_conf *c, const char *prog)
{
    const char *s = fmq_conf_str(c, "log_level");
    int lv = fmq_log_level_parse(s);
    if (lv < 0) {
        fprintf(stderr, "%s: log_level '%s': use err, warning, notice, info "
                        "or debug\n", prog, s);
        return FMQ_ERR_CONFIG;
    }
    fmq_log_set_level(lv);
    return FMQ_OK;
}

void fmq_cli_mqtt(const fmq_conf *c, fmq_mqtt_cfg *mc)
{
    fmq_mqtt_cfg_defaults(mc);
    mc->uri = fmq_conf_str(c, "broker");
    mc->ca_file = fmq_conf_str(c, "ca");
    mc->cert_file = fmq_conf_str(c, "cert");
    mc->key_file = fmq_conf_str(c, "key");
    mc->username = fmq_conf_str(c, "username");
    mc->password = fmq_conf_str(c, "password");
    mc->verify = !fmq_conf_bool(c, "insecure");
    mc->keepalive_s = (uint32_t)fmq_conf_uint(c, "keepalive");
}

fmq_err fmq_cli_data(const fmq_conf *c, const char *prog, fmq_dataset *ds,
                     fmq_partition *part)
{
    fmq_data_error de;
    memset(&de, 0, sizeof de);
    fmq_err e = fmq_data_load_fashion_mnist_ex(fmq_conf_str(c, "data"), true,
                                               ds, &de);
    if (e) {
        fprintf(stderr, "%s: Fashion-MNIST training set: %s (%s)\n", prog,
                fmq_strerror(e), de.reason);
        return e;
    }
    e = fmq_partition_make(fmq_conf_str(c, "partition"), ds->y, ds->n,
                           ds->classes, (uint32_t)fmq_conf_uint(c, "parties"),
                           fmq_conf_uint(c, "seed"), part);
    if (e) {
        fprintf(stderr, "%s: partition '%s' over %llu parties: %s\n", prog,
                fmq_conf_str(c, "partition"),
                (unsigned long long)fmq_conf_uint(c, "parties"),
                fmq_strerror(e));
        fmq_data_fini(ds);
    }
    return e;
}

/* Every round a program allocates and frees buffers of a model's size
 * (a 400 KB global per device, a 100 KB update, decode and encode
 * buffers). glibc serves such sizes with mmap and, once they are freed,
 * gives the top of the heap back to the kernel, so the next round faults
 * every page in again: in fedmq-sim with 50 devices that was a third of
 * the round (test/bench/fleet_bench.sh, 0.088 s against 0.062 s per round).
 * Keep freed memory for reuse instead: peak RSS is unchanged, the
 * resident set just stays at its peak. */
static void tune_memory(void)
{
    (void)mallopt(M_MMAP_THRESHOLD, 64 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

int fmq_cli_parse(fmq_conf *c, int argc, char **argv, const char *prog,
                  const char *summary)
{
    tune_memory();
    bool help = false;
    fmq_err e = fmq_conf_parse_args(c, argc, argv, &help);
    if (help) {
        fmq_conf_usage(c, stdout, prog, summary);
        return 1;
    }
    if (e) {
        fprintf(stderr, "%s: %s\n(%s --help lists the options)\n", prog,
                fmq_conf_error(c), prog);
        return 2;
    }
    return fmq_cli_log(c, prog) ? 2 : 0;
}

uint64_t fmq_cli_peak_rss(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u;
}

fmq_err fmq_cli_save_weights(const char *prog, const char *path,
                             const float *w, uint32_t P)
{
    uint8_t *b = fmq_alloc_array(P, 4);
    if (!b)
        return FMQ_ERR_NOMEM;
    for (uint32_t i = 0; i < P; i++)
        fmq_store_f32le(b + 4 * (size_t)i, w[i]);
    fmq_err e = fmq_file_write_atomic(path, b, (size_t)P * 4);
    fmq_free(b);
    if (e)
        fprintf(stderr, "%s: %s: %s\n", prog, path, fmq_strerror(e));
    return e;
}
