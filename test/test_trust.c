/*
 * test_trust.c — fedmq's cryptography (common/trust.h): P-256 keys, their
 * ids and PEM files; the `signed` envelope of every global and the
 * `sealed` envelope of every update (proto/SPEC.md §7), and what happens
 * to each when the network changes a byte, moves it to another topic or
 * truncates it. Keys are made in the test with mbedTLS itself (also the
 * ones fedmq must refuse: other curves, a private key whose public point
 * does not match). An independent implementation (Python's cryptography)
 * checks the same envelopes in test/it_trust_interop.sh.
 *
 * Every envelope handed to verify/open is a heap copy of exactly its
 * length, so AddressSanitizer sees any read past the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>

#include "codec.h"
#include "quant.h"
#include "trust.h"

/* ------------------------------------------------------------- helpers */

static char dir[512];

static const char *path_in(const char *name)
{
    static char p[640];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static fmq_trust_key *gen(void)
{
    fmq_trust_key *k = NULL;
    assert_int_equal(fmq_trust_key_generate(NULL, &k), FMQ_OK);
    return k;
}

static fmq_trust_key *pub_of(const fmq_trust_key *k)
{
    fmq_trust_key *p = NULL;
    assert_int_equal(fmq_trust_key_public_of(k, &p), FMQ_OK);
    return p;
}

/* A heap copy of exactly n bytes (ASan catches over-reads). */
static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* An encoded update of fleet/device/round with an f32 delta of n values. */
static void make_update(fmq_buf *b, const char *fleet, const char *dev,
                        uint64_t r, uint32_t n)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (uint32_t i = 0; i < n; i++)
        x[i] = 0.001f * (float)(i % 97) - 0.03f;
    fmq_msg_update u;
    fmq_msg_update_init(&u);
    snprintf(u.fleet, sizeof u.fleet, "%s", fleet);
    snprintf(u.device, sizeof u.device, "%s", dev);
    u.round = r;
    u.version = r;
    u.samples = 10;
    u.loss = 0.5f;
    fmq_quant_cfg qc = {FMQ_Q_F32, 0, false};
    assert_int_equal(fmq_quant_encode(&qc, x, n, NULL, &u.delta), FMQ_OK);
    fmq_buf_init(b);
    assert_int_equal(fmq_codec_encode_update(&u, b), FMQ_OK);
    fmq_qtensor_fini(&u.delta);
    free(x);
}

/* A plain (unsigned) encoded global. */
static void make_global(fmq_buf *b)
{
    float w[10];
    for (int i = 0; i < 10; i++)
        w[i] = 0.1f * (float)i;
    fmq_msg_global g;
    fmq_msg_global_init(&g);
    snprintf(g.fleet, sizeof g.fleet, "f1");
    snprintf(g.model, sizeof g.model, "logreg");
    g.round = 1;
    g.version = 1;
    g.train = (fmq_train_cfg){.epochs = 1, .batch = 8, .lr = 0.1f};
    g.uq = (fmq_uq){.scheme = FMQ_Q_Q8, .block = 4, .error_feedback = true};
    fmq_quant_cfg qc = {FMQ_Q_F32, 0, false};
    assert_int_equal(fmq_quant_encode(&qc, w, 10, NULL, &g.weights), FMQ_OK);
    fmq_buf_init(b);
    assert_int_equal(fmq_codec_encode_global(&g, b), FMQ_OK);
    fmq_qtensor_fini(&g.weights);
    fmq_msg_global_fini(&g);
}

static fmq_err verify1(const fmq_trust_key *k, const fmq_buf *env,
                       const uint8_t **body, size_t *body_len)
{
    const fmq_trust_key *ks[] = {k};
    uint8_t *c = dup_bytes(env->data, env->len);
    const uint8_t *b = NULL;
    size_t bl = 0;
    fmq_err e = fmq_trust_verify(ks, 1, c, env->len, NULL, &b, &bl, NULL);
    if (body) {
        /* report the body as an offset into env (c is freed here) */
        *body = b ? env->data + (b - c) : NULL;
        *body_len = bl;
    }
    free(c);
    return e;
}

static fmq_err open1(const fmq_trust_key *k, const char *fleet,
                     const char *dev, const fmq_buf *env, fmq_buf *out)
{
    uint8_t *c = dup_bytes(env->data, env->len);
    fmq_err e = fmq_trust_open(k, NULL, fleet, dev, c, env->len, NULL, out,
                               NULL, NULL);
    free(c);
    return e;
}

/* A test-side CTR_DRBG for keys made directly with mbedTLS. */
static mbedtls_entropy_context t_entropy;
static mbedtls_ctr_drbg_context t_drbg;

/* Write a PEM private key on `curve` to name; if q_from is not NULL, its
 * public point replaces the key's own (an inconsistent key). */
static void write_mbed_key(const char *name, mbedtls_ecp_group_id curve,
                           bool inconsistent)
{
    mbedtls_pk_context pk, other;
    mbedtls_pk_init(&pk);
    mbedtls_pk_init(&other);
    assert_int_equal(
        mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    assert_int_equal(mbedtls_ecp_gen_key(curve, mbedtls_pk_ec(pk),
                                         mbedtls_ctr_drbg_random, &t_drbg),
                     0);
    if (inconsistent) {
        assert_int_equal(
            mbedtls_pk_setup(&other,
                             mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)),
            0);
        assert_int_equal(mbedtls_ecp_gen_key(curve, mbedtls_pk_ec(other),
                                             mbedtls_ctr_drbg_random, &t_drbg),
                         0);
        assert_int_equal(mbedtls_ecp_copy(&mbedtls_pk_ec(pk)->Q,
                                          &mbedtls_pk_ec(other)->Q),
                         0);
    }
    unsigned char pem[2048];
    assert_int_equal(mbedtls_pk_write_key_pem(&pk, pem, sizeof pem), 0);
    assert_int_equal(fmq_file_write_atomic(path_in(name), pem,
                                           strlen((char *)pem)),
                     FMQ_OK);
    if (!inconsistent) {
        char pubname[128];
        snprintf(pubname, sizeof pubname, "%s.pub", name);
        assert_int_equal(mbedtls_pk_write_pubkey_pem(&pk, pem, sizeof pem), 0);
        assert_int_equal(fmq_file_write_atomic(path_in(pubname), pem,
                                               strlen((char *)pem)),
                         FMQ_OK);
    }
    mbedtls_pk_free(&pk);
    mbedtls_pk_free(&other);
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("FMQ_BUILD");
    snprintf(dir, sizeof dir, "%s/test_trust", b && *b ? b : "build");
    if (fmq_mkdir_p(dir) != FMQ_OK)
        return -1;
    mbedtls_entropy_init(&t_entropy);
    mbedtls_ctr_drbg_init(&t_drbg);
    return mbedtls_ctr_drbg_seed(&t_drbg, mbedtls_entropy_func, &t_entropy,
                                 (const unsigned char *)"test", 4);
}

static int teardown(void **state)
{
    (void)state;
    mbedtls_ctr_drbg_free(&t_drbg);
    mbedtls_entropy_free(&t_entropy);
    return 0;
}

/* ---------------------------------------------------------------- keys */

static void the_key_id_is_16_hex_of_the_sha256_of_the_public_point(void **s)
{
    (void)s;
    fmq_trust_key *k = gen();
    const uint8_t *q = fmq_trust_key_point(k);
    assert_int_equal(q[0], 0x04);
    uint8_t h[32];
    assert_int_equal(mbedtls_sha256_ret(q, FMQ_PUB_LEN, h, 0), 0);
    char want[FMQ_KID_LEN + 1];
    for (int i = 0; i < 8; i++)
        snprintf(want + 2 * i, 3, "%02x", h[i]);
    assert_string_equal(fmq_trust_key_id(k), want);
    assert_true(fmq_id_valid(fmq_trust_key_id(k)));
    fmq_trust_key *p = pub_of(k);
    assert_string_equal(fmq_trust_key_id(p), want);
    assert_true(fmq_trust_key_has_private(k));
    assert_false(fmq_trust_key_has_private(p));
    fmq_trust_key *k2 = gen();
    assert_string_not_equal(fmq_trust_key_id(k2), want);
    fmq_trust_key_destroy(&k);
    fmq_trust_key_destroy(&p);
    fmq_trust_key_destroy(&k2);
    assert_null(k);
    fmq_trust_key_destroy(&k); /* no-op on NULL */
}

static void keys_round_trip_through_pem_files_and_memory(void **s)
{
    (void)s;
    fmq_trust_key *k = gen(), *kp = NULL, *pp = NULL, *pm = NULL;
    fmq_buf priv, pub;
    fmq_buf_init(&priv);
    fmq_buf_init(&pub);
    assert_int_equal(fmq_trust_key_write_pem(k, true, &priv), FMQ_OK);
    assert_int_equal(fmq_trust_key_write_pem(k, false, &pub), FMQ_OK);
    assert_non_null(memmem(priv.data, priv.len, "BEGIN EC PRIVATE KEY", 20));
    assert_non_null(memmem(pub.data, pub.len, "BEGIN PUBLIC KEY", 16));
    assert_int_equal(
        fmq_file_write_atomic(path_in("agg.key"), priv.data, priv.len), FMQ_OK);
    assert_int_equal(
        fmq_file_write_atomic(path_in("agg.pub"), pub.data, pub.len), FMQ_OK);
    assert_int_equal(fmq_trust_key_load_private(path_in("agg.key"), &kp),
                     FMQ_OK);
    assert_int_equal(fmq_trust_key_load_public(path_in("agg.pub"), &pp),
                     FMQ_OK);
    assert_int_equal(fmq_trust_key_parse_public(pub.data, pub.len, &pm),
                     FMQ_OK);
    assert_string_equal(fmq_trust_key_id(kp), fmq_trust_key_id(k));
    assert_string_equal(fmq_trust_key_id(pp), fmq_trust_key_id(k));
    assert_string_equal(fmq_trust_key_id(pm), fmq_trust_key_id(k));
    assert_memory_equal(fmq_trust_key_point(pp), fmq_trust_key_point(k),
                        FMQ_PUB_LEN);
    assert_true(fmq_trust_key_has_private(kp));
    assert_false(fmq_trust_key_has_private(pp));
    /* a public-only key has no private PEM */
    size_t before = pub.len;
    assert_int_equal(fmq_trust_key_write_pem(pp, true, &pub), FMQ_ERR_KEY);
    assert_int_equal(pub.len, before);
    /* what the loaded private key signs, the generated public one verifies */
    fmq_buf env;
    fmq_buf_init(&env);
    assert_int_equal(fmq_trust_sign(kp, NULL, (const uint8_t *)"x", 1, &env),
                     FMQ_OK);
    assert_int_equal(verify1(pm, &env, NULL, NULL), FMQ_OK);
    fmq_buf_fini(&env);
    fmq_buf_fini(&priv);
    fmq_buf_fini(&pub);
    fmq_trust_key_destroy(&k);
    fmq_trust_key_destroy(&kp);
    fmq_trust_key_destroy(&pp);
    fmq_trust_key_destroy(&pm);
}

static void keys_made_elsewhere_on_p256_load(void **s)
{
    (void)s;
    write_mbed_key("mbed256.key", MBEDTLS_ECP_DP_SECP256R1, false);
    fmq_trust_key *k = NULL, *p = NULL;
    assert_int_equal(fmq_trust_key_load_private(path_in("mbed256.key"), &k),
                     FMQ_OK);
    assert_int_equal(fmq_trust_key_load_public(path_in("mbed256.key.pub"), &p),
                     FMQ_OK);
    assert_string_equal(fmq_trust_key_id(k), fmq_trust_key_id(p));
    fmq_trust_key_destroy(&k);
    fmq_trust_key_destroy(&p);
}

static void keys_other_than_p256_or_broken_ones_are_refused(void **s)
{
    (void)s;
    fmq_trust_key *k = (fmq_trust_key *)&k; /* must come back NULL */
    write_mbed_key("p384.key", MBEDTLS_ECP_DP_SECP384R1, false);
    write_mbed_key("k256.key", MBEDTLS_ECP_DP_SECP256K1, false);
    write_mbed_key("mismatch.key", MBEDTLS_ECP_DP_SECP256R1, true);
    assert_int_equal(fmq_trust_key_load_private(path_in("p384.key"), &k),
                     FMQ_ERR_KEY);
    assert_null(k);
    assert_int_equal(fmq_trust_key_load_public(path_in("p384.key.pub"), &k),
                     FMQ_ERR_KEY);
    assert_int_equal(fmq_trust_key_load_private(path_in("k256.key"), &k),
                     FMQ_ERR_KEY);
    assert_int_equal(fmq_trust_key_load_public(path_in("k256.key.pub"), &k),
                     FMQ_ERR_KEY);
    /* a private key whose public point is not d·G */
    assert_int_equal(fmq_trust_key_load_private(path_in("mismatch.key"), &k),
                     FMQ_ERR_KEY);
    /* a private key file is not a public key, nor the other way round */
    write_mbed_key("p256.key", MBEDTLS_ECP_DP_SECP256R1, false);
    assert_int_equal(fmq_trust_key_load_public(path_in("p256.key"), &k),
                     FMQ_ERR_KEY);
    assert_int_equal(fmq_trust_key_load_private(path_in("p256.key.pub"), &k),
                     FMQ_ERR_KEY);
    /* no file, an empty one, garbage, a truncated PEM, a huge file */
    assert_int_equal(fmq_trust_key_load_public(path_in("no-such.pub"), &k),
                     FMQ_ERR_NOTFOUND);
    assert_int_equal(fmq_file_write_atomic(path_in("empty.pub"), "", 0),
                     FMQ_OK);
    assert_int_equal(fmq_trust_key_load_public(path_in("empty.pub"), &k),
                     FMQ_ERR_KEY);
    static const char junk[] = "-----BEGIN PUBLIC KEY-----\nAAAA\n";
    assert_int_equal(fmq_trust_key_parse_public((const uint8_t *)junk,
                                                sizeof junk - 1, &k),
                     FMQ_ERR_KEY);
    assert_int_equal(
        fmq_trust_key_parse_private((const uint8_t *)"\x30\x03\x02\x01\x01", 5,
                                    &k),
        FMQ_ERR_KEY);
    size_t big = FMQ_KEYFILE_MAX + 1;
    uint8_t *huge = calloc(1, big);
    assert_non_null(huge);
    memset(huge, 'A', big);
    assert_int_equal(fmq_file_write_atomic(path_in("huge.pub"), huge, big),
                     FMQ_OK);
    assert_int_equal(fmq_trust_key_load_public(path_in("huge.pub"), &k),
                     FMQ_ERR_TOO_LARGE);
    assert_int_equal(fmq_trust_key_parse_public(huge, big, &k),
                     FMQ_ERR_TOO_LARGE);
    free(huge);
    assert_null(k);
    /* every truncation of a good PEM is refused without a crash */
    fmq_trust_key *g = gen();
    fmq_buf pem;
    fmq_buf_init(&pem);
    assert_int_equal(fmq_trust_key_write_pem(g, true, &pem), FMQ_OK);
    for (size_t n = 0; n + 1 < pem.len; n++) {
        uint8_t *c = dup_bytes(pem.data, n);
        fmq_err e = fmq_trust_key_parse_private(c, n, &k);
        free(c);
        assert_int_equal(e, FMQ_ERR_KEY);
    }
    fmq_buf_fini(&pem);
    fmq_trust_key_destroy(&g);
}

/* -------------------------------------------------------------- signed */

static void a_signed_body_verifies_and_comes_back_in_place(void **s)
{
    (void)s;
    fmq_trust_key *k = gen(), *p = pub_of(k);
    fmq_buf g, env, env2;
    make_global(&g);
    fmq_buf_init(&env);
    fmq_buf_init(&env2);
    assert_int_equal(fmq_trust_sign(k, NULL, g.data, g.len, &env), FMQ_OK);
    /* RFC 6979: the same key and body give the same envelope */
    assert_int_equal(fmq_trust_sign(k, NULL, g.data, g.len, &env2), FMQ_OK);
    assert_int_equal(env.len, env2.len);
    assert_memory_equal(env.data, env2.data, env.len);
    /* the envelope decodes with the codec, kid is the signer's */
    fmq_msg_signed m;
    assert_int_equal(fmq_codec_decode_signed(env.data, env.len, NULL, &m,
                                             NULL),
                     FMQ_OK);
    assert_string_equal(m.kid, fmq_trust_key_id(k));
    const uint8_t *body = NULL;
    size_t body_len = 0;
    assert_int_equal(verify1(p, &env, &body, &body_len), FMQ_OK);
    assert_int_equal(body_len, g.len);
    assert_memory_equal(body, g.data, g.len);
    assert_true(body > env.data && body + body_len <= env.data + env.len);
    /* the private handle verifies too; the right key is found among many */
    fmq_trust_key *o1 = gen(), *o2 = gen();
    const fmq_trust_key *ks[] = {o1, NULL, k, o2};
    assert_int_equal(fmq_trust_verify(ks, 4, env.data, env.len, NULL, &body,
                                      &body_len, NULL),
                     FMQ_OK);
    fmq_buf_fini(&g);
    fmq_buf_fini(&env);
    fmq_buf_fini(&env2);
    fmq_trust_key_destroy(&k);
    fmq_trust_key_destroy(&p);
    fmq_trust_key_destroy(&o1);
    fmq_trust_key_destroy(&o2);
}

/* Re-encode a signed envelope with a change. */
static void resign(const fmq_buf *env, fmq_buf *out, const uint8_t *body,
                   size_t body_len, int sig_flip, const char *kid)
{
    fmq_msg_signed m;
    assert_int_equal(fmq_codec_decode_signed(env->data, env->len, NULL, &m,
                                             NULL),
                     FMQ_OK);
    if (body) {
        m.body = body;
        m.body_len = body_len;
    }
    if (sig_flip >= 0)
        m.sig[sig_flip] ^= 0x01;
    if (kid)
        snprintf(m.kid, sizeof m.kid, "%s", kid);
    fmq_buf_init(out);
    assert_int_equal(fmq_codec_encode_signed(&m, out), FMQ_OK);
}

static void a_changed_body_or_signature_is_refused_as_sig(void **s)
{
    (void)s;
    fmq_trust_key *k = gen(), *p = pub_of(k);
    fmq_buf g, env, bad;
    make_global(&g);
    fmq_buf_init(&env);
    assert_int_equal(fmq_trust_sign(k, NULL, g.data, g.len, &env), FMQ_OK);
    /* every single bit of the body, a sample of positions */
    uint8_t *body = dup_bytes(g.data, g.len);
    for (size_t i = 0; i < g.len; i += 7) {
        body[i] ^= 0x40;
        resign(&env, &bad, body, g.len, -1, NULL);
        assert_int_equal(verify1(p, &bad, NULL, NULL), FMQ_ERR_SIG);
        fmq_buf_fini(&bad);
        body[i] ^= 0x40;
    }
    /* the body cut short, or one byte longer */
    resign(&env, &bad, g.data, g.len - 1, -1, NULL);
    assert_int_equal(verify1(p, &bad, NULL, NULL), FMQ_ERR_SIG);
    fmq_buf_fini(&bad);
    free(body);
    /* every byte of the signature */
    for (int i = 0; i < FMQ_SIG_LEN; i++) {
        resign(&env, &bad, NULL, 0, i, NULL);
        assert_int_equal(verify1(p, &bad, NULL, NULL), FMQ_ERR_SIG);
        fmq_buf_fini(&bad);
    }
    /* r = s = 0 and r = s = 0xff..ff (>= n): out of range, not a crash */
    fmq_msg_signed m;
    assert_int_equal(fmq_codec_decode_signed(env.data, env.len, NULL, &m,
                                             NULL),
                     FMQ_OK);
    for (int v = 0; v < 2; v++) {
        memset(m.sig, v ? 0xff : 0, sizeof m.sig);
        fmq_buf_init(&bad);
        assert_int_equal(fmq_codec_encode_signed(&m, &bad), FMQ_OK);
        assert_int_equal(verify1(p, &bad, NULL, NULL), FMQ_ERR_SIG);
        fmq_buf_fini(&bad);
    }
    fmq_buf_fini(&g);
    fmq_buf_fini(&env);
    fmq_trust_key_destroy(&k);
    fmq_trust_key_destroy(&p);
}

static void another_signer_is_an_unknown_key_or_a_bad_signature(void **s)
{
    (void)s;
    fmq_trust_key *k = gen(), *other = gen(), *p = pub_of(k);
    fmq_buf g, env, forged;
    make_global(&g);
    fmq_buf_init(&env);
    /* signed by a key the device does not hold: its kid is unknown */
    assert_int_equal(fmq_trust_sign(other, NULL, g.data, g.len, &env), FMQ_OK);
    assert_int_equal(verify1(p, &env, NULL, NULL), FMQ_ERR_KEY);
    fmq_codec_detail d;
    const fmq_trust_key *ks[] = {p};
    const uint8_t *b = (const uint8_t *)"x";
    size_t bl = 1;
    assert_int_equal(fmq_trust_verify(ks, 1, env.data, env.len, NULL, &b, &bl,
                                      &d),
                     FMQ_ERR_KEY);
    assert_null(b);
    assert_int_equal(bl, 0);
    assert_non_null(strstr(d.what, fmq_trust_key_id(other)));
    /* ... and under the trusted key's kid it is a bad signature */
    resign(&env, &forged, NULL, 0, -1, fmq_trust_key_id(k));
    assert_int_equal(verify1(p, &forged, NULL, NULL), FMQ_ERR_SIG);
    assert_int_equal(fmq_trust_verify(ks, 1, forged.data, forged.len, NULL, &b,
                                      &bl, &d),
                     FMQ_ERR_SIG);
    assert_non_null(strstr(d.what, "does not verify"));
    fmq_buf_fini(&forged);
    /* an unknown kid that is not even 16 hex characters */
    resign(&env, &forged, NULL, 0, -1, "someone-else");
    assert_int_equal(verify1(p, &forged, NULL, NULL), FMQ_ERR_KEY);
    fmq_buf_fini(&forged);
    fmq_buf_fini(&g);
    fmq_buf_fini(&env);
    fmq_trust_key_destroy(&k);
    fmq_trust_key_destroy(&other);
    fmq_trust_key_destroy(&p);
}

static void an_unsigned_global_is_refused_as_sig(void **s)
{
    (void)s;
    fmq_trust_key *k = gen();
    fmq_buf g;
    make_global(&g);
    fmq_codec_detail d;
    const fmq_trust_key *ks[] = {k};
    const uint8_t *b;
    size_t bl;
    assert_int_equal(fmq_trust_verify(ks, 1, g.data, g.len, NULL, &b, &bl, &d),
                     FMQ_ERR_SIG);
    assert_non_null(strstr(d.what, "unsigned"));
    /* a sealed envelope is not a signed one either */
    fmq_buf u, sealed;
    make_update(&u, "f1", "d1", 1, 8);
    fmq_buf_init(&sealed);
    assert_int_equal(fmq_trust_seal(k, NULL, "f1", "d1", 1, u.data, u.len,
                                    &sealed),
                     FMQ_OK);
    assert_int_equal(verify1(k, &sealed, NULL, NULL), FMQ_ERR_SIG);
    fmq_buf_fini(&g);
    fmq_buf_fini(&u);
    fmq_buf_fini(&sealed);
    fmq_trust_key_destroy(&k);
}

static void malformed_signed_envelopes_get_their_decode_error(void **s)
{
    (void)s;
    fmq_trust_key *k = gen();
    fmq_buf g, env;
    make_global(&g);
    fmq_buf_init(&env);
    assert_int_equal(fmq_trust_sign(k, NULL, g.data, g.len, &env), FMQ_OK);
    const fmq_trust_key *ks[] = {k};
    const uint8_t *b;
    size_t bl;
    assert_int_equal(fmq_trust_verify(ks, 1, env.data, 0, NULL, &b, &bl, NULL),
                     FMQ_ERR_EMPTY);
    assert_int_equal(fmq_trust_verify(ks, 0, env.data, env.len, NULL, &b, &bl,
                                      NULL),
                     FMQ_ERR_INVAL);
    assert_int_equal(fmq_trust_verify(NULL, 1, env.data, env.len, NULL, &b, &bl,
                                      NULL),
                     FMQ_ERR_INVAL);
    /* every truncation: a decode error, never OK, never SIG */
    for (size_t n = 1; n < env.len; n++) {
        fmq_buf t = {.data = env.data, .len = n, .cap = n};
        fmq_err e = verify1(k, &t, NULL, NULL);
        assert_int_not_equal(e, FMQ_OK);
        assert_int_not_equal(e, FMQ_ERR_SIG);
    }
    /* one byte more: trailing */
    fmq_buf longer;
    fmq_buf_init(&longer);
    assert_int_equal(fmq_buf_append(&longer, env.data, env.len), FMQ_OK);
    assert_int_equal(fmq_buf_append(&longer, "\0", 1), FMQ_OK);
    assert_int_equal(verify1(k, &longer, NULL, NULL), FMQ_ERR_TRAILING);
    fmq_buf_fini(&longer);
    /* the low and the high bit of every byte flipped: never accepted */
    uint8_t *c = dup_bytes(env.data, env.len);
    for (size_t i = 0; i < env.len; i++)
        for (int bit = 0; bit < 8; bit += 7) {
            c[i] ^= (uint8_t)(1u << bit);
            fmq_err e = fmq_trust_verify(ks, 1, c, env.len, NULL, &b, &bl,
                                         NULL);
            assert_int_not_equal(e, FMQ_OK);
            c[i] ^= (uint8_t)(1u << bit);
        }
    free(c);
    fmq_buf_fini(&g);
    fmq_buf_fini(&env);
    fmq_trust_key_destroy(&k);
}

static void signing_needs_a_private_key_and_a_body(void **s)
{
    (void)s;
    fmq_trust_key *k = gen(), *p = pub_of(k);
    fmq_buf env;
    fmq_buf_init(&env);
    assert_int_equal(fmq_trust_sign(p, NULL, (const uint8_t *)"x", 1, &env),
                     FMQ_ERR_KEY);
    assert_int_equal(fmq_trust_sign(k, NULL, (const uint8_t *)"x", 0, &env),
                     FMQ_ERR_INVAL);
    assert_int_equal(fmq_trust_sign(NULL, NULL, (const uint8_t *)"x", 1, &env),
                     FMQ_ERR_INVAL);
    assert_int_equal(env.len, 0);
    fmq_buf_fini(&env);
    fmq_trust_key_destroy(&k);
    fmq_trust_key_destroy(&p);
}

/* -------------------------------------------------------------- sealed */

static void a_sealed_update_opens_to_the_same_bytes(void **s)
{
    (void)s;
    fmq_trust_key *k = gen(), *p = pub_of(k);
    fmq_buf u, env, env2, out;
    make_update(&u, "fleet-1", "dev.7", 42, 1000);
    fmq_buf_init(&env);
    fmq_buf_init(&env2);
    assert_int_equal(fmq_trust_seal(p, NULL, "fleet-1", "dev.7", 42, u.data,
                                    u.len, &env),
                     FMQ_OK);
    fmq_msg_sealed m;
    assert_int_equal(fmq_codec_decode_sealed(env.data, env.len, NULL, &m,
                                             NULL),
                     FMQ_OK);
    assert_string_equal(m.kid, fmq_trust_key_id(k));
    assert_int_equal(m.round, 42);
    assert_int_equal(m.epk[0], 0x04);
    assert_int_equal(m.ct_len, u.len + FMQ_TAG_LEN);
    /* out keeps what it held; the update is appended after it */
    fmq_buf_init(&out);
    assert_int_equal(fmq_buf_append(&out, "pre", 3), FMQ_OK);
    uint64_t r = 0;
    uint8_t *c = dup_bytes(env.data, env.len);
    assert_int_equal(fmq_trust_open(k, NULL, "fleet-1", "dev.7", c, env.len,
                                    NULL, &out, &r, NULL),
                     FMQ_OK);
    free(c);
    assert_int_equal(r, 42);
    assert_int_equal(out.len, 3 + u.len);
    assert_memory_equal(out.data, "pre", 3);
    assert_memory_equal(out.data + 3, u.data, u.len);
    /* fresh ephemeral key and iv every time */
    assert_int_equal(fmq_trust_seal(k, NULL, "fleet-1", "dev.7", 42, u.data,
                                    u.len, &env2),
                     FMQ_OK);
    fmq_msg_sealed m2;
    assert_int_equal(fmq_codec_decode_sealed(env2.data, env2.len, NULL, &m2,
                                             NULL),
                     FMQ_OK);
    assert_memory_not_equal(m.epk, m2.epk, FMQ_EPK_LEN);
    assert_memory_not_equal(m.iv, m2.iv, FMQ_IV_LEN);
    /* a one-byte message and the largest ids */
    char id64[65];
    memset(id64, 'z', 64);
    id64[64] = '\0';
    fmq_buf_reset(&env);
    fmq_buf_reset(&out);
    assert_int_equal(fmq_trust_seal(p, NULL, id64, id64, UINT64_MAX,
                                    (const uint8_t *)"!", 1, &env),
                     FMQ_OK);
    assert_int_equal(open1(k, id64, id64, &env, &out), FMQ_OK);
    assert_int_equal(out.len, 1);
    assert_int_equal(out.data[0], '!');
    fmq_buf_fini(&u);
    fmq_buf_fini(&env);
    fmq_buf_fini(&env2);
    fmq_buf_fini(&out);
    fmq_trust_key_destroy(&k);
    fmq_trust_key_destroy(&p);
}

/* Decode a sealed envelope, let f change it, encode it again. */
static void reseal(const fmq_buf *env, fmq_buf *out,
                   void (*f)(fmq_msg_sealed *, uint8_t *ct))
{
    fmq_msg_sealed m;
    assert_int_equal(fmq_codec_decode_sealed(env->data, env->len, NULL, &m,
                                             NULL),
                     FMQ_OK);
    uint8_t *ct = dup_bytes(m.ct, m.ct_len);
    m.ct = ct;
    f(&m, ct);
    fmq_buf_init(out);
    assert_int_equal(fmq_codec_encode_sealed(&m, out), FMQ_OK);
    free(ct);
}

static void next_round(fmq_msg_sealed *m, uint8_t *ct) { (void)ct; m->round++; }
static void flip_ct(fmq_msg_sealed *m, uint8_t *ct) { ct[m->ct_len / 3] ^= 1; }
static void flip_tag(fmq_msg_sealed *m, uint8_t *ct) { ct[m->ct_len - 1] ^= 0x80; }
static void flip_iv(fmq_msg_sealed *m, uint8_t *ct) { (void)ct; m->iv[5] ^= 1; }
static void flip_epk(fmq_msg_sealed *m, uint8_t *ct) { (void)ct; m->epk[64] ^= 1; }
static void cut_ct(fmq_msg_sealed *m, uint8_t *ct) { (void)ct; m->ct_len--; }
static void tag_only(fmq_msg_sealed *m, uint8_t *ct)
{
    memmove(ct, ct + m->ct_len - FMQ_TAG_LEN, FMQ_TAG_LEN);
    m->ct_len = FMQ_TAG_LEN;
}
static void epk_zero(fmq_msg_sealed *m, uint8_t *ct)
{
    (void)ct;
    memset(m->epk + 1, 0, FMQ_EPK_LEN - 1);
}
static void epk_xy_p(fmq_msg_sealed *m, uint8_t *ct)
{
    (void)ct; /* x = y = the field prime: out of range */
    static const uint8_t p[32] = {
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0,
        0,    0,    0,    0,    0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff};
    memcpy(m->epk + 1, p, 32);
    memcpy(m->epk + 33, p, 32);
}

static void an_update_moved_or_changed_does_not_open(void **s)
{
    (void)s;
    fmq_trust_key *k = gen(), *p = pub_of(k);
    fmq_buf u, env, bad, out;
    make_update(&u, "f1", "dev-1", 5, 64);
    fmq_buf_init(&env);
    fmq_buf_init(&out);
    assert_int_equal(fmq_trust_seal(p, NULL, "f1", "dev-1", 5, u.data, u.len,
                                    &env),
                     FMQ_OK);
    assert_int_equal(fmq_buf_append(&out, "keep", 4), FMQ_OK);
    /* another device's topic, another fleet */
    assert_int_equal(open1(k, "f1", "dev-2", &env, &out), FMQ_ERR_SEAL);
    assert_int_equal(open1(k, "f2", "dev-1", &env, &out), FMQ_ERR_SEAL);
    assert_int_equal(open1(k, "f1", "dev-1x", &env, &out), FMQ_ERR_SEAL);
    fmq_codec_detail d;
    uint8_t *c = dup_bytes(env.data, env.len);
    assert_int_equal(fmq_trust_open(k, NULL, "f1", "dev-2", c, env.len, NULL,
                                    &out, NULL, &d),
                     FMQ_ERR_SEAL);
    assert_non_null(strstr(d.what, "dev-2"));
    free(c);
    static const struct {
        void (*f)(fmq_msg_sealed *, uint8_t *);
        fmq_err want;
    } cases[] = {
        {next_round, FMQ_ERR_SEAL}, {flip_ct, FMQ_ERR_SEAL},
        {flip_tag, FMQ_ERR_SEAL},   {flip_iv, FMQ_ERR_SEAL},
        {flip_epk, FMQ_ERR_SEAL},   {cut_ct, FMQ_ERR_SEAL},
        {tag_only, FMQ_ERR_SEAL},   {epk_zero, FMQ_ERR_SEAL},
        {epk_xy_p, FMQ_ERR_SEAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        reseal(&env, &bad, cases[i].f);
        assert_int_equal(open1(k, "f1", "dev-1", &bad, &out), cases[i].want);
        fmq_buf_fini(&bad);
    }
    /* nothing was appended by any refusal */
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "keep", 4);
    fmq_buf_fini(&u);
    fmq_buf_fini(&env);
    fmq_buf_fini(&out);
    fmq_trust_key_destroy(&k);
    fmq_trust_key_destroy(&p);
}

static void epk_not_on_the_curve_is_refused(void **s)
{
    (void)s;
    fmq_trust_key *k = gen();
    fmq_buf u, env, bad, out;
    make_update(&u, "f1", "d", 1, 8);
    fmq_buf_init(&env);
    fmq_buf_init(&out);
    assert_int_equal(fmq_trust_seal(k, NULL, "f1", "d", 1, u.data, u.len, &env),
                     FMQ_OK);
    /* (x, y+1) of a valid point is not on P-256 */
    reseal(&env, &bad, flip_epk);
    fmq_codec_detail d;
    uint8_t *c = dup_bytes(bad.data, bad.len);
    assert_int_equal(fmq_trust_open(k, NULL, "f1", "d", c, bad.len, NULL, &out,
                                    NULL, &d),
                     FMQ_ERR_SEAL);
    assert_non_null(strstr(d.what, "not a point"));
    free(c);
    fmq_buf_fini(&bad);
    /* a compressed or otherwise-prefixed epk is a bad value to the decoder */
    fmq_msg_sealed m;
    assert_int_equal(fmq_codec_decode_sealed(env.data, env.len, NULL, &m, NULL),
                     FMQ_OK);
    m.epk[0] = 0x02;
    fmq_buf_init(&bad);
    assert_int_equal(fmq_codec_encode_sealed(&m, &bad), FMQ_ERR_BAD_VALUE);
    fmq_buf_fini(&bad);
    assert_int_equal(out.len, 0);
    fmq_buf_fini(&u);
    fmq_buf_fini(&env);
    fmq_buf_fini(&out);
    fmq_trust_key_destroy(&k);
}

static void another_private_key_does_not_open(void **s)
{
    (void)s;
    fmq_trust_key *k = gen(), *other = gen(), *p = pub_of(k);
    fmq_buf u, env, out, forged;
    make_update(&u, "f1", "d", 1, 8);
    fmq_buf_init(&env);
    fmq_buf_init(&out);
    assert_int_equal(fmq_trust_seal(p, NULL, "f1", "d", 1, u.data, u.len, &env),
                     FMQ_OK);
    /* its kid differs: KEY */
    assert_int_equal(open1(other, "f1", "d", &env, &out), FMQ_ERR_KEY);
    /* under the other key's kid it still fails to open: SEAL */
    fmq_msg_sealed m;
    assert_int_equal(fmq_codec_decode_sealed(env.data, env.len, NULL, &m, NULL),
                     FMQ_OK);
    snprintf(m.kid, sizeof m.kid, "%s", fmq_trust_key_id(other));
    fmq_buf_init(&forged);
    assert_int_equal(fmq_codec_encode_sealed(&m, &forged), FMQ_OK);
    assert_int_equal(open1(other, "f1", "d", &forged, &out), FMQ_ERR_SEAL);
    /* a public key cannot open anything */
    assert_int_equal(open1(p, "f1", "d", &env, &out), FMQ_ERR_KEY);
    assert_int_equal(out.len, 0);
    fmq_buf_fini(&forged);
    fmq_buf_fini(&u);
    fmq_buf_fini(&env);
    fmq_buf_fini(&out);
    fmq_trust_key_destroy(&k);
    fmq_trust_key_destroy(&other);
    fmq_trust_key_destroy(&p);
}

static void malformed_or_unsealed_payloads_do_not_open(void **s)
{
    (void)s;
    fmq_trust_key *k = gen();
    fmq_buf u, env, out;
    make_update(&u, "f1", "d", 1, 8);
    fmq_buf_init(&env);
    fmq_buf_init(&out);
    assert_int_equal(fmq_trust_seal(k, NULL, "f1", "d", 1, u.data, u.len, &env),
                     FMQ_OK);
    /* a plain update is not sealed */
    assert_int_equal(open1(k, "f1", "d", &u, &out), FMQ_ERR_SEAL);
    /* bad ids from the topic are the caller's mistake */
    assert_int_equal(open1(k, "f1", "a/b", &env, &out), FMQ_ERR_INVAL);
    assert_int_equal(open1(k, "", "d", &env, &out), FMQ_ERR_INVAL);
    fmq_buf empty = {0};
    assert_int_equal(open1(k, "f1", "d", &empty, &out), FMQ_ERR_EMPTY);
    /* every truncation: a decode error, never OK */
    for (size_t n = 1; n < env.len; n++) {
        fmq_buf t = {.data = env.data, .len = n, .cap = n};
        fmq_err e = open1(k, "f1", "d", &t, &out);
        assert_int_not_equal(e, FMQ_OK);
        assert_int_not_equal(e, FMQ_ERR_SEAL);
    }
    /* the low and the high bit of every byte flipped: never opens */
    uint8_t *c = dup_bytes(env.data, env.len);
    for (size_t i = 0; i < env.len; i++)
        for (int bit = 0; bit < 8; bit += 7) {
            c[i] ^= (uint8_t)(1u << bit);
            fmq_err e = fmq_trust_open(k, NULL, "f1", "d", c, env.len, NULL,
                                       &out, NULL, NULL);
            assert_int_not_equal(e, FMQ_OK);
            c[i] ^= (uint8_t)(1u << bit);
        }
    free(c);
    assert_int_equal(out.len, 0);
    /* sealing refuses what no one could open */
    assert_int_equal(fmq_trust_seal(k, NULL, "f/1", "d", 1, u.data, u.len,
                                    &out),
                     FMQ_ERR_INVAL);
    assert_int_equal(fmq_trust_seal(k, NULL, "f1", "d", 1, u.data, 0, &out),
                     FMQ_ERR_INVAL);
    assert_int_equal(out.len, 0);
    fmq_buf_fini(&u);
    fmq_buf_fini(&env);
    fmq_buf_fini(&out);
    fmq_trust_key_destroy(&k);
}

/* ------------------------------------------------- memory and threads */

static long oom_left = -1; /* allocations until failure; < 0 never */
static void *oom_malloc(void *a, size_t n)
{
    (void)a;
    if (oom_left == 0)
        return NULL;
    if (oom_left > 0)
        oom_left--;
    return malloc(n);
}
static void *oom_realloc(void *a, void *p, size_t n)
{
    (void)a;
    if (oom_left == 0)
        return NULL;
    if (oom_left > 0)
        oom_left--;
    return realloc(p, n);
}
static void oom_free(void *a, void *p)
{
    (void)a;
    free(p);
}

static void out_of_memory_anywhere_is_nomem_and_leaves_out_alone(void **s)
{
    (void)s;
    fmq_trust_key *k = gen();
    fmq_buf u, env, sig;
    make_update(&u, "f1", "d", 1, 8);
    fmq_buf_init(&env);
    fmq_buf_init(&sig);
    assert_int_equal(fmq_trust_seal(k, NULL, "f1", "d", 1, u.data, u.len, &env),
                     FMQ_OK);
    assert_int_equal(fmq_trust_sign(k, NULL, u.data, u.len, &sig), FMQ_OK);
    fmq_allocator a = {oom_malloc, oom_realloc, oom_free, NULL};
    fmq_set_allocator(&a);
    int ok[4] = {0};
    for (long n = 0; n < 32; n++) {
        fmq_buf o;
        fmq_trust_key *g = NULL;
        for (int op = 0; op < 4; op++) {
            fmq_buf_init(&o);
            oom_left = n;
            fmq_err e;
            switch (op) {
            case 0: e = fmq_trust_seal(k, NULL, "f1", "d", 1, u.data, u.len, &o); break;
            case 1: e = fmq_trust_open(k, NULL, "f1", "d", env.data, env.len, NULL, &o, NULL, NULL); break;
            case 2: e = fmq_trust_sign(k, NULL, u.data, u.len, &o); break;
            default: e = fmq_trust_key_generate(NULL, &g); break;
            }
            oom_left = -1;
            if (e == FMQ_OK) {
                ok[op]++;
            } else {
                assert_int_equal(e, FMQ_ERR_NOMEM);
                assert_int_equal(o.len, 0);
                assert_null(g);
            }
            fmq_buf_fini(&o);
            fmq_trust_key_destroy(&g);
        }
    }
    fmq_set_allocator(NULL);
    for (int op = 0; op < 4; op++)
        assert_true(ok[op] > 0);
    fmq_buf_fini(&u);
    fmq_buf_fini(&env);
    fmq_buf_fini(&sig);
    fmq_trust_key_destroy(&k);
}

#define THREADS 4
#define PER_THREAD 12
struct worker {
    const fmq_trust_key *key; /* shared by every thread */
    fmq_trust_rng *rng;       /* shared too */
    const fmq_buf *global_env;
    int id, ok;
    uint8_t ivs[PER_THREAD][FMQ_IV_LEN];
};

static void *work(void *arg)
{
    struct worker *w = arg;
    char dev[16];
    snprintf(dev, sizeof dev, "dev-%d", w->id);
    uint8_t msg[200];
    memset(msg, w->id, sizeof msg);
    for (int i = 0; i < PER_THREAD; i++) {
        fmq_buf env, out;
        fmq_buf_init(&env);
        fmq_buf_init(&out);
        const fmq_trust_key *ks[] = {w->key};
        const uint8_t *b;
        size_t bl;
        fmq_msg_sealed m;
        if (fmq_trust_verify(ks, 1, w->global_env->data, w->global_env->len,
                             NULL, &b, &bl, NULL) == FMQ_OK &&
            fmq_trust_seal(w->key, w->rng, "f1", dev, (uint64_t)i, msg,
                           sizeof msg, &env) == FMQ_OK &&
            fmq_trust_open(w->key, w->rng, "f1", dev, env.data, env.len, NULL,
                           &out, NULL, NULL) == FMQ_OK &&
            out.len == sizeof msg && memcmp(out.data, msg, sizeof msg) == 0 &&
            fmq_codec_decode_sealed(env.data, env.len, NULL, &m, NULL) ==
                FMQ_OK) {
            memcpy(w->ivs[i], m.iv, FMQ_IV_LEN);
            w->ok++;
        }
        fmq_buf_fini(&env);
        fmq_buf_fini(&out);
    }
    return NULL;
}

static void one_key_and_one_generator_serve_many_threads(void **s)
{
    (void)s;
    fmq_trust_key *k = gen();
    fmq_trust_rng *rng = NULL;
    assert_int_equal(fmq_trust_rng_new(&rng), FMQ_OK);
    fmq_buf g, env;
    make_global(&g);
    fmq_buf_init(&env);
    assert_int_equal(fmq_trust_sign(k, rng, g.data, g.len, &env), FMQ_OK);
    /* twice: once with the explicit generator, once with the default */
    for (int pass = 0; pass < 2; pass++) {
        static struct worker w[THREADS];
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++) {
            w[i] = (struct worker){.key = k, .rng = pass ? NULL : rng,
                                   .global_env = &env, .id = i};
            assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
        }
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(pthread_join(t[i], NULL), 0);
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(w[i].ok, PER_THREAD);
        /* no two of the ivs drawn concurrently are equal */
        for (int a = 0; a < THREADS * PER_THREAD; a++)
            for (int b = a + 1; b < THREADS * PER_THREAD; b++)
                assert_memory_not_equal(w[a / PER_THREAD].ivs[a % PER_THREAD],
                                        w[b / PER_THREAD].ivs[b % PER_THREAD],
                                        FMQ_IV_LEN);
    }
    fmq_buf_fini(&g);
    fmq_buf_fini(&env);
    fmq_trust_rng_destroy(&rng);
    assert_null(rng);
    fmq_trust_key_destroy(&k);
}

static void a_forked_child_draws_other_random_bytes(void **s)
{
    (void)s;
    fmq_trust_key *k = gen();
    fmq_trust_rng *rng = NULL;
    assert_int_equal(fmq_trust_rng_new(&rng), FMQ_OK);
    for (int pass = 0; pass < 2; pass++) {
        fmq_trust_rng *r = pass ? NULL : rng; /* explicit, then default */
        int fd[2];
        assert_int_equal(pipe(fd), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        uint8_t iv[FMQ_IV_LEN] = {0};
        fmq_buf env;
        fmq_buf_init(&env);
        fmq_msg_sealed m;
        bool ok = fmq_trust_seal(k, r, "f", "d", 1, (const uint8_t *)"x", 1,
                                 &env) == FMQ_OK &&
                  fmq_codec_decode_sealed(env.data, env.len, NULL, &m, NULL) ==
                      FMQ_OK;
        if (ok)
            memcpy(iv, m.iv, sizeof iv);
        fmq_buf_fini(&env);
        if (pid == 0) {
            ssize_t w = write(fd[1], iv, sizeof iv);
            _exit(ok && w == (ssize_t)sizeof iv ? 0 : 1);
        }
        uint8_t child_iv[FMQ_IV_LEN];
        assert_int_equal(read(fd[0], child_iv, sizeof child_iv),
                         (ssize_t)sizeof child_iv);
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        assert_true(ok);
        assert_memory_not_equal(iv, child_iv, sizeof iv);
        close(fd[0]);
        close(fd[1]);
    }
    fmq_trust_rng_destroy(&rng);
    fmq_trust_key_destroy(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_key_id_is_16_hex_of_the_sha256_of_the_public_point),
        cmocka_unit_test(keys_round_trip_through_pem_files_and_memory),
        cmocka_unit_test(keys_made_elsewhere_on_p256_load),
        cmocka_unit_test(keys_other_than_p256_or_broken_ones_are_refused),
        cmocka_unit_test(a_signed_body_verifies_and_comes_back_in_place),
        cmocka_unit_test(a_changed_body_or_signature_is_refused_as_sig),
        cmocka_unit_test(another_signer_is_an_unknown_key_or_a_bad_signature),
        cmocka_unit_test(an_unsigned_global_is_refused_as_sig),
        cmocka_unit_test(malformed_signed_envelopes_get_their_decode_error),
        cmocka_unit_test(signing_needs_a_private_key_and_a_body),
        cmocka_unit_test(a_sealed_update_opens_to_the_same_bytes),
        cmocka_unit_test(an_update_moved_or_changed_does_not_open),
        cmocka_unit_test(epk_not_on_the_curve_is_refused),
        cmocka_unit_test(another_private_key_does_not_open),
        cmocka_unit_test(malformed_or_unsealed_payloads_do_not_open),
        cmocka_unit_test(out_of_memory_anywhere_is_nomem_and_leaves_out_alone),
        cmocka_unit_test(one_key_and_one_generator_serve_many_threads),
        cmocka_unit_test(a_forked_child_draws_other_random_bytes),
    };
    return cmocka_run_group_tests_name("trust", tests, setup, teardown);
}
