/*
 * test_conf.c — settings from a key table, a mosquitto.conf-style file and
 * command-line flags: defaults, the file's syntax, flags over the file,
 * every way a value or a line is refused (with file:line and the reason in
 * the error text), all-or-nothing loads, --help text and out-of-memory at
 * every allocation. Files go to $FMQ_BUILD/tmp/test_conf (FMQ_BUILD
 * defaults to "build").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"

static char tmpdir[512];

static const fmq_conf_key keys[] = {
    {.name = "broker_host",
     .type = FMQ_CONF_STR,
     .def = "localhost",
     .help = "MQTT broker host name"},
    {.name = "broker_port",
     .type = FMQ_CONF_UINT,
     .def = "8883",
     .help = "MQTT broker TCP port",
     .min = 1,
     .max = 65535},
    {.name = "round_deadline",
     .type = FMQ_CONF_INT,
     .def = "30",
     .help = "seconds to wait for updates",
     .min = 1,
     .max = 3600},
    {.name = "fraction",
     .type = FMQ_CONF_DOUBLE,
     .def = "0.5",
     .help = "share of devices per round",
     .min = 0,
     .max = 1},
    {.name = "tls",
     .type = FMQ_CONF_BOOL,
     .def = "true",
     .help = "connect over TLS"},
    {.name = "verbose", .type = FMQ_CONF_BOOL, .def = "no", .help = "log more"},
    {.name = "fleet", .type = FMQ_CONF_STR, .help = "fleet to serve"},
    {.name = "offset", .type = FMQ_CONF_INT, .help = "unbounded"},
    {.name = "password_file",
     .type = FMQ_CONF_STR,
     .def = "",
     .help = "empty: no password",
     .empty_ok = true},
};
#define NKEYS (sizeof keys / sizeof keys[0])

/* ------------------------------------------------------------ helpers */

static fmq_conf *new_conf(void)
{
    fmq_conf *c = NULL;
    assert_int_equal(fmq_conf_new(keys, NKEYS, &c), FMQ_OK);
    assert_non_null(c);
    return c;
}

/* Write text to tmpdir/name; the path stays valid until the next call. */
static const char *write_file(const char *name, const char *text)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    return path;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("'%s' does not contain '%s'", hay, needle);
}

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* -------------------------------------------------------------- cases */

static void defaults_apply_when_nothing_is_given(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    assert_string_equal(fmq_conf_str(c, "broker_host"), "localhost");
    assert_true(fmq_conf_uint(c, "broker_port") == 8883);
    assert_true(fmq_conf_int(c, "round_deadline") == 30);
    assert_float_equal(fmq_conf_double(c, "fraction"), 0.5, 0);
    assert_true(fmq_conf_bool(c, "tls"));
    assert_false(fmq_conf_bool(c, "verbose"));
    assert_null(fmq_conf_str(c, "fleet"));
    assert_true(fmq_conf_int(c, "offset") == 0);
    assert_string_equal(fmq_conf_str(c, "password_file"), "");
    assert_string_equal(fmq_conf_str(c, "broker_port"), "8883");
    assert_false(fmq_conf_is_set(c, "broker_host"));
    assert_string_equal(fmq_conf_error(c), "");
    fmq_conf_destroy(&c);
    assert_null(c);
    fmq_conf_destroy(&c);
    fmq_conf_destroy(NULL);
}

static void
a_file_gives_values_through_comments_blank_lines_crlf_and_spaces(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    const char *text = "\xEF\xBB\xBF# fedmq aggregator\r\n"
                       "\r\n"
                       "   \t\n"
                       "  # indented comment\n"
                       "broker_host   broker.example.org  \r\n"
                       "fleet\tkitchen fleet # not a comment\r\n"
                       "round_deadline 120\n"
                       "fraction 2.5e-1\n"
                       "tls off\n"
                       "verbose YES\n"
                       "offset -42\n"
                       "broker_port 1883"; /* no final newline */
    const char *path = write_file("good.conf", text);
    assert_int_equal(fmq_conf_load_file(c, path), FMQ_OK);
    assert_string_equal(fmq_conf_error(c), "");
    assert_string_equal(fmq_conf_str(c, "broker_host"), "broker.example.org");
    assert_string_equal(fmq_conf_str(c, "fleet"),
                        "kitchen fleet # not a comment");
    assert_true(fmq_conf_int(c, "round_deadline") == 120);
    assert_float_equal(fmq_conf_double(c, "fraction"), 0.25, 0);
    assert_false(fmq_conf_bool(c, "tls"));
    assert_true(fmq_conf_bool(c, "verbose"));
    assert_true(fmq_conf_int(c, "offset") == -42);
    assert_true(fmq_conf_uint(c, "broker_port") == 1883);
    assert_true(fmq_conf_is_set(c, "broker_host"));
    assert_false(fmq_conf_is_set(c, "password_file"));
    fmq_conf_destroy(&c);
}

static void a_key_given_twice_takes_the_later_line(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    assert_int_equal(fmq_conf_load_string(c,
                                          "round_deadline 10\n"
                                          "round_deadline 20\n",
                                          NULL),
                     FMQ_OK);
    assert_true(fmq_conf_int(c, "round_deadline") == 20);
    /* a second load goes over the first, keeping what it does not name */
    assert_int_equal(fmq_conf_load_string(c, "tls no\n", NULL), FMQ_OK);
    assert_true(fmq_conf_int(c, "round_deadline") == 20);
    assert_false(fmq_conf_bool(c, "tls"));
    fmq_conf_destroy(&c);
}

static void flags_override_the_file_wherever_config_appears(void **state)
{
    (void)state;
    const char *path = write_file("over.conf", "round_deadline 10\n"
                                               "broker_host from-file\n"
                                               "fraction 0.1\n");
    char p[600];
    snprintf(p, sizeof p, "%s", path);
    char *before[] = {"prog", "--round-deadline", "99", "--config", p};
    char *after[] = {"prog", "--config", p, "--round-deadline", "99"};
    char cfg_eq[620];
    snprintf(cfg_eq, sizeof cfg_eq, "--config=%s", p);
    char *eq[] = {"prog", "--round_deadline=99", cfg_eq};
    char **argvs[] = {before, after, eq};
    int argcs[] = {ARGC(before), ARGC(after), ARGC(eq)};
    for (int t = 0; t < 3; t++) {
        fmq_conf *c = new_conf();
        bool help = true;
        assert_int_equal(fmq_conf_parse_args(c, argcs[t], argvs[t], &help),
                         FMQ_OK);
        assert_false(help);
        assert_true(fmq_conf_int(c, "round_deadline") == 99);
        assert_string_equal(fmq_conf_str(c, "broker_host"), "from-file");
        assert_float_equal(fmq_conf_double(c, "fraction"), 0.1, 0);
        assert_true(fmq_conf_uint(c, "broker_port") == 8883);
        fmq_conf_destroy(&c);
    }
}

static void
flags_take_equals_or_a_separate_value_and_dash_is_underscore(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    char *argv[] = {"prog",
                    "--broker-host=a b=c",
                    "--broker_port",
                    "1883",
                    "--fleet",
                    "--looks-like-flag",
                    "--offset",
                    "-7",
                    "--password-file=",
                    "--round_deadline=5",
                    "--round-deadline=6"};
    bool help;
    assert_int_equal(fmq_conf_parse_args(c, ARGC(argv), argv, &help), FMQ_OK);
    assert_string_equal(fmq_conf_str(c, "broker_host"), "a b=c");
    assert_true(fmq_conf_uint(c, "broker_port") == 1883);
    /* a value is taken as given, even when it starts with -- */
    assert_string_equal(fmq_conf_str(c, "fleet"), "--looks-like-flag");
    assert_true(fmq_conf_int(c, "offset") == -7);
    assert_string_equal(fmq_conf_str(c, "password_file"), "");
    assert_true(fmq_conf_is_set(c, "password_file"));
    assert_true(fmq_conf_int(c, "round_deadline") == 6); /* later wins */
    /* no arguments at all is fine and changes nothing */
    char *none[] = {"prog"};
    assert_int_equal(fmq_conf_parse_args(c, 1, none, &help), FMQ_OK);
    assert_int_equal(fmq_conf_parse_args(c, 0, NULL, &help), FMQ_OK);
    assert_true(fmq_conf_int(c, "round_deadline") == 6);
    fmq_conf_destroy(&c);
}

static void
a_bool_flag_alone_means_true_and_takes_words_after_equals(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    char *argv[] = {"prog", "--verbose", "--tls=off"};
    bool help;
    assert_int_equal(fmq_conf_parse_args(c, ARGC(argv), argv, &help), FMQ_OK);
    assert_true(fmq_conf_bool(c, "verbose"));
    assert_false(fmq_conf_bool(c, "tls"));
    static const char *const words[][2] = {
        {"true", "1"}, {"false", "0"}, {"Yes", "1"}, {"no", "0"},
        {"ON", "1"},   {"off", "0"},   {"1", "1"},   {"0", "0"}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        char line[64];
        snprintf(line, sizeof line, "verbose %s\n", words[i][0]);
        assert_int_equal(fmq_conf_load_string(c, line, NULL), FMQ_OK);
        assert_int_equal(fmq_conf_bool(c, "verbose"), words[i][1][0] == '1');
    }
    /* a bare bool flag never takes the next argument */
    char *next[] = {"prog", "--verbose", "false"};
    assert_int_equal(fmq_conf_parse_args(c, ARGC(next), next, &help),
                     FMQ_ERR_CONFIG);
    assert_contains(fmq_conf_error(c), "unexpected argument 'false'");
    assert_int_equal(fmq_conf_load_string(c, "tls maybe\n", "b.conf"),
                     FMQ_ERR_CONFIG);
    assert_contains(fmq_conf_error(c), "b.conf:1: tls: 'maybe' is not a "
                                       "boolean");
    fmq_conf_destroy(&c);
}

static void unknown_keys_are_refused_naming_file_and_line(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    const char *path = write_file("unknown.conf", "# header\n"
                                                  "tls on\n"
                                                  "foo 1\n");
    assert_int_equal(fmq_conf_load_file(c, path), FMQ_ERR_CONFIG);
    char want[700];
    snprintf(want, sizeof want, "%s:3: unknown key 'foo'", path);
    assert_string_equal(fmq_conf_error(c), want);
    assert_int_equal(fmq_conf_load_string(c, "\n\nBroker_Host x\n", "s"),
                     FMQ_ERR_CONFIG);
    assert_string_equal(fmq_conf_error(c),
                        "s:3: 'Broker_Host' is not a key (want [a-z0-9_]+)");
    assert_int_equal(fmq_conf_load_string(c, "broker_host=x\n", "s"),
                     FMQ_ERR_CONFIG);
    assert_contains(fmq_conf_error(c), "s:1: 'broker_host=x' is not a key");
    /* the reserved command-line names are not file keys */
    assert_int_equal(fmq_conf_load_string(c, "config x\n", "s"),
                     FMQ_ERR_CONFIG);
    assert_string_equal(fmq_conf_error(c), "s:1: unknown key 'config'");

    char *flags[] = {"prog", "--tls", "--no-such-key=3"};
    bool help;
    assert_int_equal(fmq_conf_parse_args(c, ARGC(flags), flags, &help),
                     FMQ_ERR_CONFIG);
    assert_string_equal(fmq_conf_error(c), "--no-such-key: unknown option");
    /* an unknown option in argv is found before the config file is read */
    char *both[] = {"prog", "--config", (char *)path, "--bogus"};
    assert_int_equal(fmq_conf_parse_args(c, ARGC(both), both, &help),
                     FMQ_ERR_CONFIG);
    assert_string_equal(fmq_conf_error(c), "--bogus: unknown option");
    /* and an unknown key in that file names the file */
    char *file[] = {"prog", "--tls", "--config", (char *)path};
    assert_int_equal(fmq_conf_parse_args(c, ARGC(file), file, &help),
                     FMQ_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:3: unknown key 'foo'", file[3]);
    assert_string_equal(fmq_conf_error(c), want);
    fmq_conf_destroy(&c);
}

static void values_out_of_range_are_refused_naming_the_bounds(void **state)
{
    (void)state;
    static const struct {
        const char *text, *error;
    } cases[] = {
        {"round_deadline 0", "s:1: round_deadline: '0' is out of range [1, "
                             "3600]"},
        {"round_deadline 3601", "s:1: round_deadline: '3601' is out of range "
                                "[1, 3600]"},
        {"broker_port 65536", "s:1: broker_port: '65536' is out of range [1, "
                              "65535]"},
        {"fraction 1.0001", "s:1: fraction: '1.0001' is out of range [0, 1]"},
        {"fraction -0.5", "s:1: fraction: '-0.5' is out of range [0, 1]"},
    };
    fmq_conf *c = new_conf();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(fmq_conf_load_string(c, cases[i].text, "s"),
                         FMQ_ERR_CONFIG);
        assert_string_equal(fmq_conf_error(c), cases[i].error);
    }
    /* the bounds themselves are inside */
    assert_int_equal(
        fmq_conf_load_string(c, "round_deadline 3600\nfraction 0\n", "s"),
        FMQ_OK);
    assert_true(fmq_conf_int(c, "round_deadline") == 3600);
    char *argv[] = {"prog", "--broker-port", "0"};
    bool help;
    assert_int_equal(fmq_conf_parse_args(c, ARGC(argv), argv, &help),
                     FMQ_ERR_CONFIG);
    assert_string_equal(fmq_conf_error(c),
                        "--broker-port: broker_port: '0' is out of range [1, "
                        "65535]");
    fmq_conf_destroy(&c);
}

static void malformed_numbers_and_missing_values_are_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text, *error;
    } cases[] = {
        {"round_deadline 12x", "round_deadline: '12x' is not an integer"},
        {"round_deadline 1 2", "round_deadline: '1 2' is not an integer"},
        {"round_deadline 1.5", "round_deadline: '1.5' is not an integer"},
        {"round_deadline 0x10", "round_deadline: '0x10' is not an integer"},
        {"offset 9223372036854775808",
         "offset: '9223372036854775808' does not fit in a 64-bit integer"},
        {"offset -9223372036854775809",
         "offset: '-9223372036854775809' does not fit in a 64-bit integer"},
        {"broker_port -1", "broker_port: '-1' is not an unsigned integer"},
        {"broker_port +1", "broker_port: '+1' is not an unsigned integer"},
        {"broker_port 18446744073709551616",
         "broker_port: '18446744073709551616' does not fit in a 64-bit "
         "unsigned integer"},
        {"fraction 0.5.1", "fraction: '0.5.1' is not a finite number"},
        {"fraction nan", "fraction: 'nan' is not a finite number"},
        {"fraction inf", "fraction: 'inf' is not a finite number"},
        {"fraction 1e999", "fraction: '1e999' is not a finite number"},
        {"round_deadline", "round_deadline needs a value"},
        {"round_deadline   \t", "round_deadline needs a value"},
        {"broker_host", "broker_host needs a value"},
        {"tls", "tls needs a value"},
    };
    fmq_conf *c = new_conf();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(fmq_conf_load_string(c, cases[i].text, "m.conf"),
                         FMQ_ERR_CONFIG);
        char want[256];
        snprintf(want, sizeof want, "m.conf:1: %s", cases[i].error);
        assert_string_equal(fmq_conf_error(c), want);
    }
    /* the extremes that do fit are taken */
    assert_int_equal(fmq_conf_load_string(c,
                                          "offset -9223372036854775808\n"
                                          "fraction 1e-320\n",
                                          NULL),
                     FMQ_OK);
    assert_true(fmq_conf_int(c, "offset") == INT64_MIN);
    char *argv[] = {"prog", "--round-deadline"};
    bool help;
    assert_int_equal(fmq_conf_parse_args(c, ARGC(argv), argv, &help),
                     FMQ_ERR_CONFIG);
    assert_string_equal(fmq_conf_error(c), "--round-deadline: needs a value");
    char *empty[] = {"prog", "--round-deadline="};
    assert_int_equal(fmq_conf_parse_args(c, ARGC(empty), empty, &help),
                     FMQ_ERR_CONFIG);
    assert_string_equal(fmq_conf_error(c),
                        "--round-deadline: round_deadline needs a value");
    fmq_conf_destroy(&c);
}

static void a_missing_file_is_an_io_error_with_its_reason(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    char path[600];
    snprintf(path, sizeof path, "%s/no-such.conf", tmpdir);
    assert_int_equal(fmq_conf_load_file(c, path), FMQ_ERR_IO);
    char want[700];
    snprintf(want, sizeof want, "%s: No such file or directory", path);
    assert_string_equal(fmq_conf_error(c), want);
    char *argv[] = {"prog", "--config", path};
    bool help;
    assert_int_equal(fmq_conf_parse_args(c, ARGC(argv), argv, &help),
                     FMQ_ERR_IO);
    assert_string_equal(fmq_conf_error(c), want);
    /* a directory opens but does not read */
    assert_int_equal(fmq_conf_load_file(c, tmpdir), FMQ_ERR_IO);
    assert_contains(fmq_conf_error(c), "Is a directory");
    fmq_conf_destroy(&c);
}

static void a_line_over_4096_bytes_is_refused(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    size_t n = FMQ_CONF_LINE_MAX + 2; /* the longest line + CRLF */
    char *text = malloc(2 * n + 16);
    assert_non_null(text);
    /* exactly 4096 bytes before CRLF: taken */
    memcpy(text, "fleet ", 6);
    memset(text + 6, 'x', FMQ_CONF_LINE_MAX - 6);
    memcpy(text + FMQ_CONF_LINE_MAX, "\r\n", 3);
    assert_int_equal(fmq_conf_load_string(c, text, "long.conf"), FMQ_OK);
    assert_int_equal(strlen(fmq_conf_str(c, "fleet")), FMQ_CONF_LINE_MAX - 6);
    /* one more byte on line 2: refused, and line 1 is not applied */
    memcpy(text, "tls no\n", 7);
    memcpy(text + 7, "fleet ", 6);
    memset(text + 13, 'y', FMQ_CONF_LINE_MAX + 1 - 6);
    text[7 + FMQ_CONF_LINE_MAX + 1] = '\0';
    const char *path = write_file("long.conf", text);
    assert_int_equal(fmq_conf_load_file(c, path), FMQ_ERR_CONFIG);
    char want[700];
    snprintf(want, sizeof want, "%s:2: line longer than 4096 bytes", path);
    assert_string_equal(fmq_conf_error(c), want);
    assert_true(fmq_conf_bool(c, "tls"));
    assert_int_equal(fmq_conf_str(c, "fleet")[0], 'x');
    free(text);
    fmq_conf_destroy(&c);
}

static void a_failed_load_changes_nothing(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    assert_int_equal(fmq_conf_load_string(c, "fleet a\n", NULL), FMQ_OK);
    assert_int_equal(fmq_conf_load_string(c,
                                          "fleet b\n"
                                          "round_deadline 7\n"
                                          "verbose on\n"
                                          "fraction 2\n",
                                          NULL),
                     FMQ_ERR_CONFIG);
    assert_string_equal(fmq_conf_str(c, "fleet"), "a");
    assert_true(fmq_conf_int(c, "round_deadline") == 30);
    assert_false(fmq_conf_bool(c, "verbose"));
    assert_false(fmq_conf_is_set(c, "round_deadline"));
    /* flags that fail after a good config file leave the file unapplied */
    const char *path = write_file("partial.conf", "round_deadline 8\n");
    char p[600];
    snprintf(p, sizeof p, "%s", path);
    char *argv[] = {"prog", "--config", p, "--fraction", "9"};
    bool help;
    assert_int_equal(fmq_conf_parse_args(c, ARGC(argv), argv, &help),
                     FMQ_ERR_CONFIG);
    assert_true(fmq_conf_int(c, "round_deadline") == 30);
    /* and the next good load clears the error */
    assert_int_equal(fmq_conf_load_string(c, "", NULL), FMQ_OK);
    assert_string_equal(fmq_conf_error(c), "");
    fmq_conf_destroy(&c);
}

static void positional_arguments_and_a_second_config_are_refused(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    bool help;
    char *pos[] = {"prog", "--tls", "extra"};
    assert_int_equal(fmq_conf_parse_args(c, ARGC(pos), pos, &help),
                     FMQ_ERR_CONFIG);
    assert_contains(fmq_conf_error(c), "unexpected argument 'extra'");
    char *dash[] = {"prog", "-v"};
    assert_int_equal(fmq_conf_parse_args(c, ARGC(dash), dash, &help),
                     FMQ_ERR_CONFIG);
    assert_contains(fmq_conf_error(c), "unexpected argument '-v'");
    char *two[] = {"prog", "--config", "a", "--config=b"};
    assert_int_equal(fmq_conf_parse_args(c, ARGC(two), two, &help),
                     FMQ_ERR_CONFIG);
    assert_string_equal(fmq_conf_error(c), "--config given twice");
    char *bare[] = {"prog", "--config"};
    assert_int_equal(fmq_conf_parse_args(c, ARGC(bare), bare, &help),
                     FMQ_ERR_CONFIG);
    assert_string_equal(fmq_conf_error(c), "--config: needs a value");
    fmq_conf_destroy(&c);
}

static void help_is_reported_and_nothing_is_loaded(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    char *argv[] = {"prog", "--round-deadline", "5", "--bogus", "--help"};
    bool help = false;
    assert_int_equal(fmq_conf_parse_args(c, ARGC(argv), argv, &help), FMQ_OK);
    assert_true(help);
    assert_true(fmq_conf_int(c, "round_deadline") == 30);
    char *h[] = {"prog", "-h"};
    help = false;
    assert_int_equal(fmq_conf_parse_args(c, ARGC(h), h, &help), FMQ_OK);
    assert_true(help);
    fmq_conf_destroy(&c);
}

static void usage_lists_every_key_with_its_default_and_bounds(void **state)
{
    (void)state;
    fmq_conf *c = new_conf();
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    fmq_conf_usage(c, f, "fedmq-aggregator", "Runs the rounds of one fleet.");
    assert_int_equal(fclose(f), 0);
    assert_contains(text, "Usage: fedmq-aggregator [--config FILE]");
    assert_contains(text, "Runs the rounds of one fleet.");
    assert_contains(text, "--config FILE");
    assert_contains(text, "--help");
    for (size_t k = 0; k < NKEYS; k++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", keys[k].name);
        for (char *p = flag + 2; *p; p++)
            if (*p == '_')
                *p = '-';
        assert_contains(text, flag);
        assert_contains(text, keys[k].help);
        if (keys[k].def && *keys[k].def) {
            char def[64];
            snprintf(def, sizeof def, "default: %s)", keys[k].def);
            assert_contains(text, def);
        }
    }
    assert_contains(text, "--round-deadline N");
    assert_contains(text, "1..3600");
    assert_contains(text, "--broker-host TEXT");
    assert_contains(text, "default: \"\")"); /* password_file */
    free(text);
    fmq_conf_destroy(&c);
}

/* Logged reasons of fmq_conf_new, caught. */
static char logged[512];
static void capture_sink(void *arg, int level, const char *msg)
{
    (void)arg;
    (void)level;
    snprintf(logged, sizeof logged, "%s", msg);
}

static void a_wrong_key_table_is_refused_with_its_reason(void **state)
{
    (void)state;
    static const struct {
        fmq_conf_key key[2];
        const char *reason;
    } cases[] = {
        {{{.name = "Bad"}, {.name = "ok"}}, "bad name 'Bad'"},
        {{{.name = ""}, {.name = "ok"}}, "bad name ''"},
        {{{.name = NULL}, {.name = "ok"}}, "bad name '(null)'"},
        {{{.name = "config"}, {.name = "ok"}}, "'config' is reserved"},
        {{{.name = "ok"}, {.name = "help"}}, "'help' is reserved"},
        {{{.name = "ok"}, {.name = "ok"}}, "'ok' declared twice"},
        {{{.name = "ok"}, {.name = "n", .type = (fmq_conf_type)9}},
         "unknown type 9"},
        {{{.name = "ok"},
          {.name = "n", .type = FMQ_CONF_INT, .def = "0", .min = 1, .max = 2}},
         "default of n: '0' is out of range [1, 2]"},
        {{{.name = "ok"}, {.name = "s", .def = ""}},
         "default of s needs a value"},
    };
    fmq_log_set_sink(capture_sink, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fmq_conf *c = (fmq_conf *)&logged; /* must come back NULL */
        logged[0] = '\0';
        assert_int_equal(fmq_conf_new(cases[i].key, 2, &c), FMQ_ERR_INVAL);
        assert_null(c);
        assert_contains(logged, cases[i].reason);
    }
    fmq_log_set_sink(NULL, NULL);
    /* an empty table is valid */
    fmq_conf *c = NULL;
    assert_int_equal(fmq_conf_new(NULL, 0, &c), FMQ_OK);
    char *argv[] = {"prog"};
    bool help;
    assert_int_equal(fmq_conf_parse_args(c, 1, argv, &help), FMQ_OK);
    fmq_conf_destroy(&c);
}

static int fail_after;
static long live_allocs;
static void *counting_malloc(void *arg, size_t n)
{
    (void)arg;
    if (fail_after-- <= 0)
        return NULL;
    live_allocs++;
    return malloc(n);
}
static void *counting_realloc(void *arg, void *p, size_t n)
{
    (void)arg;
    if (fail_after-- <= 0)
        return NULL;
    if (!p)
        live_allocs++;
    return realloc(p, n);
}
static void counting_free(void *arg, void *p)
{
    (void)arg;
    live_allocs--;
    free(p);
}

static void
out_of_memory_at_any_allocation_is_reported_and_nothing_leaks(void **state)
{
    (void)state;
    const char *path = write_file("oom.conf", "broker_host from-file\n"
                                              "round_deadline 11\n"
                                              "fleet f\n");
    char p[600];
    snprintf(p, sizeof p, "%s", path);
    char *argv[] = {"prog", "--round-deadline=12", "--config", p, "--verbose"};
    fmq_allocator a = {counting_malloc, counting_realloc, counting_free, NULL};
    int n;
    for (n = 0; n < 1000; n++) {
        fail_after = n;
        live_allocs = 0;
        fmq_set_allocator(&a);
        fmq_conf *c = NULL;
        fmq_err e = fmq_conf_new(keys, NKEYS, &c);
        if (e == FMQ_OK) {
            e = fmq_conf_load_string(c, "tls off\nfraction 0.75\n", NULL);
            if (e == FMQ_OK) {
                bool help;
                e = fmq_conf_parse_args(c, ARGC(argv), argv, &help);
                if (e != FMQ_OK) /* the string's settings stay */
                    assert_false(fmq_conf_bool(c, "verbose"));
            } else {
                assert_true(fmq_conf_bool(c, "tls")); /* unchanged */
            }
            if (e != FMQ_OK)
                assert_string_equal(fmq_conf_error(c), "out of memory");
        } else {
            assert_null(c);
        }
        if (e == FMQ_OK) {
            assert_string_equal(fmq_conf_str(c, "broker_host"), "from-file");
            assert_true(fmq_conf_int(c, "round_deadline") == 12);
            assert_true(fmq_conf_bool(c, "verbose"));
            assert_false(fmq_conf_bool(c, "tls"));
        } else {
            assert_int_equal(e, FMQ_ERR_NOMEM);
        }
        fmq_conf_destroy(&c);
        fmq_set_allocator(NULL);
        assert_int_equal(live_allocs, 0);
        if (e == FMQ_OK)
            break;
    }
    assert_true(n > 5 && n < 1000); /* several failure points were met */
}

/* ---------------------------------------------------------------- main */

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("FMQ_BUILD");
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp/test_conf", b && *b ? b : "build");
    return fmq_mkdir_p(tmpdir) == FMQ_OK ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_apply_when_nothing_is_given),
        cmocka_unit_test(
            a_file_gives_values_through_comments_blank_lines_crlf_and_spaces),
        cmocka_unit_test(a_key_given_twice_takes_the_later_line),
        cmocka_unit_test(flags_override_the_file_wherever_config_appears),
        cmocka_unit_test(
            flags_take_equals_or_a_separate_value_and_dash_is_underscore),
        cmocka_unit_test(
            a_bool_flag_alone_means_true_and_takes_words_after_equals),
        cmocka_unit_test(unknown_keys_are_refused_naming_file_and_line),
        cmocka_unit_test(values_out_of_range_are_refused_naming_the_bounds),
        cmocka_unit_test(malformed_numbers_and_missing_values_are_refused),
        cmocka_unit_test(a_missing_file_is_an_io_error_with_its_reason),
        cmocka_unit_test(a_line_over_4096_bytes_is_refused),
        cmocka_unit_test(a_failed_load_changes_nothing),
        cmocka_unit_test(positional_arguments_and_a_second_config_are_refused),
        cmocka_unit_test(help_is_reported_and_nothing_is_loaded),
        cmocka_unit_test(usage_lists_every_key_with_its_default_and_bounds),
        cmocka_unit_test(a_wrong_key_table_is_refused_with_its_reason),
        cmocka_unit_test(
            out_of_memory_at_any_allocation_is_reported_and_nothing_leaks),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
