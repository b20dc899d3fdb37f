/*
 * helper_broker.h — a private Mosquitto for C tests, through
 * deploy/broker.sh (and deploy/mkcerts.sh for TLS), in a fresh directory
 * $FMQ_BUILD/tmp/broker-<pid>-<n> (FMQ_BUILD defaults to "build"; tests
 * run from the top of the tree). The broker watches the test's pid and
 * stops by itself if the test dies first.
 *
 * Linked into every test binary; nothing here runs unless called.
 */
#ifndef FMQ_HELPER_BROKER_H
#define FMQ_HELPER_BROKER_H

#include <stdbool.h>
#include <stddef.h>

#include "fmq.h"

typedef struct fmq_test_broker {
    bool tls;
    bool running;
    int port;
    char dir[512];     /* absolute; holds mosquitto.conf, .log, .db, certs/ */
    char ca_file[640]; /* dir/certs/ca.crt when tls, else "" */
    char uri[64];      /* "mqtts://127.0.0.1:<port>" or "mqtt://…" */
    char conf[640];    /* extra configuration appended, "" = none */
} fmq_test_broker;

/* Starts a broker on a free loopback port. FMQ_ERR_IO when the scripts
 * fail (their output is printed to stderr). */
fmq_err fmq_test_broker_start(bool tls, fmq_test_broker *b);
/* The same with extra_conf (mosquitto.conf lines, e.g. a password file and
 * an ACL) appended to the generated configuration. NULL = none. */
fmq_err fmq_test_broker_start_conf(bool tls, const char *extra_conf,
                                   fmq_test_broker *b);
/* SIGTERM (Mosquitto saves its database), wait, remove the directory
 * unless FMQ_KEEP_TMP is set. Safe on a stopped or killed broker. */
void fmq_test_broker_stop(fmq_test_broker *b);
/* SIGKILL and wait until it is gone; the directory stays (restart). */
void fmq_test_broker_kill(fmq_test_broker *b);
/* Stops it (SIGTERM) if running and starts it again on the same port with
 * the same directory, so persisted sessions and messages come back. */
fmq_err fmq_test_broker_restart(fmq_test_broker *b);

/* A fresh, empty directory $FMQ_BUILD/tmp/<tag>-<pid>-<n> (absolute). */
fmq_err fmq_test_tmpdir(const char *tag, char *out, size_t cap);
/* Runs a shell command with its output in $FMQ_BUILD/tmp/sh-<pid>.log,
 * printed to stderr when it fails and removed afterwards. Returns the exit
 * status (-1 if not run). */
int fmq_test_sh(const char *fmt, ...) FMQ_PRINTF(1, 2);

#endif /* FMQ_HELPER_BROKER_H */
