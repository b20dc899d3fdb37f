/*
 * cli.c — the keys and set-up fedmq's programs share (see cli.h).
 */
#include "cli.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* Log sinks of the programs (the library's default prints text). */
static char log_prog[32] = "fedmq";

/* journald reads a leading "<N>" as the record's syslog priority
 * (sd-daemon(3)); the level numbers are syslog's already. */
static void sink_journal(void *arg, int level, const char *msg)
{
    (void)arg;
    fprintf(stderr, "<%d>%s: %s\n", level, log_prog, msg);
}

/* {"ts":"2026-12-07T23:30:01.123Z","level":"err","prog":"…","msg":"…"}:
 * one write per record, so lines from several threads never mix. */
static void sink_json(void *arg, int level, const char *msg)
{
    (void)arg;
    char line[2048];
    uint64_t ms = fmq_now_ms();
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    int n = snprintf(line, sizeof line,
                     "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\","
                     "\"level\":\"%s\",\"prog\":\"%s\",\"msg\":\"",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000),
                     fmq_log_level_name(level), log_prog);
    size_t o = n < 0 ? 0 : (size_t)n;
    /* leave room for the closing "}\n and one escape */
    for (const unsigned char *p = (const unsigned char *)msg;
         *p && o + 12 < sizeof line; p++) {
        if (*p == '"' || *p == '\\') {
            line[o++] = '\\';
            line[o++] = (char)*p;
        } else if (*p < 0x20) {
            o += (size_t)snprintf(line + o, sizeof line - o, "\\u%04x", *p);
        } else {
            line[o++] = (char)*p;
        }
    }
    memcpy(line + o, "\"}\n", 4);
    fputs(line, stderr);
}

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
    snprintf(log_prog, sizeof log_prog, "%s", prog);
    const char *f = fmq_conf_has(c, "log_format") ? fmq_conf_str(c, "log_format")
                                                   : NULL;
    if (!f || strcmp(f, "auto") == 0) {
        const char *js = getenv("JOURNAL_STREAM");
        f = js && *js ? "journal" : "text";
    }
    if (strcmp(f, "text") == 0)
        fmq_log_set_sink(NULL, NULL);
    else if (strcmp(f, "journal") == 0)
        fmq_log_set_sink(sink_journal, NULL);
    else if (strcmp(f, "json") == 0)
        fmq_log_set_sink(sink_json, NULL);
    else {
        fprintf(stderr, "%s: log_format '%s': use auto, text, journal or "
                        "json\n", prog, f);
        return FMQ_ERR_CONFIG;
    }
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
