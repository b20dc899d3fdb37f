/*
 * conf.h — settings for fedmq's programs, mosquitto.conf style: a file of
 * `key value` lines, overridden by command-line flags. A program declares
 * its keys once in a table (name, type, default, help, bounds); from that
 * table come validation, the getters and the --help text. Values are
 * checked when they are loaded, so the getters never fail.
 *
 * The file:
 *   - one setting per line: a key of [a-z0-9_]+, whitespace, then the value:
 *     the rest of the line with leading and trailing whitespace removed (it
 *     may hold spaces; a `#` after the key is part of the value);
 *   - a line whose first non-blank character is `#` is a comment; blank
 *     lines are ignored; LF or CRLF line ends; a leading UTF-8 BOM is
 *     skipped;
 *   - a line longer than FMQ_CONF_LINE_MAX bytes (not counting its line
 *     end) is an error, as is a file larger than FMQ_CONF_FILE_MAX;
 *   - a key given twice: the later line wins (as in mosquitto.conf).
 *
 * Values by type: STR any text (empty only when the key's empty_ok is set);
 * INT and UINT decimal 64-bit integers (strtoll/strtoull, whole string, no
 * overflow, no sign for UINT); DOUBLE a finite number as strtod reads it in
 * the C locale; BOOL true/false, yes/no, on/off or 1/0, in any case.
 * Numbers outside the key's bounds are refused with the bounds named.
 *
 * The command line (fmq_conf_parse_args): `--key value` or `--key=value`,
 * where '-' and '_' in the key are the same (`--round-deadline 30` sets
 * round_deadline). A BOOL key's `--key` alone means true and never takes
 * the next argument (use `--key=false`). `--config FILE` is loaded first
 * wherever it appears, then the flags apply in order (a later one wins).
 * The names "config" and "help" are reserved for these.
 *
 * Every load is all-or-nothing: on error the settings are unchanged and
 * fmq_conf_error() says where and what ("broker.conf:3: unknown key
 * 'foo'"). A fmq_conf is not thread-safe; read it from several threads
 * only once loading is over.
 */
#ifndef FMQ_CONF_H
#define FMQ_CONF_H

#include <stdio.h>

#include "fmq.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FMQ_CONF_LINE_MAX 4096       /* bytes per line, without its end */
#define FMQ_CONF_FILE_MAX (1u << 20) /* bytes per file */

typedef enum {
    FMQ_CONF_STR,
    FMQ_CONF_INT,    /* int64_t */
    FMQ_CONF_UINT,   /* uint64_t */
    FMQ_CONF_DOUBLE, /* finite double */
    FMQ_CONF_BOOL,
} fmq_conf_type;

/* One setting. Bounds are inclusive and apply to numeric keys only when
 * min < max (leave both 0 for none); they are compared as doubles, exact
 * for integers up to 2^53. */
typedef struct fmq_conf_key {
    const char *name; /* "round_deadline": [a-z0-9_]+ */
    fmq_conf_type type;
    const char *def;  /* default as text, checked like a value; NULL = unset */
    const char *help; /* one line for --help; NULL = none */
    double min, max;
    bool empty_ok; /* FMQ_CONF_STR only: "" is a valid value */
} fmq_conf_key;

typedef struct fmq_conf fmq_conf;

/* A new set of settings holding the defaults of keys[0..nkeys). The table
 * is borrowed and must outlive the fmq_conf (a static table does).
 * FMQ_ERR_INVAL (reason logged) when the table is wrong: a bad or reserved
 * or repeated name, an unknown type, or a default its own key refuses.
 * FMQ_ERR_NOMEM. On error *out is NULL. */
FMQ_NODISCARD fmq_err fmq_conf_new(const fmq_conf_key *keys, size_t nkeys,
                                   fmq_conf **out);
/* Frees *cp and sets it to NULL; no-op on NULL or *cp == NULL. */
void fmq_conf_destroy(fmq_conf **cp);

/* Load a file over the current settings. FMQ_ERR_IO when it cannot be
 * opened or read (the text has strerror), FMQ_ERR_CONFIG for a file that
 * is wrong ("path:line: ..."), FMQ_ERR_NOMEM. */
FMQ_NODISCARD fmq_err fmq_conf_load_file(fmq_conf *c, const char *path);
/* The same for text in memory; `name` stands for the file name in errors
 * (NULL gives "<string>"). FMQ_ERR_CONFIG, FMQ_ERR_NOMEM. */
FMQ_NODISCARD fmq_err fmq_conf_load_string(fmq_conf *c, const char *text,
                                           const char *name);

/* Apply argv[1..argc) as described above. When --help or -h appears
 * anywhere, *help is set true, FMQ_OK is returned and nothing is loaded;
 * otherwise *help is set false. FMQ_ERR_CONFIG for an unknown option, a
 * missing or bad value, a positional argument or a second --config, and
 * for a wrong config file; FMQ_ERR_IO when the config file cannot be
 * read; FMQ_ERR_NOMEM. */
FMQ_NODISCARD fmq_err fmq_conf_parse_args(fmq_conf *c, int argc,
                                          char *const argv[], bool *help);

/* What was wrong with the last load or parse, "" when it succeeded. Valid
 * until the next call on c. Never NULL. */
const char *fmq_conf_error(const fmq_conf *c);

/* Write the --help text to out: "Usage: prog [--config FILE] [options]",
 * the summary (may be NULL), then one line per key with its flag, help,
 * type, bounds and default, and --config and --help. The only function
 * here that prints, and only to the stream it is given. */
void fmq_conf_usage(const fmq_conf *c, FILE *out, const char *prog,
                    const char *summary);

/* Getters. `name` must be a key of the table and, for the typed getters,
 * of that type (else assert). fmq_conf_str gives the text of a key of any
 * type, NULL when unset; the typed getters give 0 / false when unset. The
 * string is owned by c and valid until the next successful load or
 * fmq_conf_destroy. */
const char *fmq_conf_str(const fmq_conf *c, const char *name);
int64_t fmq_conf_int(const fmq_conf *c, const char *name);
uint64_t fmq_conf_uint(const fmq_conf *c, const char *name);
double fmq_conf_double(const fmq_conf *c, const char *name);
bool fmq_conf_bool(const fmq_conf *c, const char *name);
/* true when name is a key of c's table. */
bool fmq_conf_has(const fmq_conf *c, const char *name);
/* true when the key was given in a file or a flag (even if equal to its
 * default). */
bool fmq_conf_is_set(const fmq_conf *c, const char *name);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_CONF_H */
