/*
 * trust.c — fedmq's cryptography on mbedTLS 2.28 (see trust.h for the
 * contract, proto/SPEC.md §7 for the wire rules).
 *
 * Every operation loads its own secp256r1 group: mbedTLS caches the
 * generator's comb table inside the group it is given, which would make a
 * shared group (and so a shared key handle) unsafe across threads. Key
 * handles therefore hold only the scalar d and the point Q, read-only.
 *
 * Secrets (ECDH output, derived keys, private scalars, private PEM bytes)
 * are zeroised with mbedtls_platform_zeroize before their storage is
 * released. Nothing is logged but mbedTLS's error code and the operation.
 */
#include "trust.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <mbedtls/asn1.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/gcm.h>
#include <mbedtls/hkdf.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#define TRUST_SEAL_LABEL "fedmq-seal-v1"
#define TRUST_HKDF_INFO "fedmq-seal-v1 aes-256-gcm"
#define TRUST_SCALAR_LEN 32
#define TRUST_KEY_LEN 32
/* "fedmq-seal-v1" 0 fleet 0 device 0 r(8) */
#define TRUST_AAD_MAX (sizeof TRUST_SEAL_LABEL + FMQ_ID_MAX + 1 + FMQ_ID_MAX + 1 + 8)

struct fmq_trust_key {
    bool priv;
    mbedtls_mpi d; /* 0 when !priv */
    mbedtls_ecp_point Q;
    uint8_t pub[FMQ_PUB_LEN];
    char kid[FMQ_KID_LEN + 1];
};

struct fmq_trust_rng {
    pthread_mutex_t mu;
    pid_t pid; /* reseed when getpid() differs: a forked child */
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
};

/* --------------------------------------------------------------- errors */

static fmq_err trust__mb(int ret, const char *what)
{
    switch (ret) {
    case MBEDTLS_ERR_MPI_ALLOC_FAILED:
    case MBEDTLS_ERR_ECP_ALLOC_FAILED:
    case MBEDTLS_ERR_PK_ALLOC_FAILED:
    case MBEDTLS_ERR_MD_ALLOC_FAILED:
    case MBEDTLS_ERR_ASN1_ALLOC_FAILED:
        return FMQ_ERR_NOMEM;
    default:
        fmq_log_err("trust: %s failed (mbedTLS -0x%04x)", what,
                    (unsigned)-ret);
        return FMQ_ERR_CRYPTO;
    }
}

FMQ_PRINTF(3, 4)
static fmq_err trust__fail(fmq_codec_detail *detail, fmq_err e,
                           const char *fmt, ...)
{
    if (detail) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail->what, sizeof detail->what, fmt, ap);
        va_end(ap);
    }
    return e;
}

/* ---------------------------------------------------------------- random */

static int trust__rng_fn(void *p, unsigned char *out, size_t n)
{
    fmq_trust_rng *r = p;
    int ret = 0;
    pthread_mutex_lock(&r->mu);
    pid_t pid = getpid();
    if (pid != r->pid) {
        /* After fork() parent and child hold the same DRBG state; mix in
         * fresh entropy (and the pid) so they part. */
        ret = mbedtls_ctr_drbg_reseed(&r->drbg, (const unsigned char *)&pid,
                                      sizeof pid);
        if (ret == 0)
            r->pid = pid;
    }
    while (ret == 0 && n > 0) {
        size_t k = n < MBEDTLS_CTR_DRBG_MAX_REQUEST ? n
                                                    : MBEDTLS_CTR_DRBG_MAX_REQUEST;
        ret = mbedtls_ctr_drbg_random(&r->drbg, out, k);
        out += k;
        n -= k;
    }
    pthread_mutex_unlock(&r->mu);
    return ret;
}

fmq_err fmq_trust_rng_new(fmq_trust_rng **out)
{
    static const char pers[] = "fedmq trust rng";
    if (!out)
        return FMQ_ERR_INVAL;
    *out = NULL;
    fmq_trust_rng *r = fmq_calloc(1, sizeof *r);
    if (!r)
        return FMQ_ERR_NOMEM;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        fmq_free(r);
        return FMQ_ERR_NOMEM;
    }
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    int ret = mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func,
                                    &r->entropy, (const unsigned char *)pers,
                                    sizeof pers - 1);
    if (ret != 0) {
        fmq_err e = trust__mb(ret, "seeding the random generator");
        fmq_trust_rng_destroy(&r);
        return e;
    }
    r->pid = getpid();
    *out = r;
    return FMQ_OK;
}

void fmq_trust_rng_destroy(fmq_trust_rng **rp)
{
    if (!rp || !*rp)
        return;
    fmq_trust_rng *r = *rp;
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
    pthread_mutex_destroy(&r->mu);
    fmq_free(r);
    *rp = NULL;
}

/* The process-wide generator, made on first use. A failure to make it is
 * not remembered: the next call tries again. */
static pthread_mutex_t trust__default_mu = PTHREAD_MUTEX_INITIALIZER;
static fmq_trust_rng *trust__default_rng;

/* The generator to use: rng, or the process-wide one. */
static fmq_err trust__rng(fmq_trust_rng **rng)
{
    if (*rng)
        return FMQ_OK;
    fmq_err e = FMQ_OK;
    pthread_mutex_lock(&trust__default_mu);
    if (!trust__default_rng)
        e = fmq_trust_rng_new(&trust__default_rng);
    *rng = trust__default_rng;
    pthread_mutex_unlock(&trust__default_mu);
    return e;
}

/* ------------------------------------------------------------------ keys */

static fmq_err trust__group(mbedtls_ecp_group *grp)
{
    mbedtls_ecp_group_init(grp);
    int ret = mbedtls_ecp_group_load(grp, MBEDTLS_ECP_DP_SECP256R1);
    return ret ? trust__mb(ret, "loading P-256") : FMQ_OK;
}

static fmq_trust_key *trust__key_alloc(void)
{
    fmq_trust_key *k = fmq_calloc(1, sizeof *k);
    if (k) {
        mbedtls_mpi_init(&k->d);
        mbedtls_ecp_point_init(&k->Q);
    }
    return k;
}

void fmq_trust_key_destroy(fmq_trust_key **kp)
{
    if (!kp || !*kp)
        return;
    fmq_trust_key *k = *kp;
    mbedtls_mpi_free(&k->d); /* mbedTLS zeroises limbs it frees */
    mbedtls_ecp_point_free(&k->Q);
    mbedtls_platform_zeroize(k, sizeof *k);
    fmq_free(k);
    *kp = NULL;
}

/* Fill pub and kid from Q. */
static fmq_err trust__key_finish(fmq_trust_key *k, const mbedtls_ecp_group *grp)
{
    size_t olen = 0;
    int ret = mbedtls_ecp_point_write_binary(grp, &k->Q,
                                             MBEDTLS_ECP_PF_UNCOMPRESSED,
                                             &olen, k->pub, sizeof k->pub);
    if (ret)
        return trust__mb(ret, "writing a public point");
    if (olen != FMQ_PUB_LEN)
        return FMQ_ERR_KEY;
    uint8_t h[32];
    ret = mbedtls_sha256_ret(k->pub, sizeof k->pub, h, 0);
    if (ret)
        return trust__mb(ret, "SHA-256");
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < FMQ_KID_LEN / 2; i++) {
        k->kid[2 * i] = hex[h[i] >> 4];
        k->kid[2 * i + 1] = hex[h[i] & 15];
    }
    k->kid[FMQ_KID_LEN] = '\0';
    return FMQ_OK;
}

/* A key handle from a parsed pk context: P-256 only; for a private key Q
 * is recomputed from d and must equal the point the file carried. */
static fmq_err trust__key_from_pk(const mbedtls_pk_context *pk, bool priv,
                                  fmq_trust_key **out)
{
    if (!mbedtls_pk_can_do(pk, MBEDTLS_PK_ECKEY))
        return FMQ_ERR_KEY;
    const mbedtls_ecp_keypair *ec = mbedtls_pk_ec(*pk);
    if (!ec || ec->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return FMQ_ERR_KEY;
    fmq_trust_rng *rng = NULL;
    fmq_err e = priv ? trust__rng(&rng) : FMQ_OK;
    if (e)
        return e;
    mbedtls_ecp_group grp;
    e = trust__group(&grp);
    fmq_trust_key *k = e ? NULL : trust__key_alloc();
    if (!e && !k)
        e = FMQ_ERR_NOMEM;
    int ret = 0;
    if (e)
        goto done;
    if ((ret = mbedtls_ecp_copy(&k->Q, &ec->Q)) != 0)
        goto mbed;
    if (mbedtls_ecp_check_pubkey(&grp, &k->Q) != 0) {
        e = FMQ_ERR_KEY;
        goto done;
    }
    if (priv) {
        if (mbedtls_ecp_check_privkey(&grp, &ec->d) != 0) {
            e = FMQ_ERR_KEY;
            goto done;
        }
        if ((ret = mbedtls_mpi_copy(&k->d, &ec->d)) != 0)
            goto mbed;
        mbedtls_ecp_point q;
        mbedtls_ecp_point_init(&q);
        ret = mbedtls_ecp_mul(&grp, &q, &k->d, &grp.G, trust__rng_fn, rng);
        if (ret == 0 && mbedtls_ecp_point_cmp(&q, &k->Q) != 0)
            e = FMQ_ERR_KEY; /* the file's public point is not d·G */
        mbedtls_ecp_point_free(&q);
        if (ret)
            goto mbed;
        if (e)
            goto done;
        k->priv = true;
    }
    e = trust__key_finish(k, &grp);
    goto done;
mbed:
    e = trust__mb(ret, "copying a key");
done:
    mbedtls_ecp_group_free(&grp);
    if (e)
        fmq_trust_key_destroy(&k);
    *out = k;
    return e;
}

static fmq_err trust__parse(const uint8_t *data, size_t len, bool priv,
                            fmq_trust_key **out)
{
    if (!out)
        return FMQ_ERR_INVAL;
    *out = NULL;
    if (!data)
        return FMQ_ERR_INVAL;
    while (len > 0 && data[len - 1] == '\0')
        len--;
    if (len == 0 || len > FMQ_KEYFILE_MAX)
        return len ? FMQ_ERR_TOO_LARGE : FMQ_ERR_KEY;
    /* mbedTLS takes PEM only NUL-terminated (the NUL counted in the
     * length) and DER only without one. */
    bool pem = memmem(data, len, "-----BEGIN", 10) != NULL;
    uint8_t *copy = fmq_malloc(len + 1);
    if (!copy)
        return FMQ_ERR_NOMEM;
    memcpy(copy, data, len);
    copy[len] = '\0';
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    size_t n = pem ? len + 1 : len;
    int ret = priv ? mbedtls_pk_parse_key(&pk, copy, n, NULL, 0)
                   : mbedtls_pk_parse_public_key(&pk, copy, n);
    fmq_err e;
    if (ret == MBEDTLS_ERR_PK_ALLOC_FAILED)
        e = FMQ_ERR_NOMEM;
    else if (ret != 0)
        e = FMQ_ERR_KEY; /* not a key, encrypted, unsupported */
    else
        e = trust__key_from_pk(&pk, priv, out);
    mbedtls_pk_free(&pk);
    mbedtls_platform_zeroize(copy, len + 1);
    fmq_free(copy);
    return e;
}

fmq_err fmq_trust_key_parse_private(const uint8_t *pem, size_t len,
                                    fmq_trust_key **out)
{
    return trust__parse(pem, len, true, out);
}

fmq_err fmq_trust_key_parse_public(const uint8_t *pem, size_t len,
                                   fmq_trust_key **out)
{
    return trust__parse(pem, len, false, out);
}

static fmq_err trust__load(const char *path, bool priv, fmq_trust_key **out)
{
    if (!out)
        return FMQ_ERR_INVAL;
    *out = NULL;
    if (!path)
        return FMQ_ERR_INVAL;
    uint8_t *data = NULL;
    size_t len = 0;
    fmq_err e = fmq_file_read(path, FMQ_KEYFILE_MAX, &data, &len);
    if (e)
        return e;
    e = trust__parse(data, len, priv, out);
    mbedtls_platform_zeroize(data, len);
    fmq_free(data);
    return e;
}

fmq_err fmq_trust_key_load_private(const char *path, fmq_trust_key **out)
{
    return trust__load(path, true, out);
}

fmq_err fmq_trust_key_load_public(const char *path, fmq_trust_key **out)
{
    return trust__load(path, false, out);
}

fmq_err fmq_trust_key_generate(fmq_trust_rng *rng, fmq_trust_key **out)
{
    if (!out)
        return FMQ_ERR_INVAL;
    *out = NULL;
    fmq_err e = trust__rng(&rng);
    if (e)
        return e;
    mbedtls_ecp_group grp;
    if ((e = trust__group(&grp)) != FMQ_OK)
        return e;
    fmq_trust_key *k = trust__key_alloc();
    if (!k) {
        e = FMQ_ERR_NOMEM;
    } else {
        int ret = mbedtls_ecp_gen_keypair(&grp, &k->d, &k->Q, trust__rng_fn,
                                          rng);
        if (ret) {
            e = trust__mb(ret, "generating a key");
        } else {
            k->priv = true;
            e = trust__key_finish(k, &grp);
        }
    }
    mbedtls_ecp_group_free(&grp);
    if (e)
        fmq_trust_key_destroy(&k);
    *out = k;
    return e;
}

fmq_err fmq_trust_key_public_of(const fmq_trust_key *k, fmq_trust_key **out)
{
    if (!out)
        return FMQ_ERR_INVAL;
    *out = NULL;
    if (!k)
        return FMQ_ERR_INVAL;
    fmq_trust_key *p = trust__key_alloc();
    if (!p)
        return FMQ_ERR_NOMEM;
    int ret = mbedtls_ecp_copy(&p->Q, &k->Q);
    if (ret) {
        fmq_trust_key_destroy(&p);
        return trust__mb(ret, "copying a key");
    }
    memcpy(p->pub, k->pub, sizeof p->pub);
    memcpy(p->kid, k->kid, sizeof p->kid);
    *out = p;
    return FMQ_OK;
}

const char *fmq_trust_key_id(const fmq_trust_key *k) { return k->kid; }
const uint8_t *fmq_trust_key_point(const fmq_trust_key *k) { return k->pub; }
bool fmq_trust_key_has_private(const fmq_trust_key *k) { return k->priv; }

fmq_err fmq_trust_key_write_pem(const fmq_trust_key *k, bool private_part,
                                fmq_buf *out)
{
    if (!k || !out)
        return FMQ_ERR_INVAL;
    if (private_part && !k->priv)
        return FMQ_ERR_KEY;
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    unsigned char pem[1024];
    fmq_err e = FMQ_OK;
    int ret = mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0) {
        mbedtls_ecp_keypair *ec = mbedtls_pk_ec(pk);
        ret = mbedtls_ecp_group_load(&ec->grp, MBEDTLS_ECP_DP_SECP256R1);
        if (ret == 0)
            ret = mbedtls_ecp_copy(&ec->Q, &k->Q);
        if (ret == 0 && private_part)
            ret = mbedtls_mpi_copy(&ec->d, &k->d);
    }
    if (ret == 0)
        ret = private_part ? mbedtls_pk_write_key_pem(&pk, pem, sizeof pem)
                           : mbedtls_pk_write_pubkey_pem(&pk, pem, sizeof pem);
    if (ret)
        e = trust__mb(ret, "writing a PEM key");
    else
        e = fmq_buf_append(out, pem, strnlen((const char *)pem, sizeof pem));
    mbedtls_pk_free(&pk);
    mbedtls_platform_zeroize(pem, sizeof pem);
    return e;
}

/* ---------------------------------------------------------------- signed */

fmq_err fmq_trust_sign(const fmq_trust_key *key, fmq_trust_rng *rng,
                       const uint8_t *body, size_t len, fmq_buf *out)
{
    if (!key || !body || !len || !out)
        return FMQ_ERR_INVAL;
    if (!key->priv)
        return FMQ_ERR_KEY;
    fmq_err e = trust__rng(&rng);
    if (e)
        return e;
    uint8_t h[32];
    int ret = mbedtls_sha256_ret(body, len, h, 0);
    if (ret)
        return trust__mb(ret, "SHA-256");
    mbedtls_ecp_group grp;
    if ((e = trust__group(&grp)) != FMQ_OK)
        return e;
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    fmq_msg_signed m;
    memset(&m, 0, sizeof m);
    ret = mbedtls_ecdsa_sign_det_ext(&grp, &r, &s, &key->d, h, sizeof h,
                                     MBEDTLS_MD_SHA256, trust__rng_fn, rng);
    if (ret == 0)
        ret = mbedtls_mpi_write_binary(&r, m.sig, TRUST_SCALAR_LEN);
    if (ret == 0)
        ret = mbedtls_mpi_write_binary(&s, m.sig + TRUST_SCALAR_LEN,
                                       TRUST_SCALAR_LEN);
    if (ret) {
        e = trust__mb(ret, "ECDSA signing");
    } else {
        memcpy(m.kid, key->kid, sizeof key->kid);
        m.body = body;
        m.body_len = len;
        e = fmq_codec_encode_signed(&m, out);
    }
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    mbedtls_ecp_group_free(&grp);
    return e;
}

fmq_err fmq_trust_verify(const fmq_trust_key *const *keys, size_t nkeys,
                         const uint8_t *buf, size_t len,
                         const fmq_codec_limits *lim, const uint8_t **body,
                         size_t *body_len, fmq_codec_detail *detail)
{
    if (detail)
        detail->what[0] = '\0';
    if (body)
        *body = NULL;
    if (body_len)
        *body_len = 0;
    if (!keys || !nkeys || !body || !body_len)
        return trust__fail(detail, FMQ_ERR_INVAL, "no trusted keys");
    fmq_msg_type type = FMQ_MSG_UNKNOWN;
    fmq_err e = fmq_codec_peek(buf, len, lim, &type, detail);
    if (e)
        return e;
    if (type != FMQ_MSG_SIGNED)
        return trust__fail(detail, FMQ_ERR_SIG,
                           "unsigned: a '%s' message, not a signed envelope",
                           fmq_msg_type_name(type));
    fmq_msg_signed m;
    if ((e = fmq_codec_decode_signed(buf, len, lim, &m, detail)) != FMQ_OK)
        return e;
    const fmq_trust_key *k = NULL;
    for (size_t i = 0; i < nkeys && !k; i++)
        if (keys[i] && strcmp(keys[i]->kid, m.kid) == 0)
            k = keys[i];
    if (!k)
        return trust__fail(detail, FMQ_ERR_KEY, "kid %s is not a trusted key",
                           m.kid);
    uint8_t h[32];
    int ret = mbedtls_sha256_ret(m.body, m.body_len, h, 0);
    if (ret)
        return trust__mb(ret, "SHA-256");
    mbedtls_ecp_group grp;
    if ((e = trust__group(&grp)) != FMQ_OK)
        return e;
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    ret = mbedtls_mpi_read_binary(&r, m.sig, TRUST_SCALAR_LEN);
    if (ret == 0)
        ret = mbedtls_mpi_read_binary(&s, m.sig + TRUST_SCALAR_LEN,
                                      TRUST_SCALAR_LEN);
    if (ret == 0)
        ret = mbedtls_ecdsa_verify(&grp, h, sizeof h, &k->Q, &r, &s);
    if (ret == MBEDTLS_ERR_ECP_VERIFY_FAILED ||
        ret == MBEDTLS_ERR_ECP_BAD_INPUT_DATA)
        e = trust__fail(detail, FMQ_ERR_SIG,
                        "signature does not verify with key %s", m.kid);
    else if (ret)
        e = trust__mb(ret, "ECDSA verification");
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    mbedtls_ecp_group_free(&grp);
    if (e == FMQ_OK) {
        *body = m.body;
        *body_len = m.body_len;
    }
    return e;
}

/* ---------------------------------------------------------------- sealed */

/* AAD = "fedmq-seal-v1" 0x00 fleet 0x00 device 0x00 r (8 bytes BE). */
static size_t trust__aad(uint8_t *aad, const char *fleet, const char *device,
                         uint64_t round)
{
    size_t n = 0;
    size_t lf = strlen(fleet), ld = strlen(device);
    memcpy(aad, TRUST_SEAL_LABEL, sizeof TRUST_SEAL_LABEL - 1);
    n += sizeof TRUST_SEAL_LABEL - 1;
    aad[n++] = 0;
    memcpy(aad + n, fleet, lf);
    n += lf;
    aad[n++] = 0;
    memcpy(aad + n, device, ld);
    n += ld;
    aad[n++] = 0;
    for (int i = 7; i >= 0; i--)
        aad[n++] = (uint8_t)(round >> (8 * i));
    return n;
}

/* K = HKDF-SHA256(salt = epk ‖ recipient, IKM = Z = x(d·P), info, 32). */
static fmq_err trust__derive(mbedtls_ecp_group *grp, const mbedtls_mpi *d,
                             const mbedtls_ecp_point *P, const uint8_t *epk,
                             const uint8_t *rpub, fmq_trust_rng *rng,
                             uint8_t key[TRUST_KEY_LEN])
{
    static const char info[] = TRUST_HKDF_INFO;
    uint8_t z[TRUST_SCALAR_LEN], salt[2 * FMQ_PUB_LEN];
    mbedtls_mpi zm;
    mbedtls_mpi_init(&zm);
    int ret = mbedtls_ecdh_compute_shared(grp, &zm, P, d, trust__rng_fn, rng);
    if (ret == 0)
        ret = mbedtls_mpi_write_binary(&zm, z, sizeof z);
    if (ret == 0) {
        memcpy(salt, epk, FMQ_PUB_LEN);
        memcpy(salt + FMQ_PUB_LEN, rpub, FMQ_PUB_LEN);
        ret = mbedtls_hkdf(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), salt,
                           sizeof salt, z, sizeof z,
                           (const unsigned char *)info, sizeof info - 1, key,
                           TRUST_KEY_LEN);
    }
    mbedtls_mpi_free(&zm);
    mbedtls_platform_zeroize(z, sizeof z);
    return ret ? trust__mb(ret, "ECDH key derivation") : FMQ_OK;
}

fmq_err fmq_trust_seal(const fmq_trust_key *recipient, fmq_trust_rng *rng,
                       const char *fleet, const char *device, uint64_t round,
                       const uint8_t *msg, size_t len, fmq_buf *out)
{
    if (!recipient || !fleet || !device || !msg || !len || !out ||
        !fmq_id_valid(fleet) || !fmq_id_valid(device) ||
        len > SIZE_MAX - FMQ_TAG_LEN)
        return FMQ_ERR_INVAL;
    fmq_err e = trust__rng(&rng);
    if (e)
        return e;
    mbedtls_ecp_group grp;
    if ((e = trust__group(&grp)) != FMQ_OK)
        return e;
    mbedtls_mpi d;
    mbedtls_ecp_point Q;
    mbedtls_mpi_init(&d);
    mbedtls_ecp_point_init(&Q);
    mbedtls_gcm_context gcm;
    mbedtls_gcm_init(&gcm);
    fmq_msg_sealed m;
    memset(&m, 0, sizeof m);
    uint8_t key[TRUST_KEY_LEN], aad[TRUST_AAD_MAX];
    uint8_t *ct = NULL;
    size_t olen = 0;
    int ret = mbedtls_ecp_gen_keypair(&grp, &d, &Q, trust__rng_fn, rng);
    if (ret == 0)
        ret = mbedtls_ecp_point_write_binary(&grp, &Q,
                                             MBEDTLS_ECP_PF_UNCOMPRESSED,
                                             &olen, m.epk, sizeof m.epk);
    if (ret) {
        e = trust__mb(ret, "making an ephemeral key");
        goto done;
    }
    e = trust__derive(&grp, &d, &recipient->Q, m.epk, recipient->pub, rng,
                      key);
    if (e)
        goto done;
    if ((ret = trust__rng_fn(rng, m.iv, sizeof m.iv)) != 0) {
        e = trust__mb(ret, "random iv");
        goto done;
    }
    size_t aad_len = trust__aad(aad, fleet, device, round);
    if (!(ct = fmq_malloc(len + FMQ_TAG_LEN))) {
        e = FMQ_ERR_NOMEM;
        goto done;
    }
    ret = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 8 * TRUST_KEY_LEN);
    if (ret == 0)
        ret = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, len, m.iv,
                                        sizeof m.iv, aad, aad_len, msg, ct,
                                        FMQ_TAG_LEN, ct + len);
    if (ret) {
        e = trust__mb(ret, "AES-GCM encryption");
        goto done;
    }
    memcpy(m.kid, recipient->kid, sizeof recipient->kid);
    m.round = round;
    m.ct = ct;
    m.ct_len = len + FMQ_TAG_LEN;
    e = fmq_codec_encode_sealed(&m, out);
done:
    fmq_free(ct);
    mbedtls_gcm_free(&gcm);
    mbedtls_platform_zeroize(key, sizeof key);
    mbedtls_mpi_free(&d);
    mbedtls_ecp_point_free(&Q);
    mbedtls_ecp_group_free(&grp);
    return e;
}

fmq_err fmq_trust_open(const fmq_trust_key *key, fmq_trust_rng *rng,
                       const char *fleet, const char *device,
                       const uint8_t *buf, size_t len,
                       const fmq_codec_limits *lim, fmq_buf *out,
                       uint64_t *round, fmq_codec_detail *detail)
{
    if (detail)
        detail->what[0] = '\0';
    if (!key || !fleet || !device || !out || !fmq_id_valid(fleet) ||
        !fmq_id_valid(device))
        return trust__fail(detail, FMQ_ERR_INVAL,
                           "fleet and device must be ids");
    if (!key->priv)
        return trust__fail(detail, FMQ_ERR_KEY, "key %s has no private part",
                           key->kid);
    fmq_err e = trust__rng(&rng);
    if (e)
        return e;
    fmq_msg_type type = FMQ_MSG_UNKNOWN;
    if ((e = fmq_codec_peek(buf, len, lim, &type, detail)) != FMQ_OK)
        return e;
    if (type != FMQ_MSG_SEALED)
        return trust__fail(detail, FMQ_ERR_SEAL,
                           "unsealed: a '%s' message, not a sealed envelope",
                           fmq_msg_type_name(type));
    fmq_msg_sealed m;
    if ((e = fmq_codec_decode_sealed(buf, len, lim, &m, detail)) != FMQ_OK)
        return e;
    if (strcmp(m.kid, key->kid) != 0)
        return trust__fail(detail, FMQ_ERR_KEY,
                           "sealed to key %s, this key is %s", m.kid, key->kid);
    size_t pt_len = m.ct_len - FMQ_TAG_LEN; /* decoder: ct_len >= 16 */
    /* Room for the plaintext before any work; at least one byte so the
     * output pointer is never NULL. */
    if ((e = fmq_buf_reserve(out, pt_len ? pt_len : 1)) != FMQ_OK)
        return e;
    mbedtls_ecp_group grp;
    if ((e = trust__group(&grp)) != FMQ_OK)
        return e;
    mbedtls_ecp_point P;
    mbedtls_ecp_point_init(&P);
    mbedtls_gcm_context gcm;
    mbedtls_gcm_init(&gcm);
    uint8_t k[TRUST_KEY_LEN], aad[TRUST_AAD_MAX];
    int ret = mbedtls_ecp_point_read_binary(&grp, &P, m.epk, sizeof m.epk);
    if (ret == 0)
        ret = mbedtls_ecp_check_pubkey(&grp, &P);
    if (ret) {
        e = trust__fail(detail, FMQ_ERR_SEAL, "epk is not a point on P-256");
        goto done;
    }
    e = trust__derive(&grp, &key->d, &P, m.epk, key->pub, rng, k);
    if (e)
        goto done;
    size_t aad_len = trust__aad(aad, fleet, device, m.round);
    uint8_t *pt = out->data + out->len;
    ret = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, k, 8 * TRUST_KEY_LEN);
    if (ret == 0)
        ret = mbedtls_gcm_auth_decrypt(&gcm, pt_len, m.iv, sizeof m.iv, aad,
                                       aad_len, m.ct + pt_len, FMQ_TAG_LEN,
                                       m.ct, pt);
    if (ret == MBEDTLS_ERR_GCM_AUTH_FAILED) {
        mbedtls_platform_zeroize(pt, pt_len);
        e = trust__fail(detail, FMQ_ERR_SEAL,
                        "does not open for fleet %s, device %s, round %llu",
                        fleet, device, (unsigned long long)m.round);
    } else if (ret) {
        mbedtls_platform_zeroize(pt, pt_len);
        e = trust__mb(ret, "AES-GCM decryption");
    } else {
        out->len += pt_len;
        if (round)
            *round = m.round;
    }
done:
    mbedtls_gcm_free(&gcm);
    mbedtls_platform_zeroize(k, sizeof k);
    mbedtls_ecp_point_free(&P);
    mbedtls_ecp_group_free(&grp);
    return e;
}
