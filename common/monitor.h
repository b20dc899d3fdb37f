/*
 * monitor.h — what the aggregator tells the people who run a fleet, per
 * closed round (issue 7):
 *
 *   flags    a device is flagged, with a reason, when it is
 *            - stuck: online and in the round's cohort, yet no update of
 *              it was counted for `stuck_rounds` such rounds in a row;
 *            - noisy: its update's L2 norm is far outside the round's
 *              distribution: robust z-score |x - median| / (1.4826 MAD)
 *              above `noisy_z` (Iglewicz and Hoaglin's modified z-score;
 *              needs at least `noisy_min` updates in the round, and a MAD
 *              of 0 flags only norms away from the median by more than 1e-6
 *              relative);
 *            - rejected: at least `rejected_max` of its updates were
 *              rejected in the last `rejected_window` rounds;
 *   files    one JSON line per round appended to a file (the metrics
 *            message's fields, the flags with their detail; write, then
 *            fdatasync) and a Prometheus text-format file (node_exporter's
 *            textfile collector) replaced atomically (temp, fsync, rename).
 *
 * A monitor is fed by one thread (the aggregator's loop). It keeps per
 * device a few counters (no tensors); devices it has not heard of for
 * `forget_rounds` rounds are dropped. It is not checkpointed: after a
 * restart the counts start over (flags are advice, not state).
 */
#ifndef FMQ_MONITOR_H
#define FMQ_MONITOR_H

#include "codec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fmq_monitor_cfg {
    uint32_t stuck_rounds;    /* 0 = off; default 3 */
    double noisy_z;           /* 0 = off; default 6 (3.5, the textbook
                                 outlier bound, flags honest devices of a
                                 non-IID fleet: z 4.7 seen in it_fleet_faults) */
    uint32_t noisy_min;       /* fewest updates for a noisy verdict; default 5 */
    uint32_t rejected_max;    /* 0 = off; default 3 */
    uint32_t rejected_window; /* rounds; default 5, at most 64 */
    uint32_t forget_rounds;   /* default 100 */
} fmq_monitor_cfg;

/* The defaults above. */
void fmq_monitor_cfg_defaults(fmq_monitor_cfg *cfg);

/* One flag with its detail ("silent for 3 rounds in the cohort"). */
typedef struct fmq_monitor_flag {
    fmq_flag flag;   /* device and why: "stuck", "noisy" or "rejected" */
    char detail[96];
} fmq_monitor_flag;

typedef struct fmq_monitor fmq_monitor;

/* FMQ_ERR_INVAL for a bad cfg (rejected_window > 64), FMQ_ERR_NOMEM. */
FMQ_NODISCARD fmq_err fmq_monitor_new(const fmq_monitor_cfg *cfg,
                                      fmq_monitor **out);
void fmq_monitor_destroy(fmq_monitor **mp);

/* Feeding, within the current round: a device's status (online or not);
 * a counted update and its norm (NaN if unknown); a rejected update and
 * its reason. Unknown devices are added (FMQ_ERR_NOMEM if that fails:
 * the event is then not recorded). */
fmq_err fmq_monitor_on_status(fmq_monitor *m, const char *device,
                              bool online);
fmq_err fmq_monitor_on_update(fmq_monitor *m, const char *device, double norm);
fmq_err fmq_monitor_on_reject(fmq_monitor *m, const char *device,
                              const char *reason);

/* Decides whether a device was in the round's cohort. */
typedef bool (*fmq_monitor_member_fn)(void *arg, const char *device);

/* Closes the round: judges every known device (member may be NULL: every
 * device is in every cohort), writes up to max flags to out (sorted by
 * device, then why) and their number to *n, and starts the next round.
 * Flags beyond max are counted in *n but not written. */
void fmq_monitor_close_round(fmq_monitor *m, fmq_monitor_member_fn member,
                             void *arg, fmq_monitor_flag *out, size_t max,
                             size_t *n);

/* One JSON object, newline-terminated, appended to out: every field of
 * the metrics message that is present (names as in SPEC §6.4 but spelled
 * out: "round", "version", "cohort", "participants", "late", "rejected"
 * {reason: n}, "loss", "loss_std", "test_loss", "test_acc", "bytes_in",
 * "bytes_out", "seconds", "strategy", "ts"), and "flags" [{device, why,
 * detail}]. */
FMQ_NODISCARD fmq_err fmq_monitor_json(const fmq_msg_metrics *mt,
                                       const fmq_monitor_flag *flags,
                                       size_t nflags, fmq_buf *out);

/* The Prometheus text exposition (version 0.0.4) of a round, appended to
 * out: gauges fedmq_round, fedmq_model_version, fedmq_cohort,
 * fedmq_participants, fedmq_late_updates, fedmq_train_loss,
 * fedmq_train_loss_stddev, fedmq_test_loss, fedmq_test_accuracy,
 * fedmq_round_seconds, fedmq_round_bytes_in, fedmq_round_bytes_out,
 * fedmq_round_rejected{reason}, fedmq_flagged_devices,
 * fedmq_device_flagged{device,why}, and the monitor's counters since it
 * started: fedmq_rounds_total, fedmq_updates_total,
 * fedmq_rejected_total{reason}. Every series has
 * the label fleet. Absent values are left out. m may be NULL (no
 * counters). */
FMQ_NODISCARD fmq_err fmq_monitor_prometheus(const fmq_monitor *m,
                                             const fmq_msg_metrics *mt,
                                             const fmq_monitor_flag *flags,
                                             size_t nflags, fmq_buf *out);

/* Append line (len bytes) to path (created 0644) and fdatasync it. */
FMQ_NODISCARD fmq_err fmq_monitor_append(const char *path, const void *line,
                                         size_t len);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_MONITOR_H */
