/*
 * cohort.c — the cohort rule of SPEC §8 on mbedTLS's SHA-256.
 */
#include "cohort.h"

#include <string.h>

#include <mbedtls/sha256.h>

double fmq_cohort_draw(uint64_t seed, uint64_t round, const char *device)
{
    uint8_t head[16], out[32];
    for (int i = 0; i < 8; i++) {
        head[i] = (uint8_t)(seed >> (56 - 8 * i));
        head[8 + i] = (uint8_t)(round >> (56 - 8 * i));
    }
    mbedtls_sha256_context c;
    mbedtls_sha256_init(&c);
    /* mbedTLS 2.28: the _ret variants report errors; with a valid context
     * and in-memory input they cannot fail */
    (void)mbedtls_sha256_starts_ret(&c, 0);
    (void)mbedtls_sha256_update_ret(&c, head, sizeof head);
    (void)mbedtls_sha256_update_ret(&c, (const uint8_t *)device,
                                    strlen(device));
    (void)mbedtls_sha256_finish_ret(&c, out);
    mbedtls_sha256_free(&c);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | out[i];
    return (double)v / 18446744073709551616.0;
}

bool fmq_cohort_member(const fmq_cohort *c, uint64_t round,
                       const char *device)
{
    if (!c || c->kind == FMQ_COHORT_ALL)
        return true;
    if (c->kind == FMQ_COHORT_FRACTION)
        return fmq_cohort_draw(c->seed, round, device) < c->fraction;
    for (uint32_t i = 0; i < c->nids; i++)
        if (strcmp(c->ids[i], device) == 0)
            return true;
    return false;
}
