/*
 * conf.c — the key table, the file and argv parsers and --help.
 *
 * Every load writes into a staging copy of the values (c->stage) and only
 * a load that succeeds as a whole is committed, so a bad line 40 does not
 * leave lines 1..39 applied. A value is copied first and parsed from the
 * copy, which gives the NUL-terminated text strtoll/strtod want.
 */
#include "conf.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct conf__val {
    char *text; /* owned; NULL = unset (or, in stage, untouched) */
    union {
        int64_t i;
        uint64_t u;
        double d;
        bool b;
    } v;
    bool set; /* given in a file or a flag */
} conf__val;

struct fmq_conf {
    const fmq_conf_key *keys; /* borrowed, (nkeys,) */
    size_t nkeys;
    conf__val *vals;  /* (nkeys,) current settings */
    conf__val *stage; /* (nkeys,) the load in progress */
    char err[1024];
};

static bool conf__is_key_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
}

static bool conf__is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

static void conf__fail(fmq_conf *c, const char *fmt, ...) FMQ_PRINTF(2, 3);
static void conf__fail(fmq_conf *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
}

/* The key named s[0..len), where a '-' in s (from a flag) matches a '_' in
 * the name when dash_ok. -1 when none. */
static ptrdiff_t conf__find(const fmq_conf *c, const char *s, size_t len,
                            bool dash_ok)
{
    for (size_t k = 0; k < c->nkeys; k++) {
        const char *n = c->keys[k].name;
        size_t j = 0;
        for (; j < len && n[j]; j++) {
            char ch = s[j] == '-' && dash_ok ? '_' : s[j];
            if (ch != n[j])
                break;
        }
        if (j == len && n[j] == '\0')
            return (ptrdiff_t)k;
    }
    return -1;
}

static size_t conf__index(const fmq_conf *c, const char *name)
{
    assert(c && name);
    ptrdiff_t k = conf__find(c, name, strlen(name), false);
    assert(k >= 0 && "fmq_conf: no such key");
    return (size_t)k;
}

/* Parse text as a value of key; on FMQ_ERR_CONFIG the reason is in c->err
 * prefixed with where ("file:3: " or "--flag: "). */
static fmq_err conf__parse(fmq_conf *c, const fmq_conf_key *key,
                           const char *text, const char *where, conf__val *out)
{
    const char *name = key->name;
    if (*text == '\0' && !(key->type == FMQ_CONF_STR && key->empty_ok)) {
        conf__fail(c, "%s%s needs a value", where, name);
        return FMQ_ERR_CONFIG;
    }
    char *end = NULL;
    double as_d = 0;
    errno = 0;
    switch (key->type) {
    case FMQ_CONF_STR:
        return FMQ_OK;
    case FMQ_CONF_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (size_t i = 0; i < 4; i++) {
            if (strcasecmp(text, yes[i]) == 0) {
                out->v.b = true;
                return FMQ_OK;
            }
            if (strcasecmp(text, no[i]) == 0) {
                out->v.b = false;
                return FMQ_OK;
            }
        }
        conf__fail(c,
                   "%s%s: '%s' is not a boolean (true/false, yes/no, on/off, "
                   "1/0)",
                   where, name, text);
        return FMQ_ERR_CONFIG;
    }
    case FMQ_CONF_INT:
        out->v.i = strtoll(text, &end, 10);
        as_d = (double)out->v.i;
        break;
    case FMQ_CONF_UINT:
        /* strtoull takes "-1" as UINT64_MAX; a sign is never meant here */
        if (*text == '-' || *text == '+') {
            conf__fail(c, "%s%s: '%s' is not an unsigned integer", where, name,
                       text);
            return FMQ_ERR_CONFIG;
        }
        out->v.u = strtoull(text, &end, 10);
        as_d = (double)out->v.u;
        break;
    case FMQ_CONF_DOUBLE:
        out->v.d = strtod(text, &end);
        as_d = out->v.d;
        /* ERANGE on underflow gives a tiny or zero result: take it */
        if (errno == ERANGE && fabs(as_d) <= 1.0)
            errno = 0;
        break;
    default:
        assert(0 && "fmq_conf: bad type");
        return FMQ_ERR_INVAL;
    }
    bool is_int = key->type != FMQ_CONF_DOUBLE;
    if (end == text || *end != '\0' || conf__is_space(*text) ||
        (!is_int && !isfinite(as_d))) {
        conf__fail(c, "%s%s: '%s' is not %s", where, name, text,
                   is_int ? (key->type == FMQ_CONF_UINT ? "an unsigned integer"
                                                        : "an integer")
                          : "a finite number");
        return FMQ_ERR_CONFIG;
    }
    if (errno == ERANGE) {
        conf__fail(c, "%s%s: '%s' does not fit in a %s", where, name, text,
                   key->type == FMQ_CONF_INT    ? "64-bit integer"
                   : key->type == FMQ_CONF_UINT ? "64-bit unsigned integer"
                                                : "double");
        return FMQ_ERR_CONFIG;
    }
    if (key->min < key->max && (as_d < key->min || as_d > key->max)) {
        conf__fail(c, "%s%s: '%s' is out of range [%.15g, %.15g]", where, name,
                   text, key->min, key->max);
        return FMQ_ERR_CONFIG;
    }
    return FMQ_OK;
}

/* Stage value[0..len) for key k. */
static fmq_err conf__stage(fmq_conf *c, size_t k, const char *value, size_t len,
                           const char *where)
{
    char *text = fmq_malloc(len + 1);
    if (!text) {
        conf__fail(c, "out of memory");
        return FMQ_ERR_NOMEM;
    }
    memcpy(text, value, len);
    text[len] = '\0';
    conf__val v = {.text = text, .set = true};
    fmq_err e = conf__parse(c, &c->keys[k], text, where, &v);
    if (e != FMQ_OK) {
        fmq_free(text);
        return e;
    }
    fmq_free(c->stage[k].text);
    c->stage[k] = v;
    return FMQ_OK;
}

static void conf__stage_drop(fmq_conf *c)
{
    for (size_t k = 0; k < c->nkeys; k++) {
        fmq_free(c->stage[k].text);
        c->stage[k] = (conf__val){0};
    }
}

static void conf__stage_commit(fmq_conf *c)
{
    for (size_t k = 0; k < c->nkeys; k++) {
        if (!c->stage[k].text)
            continue;
        fmq_free(c->vals[k].text);
        c->vals[k] = c->stage[k];
        c->stage[k] = (conf__val){0};
    }
}

/* ------------------------------------------------------------ the table */

static const char *const conf__type_name[] = {
    "string", "integer", "unsigned integer", "number", "boolean"};

/* keys[0..k) are valid; is keys[k].name among them? */
static bool conf__declared_before(const fmq_conf_key *keys, size_t k)
{
    for (size_t j = 0; j < k; j++)
        if (strcmp(keys[j].name, keys[k].name) == 0)
            return true;
    return false;
}

fmq_err fmq_conf_new(const fmq_conf_key *keys, size_t nkeys, fmq_conf **out)
{
    assert(out && (keys || nkeys == 0));
    *out = NULL;
    fmq_conf *c = fmq_calloc(1, sizeof *c);
    if (!c)
        return FMQ_ERR_NOMEM;
    c->keys = keys;
    c->nkeys = nkeys;
    /* vals and stage in one allocation */
    c->vals = fmq_calloc(nkeys ? 2 * nkeys : 1, sizeof *c->vals);
    if (!c->vals) {
        fmq_free(c);
        return FMQ_ERR_NOMEM;
    }
    c->stage = c->vals + nkeys;
    fmq_err e = FMQ_OK;
    for (size_t k = 0; k < nkeys && e == FMQ_OK; k++) {
        const fmq_conf_key *key = &keys[k];
        const char *n = key->name;
        size_t len = n ? strlen(n) : 0;
        bool ok = len > 0;
        for (size_t j = 0; j < len; j++)
            ok = ok && conf__is_key_char(n[j]);
        if (!ok) {
            fmq_log_err("conf: key %zu: bad name '%s' (want [a-z0-9_]+)", k,
                        n ? n : "(null)");
            e = FMQ_ERR_INVAL;
        } else if (strcmp(n, "config") == 0 || strcmp(n, "help") == 0) {
            fmq_log_err("conf: key '%s' is reserved for the command line", n);
            e = FMQ_ERR_INVAL;
        } else if (conf__declared_before(keys, k)) {
            fmq_log_err("conf: key '%s' declared twice", n);
            e = FMQ_ERR_INVAL;
        } else if ((unsigned)key->type > FMQ_CONF_BOOL) {
            fmq_log_err("conf: key '%s': unknown type %d", n, (int)key->type);
            e = FMQ_ERR_INVAL;
        } else if (key->def) {
            e = conf__stage(c, k, key->def, strlen(key->def), "default of ");
            if (e == FMQ_ERR_CONFIG) {
                fmq_log_err("conf: %s", c->err);
                e = FMQ_ERR_INVAL;
            }
        }
    }
    if (e != FMQ_OK) {
        conf__stage_drop(c);
        fmq_conf_destroy(&c);
        return e;
    }
    conf__stage_commit(c);
    for (size_t k = 0; k < nkeys; k++)
        c->vals[k].set = false; /* defaults are not "given" */
    c->err[0] = '\0';
    *out = c;
    return FMQ_OK;
}

void fmq_conf_destroy(fmq_conf **cp)
{
    if (!cp || !*cp)
        return;
    fmq_conf *c = *cp;
    for (size_t k = 0; k < 2 * c->nkeys; k++)
        fmq_free(c->vals[k].text);
    fmq_free(c->vals);
    fmq_free(c);
    *cp = NULL;
}

/* ------------------------------------------------------------- the file */

/* Stage every line of text[0..len); name is the file name for errors. */
static fmq_err conf__stage_text(fmq_conf *c, const char *text, size_t len,
                                const char *name)
{
    const char *p = text, *end = text + len;
    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    for (unsigned line = 1; p < end; line++) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        if (!eol)
            eol = end;
        size_t n = (size_t)(eol - p);
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (n > FMQ_CONF_LINE_MAX) {
            conf__fail(c, "%s:%u: line longer than %d bytes", name, line,
                       FMQ_CONF_LINE_MAX);
            return FMQ_ERR_CONFIG;
        }
        if (memchr(p, '\0', n)) {
            conf__fail(c, "%s:%u: NUL byte in line", name, line);
            return FMQ_ERR_CONFIG;
        }
        const char *s = p, *e = p + n;
        p = next;
        while (s < e && conf__is_space(*s))
            s++;
        while (e > s && conf__is_space(e[-1]))
            e--;
        if (s == e || *s == '#')
            continue;
        const char *k = s;
        while (s < e && !conf__is_space(*s))
            s++;
        size_t klen = (size_t)(s - k);
        for (size_t j = 0; j < klen; j++) {
            if (!conf__is_key_char(k[j])) {
                conf__fail(c, "%s:%u: '%.*s' is not a key (want [a-z0-9_]+)",
                           name, line, (int)klen, k);
                return FMQ_ERR_CONFIG;
            }
        }
        ptrdiff_t ki = conf__find(c, k, klen, false);
        if (ki < 0) {
            conf__fail(c, "%s:%u: unknown key '%.*s'", name, line, (int)klen,
                       k);
            return FMQ_ERR_CONFIG;
        }
        while (s < e && conf__is_space(*s))
            s++;
        char where[512];
        snprintf(where, sizeof where, "%s:%u: ", name, line);
        fmq_err err = conf__stage(c, (size_t)ki, s, (size_t)(e - s), where);
        if (err != FMQ_OK)
            return err;
    }
    return FMQ_OK;
}

static fmq_err conf__stage_file(fmq_conf *c, const char *path)
{
    assert(path);
    FILE *f = fopen(path, "rb");
    if (!f) {
        conf__fail(c, "%s: %s", path, strerror(errno));
        return FMQ_ERR_IO;
    }
    fmq_buf b;
    fmq_buf_init(&b);
    fmq_err e = FMQ_OK;
    for (;;) {
        if (b.len > FMQ_CONF_FILE_MAX) {
            conf__fail(c, "%s: larger than %u bytes", path,
                       (unsigned)FMQ_CONF_FILE_MAX);
            e = FMQ_ERR_CONFIG;
            goto done;
        }
        if ((e = fmq_buf_reserve(&b, 4096)) != FMQ_OK) {
            conf__fail(c, "out of memory");
            goto done;
        }
        size_t n = fread(b.data + b.len, 1, b.cap - b.len, f);
        b.len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        conf__fail(c, "%s: %s", path, strerror(errno));
        e = FMQ_ERR_IO;
        goto done;
    }
    e = conf__stage_text(c, (const char *)b.data, b.len, path);
done:
    fmq_buf_fini(&b);
    fclose(f);
    return e;
}

static fmq_err conf__finish(fmq_conf *c, fmq_err e)
{
    if (e == FMQ_OK) {
        conf__stage_commit(c);
        c->err[0] = '\0';
    } else {
        conf__stage_drop(c);
    }
    return e;
}

fmq_err fmq_conf_load_file(fmq_conf *c, const char *path)
{
    assert(c);
    return conf__finish(c, conf__stage_file(c, path));
}

fmq_err fmq_conf_load_string(fmq_conf *c, const char *text, const char *name)
{
    assert(c && text);
    return conf__finish(
        c, conf__stage_text(c, text, strlen(text), name ? name : "<string>"));
}

/* ------------------------------------------------------- the command line */

/* One option at argv[*i]: *key is its index, or -1 for --config; *value
 * is its value (NULL for a bare bool); *flag_len is the length of the flag
 * text as typed ("--round-deadline"). Advances *i past what it used. */
static fmq_err conf__next_opt(fmq_conf *c, int argc, char *const argv[], int *i,
                              ptrdiff_t *key, const char **value, int *flag_len)
{
    const char *a = argv[*i];
    (*i)++;
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0' || a[2] == '-' ||
        a[2] == '_') {
        conf__fail(c, "unexpected argument '%s' (options are --key value)", a);
        return FMQ_ERR_CONFIG;
    }
    const char *eq = strchr(a, '=');
    size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
    *flag_len = (int)(len + 2);
    *value = eq ? eq + 1 : NULL;
    if (len == 6 && memcmp(a + 2, "config", 6) == 0) {
        *key = -1;
    } else {
        *key = conf__find(c, a + 2, len, true);
        if (*key < 0) {
            conf__fail(c, "%.*s: unknown option", *flag_len, a);
            return FMQ_ERR_CONFIG;
        }
        if (!eq && c->keys[*key].type == FMQ_CONF_BOOL)
            return FMQ_OK; /* bare --flag: true */
    }
    if (!eq) {
        if (*i >= argc) {
            conf__fail(c, "%s: needs a value", a);
            return FMQ_ERR_CONFIG;
        }
        *value = argv[(*i)++];
    }
    return FMQ_OK;
}

static fmq_err conf__stage_args(fmq_conf *c, int argc, char *const argv[])
{
    /* first pass: every option known, and where the config file is */
    const char *config = NULL;
    ptrdiff_t key;
    const char *value;
    int flag_len;
    for (int i = 1; i < argc;) {
        fmq_err e = conf__next_opt(c, argc, argv, &i, &key, &value, &flag_len);
        if (e != FMQ_OK)
            return e;
        if (key >= 0)
            continue;
        if (config) {
            conf__fail(c, "--config given twice");
            return FMQ_ERR_CONFIG;
        }
        config = value;
    }
    if (config) {
        fmq_err e = conf__stage_file(c, config);
        if (e != FMQ_OK)
            return e;
    }
    /* second pass: the flags, over the file */
    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        fmq_err e = conf__next_opt(c, argc, argv, &i, &key, &value, &flag_len);
        if (e != FMQ_OK) /* cannot differ from the first pass */
            return e;
        if (key < 0)
            continue;
        char where[256];
        snprintf(where, sizeof where, "%.*s: ", flag_len > 200 ? 200 : flag_len,
                 a);
        if (!value)
            value = "true";
        if ((e = conf__stage(c, (size_t)key, value, strlen(value), where)) !=
            FMQ_OK)
            return e;
    }
    return FMQ_OK;
}

fmq_err fmq_conf_parse_args(fmq_conf *c, int argc, char *const argv[],
                            bool *help)
{
    assert(c && help && (argv || argc <= 0));
    *help = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *help = true;
            c->err[0] = '\0';
            return FMQ_OK;
        }
    }
    return conf__finish(c, conf__stage_args(c, argc, argv));
}

const char *fmq_conf_error(const fmq_conf *c)
{
    assert(c);
    return c->err;
}

/* ---------------------------------------------------------------- --help */

static const char *conf__meta(fmq_conf_type t)
{
    switch (t) {
    case FMQ_CONF_STR:
        return " TEXT";
    case FMQ_CONF_INT:
    case FMQ_CONF_UINT:
        return " N";
    case FMQ_CONF_DOUBLE:
        return " X";
    default:
        return "";
    }
}

/* "--round-deadline N" into buf. */
static void conf__flag_text(const fmq_conf_key *key, char *buf, size_t size)
{
    int n = snprintf(buf, size, "--%s%s", key->name, conf__meta(key->type));
    for (int j = 2; j < n && (size_t)j < size && buf[j] != ' '; j++)
        if (buf[j] == '_')
            buf[j] = '-';
}

void fmq_conf_usage(const fmq_conf *c, FILE *out, const char *prog,
                    const char *summary)
{
    assert(c && out);
    fprintf(out, "Usage: %s [--config FILE] [options]\n",
            prog ? prog : "program");
    if (summary)
        fprintf(out, "%s\n", summary);
    fprintf(out, "\nEach option --some-key V is also a line `some_key V` in "
                 "the config file;\nflags override the file.\n\n");
    char flag[160];
    int width = (int)strlen("--config FILE");
    for (size_t k = 0; k < c->nkeys; k++) {
        conf__flag_text(&c->keys[k], flag, sizeof flag);
        int n = (int)strlen(flag);
        width = n > width ? n : width;
    }
    fprintf(out, "  %-*s  read settings from FILE first\n", width,
            "--config FILE");
    for (size_t k = 0; k < c->nkeys; k++) {
        const fmq_conf_key *key = &c->keys[k];
        conf__flag_text(key, flag, sizeof flag);
        fprintf(out, "  %-*s  %s (%s", width, flag, key->help ? key->help : "",
                conf__type_name[key->type]);
        if (key->type != FMQ_CONF_STR && key->type != FMQ_CONF_BOOL &&
            key->min < key->max)
            fprintf(out, ", %.15g..%.15g", key->min, key->max);
        if (key->def)
            fprintf(out, ", default: %s", *key->def ? key->def : "\"\"");
        fprintf(out, ")\n");
    }
    fprintf(out, "  %-*s  print this help and exit\n", width, "--help");
}

/* --------------------------------------------------------------- getters */

bool fmq_conf_has(const fmq_conf *c, const char *name)
{
    return c && name && conf__find(c, name, strlen(name), false) >= 0;
}

const char *fmq_conf_str(const fmq_conf *c, const char *name)
{
    return c->vals[conf__index(c, name)].text;
}

static const conf__val *conf__typed(const fmq_conf *c, const char *name,
                                    fmq_conf_type t)
{
    size_t k = conf__index(c, name);
    assert(c->keys[k].type == t && "fmq_conf: getter of the wrong type");
    (void)t;
    return &c->vals[k];
}

int64_t fmq_conf_int(const fmq_conf *c, const char *name)
{
    const conf__val *v = conf__typed(c, name, FMQ_CONF_INT);
    return v->text ? v->v.i : 0;
}

uint64_t fmq_conf_uint(const fmq_conf *c, const char *name)
{
    const conf__val *v = conf__typed(c, name, FMQ_CONF_UINT);
    return v->text ? v->v.u : 0;
}

double fmq_conf_double(const fmq_conf *c, const char *name)
{
    const conf__val *v = conf__typed(c, name, FMQ_CONF_DOUBLE);
    return v->text ? v->v.d : 0.0;
}

bool fmq_conf_bool(const fmq_conf *c, const char *name)
{
    const conf__val *v = conf__typed(c, name, FMQ_CONF_BOOL);
    return v->text ? v->v.b : false;
}

bool fmq_conf_is_set(const fmq_conf *c, const char *name)
{
    return c->vals[conf__index(c, name)].set;
}
