/*
 * fmq_forge — publishes hand-made update messages for the integration
 * tests (test/it_reject.sh): good ones, the same one twice, and each kind
 * of bad one a fleet may send, over the same MQTT layer the devices use.
 *
 *   fmq_forge [--seal KEY.pub] BROKER_URI CA_FILE FLEET DEVICE ROUND VERSION
 *             P KIND [COUNT]
 *
 * --seal: the message (whatever KIND made) goes out in a `sealed`
 * envelope to that key for (FLEET, DEVICE, ROUND), as a device seals it
 * (proto/SPEC.md §7.2), so the aggregator's checks behind the opening are
 * what is tried.
 *
 * KIND: good      a q8 update of P small values
 *       nan       an f32 update with a NaN in it
 *       wrongp    a q8 update of P-1 values (another model)
 *       garbage   64 bytes that are not MessagePack
 *       oversize  4P + 128 KiB bytes (more than any update of this model)
 *       fleet     a good update that says it is for fleet "other"
 *       liar      a good update whose device id is not the topic's
 * COUNT: how many times to publish it (default 1). Each publish waits for
 * the broker's PUBACK. Exit 0 when all were acknowledged.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "mqtt.h"
#include "quant.h"
#include "trust.h"

static int usage(void)
{
    fprintf(stderr, "usage: fmq_forge [--seal KEY.pub] URI CA FLEET DEVICE "
                    "ROUND VERSION P "
                    "good|nan|wrongp|garbage|oversize|fleet|liar [COUNT]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *seal = NULL;
    if (argc > 2 && strcmp(argv[1], "--seal") == 0) {
        seal = argv[2];
        argv += 2;
        argc -= 2;
    }
    if (argc < 9 || argc > 10)
        return usage();
    const char *uri = argv[1], *ca = argv[2], *fleet = argv[3];
    const char *dev = argv[4], *kind = argv[8];
    uint64_t round = strtoull(argv[5], NULL, 10);
    uint64_t version = strtoull(argv[6], NULL, 10);
    uint32_t P = (uint32_t)strtoul(argv[7], NULL, 10);
    int count = argc == 10 ? atoi(argv[9]) : 1;
    if (!P || count < 1)
        return usage();

    fmq_buf b;
    fmq_buf_init(&b);
    fmq_err e = FMQ_OK;
    if (strcmp(kind, "garbage") == 0) {
        uint8_t g[64];
        for (int i = 0; i < 64; i++)
            g[i] = (uint8_t)(0xc1 + i); /* 0xc1 is never valid MessagePack */
        e = fmq_buf_append(&b, g, sizeof g);
    } else if (strcmp(kind, "oversize") == 0) {
        size_t n = (size_t)P * 4 + 131072;
        if (!(e = fmq_buf_reserve(&b, n))) {
            memset(b.data, 0x80, n); /* a map header repeated */
            b.len = n;
        }
    } else {
        uint32_t n = strcmp(kind, "wrongp") == 0 ? P - 1 : P;
        float *x = calloc(n ? n : 1, sizeof *x);
        if (!x)
            return 1;
        for (uint32_t i = 0; i < n; i++)
            x[i] = 1e-3f * (float)((int)(i % 11) - 5);
        bool nan = strcmp(kind, "nan") == 0;
        fmq_msg_update u;
        fmq_msg_update_init(&u);
        snprintf(u.fleet, sizeof u.fleet, "%s",
                 strcmp(kind, "fleet") == 0 ? "other" : fleet);
        snprintf(u.device, sizeof u.device, "%s",
                 strcmp(kind, "liar") == 0 ? "somebody-else" : dev);
        u.round = round;
        u.version = version;
        u.samples = 100;
        u.loss = 1.0f;
        fmq_quant_cfg qc = {nan ? FMQ_Q_F32 : FMQ_Q_Q8, 256, false};
        e = fmq_quant_encode(&qc, x, n, NULL, &u.delta);
        if (!e)
            e = fmq_codec_encode_update(&u, &b);
        if (!e && nan) {
            /* The encoder (rightly) refuses to write a NaN, so put one in
             * afterwards: find the f32 codes in the message and overwrite
             * the first value. */
            uint8_t *at = memmem(b.data, b.len, u.delta.codes,
                                 u.delta.codes_len);
            if (at)
                fmq_store_f32le(at, NAN);
            else
                e = FMQ_ERR_STATE;
        }
        fmq_qtensor_fini(&u.delta);
        free(x);
    }
    if (!e && seal) {
        fmq_trust_key *k = NULL;
        fmq_buf sb;
        fmq_buf_init(&sb);
        if (!(e = fmq_trust_key_load_public(seal, &k)) &&
            !(e = fmq_trust_seal(k, NULL, fleet, dev, round, b.data, b.len,
                                 &sb))) {
            fmq_buf_fini(&b);
            b = sb;
        } else {
            fmq_buf_fini(&sb);
        }
        fmq_trust_key_destroy(&k);
    }
    if (e) {
        fprintf(stderr, "fmq_forge: building %s: %s\n", kind, fmq_strerror(e));
        return 1;
    }
    fmq_mqtt_cfg mc;
    fmq_mqtt_cfg_defaults(&mc);
    mc.uri = uri;
    mc.ca_file = ca;
    char cid[FMQ_ID_MAX + 16];
    snprintf(cid, sizeof cid, "forge-%s", dev);
    mc.client_id = cid;
    mc.clean_start = true;
    mc.session_expiry_s = 0;
    fmq_mqtt *mq;
    if ((e = fmq_mqtt_new(&mc, &mq)) || (e = fmq_mqtt_connect(mq, 10000))) {
        fprintf(stderr, "fmq_forge: %s: %s\n", uri, fmq_strerror(e));
        return 1;
    }
    char topic[3 * FMQ_ID_MAX];
    snprintf(topic, sizeof topic, "fedmq/%s/update/%s", fleet, dev);
    int rc = 0;
    for (int i = 0; i < count && !rc; i++)
        if ((e = fmq_mqtt_publish(mq, topic, b.data, b.len, 1, false, 10000))) {
            fprintf(stderr, "fmq_forge: publish: %s\n", fmq_strerror(e));
            rc = 1;
        }
    fmq_mqtt_destroy(&mq);
    fmq_buf_fini(&b);
    return rc;
}
