/*
 * device.h — the device side of fedmq: what a device does with a global
 * model (proto/SPEC.md §9.1), and a runner that ties it to an MQTT
 * connection.
 *
 * Two layers, so that every rule is testable without a broker:
 *
 *   fmq_device   the core. No network: it takes the bytes of a global
 *                or delta message (proto/SPEC.md §6.1, §6.6) and answers
 *                with the bytes of an update to publish (or nothing, and
 *                why; or that it needs the full model). It checks fleet and version,
 *                applies the cohort rule, trains through a trainer ops
 *                table (common/trainer.h), computes delta = local - global,
 *                quantizes it with error feedback, encodes the update and
 *                seals it. Trust (proto/SPEC.md §7): every global must be
 *                a `signed` envelope that verifies with one of the
 *                aggregator keys the device pins (by kid, several while
 *                keys rotate) before its body is even decoded; each update
 *                is sealed to the aggregator's public key (the pinned key
 *                that signed the global it trained from, unless a sealing
 *                key is configured) for (fleet, device id, round).
 *                With a state_dir it keeps, across restarts, the model
 *                weights, the latest model message it took, the
 *                error-feedback residual, the last round it trained and
 *                that round's update (write-temp, fsync, rename:
 *                common/fmq.h fmq_file_write_atomic).
 *
 *   fmq_devrun   one device on one MQTT connection (common/mqtt.h):
 *                subscribes to fedmq/FLEET/model/global, or, while the
 *                aggregator publishes deltas (the model message last taken
 *                says gd) to fedmq/FLEET/model/delta only, fetching the
 *                retained global once when a delta does not continue from
 *                the model held (SPEC §6.6, §9.1); publishes a
 *                retained status (its last will says offline), feeds
 *                globals to the core, publishes updates at QoS 1 and keeps
 *                one pending until the broker acknowledged it. It is
 *                polled (fmq_devrun_poll never blocks longer than asked),
 *                so fedmq-device runs one and fedmq-sim runs a thousand
 *                from one thread.
 *
 * Resending: a device trains each round at most once. It sends that
 * round's update again (the same bytes) when the broker had not
 * acknowledged it before a disconnect or a restart, and when the same
 * global (round and version) is published again with a new timestamp,
 * which is what a restarted aggregator does: the aggregator counts each
 * (device, round) once, so a resend is never counted twice.
 */
#ifndef FMQ_DEVICE_H
#define FMQ_DEVICE_H

#include "codec.h"
#include "mqtt.h"
#include "trainer.h"
#include "trust.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ core */

/* Testing and simulation only: a hostile device. Called with the delta
 * (P,) = local - global of the round just trained, after training and
 * before quantization and error feedback; whatever it leaves in delta is
 * what the device quantizes, encodes, seals and sends (and what its
 * error-feedback residual follows). Called once per round trained, never
 * for resends; on the thread that called fmq_device_on_global; it must
 * not block and cannot fail. delta is borrowed for the call only. */
typedef void (*fmq_device_tamper_fn)(void *arg, float *delta, uint32_t P,
                                     uint64_t round);

typedef struct fmq_device_cfg {
    const char *fleet;     /* required, an identifier (SPEC §3.3) */
    const char *id;        /* required, the device id */
    const char *cls;       /* device class for per-class schemes; NULL */
    /* Directory for device.state (created 0700); NULL = nothing kept. */
    const char *state_dir;
    /* The trainer and the device's data. setup.model is ignored: the
     * model spec comes from the global message (the trainer is opened at
     * the first global and again if the spec changes). NULL ops = the
     * built-in engine (fmq_trainer_builtin). */
    const fmq_trainer_ops *trainer;
    fmq_trainer_setup setup;
    /* Shuffling seed of round r: fmq_trainer_seed(seed, r, party), the
     * same as fedmq-train's party `party`, so a networked run can be held
     * against the in-process reference. */
    uint64_t seed;
    uint32_t party;
    /* Stochastic rounding, when the round asks for it, draws from a
     * generator seeded with quant_seed and the round. */
    uint64_t quant_seed;
    /* Trust. A zero cfg is secure and then needs keys: fmq_device_open
     * gives FMQ_ERR_CONFIG without agg_keys (unless no_verify) or without
     * any key to seal to (unless no_seal). Keys are borrowed and must
     * outlive the device (the pointer array is copied).
     *   agg_keys[0..nagg_keys)  aggregator public keys a global may be
     *              signed with, looked up by kid (at most
     *              FMQ_DEVICE_KEYS_MAX);
     *   seal_key   the key updates are sealed to; NULL = the agg_key that
     *              signed the global being trained (one aggregator key
     *              pair for both, fedmq-aggregator's default);
     *   no_verify  debugging only: globals are taken without checking a
     *              signature (a signed envelope is unwrapped unverified,
     *              a plain global taken as it is);
     *   no_seal    debugging only: updates go out plain. */
    const fmq_trust_key *const *agg_keys;
    size_t nagg_keys;
    const fmq_trust_key *seal_key;
    bool no_verify, no_seal;
    /* Testing and simulation only (fedmq-sim --hostile; see
     * fmq_device_tamper_fn): NULL, the default, sends the delta as
     * trained. tamper_arg is borrowed and must outlive the device. A real
     * device never sets it. */
    fmq_device_tamper_fn tamper_fn;
    void *tamper_arg;
} fmq_device_cfg;

#define FMQ_DEVICE_KEYS_MAX 8

/* Ready-made attacks for tamper_fn (testing and simulation only), as
 * fedmq-sim --hostile names them:
 *   "scale:K"  delta *= K (K = -10: the boosted sign-flipping attacker);
 *   "noise:S"  delta replaced by Gaussian noise N(0, S^2) per coordinate
 *              (S > 0): an update of large norm, about S * sqrt(P). The
 *              draws of round r come from a generator seeded with
 *              (seed, r), so they repeat per (device, round) when each
 *              device gets its own seed. */
typedef enum {
    FMQ_DEVICE_ATTACK_SCALE = 1,
    FMQ_DEVICE_ATTACK_NOISE
} fmq_device_attack_kind;

typedef struct fmq_device_attack {
    fmq_device_attack_kind kind;
    double param;  /* K for scale, S for noise */
    uint64_t seed; /* noise only */
} fmq_device_attack;

/* Parses "scale:K" (K finite) or "noise:S" (S finite, > 0) into *a, seed
 * 0. FMQ_OK; FMQ_ERR_INVAL for anything else (*a unchanged). */
FMQ_NODISCARD fmq_err fmq_device_attack_parse(const char *spec,
                                              fmq_device_attack *a);
/* A fmq_device_tamper_fn: arg is a const fmq_device_attack *. */
void fmq_device_attack_apply(void *arg, float *delta, uint32_t P,
                             uint64_t round);

/* A device's keys from files: the aggregator public keys of a
 * comma-separated list of PEM files (the agg_key setting:
 * "agg-2024.pub,agg-2025.pub" while a key rotates) and an optional
 * sealing key (seal_key). */
typedef struct fmq_device_keys {
    fmq_trust_key *k[FMQ_DEVICE_KEYS_MAX];
    size_t n;
    fmq_trust_key *seal; /* NULL: seal to the signer */
} fmq_device_keys;

/* Loads every file of list (NULL or "": none) and seal_path (NULL: none)
 * into ks (zeroed first), and points cfg's agg_keys, nagg_keys and
 * seal_key at them (cfg may be NULL). FMQ_OK; FMQ_ERR_CONFIG for an
 * empty item or more than FMQ_DEVICE_KEYS_MAX files, or a file that holds
 * a private key (a device gets public halves only); the errors of
 * fmq_trust_key_load_public. Each error is logged naming the file; on
 * error ks holds nothing. ks must outlive the device. */
FMQ_NODISCARD fmq_err fmq_device_keys_load(fmq_device_keys *ks,
                                           const char *list,
                                           const char *seal_path,
                                           fmq_device_cfg *cfg);
/* Frees the keys; ks is then empty. */
void fmq_device_keys_fini(fmq_device_keys *ks);

typedef struct fmq_device fmq_device;

/* Opens a device; with state_dir, loads device.state when it exists.
 * FMQ_ERR_INVAL for a bad fleet/id; FMQ_ERR_DATA when device.state exists
 * but is corrupt or belongs to another fleet or device (it is left in
 * place for the operator: a device never silently forgets its state);
 * FMQ_ERR_IO, FMQ_ERR_NOMEM. */
FMQ_NODISCARD fmq_err fmq_device_open(const fmq_device_cfg *cfg,
                                      fmq_device **out);
void fmq_device_destroy(fmq_device **dp);

typedef enum {
    FMQ_DEV_TRAINED = 0, /* *update holds a new update to publish */
    FMQ_DEV_RESEND,      /* *update holds this round's update again */
    FMQ_DEV_NOT_COHORT,  /* model kept; this device sits the round out */
    FMQ_DEV_ALREADY,     /* same global, already trained: nothing to do */
    FMQ_DEV_REFUSED,     /* see the returned error; nothing changed */
    FMQ_DEV_BEHIND       /* a delta for a newer version whose base is not
                            the version held (or no model is held):
                            nothing changed; fetch the retained global */
} fmq_device_action;

typedef struct fmq_device_result {
    fmq_device_action action;
    uint64_t round, version;
    uint64_t samples;
    double loss, train_s;
    double norm; /* L2 norm of the quantized delta sent */
    fmq_codec_detail detail; /* what was wrong, for decode errors */
} fmq_device_result;

/* Handles the bytes of one model message: a global, or a delta (SPEC
 * §6.6), each inside its signed envelope; the envelope's body says which.
 * A delta whose base version is the version held is applied
 * (w += dequant(d), fmq_quant_add: the aggregator's weights bit for bit)
 * and is then handled as a newer global; a delta for the version held is
 * that version published again (stale if its round or model differ); a
 * delta for a newer version from another base gives FMQ_OK with action
 * FMQ_DEV_BEHIND and changes nothing: the caller fetches the retained
 * global. A delta whose length is not the model's is FMQ_ERR_MODEL.
 * On FMQ_OK, res->action says
 * what happened and, for TRAINED and RESEND, update (reset first) holds
 * the update message to publish on fedmq/<fleet>/update/<id>; the update
 * is then also the device's pending update (fmq_device_pending) until a
 * newer global arrives. With sealing on, the update is a `sealed`
 * envelope, and that sealed form is what is kept, persisted and resent
 * byte for byte (sealing is randomised; the aggregator counts a (device,
 * round) once). Errors (res->action REFUSED, the model, residual and
 * pending update kept, counted by reason in fmq_device_stats, logged in
 * one line naming the reason):
 *   before the body is decoded: the envelope's decode error, FMQ_ERR_SIG
 *   (unsigned, i.e. not a `signed` envelope, or a signature that does not
 *   verify: a tampered body or sig), FMQ_ERR_KEY (kid not pinned);
 *   then decode errors of the global (res->detail says what),
 *   FMQ_ERR_FLEET (another fleet), FMQ_ERR_STALE (older model version
 *   than the one held, or the same version with another round, model or
 *   weights: SPEC §7.1; the same global again, even with a new timestamp
 *   or deadline, is not stale), FMQ_ERR_CONFIG (unknown model spec or a
 *   quantization the device cannot do), trainer errors, FMQ_ERR_IO when
 *   the state could not be saved (then nothing is sent either: a device
 *   never publishes what it could not remember). */
FMQ_NODISCARD fmq_err fmq_device_on_global(fmq_device *d, const uint8_t *buf,
                                           size_t len, fmq_device_result *res,
                                           fmq_buf *update);

/* The update of the last round trained, while no newer global has
 * arrived: *data and *len point into the device (valid until its next call).
 * FMQ_ERR_NOTFOUND when there is none. *acked tells whether the broker
 * acknowledged it (fmq_device_mark_acked). */
FMQ_NODISCARD fmq_err fmq_device_pending(const fmq_device *d,
                                         const uint8_t **data, size_t *len,
                                         bool *acked);
/* The raw model message held (the global or delta last taken), as it
 * arrived (the signed envelope; restored from device.state after a
 * restart), for the runner to handle again at start (it is verified again
 * then; a delta for the version held applies nothing): a device that
 * crashed while training trains that round then. FMQ_ERR_NOTFOUND before
 * the first global. */
FMQ_NODISCARD fmq_err fmq_device_held_global(const fmq_device *d,
                                             const uint8_t **data,
                                             size_t *len);
/* true when the model message last taken says the aggregator publishes
 * deltas (gd): the runner then follows model/delta. */
bool fmq_device_follows_deltas(const fmq_device *d);

/* Records that the broker acknowledged the pending update (persisted). */
FMQ_NODISCARD fmq_err fmq_device_mark_acked(fmq_device *d);

typedef struct fmq_device_stats {
    uint64_t globals, trained, resent, not_cohort, already, refused;
    uint64_t deltas;  /* deltas applied */
    uint64_t behind;  /* deltas that did not continue from the model held */
    fmq_reason_count reasons[16]; /* refused, by SPEC §10 reason name */
    uint32_t nreasons;
    uint64_t version, round;  /* model held (0: none yet) */
    uint64_t last_trained;    /* last round trained (0: none) */
    uint64_t samples;
    double last_loss, last_norm, last_train_s;
    fmq_err last_error;
} fmq_device_stats;

void fmq_device_get_stats(const fmq_device *d, fmq_device_stats *out);
const char *fmq_device_id(const fmq_device *d);
const char *fmq_device_fleet(const fmq_device *d);
/* The model weights held (P,), NULL before the first global. */
const float *fmq_device_weights(const fmq_device *d, uint32_t *P);

/* ---------------------------------------------------------------- runner */

typedef struct fmq_devrun fmq_devrun;

/* Creates the MQTT client for the device (client id = device id, will =
 * status offline, retained) and starts connecting; mc is the connection
 * (uri, CA, credentials...; client_id and will fields are set here). The
 * runner borrows d for its lifetime. connect_ms bounds the first connect
 * (FMQ_ERR_TIMEOUT, FMQ_ERR_MQTT, FMQ_ERR_DENIED as fmq_mqtt_connect);
 * after it the connection comes back by itself. */
FMQ_NODISCARD fmq_err fmq_devrun_new(fmq_device *d, const fmq_mqtt_cfg *mc,
                                     uint32_t connect_ms, fmq_devrun **out);
/* ack_wait_ms > 0: each update publish waits up to that long for the
 * broker's PUBACK and then records the update as acknowledged (it is not
 * sent again after a reconnect). 0 (the default): publishing never
 * blocks, and the pending update is sent again after every reconnect
 * until a newer global arrives (at least once; the aggregator counts a
 * (device, round) once). */
void fmq_devrun_set_ack_wait(fmq_devrun *r, uint32_t ack_wait_ms);
/* Publishes status offline and disconnects cleanly. */
void fmq_devrun_destroy(fmq_devrun **rp);

/* Handles what arrived, for up to wait_ms waiting for the first message
 * (0 = just look). Publishes the pending update after a (re)connection if
 * the broker had not acknowledged it. *did (may be NULL) is true when a
 * message was handled. Errors from a bad global are logged and counted,
 * never returned: the runner keeps going. Returns FMQ_ERR_STATE only
 * when the client is unusable. */
FMQ_NODISCARD fmq_err fmq_devrun_poll(fmq_devrun *r, uint32_t wait_ms,
                                      bool *did);

/* Hold back publishing updates (a slow device) until the monotonic time
 * hold_until (fmq_mono_seconds()); 0 = publish at once. The update stays
 * pending meanwhile. */
void fmq_devrun_hold(fmq_devrun *r, double hold_until);

/* A look at each received global before the core gets it (fedmq-sim
 * uses it to play offline, slow and dropping devices). round is the
 * global's round (0 when it does not decode: the core then refuses it). */
typedef enum {
    FMQ_DEVRUN_TAKE = 0, /* hand it to the core */
    FMQ_DEVRUN_SKIP,     /* drop it, as if never received */
    FMQ_DEVRUN_HOLD      /* train, but keep the update pending unsent */
} fmq_devrun_verdict;
typedef fmq_devrun_verdict (*fmq_devrun_filter_fn)(void *arg, fmq_devrun *r,
                                                   uint64_t round);
void fmq_devrun_set_filter(fmq_devrun *r, fmq_devrun_filter_fn fn,
                           void *arg);

/* The last result of the core (what the last global did). */
const fmq_device_result *fmq_devrun_last(const fmq_devrun *r);
void fmq_devrun_mqtt_stats(const fmq_devrun *r, fmq_mqtt_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_DEVICE_H */
