/*
 * cli.h — what fedmq's programs share on their command lines and in their
 * configuration files (common/conf.h): the MQTT connection keys, the data
 * keys, the log level, and turning them into an fmq_mqtt_cfg, a dataset
 * and a partition. Programs only; the library never reads a key.
 *
 * Use the macros inside a program's own key table:
 *   static const fmq_conf_key keys[] = { FMQ_CLI_MQTT_KEYS, ..., };
 */
#ifndef FMQ_CLI_H
#define FMQ_CLI_H

#include "conf.h"
#include "data.h"
#include "mqtt.h"
#include "partition.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FMQ_CLI_MQTT_KEYS                                                     \
    {"broker", FMQ_CONF_STR, "mqtts://127.0.0.1:8883",                        \
     "broker URI: mqtts:// (TLS) or mqtt:// (plain TCP, loopback only)", 0, 0, \
     false},                                                                  \
    {"ca", FMQ_CONF_STR, NULL,                                                \
     "CA certificate (PEM) the broker's certificate must chain to; unset = "  \
     "the system trust store", 0, 0, false},                                  \
    {"cert", FMQ_CONF_STR, NULL, "client certificate (PEM) for mutual TLS",   \
     0, 0, false},                                                            \
    {"key", FMQ_CONF_STR, NULL, "client private key (PEM) for mutual TLS", 0, \
     0, false},                                                               \
    {"username", FMQ_CONF_STR, NULL, "MQTT user name", 0, 0, false},          \
    {"password", FMQ_CONF_STR, NULL, "MQTT password (or device token)", 0, 0, \
     false},                                                                  \
    {"insecure", FMQ_CONF_BOOL, "false",                                      \
     "do not verify the broker's certificate (tests only; logged)", 0, 0,     \
     false},                                                                  \
    {"keepalive", FMQ_CONF_UINT, "30", "MQTT keep-alive, seconds", 5, 3600,   \
     false},                                                                  \
    {"fleet", FMQ_CONF_STR, "demo", "fleet name (topics fedmq/<fleet>/...)", \
     0, 0, false},                                                            \
    {"log_level", FMQ_CONF_STR, "notice",                                     \
     "err, warning, notice, info or debug", 0, 0, false},                     \
    {"log_format", FMQ_CONF_STR, "auto",                                      \
     "log records on stderr as text, journal (<N> priority prefixes that "    \
     "journald reads) or json (one object per line); auto: journal when "     \
     "stderr is the journal (JOURNAL_STREAM set), else text", 0, 0, false}

#define FMQ_CLI_DATA_KEYS                                                     \
    {"data", FMQ_CONF_STR, NULL,                                              \
     "Fashion-MNIST directory (default: Debian's dataset-fashion-mnist)", 0,  \
     0, false},                                                               \
    {"partition", FMQ_CONF_STR, "iid",                                        \
     "split of the training set: iid, dirichlet:B, labels:K, quantity:B", 0,  \
     0, false},                                                               \
    {"parties", FMQ_CONF_UINT, "10", "parties the training set is split in", \
     1, 100000, false},                                                       \
    {"seed", FMQ_CONF_UINT, "1",                                              \
     "seed of the partition and of training (as fedmq-train --seed)", 0, 0,   \
     false}

/* Applies log_level and log_format (when the program has that key);
 * FMQ_ERR_CONFIG (printed) when either is not one of its values. */
FMQ_NODISCARD fmq_err fmq_cli_log(const fmq_conf *c, const char *prog);

/* Fills *mc from the MQTT keys (starting from fmq_mqtt_cfg_defaults);
 * the strings are borrowed from c. */
void fmq_cli_mqtt(const fmq_conf *c, fmq_mqtt_cfg *mc);

/* Loads the Fashion-MNIST training set and splits it as the data keys
 * say, exactly as fedmq-train does for the same seed. Errors are printed
 * with prog. */
FMQ_NODISCARD fmq_err fmq_cli_data(const fmq_conf *c, const char *prog,
                                   fmq_dataset *ds, fmq_partition *part);

/* Parses argv into c (file, then flags); prints usage for --help and the
 * error otherwise. Returns 0 to go on, 1 after --help (exit 0), 2 on an
 * error (exit 2). */
int fmq_cli_parse(fmq_conf *c, int argc, char **argv, const char *prog,
                  const char *summary);

/* Writes w (P,) to path as float32 little-endian, atomically (the format
 * of fedmq-train --save and fedmq-aggregator --save). Errors are printed
 * with prog. */
FMQ_NODISCARD fmq_err fmq_cli_save_weights(const char *prog, const char *path,
                                           const float *w, uint32_t P);

/* Peak resident set size of this process, bytes (getrusage). */
uint64_t fmq_cli_peak_rss(void);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_CLI_H */
