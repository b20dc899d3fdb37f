/*
 * trust.h — the cryptography of fedmq (proto/SPEC.md §7, ARCHITECTURE §8),
 * on mbedTLS 2.28: EC P-256 keys and their ids, the `signed` envelope
 * (ECDSA P-256 over SHA-256 of the body, deterministic per RFC 6979) that
 * carries every global model, and the `sealed` envelope (ephemeral ECDH
 * P-256, HKDF-SHA256, AES-256-GCM with fleet, device and round as
 * associated data) that carries every update to the aggregator.
 *
 * Key id ("kid"): the first 8 bytes of SHA-256 over the key's uncompressed
 * 65-byte public point (0x04 ‖ X ‖ Y), as 16 lowercase hex characters — a
 * valid id (SPEC §3.3). broker/fedmq_keygen prints the same value.
 *
 * Threads: a key handle never changes after it is made, so one handle may
 * be used by any number of threads at once (every operation works on its
 * own copy of the curve group). A random generator (fmq_trust_rng) is
 * thread-safe: calls are serialised by its own mutex, and it reseeds itself
 * in a child after fork(). Every function that needs randomness takes one;
 * NULL means a process-wide generator made on first use.
 *
 * Network input: envelopes are decoded with common/codec.h's bounded
 * decoder (limits lim, NULL = SPEC §4 defaults) before anything else, so
 * no length from the wire is trusted and nothing malformed crashes.
 * Nothing here logs key material; mbedTLS failures that are not the
 * input's fault are logged with their raw code and returned as
 * FMQ_ERR_CRYPTO.
 *
 * Ownership: inputs are borrowed. Outputs are appended to the caller's
 * fmq_buf, which is left as it was on error. fmq_trust_verify returns a
 * pointer into the caller's envelope buffer (no copy).
 */
#ifndef FMQ_TRUST_H
#define FMQ_TRUST_H

#include "codec.h"
#include "fmq.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FMQ_KID_LEN 16    /* hex characters of a key id */
#define FMQ_PUB_LEN 65    /* uncompressed P-256 point: 0x04 ‖ X ‖ Y */
#define FMQ_KEYFILE_MAX 65536 /* a key file larger than this is refused */

typedef struct fmq_trust_key fmq_trust_key;
typedef struct fmq_trust_rng fmq_trust_rng;

/* ------------------------------------------------------------ random
 * CTR_DRBG (AES-256) seeded from the system's entropy source.
 * fmq_trust_rng_new: FMQ_OK and *out, or NOMEM, or CRYPTO when the entropy
 * source fails. fmq_trust_rng_destroy frees, sets *rp = NULL, no-op on
 * NULL; no other thread may be using it. */
FMQ_NODISCARD fmq_err fmq_trust_rng_new(fmq_trust_rng **out);
void fmq_trust_rng_destroy(fmq_trust_rng **rp);

/* --------------------------------------------------------------- keys
 * Only EC keys on P-256 (secp256r1) are accepted. A private key is
 * checked against the public point its file carries (FMQ_ERR_KEY when they
 * differ); password-protected files are not supported.
 *
 * Loading from a file: FMQ_OK and *out; NOTFOUND (no such file), IO,
 * TOO_LARGE (over FMQ_KEYFILE_MAX), KEY (not a key, not EC, not P-256,
 * encrypted, inconsistent), NOMEM, INVAL (NULL argument).
 * From memory: pem is PEM (with or without a final NUL) or DER, len its
 * length; the same errors but NOTFOUND/IO/TOO_LARGE.
 * The buffers that held private key bytes are zeroised before they are
 * freed. */
FMQ_NODISCARD fmq_err fmq_trust_key_load_private(const char *path,
                                                 fmq_trust_key **out);
FMQ_NODISCARD fmq_err fmq_trust_key_load_public(const char *path,
                                                fmq_trust_key **out);
FMQ_NODISCARD fmq_err fmq_trust_key_parse_private(const uint8_t *pem,
                                                  size_t len,
                                                  fmq_trust_key **out);
FMQ_NODISCARD fmq_err fmq_trust_key_parse_public(const uint8_t *pem,
                                                 size_t len,
                                                 fmq_trust_key **out);
/* A new random private key. FMQ_OK, NOMEM or CRYPTO. */
FMQ_NODISCARD fmq_err fmq_trust_key_generate(fmq_trust_rng *rng,
                                             fmq_trust_key **out);
/* A new handle holding only the public half of k (what a device pins).
 * FMQ_OK, NOMEM, CRYPTO. */
FMQ_NODISCARD fmq_err fmq_trust_key_public_of(const fmq_trust_key *k,
                                              fmq_trust_key **out);
/* Frees (zeroising the private scalar), sets *kp = NULL, no-op on NULL. */
void fmq_trust_key_destroy(fmq_trust_key **kp);

/* The key id, 16 lowercase hex characters, NUL-terminated; lives as long
 * as k. */
const char *fmq_trust_key_id(const fmq_trust_key *k);
/* The 65-byte uncompressed public point; lives as long as k. */
const uint8_t *fmq_trust_key_point(const fmq_trust_key *k);
bool fmq_trust_key_has_private(const fmq_trust_key *k);
/* Append k as PEM text (no NUL): the private key as SEC1 "EC PRIVATE KEY"
 * when private is true, else the public key as "PUBLIC KEY"
 * (SubjectPublicKeyInfo). FMQ_OK, KEY (private asked of a public-only
 * key), NOMEM, CRYPTO. The caller should zeroise a private PEM when done
 * (mbedtls_platform_zeroize). */
FMQ_NODISCARD fmq_err fmq_trust_key_write_pem(const fmq_trust_key *k,
                                              bool private_part, fmq_buf *out);

/* ------------------------------------------------------------- signed
 * fmq_trust_sign: append a `signed` envelope (kid of key, body, sig) for
 * the encoded inner message body[0..len). key must hold a private key.
 * FMQ_OK; INVAL (NULL argument, len 0); KEY (public-only key); NOMEM;
 * CRYPTO. Deterministic (RFC 6979): the same key and body always give the
 * same bytes; rng only blinds the computation. */
FMQ_NODISCARD fmq_err fmq_trust_sign(const fmq_trust_key *key,
                                     fmq_trust_rng *rng, const uint8_t *body,
                                     size_t len, fmq_buf *out);

/* fmq_trust_verify: check a `signed` envelope buf[0..len) against the
 * trusted keys keys[0..nkeys) (nkeys >= 1, looked up by kid; private or
 * public handles). On FMQ_OK *body / *body_len give the inner message: a
 * pointer into buf, valid while buf is. On error *body = NULL, *body_len
 * = 0, and detail (may be NULL) says why in a sentence. Errors:
 *   - a decode error of the envelope (EMPTY, TRUNCATED, MALFORMED,
 *     TRAILING, TOO_LARGE, TOO_DEEP, NOT_MAP, …, MISSING_KEY, WRONG_TYPE,
 *     BAD_VALUE, VERSION): the bytes are not a well-formed message;
 *   - SIG: a well-formed message that is not a `signed` envelope (an
 *     unsigned global, say), or a signature that does not verify;
 *   - KEY: no trusted key has the envelope's kid;
 *   - INVAL: NULL argument or nkeys == 0.
 * SPEC §10 gives the reasons `sig` and `key`; detail distinguishes
 * "unsigned" from "bad signature" for logs. */
FMQ_NODISCARD fmq_err fmq_trust_verify(const fmq_trust_key *const *keys,
                                       size_t nkeys, const uint8_t *buf,
                                       size_t len,
                                       const fmq_codec_limits *lim,
                                       const uint8_t **body, size_t *body_len,
                                       fmq_codec_detail *detail);

/* ------------------------------------------------------------- sealed
 * fmq_trust_seal: append a `sealed` envelope of the encoded update
 * msg[0..len) for the recipient key (public or private handle; its kid
 * goes into the envelope), bound to fleet, device and round as SPEC §7.2's
 * AAD. A fresh ephemeral key and a random 12-byte iv every call.
 * FMQ_OK; INVAL (NULL argument, len 0, fleet or device not an id);
 * NOMEM; CRYPTO. The caller should seal with the fleet, device and round
 * the update itself carries. */
FMQ_NODISCARD fmq_err fmq_trust_seal(const fmq_trust_key *recipient,
                                     fmq_trust_rng *rng, const char *fleet,
                                     const char *device, uint64_t round,
                                     const uint8_t *msg, size_t len,
                                     fmq_buf *out);

/* fmq_trust_open: open a `sealed` envelope buf[0..len) with the
 * recipient's private key, fleet, and device taken from the TOPIC (never
 * from the payload); append the inner update's bytes to out and, when
 * round is not NULL, set *round to the envelope's r (the AAD's round).
 * The caller decodes the update and must check that its fl, dev and r
 * equal fleet, device and *round (SPEC §7.2). Errors:
 *   - a decode error of the envelope, as for fmq_trust_verify;
 *   - SEAL: a well-formed message that is not a `sealed` envelope, an epk
 *     that is not a point on P-256, or a ciphertext that fails to
 *     authenticate (wrong device or fleet, changed r, altered iv,
 *     ciphertext or tag, sealed to another key with the same kid);
 *   - KEY: kid is not the recipient key's, or key has no private part;
 *   - INVAL: NULL argument, fleet or device not an id;
 *   - NOMEM, CRYPTO.
 * out is left as it was on error (no unauthenticated bytes are exposed). */
FMQ_NODISCARD fmq_err fmq_trust_open(const fmq_trust_key *key,
                                     fmq_trust_rng *rng, const char *fleet,
                                     const char *device, const uint8_t *buf,
                                     size_t len, const fmq_codec_limits *lim,
                                     fmq_buf *out, uint64_t *round,
                                     fmq_codec_detail *detail);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_TRUST_H */
