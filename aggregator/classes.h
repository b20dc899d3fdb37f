/*
 * classes.h — per-class update schemes on the aggregator's side
 * (proto/SPEC.md §6.1 uq and uqc): what the round tells each class of
 * device to send, and the check that an update is what its class was
 * told.
 *
 * A device names its class in its update (`cls`, SPEC §6.2; sealed with
 * the rest); an update without one, or with a class the round does not
 * list, must use the round's default `uq`. The aggregator cannot prove a
 * device's class: the class only chooses a compression, never what an
 * update may do, so a device claiming another class changes nothing but
 * how its update was compressed, and the check catches a device that
 * sends something no class was told (a misconfigured or stale device).
 */
#ifndef FMQ_CLASSES_H
#define FMQ_CLASSES_H

#include "codec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Parses "cell:q4,hub:q8" (fedmq-aggregator --class-scheme): items
 * CLASS:SCHEME[/BLOCK], comma separated, CLASS an id (SPEC §3.3) named
 * once, SCHEME one of f32 f16 q8 q4 q1, BLOCK (scaled schemes only)
 * defaulting to def->block; rounding and error feedback are def's. NULL
 * or "" gives no classes. On FMQ_OK *out (fmq_free it) holds *n entries;
 * FMQ_ERR_CONFIG for a malformed item, a repeated class or more than 16
 * (the codec's limit), with a sentence in why (may be NULL); *out NULL. */
FMQ_NODISCARD fmq_err fmq_classes_parse(const char *spec, const fmq_uq *def,
                                        fmq_uq_class **out, uint32_t *n,
                                        char *why, size_t why_len);

/* The instructions a device of class cls (NULL or "" = none) was given:
 * its class's entry, else def. */
const fmq_uq *fmq_classes_pick(const fmq_uq *def, const fmq_uq_class *cl,
                               uint32_t n, const char *cls);

/* FMQ_OK when the tensor is what want says (the scheme and, for q8, q4
 * and q1, the block); else FMQ_ERR_SCHEME with a sentence in what. */
FMQ_NODISCARD fmq_err fmq_classes_check(const fmq_uq *want,
                                        const fmq_qtensor *t, char *what,
                                        size_t what_len);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_CLASSES_H */
