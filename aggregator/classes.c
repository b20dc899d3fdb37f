/*
 * classes.c — per-class update schemes; the contract is in classes.h.
 */
#include "classes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLASSES__MAX 16u /* fmq_codec_limits_default().max_classes */

static fmq_err classes__item(const char *item, const fmq_uq *def,
                             fmq_uq_class *out, char *why, size_t why_len)
{
    const char *colon = strchr(item, ':');
    size_t cl = colon ? (size_t)(colon - item) : 0;
    if (!colon || cl == 0 || cl > FMQ_ID_MAX) {
        snprintf(why, why_len, "'%s': want CLASS:SCHEME[/BLOCK]", item);
        return FMQ_ERR_CONFIG;
    }
    memcpy(out->cls, item, cl);
    out->cls[cl] = '\0';
    if (!fmq_id_valid(out->cls)) {
        snprintf(why, why_len, "'%s': the class is not an id (1..64 of "
                 "A-Z a-z 0-9 . _ -)", item);
        return FMQ_ERR_CONFIG;
    }
    char sch[8];
    const char *p = colon + 1, *slash = strchr(p, '/');
    size_t sl = slash ? (size_t)(slash - p) : strlen(p);
    if (sl == 0 || sl >= sizeof sch) {
        snprintf(why, why_len, "'%s': no scheme", item);
        return FMQ_ERR_CONFIG;
    }
    memcpy(sch, p, sl);
    sch[sl] = '\0';
    out->uq = *def;
    if (fmq_scheme_parse(sch, &out->uq.scheme) != FMQ_OK) {
        snprintf(why, why_len, "'%s': scheme %s (f32 f16 q8 q4 q1)", item,
                 sch);
        return FMQ_ERR_CONFIG;
    }
    bool scaled = fmq_scheme_has_scales(out->uq.scheme);
    if (slash) {
        char *end;
        unsigned long b = strtoul(slash + 1, &end, 10);
        if (!scaled || end == slash + 1 || *end || b < FMQ_QUANT_BLOCK_MIN ||
            b > FMQ_QUANT_BLOCK_MAX) {
            snprintf(why, why_len, "'%s': a block of 1..%u, for q8, q4 or "
                     "q1 only", item, FMQ_QUANT_BLOCK_MAX);
            return FMQ_ERR_CONFIG;
        }
        out->uq.block = (uint32_t)b;
    }
    if (!scaled)
        out->uq.block = 0;
    else if (out->uq.block == 0)
        out->uq.block = FMQ_QUANT_BLOCK_DEFAULT;
    if (out->uq.scheme == FMQ_Q_Q1 && out->uq.stochastic &&
        out->uq.error_feedback) {
        snprintf(why, why_len, "'%s': stochastic q1 with error feedback "
                 "(SPEC §5: not contractive)", item);
        return FMQ_ERR_CONFIG;
    }
    return FMQ_OK;
}

fmq_err fmq_classes_parse(const char *spec, const fmq_uq *def,
                          fmq_uq_class **out, uint32_t *n, char *why,
                          size_t why_len)
{
    char scratch[1];
    if (!why) {
        why = scratch;
        why_len = sizeof scratch;
    }
    *out = NULL;
    *n = 0;
    if (!spec || !*spec)
        return FMQ_OK;
    fmq_uq_class *cl = fmq_calloc(CLASSES__MAX, sizeof *cl);
    if (!cl)
        return FMQ_ERR_NOMEM;
    uint32_t k = 0;
    fmq_err e = FMQ_OK;
    for (const char *p = spec; !e;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[160];
        if (len == 0 || len >= sizeof item) {
            snprintf(why, why_len, "'%s': an empty or overlong item", spec);
            e = FMQ_ERR_CONFIG;
            break;
        }
        if (k == CLASSES__MAX) {
            snprintf(why, why_len, "more than %u classes", CLASSES__MAX);
            e = FMQ_ERR_CONFIG;
            break;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if ((e = classes__item(item, def, &cl[k], why, why_len)))
            break;
        for (uint32_t i = 0; i < k && !e; i++)
            if (strcmp(cl[i].cls, cl[k].cls) == 0) {
                snprintf(why, why_len, "class %s named twice", cl[k].cls);
                e = FMQ_ERR_CONFIG;
            }
        k++;
        if (!end)
            break;
        p = end + 1;
    }
    if (e) {
        fmq_free(cl);
        return e;
    }
    *out = cl;
    *n = k;
    return FMQ_OK;
}

const fmq_uq *fmq_classes_pick(const fmq_uq *def, const fmq_uq_class *cl,
                               uint32_t n, const char *cls)
{
    for (uint32_t i = 0; cls && cls[0] && i < n; i++)
        if (strcmp(cl[i].cls, cls) == 0)
            return &cl[i].uq;
    return def;
}

fmq_err fmq_classes_check(const fmq_uq *want, const fmq_qtensor *t,
                          char *what, size_t what_len)
{
    bool scaled = fmq_scheme_has_scales(want->scheme);
    if (t->scheme == want->scheme && (!scaled || t->block == want->block))
        return FMQ_OK;
    char got[32], told[32];
    snprintf(got, sizeof got, "%s", fmq_scheme_name(t->scheme));
    if (fmq_scheme_has_scales(t->scheme))
        snprintf(got + strlen(got), sizeof got - strlen(got), "/%u",
                 t->block);
    snprintf(told, sizeof told, "%s", fmq_scheme_name(want->scheme));
    if (scaled)
        snprintf(told + strlen(told), sizeof told - strlen(told), "/%u",
                 want->block);
    if (what)
        snprintf(what, what_len, "sent %s, told %s", got, told);
    return FMQ_ERR_SCHEME;
}
