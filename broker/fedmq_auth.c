/*
 * fedmq_auth.c — a Mosquitto 2.0 plugin (plugin API version 5) that gives
 * every client of a fedmq broker an identity and lets it touch only the
 * topics of proto/SPEC.md §2 that belong to that identity
 * (ARCHITECTURE §8: "a stranger connecting", "a device posing as another").
 *
 * Identity comes from one of two places:
 *   - a JWT given as the MQTT password, ES256 only, signed by the fleet's
 *     issuer key (plugin_opt_issuer_key, up to 4 public keys while one
 *     rotates); its claims say who the client is: sub (= the MQTT client
 *     id), role (device, aggregator, dashboard) and fleet; exp bounds it;
 *   - a client certificate, on a listener with require_certificate true and
 *     use_identity_as_username true (the broker then skips password checks
 *     and puts the certificate's CN in the username), when plugin_opt_mtls
 *     is true: CN fedmq-agg-<fleet> is that fleet's aggregator, CN
 *     dashboard-<name> a dashboard, any other CN a device, of
 *     plugin_opt_mtls_fleet (default plugin_opt_fleet).
 * broker/README.md has the token format, the ACL table and every option.
 *
 * State: one small record per client id that authenticated (role, fleet,
 * which connection), in a hash table. It is kept after the client
 * disconnects, because Mosquitto still asks about the client then: its
 * will is checked (as a write) right after the disconnect event, and
 * messages queued for an offline persistent session are checked (as
 * reads) while it is away. A record is replaced when the id
 * authenticates again (a takeover), and forgotten once its client has been
 * offline for plugin_opt_forget_after seconds (default 8 days, longer than
 * a device's 7-day session). A failed attempt never touches the record of
 * the id it claimed.
 *
 * Every refusal and every denial is one NOTICE line in the broker's log
 * naming the client, its address and the reason, and is counted; the
 * counts are logged when the broker stops. Nothing here logs a token.
 * Mosquitto 2.0 calls plugins from its single main thread: no locking.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>
#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

/* The broker hands out client certificates as OpenSSL X509 pointers that
 * the caller frees with X509_free. The plugin does not include OpenSSL's
 * headers (not a build dependency): the symbol is resolved, like the
 * mosquitto_* ones, from the broker process, which links libcrypto. */
struct x509_st;
void X509_free(struct x509_st *x);

#define ID_MAX 64          /* SPEC §3.3: an id is 1..64 of [A-Za-z0-9._-] */
#define MAX_KEYS 4         /* plugin_opt_issuer_key: a comma list */
#define KEYFILE_MAX 65536  /* a larger key file is refused */
#define PEM_MAX 512        /* a P-256 SubjectPublicKeyInfo PEM is ~180 bytes */
#define LOGSTR_MAX 96      /* client ids, topics, claims in log lines */
#define SWEEP_EVERY 60     /* seconds between sweeps of forgotten clients */

/* ------------------------------------------------------------ refusals */
#define REFUSALS(X)                                                         \
    X(NO_TOKEN, "no token")                                                 \
    X(TOO_LONG, "token too long")                                           \
    X(NO_ID, "bad client id")                                               \
    X(USERNAME, "username != client id")                                    \
    X(MALFORMED, "malformed token")                                         \
    X(BAD_ALG, "bad alg")                                                   \
    X(BAD_SIG, "bad signature")                                             \
    X(CLAIMS, "bad claims")                                                 \
    X(SUB, "sub != client id")                                              \
    X(ROLE, "unknown role")                                                 \
    X(FLEET, "wrong fleet")                                                 \
    X(EXPIRED, "token expired")                                             \
    X(NOT_YET, "token not yet valid")                                       \
    X(NOMEM, "out of memory")

enum refusal {
#define REFUSAL_ENUM(name, str) R_##name,
    REFUSALS(REFUSAL_ENUM)
#undef REFUSAL_ENUM
    R__COUNT
};

static const char *const refusal_str[R__COUNT] = {
#define REFUSAL_STR(name, str) str,
    REFUSALS(REFUSAL_STR)
#undef REFUSAL_STR
};

/* ---------------------------------------------------------------- roles */
enum role { ROLE_DEVICE, ROLE_AGGREGATOR, ROLE_DASHBOARD };
static const char *const role_str[] = {"device", "aggregator", "dashboard"};

/* --------------------------------------------------------------- config */
typedef struct issuer_key {
    char kid[17];           /* SPEC §7: 16 hex characters */
    char pem[PEM_MAX];      /* canonical public PEM, what libjwt verifies with */
    int pem_len;            /* including the NUL (OpenSSL does not need it) */
} issuer_key;

typedef struct config {
    issuer_key keys[MAX_KEYS];
    int nkeys;
    char fleet[ID_MAX + 1];      /* "" = tokens of any fleet */
    char mtls_fleet[ID_MAX + 1]; /* fleet of certificate devices */
    long leeway;                 /* seconds of clock skew allowed for nbf */
    long forget_after;           /* seconds offline before a record goes */
    size_t max_token;            /* bytes */
    bool mtls;
    bool log_ok;
} config;

/* ------------------------------------------------------------- identity */
typedef struct ident {
    struct ident *next;
    const struct mosquitto *client; /* the connection it was made for */
    time_t offline_since;           /* 0 while connected */
    long long exp;                  /* the token's exp; 0: none (certificate) */
    enum role role;
    bool by_cert;
    size_t plen;                    /* strlen(prefix) */
    char id[ID_MAX + 1];
    char fleet[ID_MAX + 1];
    char prefix[sizeof "fedmq//" + ID_MAX]; /* "fedmq/<fleet>/" */
} ident;

static struct {
    mosquitto_plugin_id_t *pid;
    config cfg;
    struct mosquitto_opt *opts; /* a copy of the options given at start */
    int nopts;
    ident **bucket;
    size_t nbucket, count;
    time_t last_sweep;
    const struct mosquitto *gone; /* the client of the last disconnect event */
    unsigned long refused[R__COUNT];
    unsigned long ok_token, ok_cert, denied_write, denied_sub, denied_read,
        denied_noid, forgotten, expired;
} g;

/* ---------------------------------------------------------------- small */
static void plog(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void plog(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    mosquitto_log_printf(level, "fedmq_auth: %s", line);
}

/* A printable copy of s for a log line: bytes outside printable ASCII
 * become '?', at most LOGSTR_MAX characters ("..." marks a cut). */
static const char *clean(char *out, const char *s)
{
    if (!s)
        return "(none)";
    size_t i = 0;
    for (; s[i] && i < LOGSTR_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c >= 0x20 && c < 0x7f && c != '\'' ? (char)c : '?';
    }
    out[i] = '\0';
    if (s[i])
        memcpy(out + i, "...", 4);
    return out;
}

static bool is_id(const char *s)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= ID_MAX ||
            !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return n > 0;
}

static bool starts(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* ---------------------------------------------------------- hash table */
static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static ident **slot(const char *id)
{
    ident **p = &g.bucket[hash_id(id) & (g.nbucket - 1)];
    while (*p && strcmp((*p)->id, id))
        p = &(*p)->next;
    return p;
}

static ident *ident_find(const char *id)
{
    return g.nbucket && id ? *slot(id) : NULL;
}

static bool table_grow(void)
{
    size_t nb = g.nbucket ? g.nbucket * 2 : 256;
    ident **b = calloc(nb, sizeof *b);
    if (!b)
        return false;
    for (size_t i = 0; i < g.nbucket; i++) {
        for (ident *e = g.bucket[i], *nx; e; e = nx) {
            nx = e->next;
            ident **p = &b[hash_id(e->id) & (nb - 1)];
            e->next = *p;
            *p = e;
        }
    }
    free(g.bucket);
    g.bucket = b;
    g.nbucket = nb;
    return true;
}

/* Records (replacing any) the identity of client id for client.
 * Returns the record, or NULL when out of memory (the table is unchanged). */
static ident *ident_put(const struct mosquitto *client, const char *id,
                        enum role role, const char *fleet, bool by_cert)
{
    if (g.count >= g.nbucket && !table_grow() && !g.nbucket)
        return NULL;
    ident **p = slot(id), *e = *p;
    if (!e) {
        if (!(e = calloc(1, sizeof *e)))
            return NULL;
        snprintf(e->id, sizeof e->id, "%s", id);
        *p = e;
        g.count++;
    }
    e->client = client;
    e->offline_since = 0;
    e->exp = 0;
    e->role = role;
    e->by_cert = by_cert;
    snprintf(e->fleet, sizeof e->fleet, "%s", fleet);
    e->plen = (size_t)snprintf(e->prefix, sizeof e->prefix, "fedmq/%s/", fleet);
    return e;
}

/* Forget the records whose client has been offline for forget_after. */
static void sweep(time_t now)
{
    if (now - g.last_sweep < SWEEP_EVERY)
        return;
    g.last_sweep = now;
    for (size_t i = 0; i < g.nbucket; i++) {
        for (ident **p = &g.bucket[i]; *p;) {
            ident *e = *p;
            if (e->offline_since && now - e->offline_since > g.cfg.forget_after) {
                *p = e->next;
                free(e);
                g.count--;
                g.forgotten++;
            } else {
                p = &e->next;
            }
        }
    }
}

static void table_free(void)
{
    for (size_t i = 0; i < g.nbucket; i++) {
        for (ident *e = g.bucket[i], *nx; e; e = nx) {
            nx = e->next;
            free(e);
        }
    }
    free(g.bucket);
    g.bucket = NULL;
    g.nbucket = g.count = 0;
}

/* ----------------------------------------------------------- issuer keys */
/* Loads one P-256 public key from path into k (kid and canonical PEM).
 * On error writes a sentence to err and returns false. */
static bool key_load(const char *path, issuer_key *k, char *err, size_t errn)
{
    bool ok = false;
    unsigned char *buf = NULL;
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errn, "cannot open issuer key %s: %s", path,
                 strerror(errno));
        goto out;
    }
    if (!(buf = malloc(KEYFILE_MAX + 1))) {
        snprintf(err, errn, "out of memory");
        goto out;
    }
    size_t n = fread(buf, 1, KEYFILE_MAX + 1, f);
    if (ferror(f)) {
        snprintf(err, errn, "cannot read issuer key %s", path);
        goto out;
    }
    if (n > KEYFILE_MAX) {
        snprintf(err, errn, "issuer key %s is larger than %d bytes", path,
                 KEYFILE_MAX);
        goto out;
    }
    buf[n] = '\0'; /* mbedTLS wants PEM NUL-terminated, counted in the length */
    int rc = mbedtls_pk_parse_public_key(&pk, buf, n + 1);
    if (rc) {
        mbedtls_pk_free(&pk);
        mbedtls_pk_init(&pk);
        if (mbedtls_pk_parse_key(&pk, buf, n + 1, NULL, 0) == 0)
            snprintf(err, errn,
                     "issuer key %s is a private key: give the broker only "
                     "the public key (fedmq-keygen pub)", path);
        else
            snprintf(err, errn,
                     "issuer key %s is not a PEM or DER public key "
                     "(mbedTLS -0x%04x)", path, (unsigned)-rc);
        goto out;
    }
    if (mbedtls_pk_get_type(&pk) != MBEDTLS_PK_ECKEY ||
        mbedtls_pk_ec(pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1) {
        snprintf(err, errn, "issuer key %s is not an EC P-256 key", path);
        goto out;
    }
    unsigned char pt[65], h[32];
    size_t ptlen = 0;
    const mbedtls_ecp_keypair *ec = mbedtls_pk_ec(pk);
    if (mbedtls_ecp_point_write_binary(&ec->grp, &ec->Q,
                                       MBEDTLS_ECP_PF_UNCOMPRESSED, &ptlen, pt,
                                       sizeof pt) ||
        ptlen != sizeof pt || mbedtls_sha256_ret(pt, sizeof pt, h, 0) ||
        mbedtls_pk_write_pubkey_pem(&pk, (unsigned char *)k->pem,
                                    sizeof k->pem)) {
        snprintf(err, errn, "issuer key %s: cannot encode it", path);
        goto out;
    }
    for (int i = 0; i < 8; i++)
        snprintf(k->kid + 2 * i, 3, "%02x", h[i]);
    k->pem_len = (int)strlen(k->pem);
    ok = true;
out:
    if (f)
        fclose(f);
    free(buf);
    mbedtls_pk_free(&pk);
    return ok;
}

/* --------------------------------------------------------------- options */
static bool opt_bool(const char *v, bool *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
        *out = false;
    else
        return false;
    return true;
}

static bool opt_long(const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

/* Parses the plugin_opt_* options into c. On error logs one line naming the
 * option and returns false. */
static bool config_parse(config *c, struct mosquitto_opt *opts, int n)
{
    char err[2048];
    const char *keys = NULL;
    memset(c, 0, sizeof *c);
    c->leeway = 30;
    c->forget_after = 8 * 86400;
    c->max_token = 4096;
    for (int i = 0; i < n; i++) {
        const char *k = opts[i].key, *v = opts[i].value ? opts[i].value : "";
        long x;
        bool b;
        if (!strcmp(k, "issuer_key")) {
            keys = v;
        } else if (!strcmp(k, "fleet") || !strcmp(k, "mtls_fleet")) {
            if (!is_id(v)) {
                plog(MOSQ_LOG_ERR, "plugin_opt_%s '%s' is not an id "
                     "([A-Za-z0-9._-]{1,64})", k, v);
                return false;
            }
            snprintf(!strcmp(k, "fleet") ? c->fleet : c->mtls_fleet,
                     ID_MAX + 1, "%s", v);
        } else if (!strcmp(k, "leeway")) {
            if (!opt_long(v, 0, 3600, &c->leeway)) {
                plog(MOSQ_LOG_ERR, "plugin_opt_leeway '%s': seconds, 0..3600", v);
                return false;
            }
        } else if (!strcmp(k, "forget_after")) {
            if (!opt_long(v, 60, 365L * 86400, &c->forget_after)) {
                plog(MOSQ_LOG_ERR, "plugin_opt_forget_after '%s': seconds, "
                     "60..31536000", v);
                return false;
            }
        } else if (!strcmp(k, "max_token_bytes")) {
            if (!opt_long(v, 256, 65535, &x)) {
                plog(MOSQ_LOG_ERR, "plugin_opt_max_token_bytes '%s': 256..65535", v);
                return false;
            }
            c->max_token = (size_t)x;
        } else if (!strcmp(k, "mtls") || !strcmp(k, "log_ok")) {
            if (!opt_bool(v, &b)) {
                plog(MOSQ_LOG_ERR, "plugin_opt_%s '%s': true or false", k, v);
                return false;
            }
            *(!strcmp(k, "mtls") ? &c->mtls : &c->log_ok) = b;
        } else {
            plog(MOSQ_LOG_ERR, "unknown option plugin_opt_%s (known: issuer_key, "
                 "fleet, leeway, mtls, mtls_fleet, max_token_bytes, log_ok, "
                 "forget_after)", k);
            return false;
        }
    }
    if (!keys || !*keys) {
        plog(MOSQ_LOG_ERR, "plugin_opt_issuer_key is required: the PEM file of "
             "the fleet's token issuer public key (a comma list of up to %d "
             "while a key rotates)", MAX_KEYS);
        return false;
    }
    const char *p = keys;
    while (*p) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        char path[1024];
        if (len == 0 || len >= sizeof path) {
            plog(MOSQ_LOG_ERR, "plugin_opt_issuer_key: an empty or too long "
                 "path in '%s'", keys);
            return false;
        }
        if (c->nkeys == MAX_KEYS) {
            plog(MOSQ_LOG_ERR, "plugin_opt_issuer_key: more than %d keys",
                 MAX_KEYS);
            return false;
        }
        memcpy(path, p, len);
        path[len] = '\0';
        if (!key_load(path, &c->keys[c->nkeys], err, sizeof err)) {
            plog(MOSQ_LOG_ERR, "%s", err);
            return false;
        }
        for (int j = 0; j < c->nkeys; j++) {
            if (!strcmp(c->keys[j].kid, c->keys[c->nkeys].kid)) {
                plog(MOSQ_LOG_ERR, "plugin_opt_issuer_key: %s is given twice "
                     "(kid %s)", path, c->keys[j].kid);
                return false;
            }
        }
        c->nkeys++;
        p += len;
        if (*p == ',')
            p++;
    }
    if (!c->mtls_fleet[0])
        memcpy(c->mtls_fleet, c->fleet, sizeof c->fleet);
    if (c->mtls && !c->mtls_fleet[0]) {
        plog(MOSQ_LOG_ERR, "plugin_opt_mtls true needs plugin_opt_mtls_fleet "
             "or plugin_opt_fleet: the fleet of devices known by certificate");
        return false;
    }
    if (c->mtls && c->fleet[0] && strcmp(c->fleet, c->mtls_fleet)) {
        plog(MOSQ_LOG_ERR, "plugin_opt_mtls_fleet '%s' is not plugin_opt_fleet "
             "'%s'", c->mtls_fleet, c->fleet);
        return false;
    }
    return true;
}

static void config_log(const config *c)
{
    char kids[MAX_KEYS * 18] = "";
    for (int i = 0; i < c->nkeys; i++) {
        strcat(kids, i ? "," : "");
        strcat(kids, c->keys[i].kid);
    }
    plog(MOSQ_LOG_NOTICE, "tokens ES256 from issuer key%s %s, fleet %s, "
         "leeway %ld s, max %zu bytes; certificates %s%s%s",
         c->nkeys > 1 ? "s" : "", kids, c->fleet[0] ? c->fleet : "any",
         c->leeway, c->max_token, c->mtls ? "on (devices of " : "off",
         c->mtls ? c->mtls_fleet : "", c->mtls ? ")" : "");
}

/* ----------------------------------------------------------- the token */
/* A JSON integer claim of the verified token: true and *v when present and
 * an integer; *present says whether it is there at all. */
static bool claim_int(jwt_t *j, const char *name, bool *present, long long *v)
{
    char *s = jwt_get_grants_json(j, name);
    *present = s != NULL;
    if (!s)
        return false;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    bool ok = !errno && end != s && *end == '\0' &&
              (s[0] == '-' || (s[0] >= '0' && s[0] <= '9'));
    free(s);
    if (ok)
        *v = x;
    return ok;
}

/* base64url (no padding) for each of the three dot-separated parts; the
 * signature may be empty here so that alg "none" is refused as bad alg. */
static bool token_shape(const char *t)
{
    int dots = 0;
    size_t part = 0;
    for (const char *p = t;; p++) {
        char c = *p;
        if (c == '.' || c == '\0') {
            if (part == 0 && dots < 2)
                return false;
            if (c == '\0')
                break;
            if (++dots > 2)
                return false;
            part = 0;
            continue;
        }
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
        part++;
    }
    return dots == 2;
}

typedef struct verdict {
    enum refusal why;
    char detail[256];
    enum role role;
    char fleet[ID_MAX + 1];
    long long exp;
    const char *kid;
} verdict;

#define REFUSE(v, r, ...)                                                   \
    do {                                                                    \
        (v)->why = (r);                                                     \
        snprintf((v)->detail, sizeof (v)->detail, __VA_ARGS__);             \
        goto done;                                                          \
    } while (0)

/* Checks the password token of client id cid. Returns true when it
 * identifies cid (v->role, v->fleet filled), else false with v->why and a
 * detail for the log. */
static bool token_check(const char *cid, const char *tok, verdict *v)
{
    const config *c = &g.cfg;
    jwt_t *j = NULL;
    bool ok = false;
    char cs[LOGSTR_MAX + 4];
    v->why = R__COUNT;
    v->detail[0] = '\0';

    if (!tok || !*tok)
        REFUSE(v, R_NO_TOKEN, "no password");
    size_t len = strnlen(tok, c->max_token + 1);
    if (len > c->max_token)
        REFUSE(v, R_TOO_LONG, "more than %zu bytes", c->max_token);
    if (!token_shape(tok))
        REFUSE(v, R_MALFORMED, "not three base64url parts");
    /* The header first, without a key: its alg must be ES256 before any
     * verification runs (libjwt would verify an HS256 token with the
     * public key's PEM as the HMAC secret). */
    if (jwt_decode(&j, tok, NULL, 0) || !j)
        REFUSE(v, R_MALFORMED, "header or claims are not JSON objects, or "
               "the alg is unknown");
    const char *alg = jwt_get_header(j, "alg");
    if (!alg || strcmp(alg, "ES256"))
        REFUSE(v, R_BAD_ALG, "alg %s; only ES256 is accepted",
               alg ? clean(cs, alg) : "missing");
    const char *kid = jwt_get_header(j, "kid");
    const issuer_key *keys[MAX_KEYS];
    int nk = 0;
    for (int i = 0; i < c->nkeys; i++)
        if (!kid || !strcmp(kid, c->keys[i].kid))
            keys[nk++] = &c->keys[i];
    if (nk == 0)
        REFUSE(v, R_BAD_SIG, "kid %s is not an issuer key", clean(cs, kid));
    jwt_free(j);
    j = NULL;
    for (int i = 0; i < nk && !j; i++) {
        if (jwt_decode(&j, tok, (const unsigned char *)keys[i]->pem,
                       keys[i]->pem_len)) {
            j = NULL;
        } else {
            v->kid = keys[i]->kid;
        }
    }
    if (!j)
        REFUSE(v, R_BAD_SIG, "does not verify with issuer key %s",
               nk == 1 ? keys[0]->kid : "any");
    if (jwt_get_alg(j) != JWT_ALG_ES256) /* the same header, checked again */
        REFUSE(v, R_BAD_ALG, "alg %s", clean(cs, jwt_alg_str(jwt_get_alg(j))));

    const char *sub = jwt_get_grant(j, "sub");
    if (!sub || !is_id(sub))
        REFUSE(v, R_CLAIMS, "sub missing, not a string or not an id");
    if (strcmp(sub, cid))
        REFUSE(v, R_SUB, "sub '%s'", sub);
    const char *role = jwt_get_grant(j, "role");
    int r = -1;
    for (int i = 0; role && i < 3; i++)
        if (!strcmp(role, role_str[i]))
            r = i;
    if (r < 0)
        REFUSE(v, R_ROLE, "role %s", role ? clean(cs, role) : "missing or not a string");
    v->role = (enum role)r;
    const char *fleet = jwt_get_grant(j, "fleet");
    if (!fleet || !is_id(fleet))
        REFUSE(v, R_CLAIMS, "fleet missing, not a string or not an id");
    if (c->fleet[0] && strcmp(fleet, c->fleet))
        REFUSE(v, R_FLEET, "token for fleet '%s', this broker serves '%s'",
               fleet, c->fleet);
    snprintf(v->fleet, sizeof v->fleet, "%s", fleet);
    bool present;
    long long exp = 0, nbf = 0, now = (long long)time(NULL);
    if (!claim_int(j, "exp", &present, &exp))
        REFUSE(v, R_CLAIMS, "exp %s", present ? "not an integer" : "missing");
    if (now >= exp)
        REFUSE(v, R_EXPIRED, "exp %lld, now %lld", exp, now);
    if (!claim_int(j, "nbf", &present, &nbf) && present)
        REFUSE(v, R_CLAIMS, "nbf not an integer");
    if (present && nbf > now + c->leeway)
        REFUSE(v, R_NOT_YET, "nbf %lld, now %lld, leeway %ld s", nbf, now,
               c->leeway);
    v->exp = exp;
    ok = true;
done:
    if (j)
        jwt_free(j);
    return ok;
}

/* ------------------------------------------------------------ callbacks */
static int on_basic_auth(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_basic_auth *ev = event_data;
    const char *cid = mosquitto_client_id(ev->client);
    const char *addr = mosquitto_client_address(ev->client);
    char cs[LOGSTR_MAX + 4], as[LOGSTR_MAX + 4], us[LOGSTR_MAX + 4];
    verdict v;
    memset(&v, 0, sizeof v);
    time_t now = time(NULL);
    g.gone = NULL;
    sweep(now);

    if (!is_id(cid)) {
        v.why = R_NO_ID;
        snprintf(v.detail, sizeof v.detail, "client ids are ids "
                 "([A-Za-z0-9._-]{1,64})");
    } else if (ev->username && ev->username[0] && strcmp(ev->username, cid) &&
               ev->password && ev->password[0]) {
        v.why = R_USERNAME;
        snprintf(v.detail, sizeof v.detail, "username '%s'",
                 clean(us, ev->username));
    } else if (token_check(cid, ev->password, &v)) {
        ident *rec = ident_put(ev->client, cid, v.role, v.fleet, false);
        if (rec)
            rec->exp = v.exp;
        if (!rec) {
            v.why = R_NOMEM;
            v.detail[0] = '\0';
        } else {
            g.ok_token++;
            if (g.cfg.log_ok)
                plog(MOSQ_LOG_INFO, "client '%s' from %s: %s of %s by token "
                     "(issuer key %s, exp %lld)", cid, clean(as, addr),
                     role_str[v.role], v.fleet, v.kid, v.exp);
            return MOSQ_ERR_SUCCESS;
        }
    }
    g.refused[v.why]++;
    plog(MOSQ_LOG_NOTICE, "refused client '%s' from %s: %s%s%s%s",
         clean(cs, cid), clean(as, addr), refusal_str[v.why],
         v.detail[0] ? " (" : "", v.detail, v.detail[0] ? ")" : "");
    return v.why == R_NOMEM ? MOSQ_ERR_NOMEM : MOSQ_ERR_AUTH;
}

/* The identity of a client that reached an ACL check without a token
 * record of its own: on a certificate listener the broker skipped the
 * password check and put the certificate's CN in the username. */
static ident *cert_ident(struct mosquitto *client, const char *cid,
                         char *why, size_t whyn)
{
    if (!g.cfg.mtls) {
        snprintf(why, whyn, "no token identity (plugin_opt_mtls is false)");
        return NULL;
    }
    struct x509_st *cert = mosquitto_client_certificate(client);
    if (!cert) {
        snprintf(why, whyn, "no token identity and no client certificate");
        return NULL;
    }
    X509_free(cert);
    const char *cn = mosquitto_client_username(client);
    char cs[LOGSTR_MAX + 4];
    if (!is_id(cn)) {
        snprintf(why, whyn, "certificate identity '%s' is not an id (set "
                 "use_identity_as_username true)", clean(cs, cn));
        return NULL;
    }
    if (!cid || strcmp(cn, cid)) {
        snprintf(why, whyn, "client id is not the certificate CN '%s' (set "
                 "use_username_as_clientid true on the listener)", cn);
        return NULL;
    }
    enum role role = ROLE_DEVICE;
    const char *fleet = g.cfg.mtls_fleet;
    if (starts(cn, "fedmq-agg-")) {
        role = ROLE_AGGREGATOR;
        fleet = cn + strlen("fedmq-agg-");
        if (!is_id(fleet) || (g.cfg.fleet[0] && strcmp(fleet, g.cfg.fleet))) {
            snprintf(why, whyn, "aggregator certificate for fleet '%s', this "
                     "broker serves '%s'", fleet, g.cfg.fleet);
            return NULL;
        }
    } else if (starts(cn, "dashboard-")) {
        role = ROLE_DASHBOARD;
    }
    ident *e = ident_put(client, cid, role, fleet, true);
    if (!e) {
        snprintf(why, whyn, "out of memory");
        return NULL;
    }
    g.ok_cert++;
    if (g.cfg.log_ok) {
        char as[LOGSTR_MAX + 4];
        plog(MOSQ_LOG_INFO, "client '%s' from %s: %s of %s by certificate",
             cid, clean(as, mosquitto_client_address(client)), role_str[role],
             fleet);
    }
    return e;
}

/* r: the topic or filter after "fedmq/<fleet>/". */
static bool is_under(const char *r, const char *dir)
{
    return starts(r, dir) && r[strlen(dir)] != '\0';
}

/* dir + one level that is an id, or '+' in a filter. */
static bool one_level(const char *r, const char *dir, bool filter)
{
    if (!starts(r, dir))
        return false;
    r += strlen(dir);
    return (filter && !strcmp(r, "+")) || is_id(r);
}

static bool own(const char *r, const char *dir, const char *id)
{
    return starts(r, dir) && !strcmp(r + strlen(dir), id);
}

/* SPEC §2 by role; subscribe filters are checked as text against the same
 * set, so '#' or "fedmq/#" never pass (the fleet level is literal). */
static bool acl_allows(const ident *e, int access, const char *topic)
{
    if (strncmp(topic, e->prefix, e->plen))
        return false;
    const char *r = topic + e->plen;
    bool filter = access == MOSQ_ACL_SUBSCRIBE;
    if (access == MOSQ_ACL_WRITE) {
        switch (e->role) {
        case ROLE_DEVICE:
            return own(r, "update/", e->id) || own(r, "status/", e->id);
        case ROLE_AGGREGATOR:
            return is_under(r, "model/") || !strcmp(r, "metrics") ||
                   !strcmp(r, "aggregator/status");
        case ROLE_DASHBOARD:
            return false;
        }
        return false;
    }
    if (access != MOSQ_ACL_READ && access != MOSQ_ACL_SUBSCRIBE)
        return false;
    switch (e->role) {
    case ROLE_DEVICE:
        return is_under(r, "model/") || !strcmp(r, "aggregator/status");
    case ROLE_AGGREGATOR:
        return one_level(r, "update/", filter) ||
               one_level(r, "status/", filter) || is_under(r, "model/") ||
               !strcmp(r, "metrics") || !strcmp(r, "aggregator/status");
    case ROLE_DASHBOARD:
        return one_level(r, "status/", filter) || !strcmp(r, "metrics") ||
               !strcmp(r, "aggregator/status");
    }
    return false;
}

static const char *access_str(int access)
{
    switch (access) {
    case MOSQ_ACL_WRITE: return "publish";
    case MOSQ_ACL_SUBSCRIBE: return "subscribe";
    case MOSQ_ACL_READ: return "receive";
    default: return "access";
    }
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_acl_check *ev = event_data;
    if (ev->access == MOSQ_ACL_UNSUBSCRIBE)
        return MOSQ_ERR_SUCCESS;
    const char *cid = mosquitto_client_id(ev->client);
    char cs[LOGSTR_MAX + 4], ts[LOGSTR_MAX + 4], why[256];
    /* Mosquitto checks a will as a write right after the disconnect event,
     * in the same pass of its loop (on_tick clears the marker). */
    bool will = ev->client == g.gone && ev->access == MOSQ_ACL_WRITE;
    g.gone = NULL;
    ident *e = ident_find(cid);
    if (e && e->client == ev->client && e->offline_since && !will) {
        /* The record's connection has gone. Mosquitto still asks about its
         * offline session (queued reads, a delayed will), which has no TLS
         * session any more; a client that has one is a new connection that
         * reuses the freed address and came without a password check (by
         * certificate): the old record is not its identity. */
        struct x509_st *cert = mosquitto_client_certificate(ev->client);
        if (cert) {
            X509_free(cert);
            e = NULL;
        }
    }
    if (!e || e->client != ev->client) /* a record of another connection */
        e = cert_ident(ev->client, cid, why, sizeof why);
    if (e && ev->topic && acl_allows(e, ev->access, ev->topic))
        return MOSQ_ERR_SUCCESS;
    if (!e) {
        g.denied_noid++;
        plog(MOSQ_LOG_NOTICE, "denied '%s' %s on %s: %s", clean(cs, cid),
             access_str(ev->access), clean(ts, ev->topic), why);
        return MOSQ_ERR_ACL_DENIED;
    }
    if (ev->access == MOSQ_ACL_WRITE)
        g.denied_write++;
    else if (ev->access == MOSQ_ACL_SUBSCRIBE)
        g.denied_sub++;
    else
        g.denied_read++;
    plog(MOSQ_LOG_NOTICE, "denied '%s' (%s of %s) %s on %s", clean(cs, cid),
         role_str[e->role], e->fleet, access_str(ev->access),
         clean(ts, ev->topic));
    return MOSQ_ERR_ACL_DENIED;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_disconnect *ev = event_data;
    time_t now = time(NULL);
    ident *e = ident_find(mosquitto_client_id(ev->client));
    if (e && e->client == ev->client) /* not a record of a newer takeover */
        e->offline_since = now ? now : 1;
    g.gone = ev->client;
    sweep(now);
    return MOSQ_ERR_SUCCESS;
}

/* The end of each pass of the broker's main loop: a client freed after a
 * disconnect is reused at the earliest in a later pass, so the will marker
 * is cleared here; the sweep of forgotten clients is rate-limited. */
/* A connection outlives the check at connect; once its token's exp has
 * passed, the client is disconnected (its will goes out) and a reconnect
 * with the same token is refused as expired. Checked once a second; the
 * ids are collected first because a kick runs the disconnect event, which
 * may sweep the table. */
static void expire(time_t now)
{
    static time_t last;
    if (now == last)
        return;
    last = now;
    enum { MAXK = 64 };
    char ids[MAXK][ID_MAX + 1];
    long long exps[MAXK];
    int n = 0;
    for (size_t i = 0; i < g.nbucket && n < MAXK; i++)
        for (ident *e = g.bucket[i]; e && n < MAXK; e = e->next)
            if (!e->offline_since && e->exp && (long long)now >= e->exp) {
                snprintf(ids[n], sizeof ids[n], "%s", e->id);
                exps[n++] = e->exp;
                e->exp = 0; /* once */
            }
    for (int i = 0; i < n; i++) {
        g.expired++;
        plog(MOSQ_LOG_NOTICE, "disconnected client '%s': token expired (exp "
             "%lld, now %lld)", ids[i], exps[i], (long long)now);
        mosquitto_kick_client_by_clientid(ids[i], true);
    }
}

static int on_tick(int event, void *event_data, void *userdata)
{
    g.gone = NULL;
    time_t now = time(NULL);
    expire(now);
    sweep(now);
    return MOSQ_ERR_SUCCESS;
}

/* SIGHUP. Mosquitto 2.0 passes no options with the event and keeps the
 * plugin loaded, so the options given at start are parsed again: the key
 * files are read again (a rotated key file takes effect), and a file that
 * is now missing or bad keeps the configuration as it was. */
static int on_reload(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_reload *ev = event_data;
    config c;
    bool given = ev && ev->option_count > 0;
    if (!config_parse(&c, given ? ev->options : g.opts,
                      given ? ev->option_count : g.nopts)) {
        plog(MOSQ_LOG_ERR, "reload: refused (above); keeping the previous "
             "configuration");
        return MOSQ_ERR_SUCCESS;
    }
    g.cfg = c;
    plog(MOSQ_LOG_NOTICE, "reloaded");
    config_log(&g.cfg);
    return MOSQ_ERR_SUCCESS;
}

static void opts_free(void)
{
    for (int i = 0; i < g.nopts; i++) {
        free(g.opts[i].key);
        free(g.opts[i].value);
    }
    free(g.opts);
    g.opts = NULL;
    g.nopts = 0;
}

static bool opts_copy(const struct mosquitto_opt *o, int n)
{
    if (n <= 0)
        return true;
    if (!(g.opts = calloc((size_t)n, sizeof *g.opts)))
        return false;
    for (; g.nopts < n; g.nopts++) {
        struct mosquitto_opt *d = &g.opts[g.nopts];
        d->key = strdup(o[g.nopts].key ? o[g.nopts].key : "");
        d->value = strdup(o[g.nopts].value ? o[g.nopts].value : "");
        if (!d->key || !d->value) {
            g.nopts++;
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------ the plugin */
static const struct {
    int event;
    MOSQ_FUNC_generic_callback fn;
} events[] = {
    {MOSQ_EVT_BASIC_AUTH, on_basic_auth},
    {MOSQ_EVT_ACL_CHECK, on_acl_check},
    {MOSQ_EVT_DISCONNECT, on_disconnect},
    {MOSQ_EVT_RELOAD, on_reload},
    {MOSQ_EVT_TICK, on_tick},
};
#define NEVENTS (sizeof events / sizeof events[0])

int mosquitto_plugin_version(int supported_version_count,
                             const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++)
        if (supported_versions[i] == 5)
            return 5;
    return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *options, int option_count)
{
    memset(&g, 0, sizeof g);
    if (!config_parse(&g.cfg, options, option_count)) {
        plog(MOSQ_LOG_ERR, "not started: fix the plugin_opt_* lines above");
        return MOSQ_ERR_INVAL;
    }
    if (!table_grow() || !opts_copy(options, option_count)) {
        plog(MOSQ_LOG_ERR, "not started: out of memory");
        opts_free();
        table_free();
        return MOSQ_ERR_NOMEM;
    }
    g.pid = identifier;
    for (size_t i = 0; i < NEVENTS; i++) {
        int rc = mosquitto_callback_register(identifier, events[i].event,
                                             events[i].fn, NULL, NULL);
        if (rc) {
            plog(MOSQ_LOG_ERR, "not started: registering event %d: %s",
                 events[i].event, mosquitto_strerror(rc));
            for (size_t j = 0; j < i; j++)
                mosquitto_callback_unregister(identifier, events[j].event,
                                              events[j].fn, NULL);
            opts_free();
            table_free();
            return rc;
        }
    }
    config_log(&g.cfg);
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options,
                             int option_count)
{
    char line[768] = "";
    size_t n = 0;
    unsigned long total = 0;
    for (int i = 0; i < R__COUNT; i++) {
        total += g.refused[i];
        if (g.refused[i] && n < sizeof line)
            n += (size_t)snprintf(line + n, sizeof line - n, "%s%s %lu",
                                  n ? ", " : "", refusal_str[i], g.refused[i]);
    }
    plog(MOSQ_LOG_NOTICE, "summary: accepted %lu by token, %lu by "
         "certificate; refused %lu%s%s; denied %lu publish, %lu subscribe, "
         "%lu receive, %lu without identity; %zu known clients",
         g.ok_token, g.ok_cert, total, total ? ": " : "", line, g.denied_write,
         g.denied_sub, g.denied_read, g.denied_noid, g.count);
    if (g.expired)
        plog(MOSQ_LOG_NOTICE, "summary: %lu connections closed when their "
             "token expired", g.expired);
    if (g.pid)
        for (size_t i = 0; i < NEVENTS; i++)
            mosquitto_callback_unregister(g.pid, events[i].event, events[i].fn,
                                          NULL);
    table_free();
    opts_free();
    return MOSQ_ERR_SUCCESS;
}
