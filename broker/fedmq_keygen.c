/*
 * fedmq_keygen.c — keys and broker tokens for a fedmq fleet.
 *
 *   fedmq-keygen key OUT.pem [--pub OUT.pub] [--force]
 *   fedmq-keygen pub KEY.pem
 *   fedmq-keygen kid KEY
 *   fedmq-keygen token --key ISSUER.pem --fleet F --sub ID --role ROLE
 *                      [--ttl S] [--nbf-skew S] [--now T]
 *   fedmq-keygen tokens --key ISSUER.pem --fleet F --role ROLE --count N
 *                      [--prefix P] [--ttl S] [--nbf-skew S] [--now T]
 *                      [--out FILE]
 *
 * Keys are EC P-256 (common/trust.h: the same keys and key ids as the
 * aggregator's signing key, SPEC §7). Tokens are the JWTs the broker
 * plugin (broker/fedmq_auth.c) takes as MQTT passwords: ES256, header kid =
 * the issuer key's id, claims sub, role, fleet, iat, exp and, with
 * --nbf-skew, nbf (broker/README.md, "Tokens"). A private key is written
 * with mode 0600 by write-to-temporary, fsync, rename; so is a token file.
 *
 * Exit status: 0 done, 1 failed (the message names what), 2 usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jwt.h>
#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>

#include "fmq.h"
#include "trust.h"

#define TTL_DEFAULT 86400L
#define TTL_MAX (10L * 365 * 86400)
#define COUNT_MAX 1000000L

static const char usage_text[] =
    "usage: fedmq-keygen COMMAND ...\n"
    "  key OUT.pem [--pub OUT.pub] [--force]\n"
    "        a new EC P-256 private key (PEM, mode 0600) and, with --pub, its\n"
    "        public key; prints the key id. An existing OUT.pem is kept\n"
    "        unless --force.\n"
    "  pub KEY.pem\n"
    "        print the public key of a private key (PEM)\n"
    "  kid KEY\n"
    "        print the key id of a public or private key (SPEC 7: first 8\n"
    "        bytes of SHA-256 of the uncompressed point, hex)\n"
    "  token --key ISSUER.pem --fleet F --sub ID --role ROLE [--ttl S]\n"
    "        [--nbf-skew S] [--now T]\n"
    "        print an ES256 JWT for the broker plugin: the MQTT password of\n"
    "        client id ID. ROLE is device, aggregator (client id\n"
    "        fedmq-agg-F) or dashboard. exp = now + S (default 86400);\n"
    "        --nbf-skew S adds nbf = now + S (negative: valid from S seconds\n"
    "        ago); --now T issues as if the clock read T (Unix seconds).\n"
    "  tokens --key ISSUER.pem --fleet F --role ROLE --count N [--prefix P]\n"
    "        [--ttl S] [--nbf-skew S] [--now T] [--out FILE]\n"
    "        N tokens for client ids P-0000 .. P-(N-1) (P default \"dev\",\n"
    "        fedmq-sim's device ids), lines \"<client id> <token>\", to FILE\n"
    "        (written atomically, mode 0600) or stdout\n"
    "Exit status: 0 done, 1 failed, 2 usage.\n";

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "fedmq-keygen: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

static int failed(const char *what, fmq_err e)
{
    fprintf(stderr, "fedmq-keygen: %s: %s\n", what, fmq_strerror(e));
    return 1;
}

static bool is_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789._-") == n;
}

/* What a key file that trust.h refused (FMQ_ERR_KEY) holds instead, in
 * words an operator can act on. */
static const char *key_diagnose(const char *path, bool want_private,
                                char *why, size_t n)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (fmq_file_read(path, FMQ_KEYFILE_MAX, &buf, &len))
        return "cannot read it";
    uint8_t *z = fmq_realloc(buf, len + 1); /* PEM: NUL counted in length */
    if (!z) {
        mbedtls_platform_zeroize(buf, len);
        fmq_free(buf);
        return "out of memory";
    }
    buf = z;
    buf[len] = 0;
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    bool priv = false;
    int rc = mbedtls_pk_parse_key(&pk, buf, len + 1, NULL, 0);
    if (rc == 0) {
        priv = true;
    } else if (rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED ||
               rc == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
        snprintf(why, n, "an encrypted private key (give it without a "
                 "passphrase)");
    } else {
        mbedtls_pk_free(&pk);
        mbedtls_pk_init(&pk);
        if (mbedtls_pk_parse_public_key(&pk, buf, len + 1))
            snprintf(why, n, "not a PEM or DER key");
        else
            rc = 0;
    }
    if (rc == 0) {
        if (mbedtls_pk_get_type(&pk) != MBEDTLS_PK_ECKEY) {
            snprintf(why, n, "key type %s, not EC P-256", mbedtls_pk_get_name(&pk));
        } else {
            const mbedtls_ecp_curve_info *ci = mbedtls_ecp_curve_info_from_grp_id(
                mbedtls_pk_ec(pk)->grp.id);
            if (mbedtls_pk_ec(pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1)
                snprintf(why, n, "an EC key on curve %s, not P-256 "
                         "(secp256r1)", ci ? ci->name : "(unknown)");
            else if (want_private && !priv)
                snprintf(why, n, "a public key; this needs the private key");
            else
                snprintf(why, n, "an EC P-256 key whose public point does "
                         "not match its private scalar");
        }
    }
    mbedtls_pk_free(&pk);
    mbedtls_platform_zeroize(buf, len);
    fmq_free(buf);
    return why;
}

/* Why a key file did not load. */
static int key_failed(const char *path, fmq_err e, bool want_private)
{
    char buf[160];
    const char *why;
    switch (e) {
    case FMQ_ERR_NOTFOUND: why = "no such file"; break;
    case FMQ_ERR_IO: why = "cannot read it"; break;
    case FMQ_ERR_TOO_LARGE: why = "larger than a key file can be"; break;
    case FMQ_ERR_KEY: why = key_diagnose(path, want_private, buf, sizeof buf); break;
    default: why = fmq_strerror(e); break;
    }
    fprintf(stderr, "fedmq-keygen: %s: %s\n", path, why);
    return 1;
}

static fmq_err load_any(const char *path, fmq_trust_key **k)
{
    fmq_err e = fmq_trust_key_load_public(path, k);
    return e == FMQ_ERR_KEY ? fmq_trust_key_load_private(path, k) : e;
}

/* A whole number option value in [lo, hi]. */
static bool num(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi)
        return false;
    *out = (long)x;
    return true;
}

/* ------------------------------------------------------------ key, pub */
static int cmd_key(int argc, char **argv)
{
    const char *out = NULL, *pub = NULL;
    bool force = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--pub") && i + 1 < argc)
            pub = argv[++i];
        else if (!strcmp(argv[i], "--force"))
            force = true;
        else if (argv[i][0] == '-' || out)
            return usage("key: unknown option or extra argument");
        else
            out = argv[i];
    }
    if (!out)
        return usage("key: OUT.pem is required");
    struct stat st;
    if (!force && stat(out, &st) == 0) {
        fprintf(stderr, "fedmq-keygen: %s exists; keeping it (--force "
                "replaces it)\n", out);
        return 1;
    }
    fmq_trust_key *k = NULL;
    fmq_buf b;
    fmq_buf_init(&b);
    fmq_err e;
    int rc = 1;
    if ((e = fmq_trust_key_generate(NULL, &k))) {
        rc = failed("generating a key", e);
        goto out;
    }
    if ((e = fmq_trust_key_write_pem(k, true, &b)) ||
        (e = fmq_file_write_atomic(out, b.data, b.len))) {
        rc = failed(out, e);
        goto out;
    }
    if (pub) {
        mbedtls_platform_zeroize(b.data, b.len);
        fmq_buf_reset(&b);
        if ((e = fmq_trust_key_write_pem(k, false, &b)) ||
            (e = fmq_file_write_atomic(pub, b.data, b.len))) {
            rc = failed(pub, e);
            goto out;
        }
        if (chmod(pub, 0644))
            fprintf(stderr, "fedmq-keygen: %s: chmod 0644: %s\n", pub,
                    strerror(errno));
    }
    printf("%s\n", fmq_trust_key_id(k));
    rc = 0;
out:
    if (b.data)
        mbedtls_platform_zeroize(b.data, b.len);
    fmq_buf_fini(&b);
    fmq_trust_key_destroy(&k);
    return rc;
}

static int cmd_pub_kid(bool kid, int argc, char **argv)
{
    if (argc != 1 || argv[0][0] == '-')
        return usage(kid ? "kid: one KEY file" : "pub: one KEY.pem file");
    fmq_trust_key *k = NULL;
    fmq_err e = kid ? load_any(argv[0], &k)
                    : fmq_trust_key_load_private(argv[0], &k);
    if (e)
        return key_failed(argv[0], e, !kid);
    int rc = 0;
    if (kid) {
        printf("%s\n", fmq_trust_key_id(k));
    } else {
        fmq_buf b;
        fmq_buf_init(&b);
        if ((e = fmq_trust_key_write_pem(k, false, &b)))
            rc = failed(argv[0], e);
        else if (fwrite(b.data, 1, b.len, stdout) != b.len)
            rc = 1;
        fmq_buf_fini(&b);
    }
    fmq_trust_key_destroy(&k);
    return rc;
}

/* --------------------------------------------------------------- tokens */
typedef struct issuer {
    jwt_t *jwt;  /* header and common claims set; sub changes per token */
} issuer;

/* Prepares is for fleet/role tokens signed by key k. Returns 0 or prints
 * why and returns 1. */
static int issuer_open(issuer *is, const fmq_trust_key *k, const char *fleet,
                       const char *role, long long now, long ttl,
                       bool has_nbf, long nbf_skew)
{
    fmq_buf pem;
    fmq_buf_init(&pem);
    fmq_err e = fmq_trust_key_write_pem(k, true, &pem);
    if (e) {
        fmq_buf_fini(&pem);
        return failed("the issuer key", e);
    }
    int rc = jwt_new(&is->jwt);
    if (!rc)
        rc = jwt_add_header(is->jwt, "kid", fmq_trust_key_id(k));
    if (!rc)
        rc = jwt_add_grant(is->jwt, "fleet", fleet);
    if (!rc)
        rc = jwt_add_grant(is->jwt, "role", role);
    if (!rc)
        rc = jwt_add_grant_int(is->jwt, "iat", (long)now);
    if (!rc)
        rc = jwt_add_grant_int(is->jwt, "exp", (long)(now + ttl));
    if (!rc && has_nbf)
        rc = jwt_add_grant_int(is->jwt, "nbf", (long)(now + nbf_skew));
    if (!rc)
        rc = jwt_set_alg(is->jwt, JWT_ALG_ES256, pem.data, (int)pem.len);
    mbedtls_platform_zeroize(pem.data, pem.len);
    fmq_buf_fini(&pem);
    if (rc) {
        fprintf(stderr, "fedmq-keygen: libjwt: %s\n", strerror(rc));
        return 1;
    }
    return 0;
}

/* A new token for sub (free() it), or NULL after printing why. */
static char *issuer_token(issuer *is, const char *sub)
{
    jwt_del_grants(is->jwt, "sub");
    int rc = jwt_add_grant(is->jwt, "sub", sub);
    char *t = rc ? NULL : jwt_encode_str(is->jwt);
    if (!t)
        fprintf(stderr, "fedmq-keygen: libjwt could not sign a token for "
                "%s: %s\n", sub, strerror(rc ? rc : errno ? errno : EINVAL));
    return t;
}

static void issuer_close(issuer *is)
{
    jwt_free(is->jwt); /* libjwt scrubs the key */
    is->jwt = NULL;
}

static int cmd_tokens(bool batch, int argc, char **argv)
{
    const char *keyp = NULL, *fleet = NULL, *sub = NULL, *role = NULL,
               *prefix = "dev", *out = NULL;
    long ttl = TTL_DEFAULT, nbf_skew = 0, count = -1, now = (long)time(NULL);
    bool has_nbf = false;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v || o[0] != '-' || o[1] != '-')
            return usage(v ? "unexpected argument" : "an option without value");
        i++;
        if (!strcmp(o, "--key")) {
            keyp = v;
        } else if (!strcmp(o, "--fleet")) {
            fleet = v;
        } else if (!strcmp(o, "--role")) {
            role = v;
        } else if (!strcmp(o, "--sub") && !batch) {
            sub = v;
        } else if (!strcmp(o, "--prefix") && batch) {
            prefix = v;
        } else if (!strcmp(o, "--out") && batch) {
            out = v;
        } else if (!strcmp(o, "--count") && batch) {
            if (!num(v, 1, COUNT_MAX, &count))
                return usage("--count: 1..1000000");
        } else if (!strcmp(o, "--ttl")) {
            if (!num(v, 1, TTL_MAX, &ttl))
                return usage("--ttl: seconds, 1..315360000");
        } else if (!strcmp(o, "--nbf-skew")) {
            if (!num(v, -TTL_MAX, TTL_MAX, &nbf_skew))
                return usage("--nbf-skew: seconds, may be negative");
            has_nbf = true;
        } else if (!strcmp(o, "--now")) {
            if (!num(v, 0, 1L << 40, &now))
                return usage("--now: Unix seconds");
        } else {
            fprintf(stderr, "fedmq-keygen: unknown option %s\n", o);
            return usage(NULL);
        }
    }
    if (!keyp || !fleet || !role || (batch ? count < 0 : !sub))
        return usage(batch ? "tokens: --key, --fleet, --role and --count are "
                             "required"
                           : "token: --key, --fleet, --sub and --role are "
                             "required");
    if (!is_id(fleet)) {
        fprintf(stderr, "fedmq-keygen: fleet '%s' is not an id "
                "([A-Za-z0-9._-]{1,64})\n", fleet);
        return 2;
    }
    if (strcmp(role, "device") && strcmp(role, "aggregator") &&
        strcmp(role, "dashboard")) {
        fprintf(stderr, "fedmq-keygen: bad role '%s': device, aggregator or "
                "dashboard\n", role);
        return 2;
    }
    char id[80];
    if (!batch && !is_id(sub)) {
        fprintf(stderr, "fedmq-keygen: sub '%s' is not an id (it is the MQTT "
                "client id and a topic level)\n", sub);
        return 2;
    }
    if (batch) {
        snprintf(id, sizeof id, "%s-%04ld", prefix, count - 1);
        if (strlen(prefix) > 64 || !is_id(id)) {
            fprintf(stderr, "fedmq-keygen: prefix '%s' does not make ids "
                    "(%s)\n", prefix, id);
            return 2;
        }
    } else {
        char agg[80];
        snprintf(agg, sizeof agg, "fedmq-agg-%s", fleet);
        if (!strcmp(role, "aggregator") && strcmp(sub, agg))
            fprintf(stderr, "fedmq-keygen: note: the aggregator's client id "
                    "is %s by convention (SPEC 1), this token is for %s\n",
                    agg, sub);
    }
    fmq_trust_key *k = NULL;
    fmq_err e = fmq_trust_key_load_private(keyp, &k);
    if (e)
        return key_failed(keyp, e, true);
    issuer is = {0};
    int rc = issuer_open(&is, k, fleet, role, now, ttl, has_nbf, nbf_skew);
    fmq_trust_key_destroy(&k);
    if (rc)
        return rc;
    if (!batch) {
        char *t = issuer_token(&is, sub);
        if (t)
            printf("%s\n", t);
        free(t);
        issuer_close(&is);
        return t ? 0 : 1;
    }
    fmq_buf b;
    fmq_buf_init(&b);
    for (long i = 0; i < count && !rc; i++) {
        snprintf(id, sizeof id, "%s-%04ld", prefix, i);
        char *t = issuer_token(&is, id);
        if (!t) {
            rc = 1;
            break;
        }
        if ((e = fmq_buf_append(&b, id, strlen(id))) ||
            (e = fmq_buf_append(&b, " ", 1)) ||
            (e = fmq_buf_append(&b, t, strlen(t))) ||
            (e = fmq_buf_append(&b, "\n", 1)))
            rc = failed("tokens", e);
        free(t);
    }
    issuer_close(&is);
    if (!rc) {
        if (out) {
            if ((e = fmq_file_write_atomic(out, b.data, b.len)))
                rc = failed(out, e);
        } else if (fwrite(b.data, 1, b.len, stdout) != b.len) {
            rc = 1;
        }
    }
    fmq_buf_fini(&b);
    return rc;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
    }
    if (argc < 2)
        return usage(NULL);
    const char *cmd = argv[1];
    int n = argc - 2;
    char **a = argv + 2;
    if (!strcmp(cmd, "key"))
        return cmd_key(n, a);
    if (!strcmp(cmd, "pub"))
        return cmd_pub_kid(false, n, a);
    if (!strcmp(cmd, "kid"))
        return cmd_pub_kid(true, n, a);
    if (!strcmp(cmd, "token"))
        return cmd_tokens(false, n, a);
    if (!strcmp(cmd, "tokens"))
        return cmd_tokens(true, n, a);
    fprintf(stderr, "fedmq-keygen: unknown command '%s'\n", cmd);
    return usage(NULL);
}
