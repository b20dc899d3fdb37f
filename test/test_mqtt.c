/*
 * test_mqtt.c — the MQTT wrapper against a real private Mosquitto (TLS
 * unless a case says otherwise): round trips of ordinary, large and empty
 * payloads, refusal of a server signed by another CA, retained messages,
 * persistent sessions across a disconnect, reconnection and buffered
 * publishes across a broker restart, the last will of a client that dies,
 * plain TCP, configuration checks, waiting for PUBACK, the receive-queue
 * bound, and a burst of QoS 1 messages larger than the in-flight window.
 *
 * Most cases share one TLS broker started by the group set-up; those that
 * stop, restart or freeze a broker start their own. Topics and client ids
 * carry the pid and a counter, so sessions left on the shared broker by one
 * case never meet another.
 *
 * `test_mqtt --will-child URI CA ID TOPIC` is the child process of the
 * last-will case (see there).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper_broker.h"
#include "mqtt.h"

static fmq_test_broker g_tls; /* shared by most cases */
static fmq_test_broker g_own; /* a case's own broker, stopped at teardown */
static char g_tmp[512];       /* a case's temporary directory, likewise */
static unsigned g_name_seq;

/* A name unique in this run and across runs on the same broker. */
static void uniq(char *out, size_t cap, const char *what)
{
    snprintf(out, cap, "fmqt-%s-%ld-%u", what, (long)getpid(), g_name_seq++);
}

static void cfg_for(fmq_mqtt_cfg *c, const fmq_test_broker *b, const char *id)
{
    fmq_mqtt_cfg_defaults(c);
    c->uri = b->uri;
    c->client_id = id;
    c->ca_file = b->tls ? b->ca_file : NULL;
    /* Fast reconnects keep the restart case short. */
    c->reconnect_min_ms = 100;
    c->reconnect_max_ms = 400;
}

static fmq_mqtt *connect_cfg(const fmq_mqtt_cfg *c)
{
    fmq_mqtt *m = NULL;
    assert_int_equal(fmq_mqtt_new(c, &m), FMQ_OK);
    assert_non_null(m);
    assert_int_equal(fmq_mqtt_connect(m, 5000), FMQ_OK);
    assert_true(fmq_mqtt_connected(m));
    return m;
}

static fmq_mqtt *connect_to(const fmq_test_broker *b, const char *id)
{
    fmq_mqtt_cfg c;
    cfg_for(&c, b, id);
    return connect_cfg(&c);
}

typedef struct connect_job {
    fmq_mqtt *m;
    fmq_err e;
} connect_job;

static void *connect_main(void *arg)
{
    connect_job *j = arg;
    j->e = fmq_mqtt_connect(j->m, 5000);
    return NULL;
}

/* Connects n clients at once. Paho 1.3.12's receive thread polls with a
 * 1 s timeout and sees a new socket only at the next round, so a connect
 * made while another client of the process is connected takes ~2 s;
 * connects made together share that wait (none when nothing else is
 * connected). */
static void connect_all(fmq_mqtt **ms, size_t n)
{
    connect_job jobs[8];
    pthread_t th[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        jobs[i] = (connect_job){.m = ms[i], .e = FMQ_ERR_STATE};
        assert_int_equal(pthread_create(&th[i], NULL, connect_main, &jobs[i]),
                         0);
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(jobs[i].e, FMQ_OK);
        assert_true(fmq_mqtt_connected(ms[i]));
    }
}

static fmq_mqtt *new_client(const fmq_test_broker *b, const char *id)
{
    fmq_mqtt_cfg c;
    cfg_for(&c, b, id);
    fmq_mqtt *m = NULL;
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_OK);
    assert_non_null(m);
    return m;
}

/* Two new clients of broker b, connected together. */
static void connect_two(const fmq_test_broker *b, const char *ida,
                        fmq_mqtt **a, const char *idb, fmq_mqtt **bp)
{
    fmq_mqtt *ms[2] = {new_client(b, ida), new_client(b, idb)};
    connect_all(ms, 2);
    *a = ms[0];
    *bp = ms[1];
}

/* The next message is on topic with exactly these bytes. */
static void expect_msg(fmq_mqtt *m, uint32_t ms, const char *topic,
                       const void *payload, size_t len, bool retained)
{
    fmq_mqtt_msg msg;
    assert_int_equal(fmq_mqtt_next(m, ms, &msg), FMQ_OK);
    assert_string_equal(msg.topic, topic);
    assert_int_equal(msg.len, len);
    assert_non_null(msg.payload);
    if (len)
        assert_memory_equal(msg.payload, payload, len);
    assert_int_equal(msg.payload[len], 0);
    assert_int_equal(msg.retained, retained);
    fmq_mqtt_msg_free(&msg);
    assert_null(msg.topic);
}

static void expect_nothing(fmq_mqtt *m, uint32_t ms)
{
    fmq_mqtt_msg msg;
    fmq_err e = fmq_mqtt_next(m, ms, &msg);
    if (e == FMQ_OK)
        fprintf(stderr, "unexpected message on %s (%zu bytes)\n", msg.topic,
                msg.len);
    assert_int_equal(e, FMQ_ERR_TIMEOUT);
    assert_null(msg.topic);
    fmq_mqtt_msg_free(&msg);
}

/* Polls until pred(m) or ms pass. */
static bool wait_for(bool (*pred)(const fmq_mqtt *), const fmq_mqtt *m,
                     uint32_t ms)
{
    for (uint32_t t = 0; t < ms; t += 10) {
        if (pred(m))
            return true;
        usleep(10000);
    }
    return pred(m);
}

static bool is_down(const fmq_mqtt *m) { return !fmq_mqtt_connected(m); }

/* ------------------------------------------------------------- set-up */
static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    if (!getenv("FMQ_LOG_LEVEL"))
        fmq_log_set_level(FMQ_LOG_ERR);
    return fmq_test_broker_start(true, &g_tls) == FMQ_OK ? 0 : -1;
}

/* Also after a failed case, whose own broker and directory would stay. */
static int case_teardown(void **state)
{
    (void)state;
    fmq_test_broker_stop(&g_own);
    if (g_tmp[0] && !getenv("FMQ_KEEP_TMP"))
        (void)fmq_test_sh("rm -rf '%s'", g_tmp);
    g_tmp[0] = '\0';
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fmq_test_broker_stop(&g_tls);
    return 0;
}

/* -------------------------------------------------------------- cases */

static void tls_round_trip_delivers_topic_and_payload_intact(void **state)
{
    (void)state;
    char ida[80], idb[80], topic[80];
    uniq(ida, sizeof ida, "pub");
    uniq(idb, sizeof idb, "sub");
    uniq(topic, sizeof topic, "t");
    fmq_mqtt *a, *b;
    connect_two(&g_tls, ida, &a, idb, &b);
    char filter[96];
    snprintf(filter, sizeof filter, "%s/#", topic);
    assert_int_equal(fmq_mqtt_subscribe(b, filter, 1), FMQ_OK);

    char t1[120], t2[120], t3[120];
    snprintf(t1, sizeof t1, "%s/small", topic);
    snprintf(t2, sizeof t2, "%s/large", topic);
    snprintf(t3, sizeof t3, "%s/empty", topic);

    static const char hello[] = "hello, fleet";
    assert_int_equal(fmq_mqtt_publish(a, t1, hello, sizeof hello - 1, 1, false,
                                      5000), FMQ_OK);
    expect_msg(b, 5000, t1, hello, sizeof hello - 1, false);

    size_t big = 400 * 1024;
    uint8_t *p = malloc(big);
    assert_non_null(p);
    fmq_rng r;
    fmq_rng_seed(&r, 42);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)fmq_rng_u64(&r); /* NUL bytes included */
    assert_int_equal(fmq_mqtt_publish(a, t2, p, big, 1, false, 5000), FMQ_OK);
    expect_msg(b, 5000, t2, p, big, false);

    assert_int_equal(fmq_mqtt_publish(a, t3, NULL, 0, 1, false, 5000), FMQ_OK);
    expect_msg(b, 5000, t3, "", 0, false);
    expect_nothing(b, 100);

    fmq_mqtt_stats sa, sb;
    fmq_mqtt_get_stats(a, &sa);
    fmq_mqtt_get_stats(b, &sb);
    assert_int_equal(sa.msgs_out, 3);
    assert_int_equal(sa.bytes_out,
                     sizeof hello - 1 + big + strlen(t1) + strlen(t2) + strlen(t3));
    assert_int_equal(sb.msgs_in, 3);
    assert_int_equal(sb.bytes_in, sa.bytes_out);
    assert_int_equal(sb.dropped, 0);
    assert_int_equal(sa.reconnects, 0);
    free(p);
    fmq_mqtt_destroy(&a);
    fmq_mqtt_destroy(&b);
    assert_null(a);
    fmq_mqtt_destroy(&b); /* NULL: nothing */
}

static void a_server_signed_by_another_ca_is_refused(void **state)
{
    (void)state;
    char *dir = g_tmp, ca[600], id[80];
    assert_int_equal(fmq_test_tmpdir("ca2", g_tmp, sizeof g_tmp), FMQ_OK);
    assert_int_equal(fmq_test_sh("deploy/mkcerts.sh '%s'", dir), 0);
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    uniq(id, sizeof id, "wrongca");

    fmq_mqtt_cfg c;
    cfg_for(&c, &g_tls, id);
    c.ca_file = ca;
    fmq_mqtt *m = NULL;
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_OK);
    assert_int_equal(fmq_mqtt_connect(m, 5000), FMQ_ERR_MQTT);
    assert_false(fmq_mqtt_connected(m));
    /* never connected: nothing may be sent, and nothing reconnects */
    assert_int_equal(fmq_mqtt_publish(m, "x", "y", 1, 1, false, 0),
                     FMQ_ERR_STATE);
    usleep(600 * 1000); /* longer than the back-off: no retry either */
    assert_false(fmq_mqtt_connected(m));
    fmq_mqtt_stats s;
    fmq_mqtt_get_stats(m, &s);
    assert_int_equal(s.reconnects, 0);
    assert_int_equal(s.msgs_out, 0);
    /* the right CA still works for the same id: the refusal was the CA */
    fmq_mqtt_destroy(&m);
    c.ca_file = g_tls.ca_file;
    m = connect_cfg(&c);
    fmq_mqtt_destroy(&m);
}

static void a_retained_message_reaches_a_later_subscriber(void **state)
{
    (void)state;
    char ida[80], idb[80], topic[80], live[96];
    uniq(ida, sizeof ida, "pub");
    uniq(idb, sizeof idb, "sub");
    uniq(topic, sizeof topic, "ret");
    snprintf(live, sizeof live, "%s/live", topic);
    fmq_mqtt *a, *b;
    connect_two(&g_tls, ida, &a, idb, &b);
    assert_int_equal(fmq_mqtt_publish(a, topic, "v1", 2, 1, true, 5000), FMQ_OK);
    assert_int_equal(fmq_mqtt_publish(a, topic, "v2", 2, 1, true, 5000), FMQ_OK);

    /* b subscribes after both were published (and PUBACKed) */
    assert_int_equal(fmq_mqtt_subscribe(b, topic, 1), FMQ_OK);
    expect_msg(b, 5000, topic, "v2", 2, true); /* only the last one */
    /* a message published while subscribed is not flagged retained */
    assert_int_equal(fmq_mqtt_subscribe(b, live, 1), FMQ_OK);
    assert_int_equal(fmq_mqtt_publish(a, live, "now", 3, 1, false, 5000), FMQ_OK);
    expect_msg(b, 5000, live, "now", 3, false);
    expect_nothing(b, 100);
    /* clear the retained message */
    assert_int_equal(fmq_mqtt_publish(a, topic, NULL, 0, 1, true, 5000), FMQ_OK);
    fmq_mqtt_destroy(&a);
    fmq_mqtt_destroy(&b);
}

static void a_persistent_session_keeps_qos1_messages_while_away(void **state)
{
    (void)state;
    char ida[80], idb[80], topic[80];
    uniq(ida, sizeof ida, "pub");
    uniq(idb, sizeof idb, "away");
    uniq(topic, sizeof topic, "sess");

    fmq_mqtt_cfg cb;
    cfg_for(&cb, &g_tls, idb);
    cb.clean_start = true; /* a fresh session the first time */
    fmq_mqtt *b = connect_cfg(&cb);
    assert_int_equal(fmq_mqtt_subscribe(b, topic, 1), FMQ_OK);
    fmq_mqtt_destroy(&b);

    fmq_mqtt *a = connect_to(&g_tls, ida);
    for (int i = 0; i < 5; i++) {
        char p[16];
        int n = snprintf(p, sizeof p, "m%d", i);
        assert_int_equal(fmq_mqtt_publish(a, topic, p, (size_t)n, 1, false,
                                          5000), FMQ_OK);
    }
    fmq_mqtt_destroy(&a); /* alone, b connects at once (see connect_all) */

    /* same id, clean start off, and no subscribe: the session has it */
    cb.clean_start = false;
    b = connect_cfg(&cb);
    for (int i = 0; i < 5; i++) {
        char p[16];
        int n = snprintf(p, sizeof p, "m%d", i);
        expect_msg(b, 5000, topic, p, (size_t)n, false);
    }
    expect_nothing(b, 100);
    fmq_mqtt_destroy(&b);

    /* while b is away again; then clean start (at the first connect of a
     * client) discards the session and what it held */
    a = connect_to(&g_tls, ida);
    assert_int_equal(fmq_mqtt_publish(a, topic, "gone", 4, 1, false, 5000),
                     FMQ_OK);
    fmq_mqtt_destroy(&a);
    cb.clean_start = true;
    b = connect_cfg(&cb);
    expect_nothing(b, 300);
    fmq_mqtt_destroy(&b);
}

static bool has_reconnected(const fmq_mqtt *m)
{
    fmq_mqtt_stats s;
    fmq_mqtt_get_stats(m, &s);
    return fmq_mqtt_connected(m) && s.reconnects >= 1;
}

static bool has_reconnected_twice(const fmq_mqtt *m)
{
    fmq_mqtt_stats s;
    fmq_mqtt_get_stats(m, &s);
    return fmq_mqtt_connected(m) && s.reconnects >= 2;
}

static void clients_reconnect_after_a_broker_restart(void **state)
{
    (void)state;
    assert_int_equal(fmq_test_broker_start(true, &g_own), FMQ_OK);
    char ida[80], idb[80], topic[80];
    uniq(ida, sizeof ida, "pub");
    uniq(idb, sizeof idb, "sub");
    uniq(topic, sizeof topic, "rs");
    fmq_mqtt *a, *b;
    connect_two(&g_own, ida, &a, idb, &b);
    assert_int_equal(fmq_mqtt_subscribe(b, topic, 1), FMQ_OK);

    /* 1: a restart while both are connected */
    assert_int_equal(fmq_test_broker_restart(&g_own), FMQ_OK);
    assert_true(wait_for(has_reconnected, a, 10000));
    assert_true(wait_for(has_reconnected, b, 10000));
    assert_int_equal(fmq_mqtt_publish(a, topic, "after", 5, 1, false, 5000),
                     FMQ_OK);
    expect_msg(b, 5000, topic, "after", 5, false);

    /* 2: publishes while the broker is down wait in the client */
    assert_int_equal(fmq_test_sh("deploy/broker.sh stop '%s'", g_own.dir), 0);
    g_own.running = false;
    assert_true(wait_for(is_down, a, 5000));
    assert_true(wait_for(is_down, b, 5000));
    for (int i = 0; i < 5; i++) {
        char p[16];
        int n = snprintf(p, sizeof p, "down%d", i);
        assert_int_equal(fmq_mqtt_publish(a, topic, p, (size_t)n, 1, false, 0),
                         FMQ_OK);
    }
    assert_int_equal(fmq_test_broker_restart(&g_own), FMQ_OK);
    assert_true(wait_for(has_reconnected_twice, a, 10000));
    assert_true(wait_for(has_reconnected_twice, b, 10000));
    for (int i = 0; i < 5; i++) {
        char p[16];
        int n = snprintf(p, sizeof p, "down%d", i);
        expect_msg(b, 5000, topic, p, (size_t)n, false);
    }
    expect_nothing(b, 100);
    fmq_mqtt_stats s;
    fmq_mqtt_get_stats(a, &s);
    assert_int_equal(s.msgs_out, 6);
    fmq_mqtt_destroy(&a);
    fmq_mqtt_destroy(&b);
    fmq_test_broker_stop(&g_own);
}

static void subscriptions_are_made_again_when_the_broker_lost_them(void **state)
{
    (void)state;
    /* SIGKILL before any autosave: the restarted broker has no session, so
     * the client must subscribe again before it reports connected. */
    assert_int_equal(fmq_test_broker_start(true, &g_own), FMQ_OK);
    char ida[80], idb[80], topic[80];
    uniq(ida, sizeof ida, "pub");
    uniq(idb, sizeof idb, "sub");
    uniq(topic, sizeof topic, "lost");
    fmq_mqtt *a, *b;
    connect_two(&g_own, ida, &a, idb, &b);
    assert_int_equal(fmq_mqtt_subscribe(b, topic, 1), FMQ_OK);
    fmq_test_broker_kill(&g_own);
    (void)fmq_test_sh("rm -f '%s/mosquitto.db'", g_own.dir);
    assert_true(wait_for(is_down, b, 5000));
    assert_int_equal(fmq_test_broker_restart(&g_own), FMQ_OK);
    assert_true(wait_for(has_reconnected, a, 10000));
    assert_true(wait_for(has_reconnected, b, 10000));
    assert_int_equal(fmq_mqtt_publish(a, topic, "again", 5, 1, false, 5000),
                     FMQ_OK);
    expect_msg(b, 5000, topic, "again", 5, false);
    fmq_mqtt_destroy(&a);
    fmq_mqtt_destroy(&b);
    fmq_test_broker_stop(&g_own);
}

/* The child of the last-will case: connects with a will, says so on
 * stdout, and ends without DISCONNECT. */
static int will_child(const char *uri, const char *ca, const char *id,
                      const char *topic)
{
    fmq_mqtt_cfg c;
    fmq_mqtt_cfg_defaults(&c);
    c.uri = uri;
    c.ca_file = ca[0] ? ca : NULL;
    c.client_id = id;
    c.will_topic = topic;
    c.will_payload = "offline";
    c.will_len = 7;
    c.will_qos = 1;
    c.session_expiry_s = 0;
    fmq_mqtt *m = NULL;
    if (fmq_mqtt_new(&c, &m) != FMQ_OK || fmq_mqtt_connect(m, 5000) != FMQ_OK)
        _exit(3);
    if (write(1, "c", 1) != 1)
        _exit(4);
    _exit(0);
}

static void the_last_will_is_published_when_a_client_dies(void **state)
{
    (void)state;
    char ids[80], idc[80], idw[80], topic[80];
    uniq(ids, sizeof ids, "watch");
    uniq(idc, sizeof idc, "dying");
    uniq(idw, sizeof idw, "clean");
    uniq(topic, sizeof topic, "will");
    fmq_mqtt_cfg c;
    cfg_for(&c, &g_tls, idw);
    c.will_topic = topic; /* the same will, for a client that ends cleanly */
    c.will_payload = "offline";
    c.will_len = 7;
    fmq_mqtt *ms[2] = {new_client(&g_tls, ids), NULL};
    assert_int_equal(fmq_mqtt_new(&c, &ms[1]), FMQ_OK);
    connect_all(ms, 2);
    fmq_mqtt *s = ms[0], *w = ms[1];
    assert_int_equal(fmq_mqtt_subscribe(s, topic, 1), FMQ_OK);

    /* fork, then exec this binary again: the child must not run Paho in a
     * copy of a process whose Paho threads it does not have. */
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execl("/proc/self/exe", "test_mqtt", "--will-child", g_tls.uri,
              g_tls.ca_file, idc, topic, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char ch = 0;
    ssize_t n = read(fd[0], &ch, 1);
    close(fd[0]);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_int_equal(n, 1);
    assert_int_equal(ch, 'c');
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    expect_msg(s, 5000, topic, "offline", 7, false);

    /* a clean destroy does not publish the will */
    fmq_mqtt_destroy(&w);
    expect_nothing(s, 500);
    fmq_mqtt_destroy(&s);
}

static void plain_tcp_works_too(void **state)
{
    (void)state;
    assert_int_equal(fmq_test_broker_start(false, &g_own), FMQ_OK);
    assert_int_equal(strncmp(g_own.uri, "mqtt://", 7), 0);
    char id[80], topic[80];
    uniq(id, sizeof id, "tcp");
    uniq(topic, sizeof topic, "tcp");
    fmq_mqtt *m = connect_to(&g_own, id);
    assert_int_equal(fmq_mqtt_subscribe(m, topic, 0), FMQ_OK);
    assert_int_equal(fmq_mqtt_publish(m, topic, "plain", 5, 0, false, 0),
                     FMQ_OK);
    expect_msg(m, 5000, topic, "plain", 5, false);
    assert_int_equal(fmq_mqtt_unsubscribe(m, topic), FMQ_OK);
    assert_int_equal(fmq_mqtt_unsubscribe(m, topic), FMQ_ERR_NOTFOUND);
    assert_int_equal(fmq_mqtt_publish(m, topic, "late", 4, 1, false, 5000),
                     FMQ_OK);
    expect_nothing(m, 200);
    fmq_mqtt_destroy(&m);

    /* tcp:// is the same */
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", g_own.port);
    fmq_mqtt_cfg c;
    cfg_for(&c, &g_own, id);
    c.uri = uri;
    m = connect_cfg(&c);
    fmq_mqtt_destroy(&m);
    fmq_test_broker_stop(&g_own);
}

static void bad_configurations_are_refused(void **state)
{
    (void)state;
    fmq_mqtt_cfg c;
    fmq_mqtt *m = (fmq_mqtt *)&c; /* must be reset to NULL */

    cfg_for(&c, &g_tls, NULL);
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);
    assert_null(m);
    c.client_id = "";
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);
    char longid[80];
    memset(longid, 'x', 65);
    longid[65] = '\0';
    c.client_id = longid;
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);

    cfg_for(&c, &g_tls, "ok");
    c.will_topic = "w";
    c.will_qos = 3;
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);
    assert_null(m);
    c.will_qos = -1;
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);
    c.will_qos = 1;
    c.will_topic = "w/#";
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);
    c.will_topic = "";
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);

    cfg_for(&c, &g_tls, "ok");
    c.key_file = "client.key";
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);
    assert_null(m);
    c.key_file = NULL;
    c.cert_file = "client.crt";
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);

    cfg_for(&c, &g_tls, "ok");
    c.uri = NULL;
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);
    c.uri = "http://127.0.0.1:1";
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);
    c.uri = "mqtts://";
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_ERR_INVAL);
    assert_int_equal(fmq_mqtt_new(NULL, &m), FMQ_ERR_INVAL);
    assert_null(m);

    /* and a good one is accepted */
    cfg_for(&c, &g_tls, "ok");
    assert_int_equal(fmq_mqtt_new(&c, &m), FMQ_OK);
    assert_non_null(m);
    fmq_mqtt_destroy(&m);
}

static void publish_waits_for_puback_and_needs_a_connection(void **state)
{
    (void)state;
    assert_int_equal(fmq_test_broker_start(true, &g_own), FMQ_OK);
    char ida[80], idb[80], topic[80];
    uniq(ida, sizeof ida, "pub");
    uniq(idb, sizeof idb, "sub");
    uniq(topic, sizeof topic, "ack");

    fmq_mqtt_cfg c;
    cfg_for(&c, &g_own, ida);
    fmq_mqtt *a = NULL;
    assert_int_equal(fmq_mqtt_new(&c, &a), FMQ_OK);
    assert_int_equal(fmq_mqtt_publish(a, topic, "x", 1, 1, false, 1000),
                     FMQ_ERR_STATE);
    assert_int_equal(fmq_mqtt_publish(a, topic, "x", 1, 0, false, 0),
                     FMQ_ERR_STATE);
    fmq_mqtt *ms[2] = {a, new_client(&g_own, idb)};
    connect_all(ms, 2);
    fmq_mqtt *b = ms[1];
    assert_int_equal(fmq_mqtt_subscribe(b, topic, 1), FMQ_OK);

    /* bad arguments */
    assert_int_equal(fmq_mqtt_publish(a, "a/+", "x", 1, 1, false, 0),
                     FMQ_ERR_INVAL);
    assert_int_equal(fmq_mqtt_publish(a, topic, "x", 1, 3, false, 0),
                     FMQ_ERR_INVAL);
    assert_int_equal(fmq_mqtt_publish(a, "", "x", 1, 1, false, 0),
                     FMQ_ERR_INVAL);

    assert_int_equal(fmq_mqtt_publish(a, topic, "one", 3, 1, false, 5000),
                     FMQ_OK);
    expect_msg(b, 5000, topic, "one", 3, false);
    assert_int_equal(fmq_mqtt_publish(a, topic, "two", 3, 2, false, 5000),
                     FMQ_OK);
    expect_msg(b, 5000, topic, "two", 3, false);

    /* a frozen broker sends no PUBACK: the wait must time out, and the
     * message still goes through once the broker runs again */
    char pidfile[700];
    snprintf(pidfile, sizeof pidfile, "%s/pid", g_own.dir);
    FILE *f = fopen(pidfile, "r");
    assert_non_null(f);
    int bpid = 0;
    assert_int_equal(fscanf(f, "%d", &bpid), 1);
    fclose(f);
    assert_int_equal(kill((pid_t)bpid, SIGSTOP), 0);
    double t0 = fmq_mono_seconds();
    fmq_err e = fmq_mqtt_publish(a, topic, "frozen", 6, 1, false, 400);
    double dt = fmq_mono_seconds() - t0;
    assert_int_equal(kill((pid_t)bpid, SIGCONT), 0);
    assert_int_equal(e, FMQ_ERR_TIMEOUT);
    assert_true(dt >= 0.35);
    expect_msg(b, 5000, topic, "frozen", 6, false);
    /* the late PUBACK of that message does not answer the next wait */
    assert_int_equal(fmq_mqtt_publish(a, topic, "three", 5, 1, false, 5000),
                     FMQ_OK);
    expect_msg(b, 5000, topic, "three", 5, false);

    fmq_mqtt_destroy(&a);
    fmq_mqtt_destroy(&b);
    fmq_test_broker_stop(&g_own);
}

static bool seen_five(const fmq_mqtt *m)
{
    fmq_mqtt_stats s;
    fmq_mqtt_get_stats(m, &s);
    return s.msgs_in + s.dropped >= 5;
}

static void a_full_receive_queue_drops_and_counts_new_messages(void **state)
{
    (void)state;
    char ida[80], idb[80], topic[80];
    uniq(ida, sizeof ida, "pub");
    uniq(idb, sizeof idb, "sub");
    uniq(topic, sizeof topic, "q");
    uint8_t p[100];
    memset(p, 'q', sizeof p);

    fmq_mqtt_cfg c;
    cfg_for(&c, &g_tls, idb);
    c.max_queue_bytes = 3 * (strlen(topic) + sizeof p); /* exactly three */
    fmq_mqtt *ms[2] = {NULL, new_client(&g_tls, ida)};
    assert_int_equal(fmq_mqtt_new(&c, &ms[0]), FMQ_OK);
    connect_all(ms, 2);
    fmq_mqtt *b = ms[0], *a = ms[1];
    assert_int_equal(fmq_mqtt_subscribe(b, topic, 1), FMQ_OK);
    for (int i = 0; i < 5; i++) {
        p[0] = (uint8_t)('0' + i);
        assert_int_equal(fmq_mqtt_publish(a, topic, p, sizeof p, 1, false,
                                          5000), FMQ_OK);
    }
    assert_true(wait_for(seen_five, b, 5000));
    fmq_mqtt_stats s;
    fmq_mqtt_get_stats(b, &s);
    assert_int_equal(s.msgs_in, 3);
    assert_int_equal(s.dropped, 2);
    for (int i = 0; i < 3; i++) {
        p[0] = (uint8_t)('0' + i);
        expect_msg(b, 1000, topic, p, sizeof p, false);
    }
    expect_nothing(b, 100);

    /* draining made room again */
    p[0] = 'n';
    assert_int_equal(fmq_mqtt_publish(a, topic, p, sizeof p, 1, false, 5000),
                     FMQ_OK);
    expect_msg(b, 5000, topic, p, sizeof p, false);
    fmq_mqtt_get_stats(b, &s);
    assert_int_equal(s.msgs_in, 4);
    assert_int_equal(s.dropped, 2);
    fmq_mqtt_destroy(&a);
    fmq_mqtt_destroy(&b);
}

static void a_burst_of_2000_qos1_messages_all_arrive(void **state)
{
    (void)state;
    enum { N = 2000, LEN = 1024 };
    char ida[80], idb[80], topic[80];
    uniq(ida, sizeof ida, "pub");
    uniq(idb, sizeof idb, "sub");
    uniq(topic, sizeof topic, "burst");
    fmq_mqtt *a, *b;
    connect_two(&g_tls, ida, &a, idb, &b);
    assert_int_equal(fmq_mqtt_subscribe(b, topic, 1), FMQ_OK);

    uint8_t p[LEN];
    for (size_t i = 0; i < LEN; i++)
        p[i] = (uint8_t)(i * 7);
    double t0 = fmq_mono_seconds();
    for (uint32_t i = 0; i < N; i++) {
        memcpy(p, &i, sizeof i);
        fmq_err e = fmq_mqtt_publish(a, topic, p, LEN, 1, false, 0);
        if (e != FMQ_OK)
            fprintf(stderr, "publish %u: %s\n", i, fmq_strerror(e));
        assert_int_equal(e, FMQ_OK);
    }
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    unsigned got = 0;
    while (got < N) {
        fmq_mqtt_msg m;
        fmq_err e = fmq_mqtt_next(b, 10000, &m);
        if (e != FMQ_OK)
            fprintf(stderr, "burst: %u of %u arrived\n", got, (unsigned)N);
        assert_int_equal(e, FMQ_OK);
        assert_int_equal(m.len, LEN);
        uint32_t i;
        memcpy(&i, m.payload, sizeof i);
        assert_true(i < N);
        assert_int_equal(seen[i], 0);
        assert_memory_equal(m.payload + 4, p + 4, LEN - 4);
        seen[i] = 1;
        got++;
        fmq_mqtt_msg_free(&m);
    }
    fprintf(stderr, "burst: %u x %u bytes in %.2f s\n", (unsigned)N,
            (unsigned)LEN, fmq_mono_seconds() - t0);
    expect_nothing(b, 100);
    fmq_mqtt_stats s;
    fmq_mqtt_get_stats(a, &s);
    assert_int_equal(s.msgs_out, N);
    fmq_mqtt_destroy(&a);
    fmq_mqtt_destroy(&b);
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "--will-child") == 0)
        return will_child(argv[2], argv[3], argv[4], argv[5]);
    /* FMQ_TEST_FILTER=pattern runs only the matching cases (cmocka's
     * glob: "*will*"). */
    const char *filter = getenv("FMQ_TEST_FILTER");
    if (filter && filter[0])
        cmocka_set_test_filter(filter);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(tls_round_trip_delivers_topic_and_payload_intact, case_teardown),
        cmocka_unit_test_teardown(a_server_signed_by_another_ca_is_refused, case_teardown),
        cmocka_unit_test_teardown(a_retained_message_reaches_a_later_subscriber, case_teardown),
        cmocka_unit_test_teardown(a_persistent_session_keeps_qos1_messages_while_away, case_teardown),
        cmocka_unit_test_teardown(clients_reconnect_after_a_broker_restart, case_teardown),
        cmocka_unit_test_teardown(subscriptions_are_made_again_when_the_broker_lost_them, case_teardown),
        cmocka_unit_test_teardown(the_last_will_is_published_when_a_client_dies, case_teardown),
        cmocka_unit_test_teardown(plain_tcp_works_too, case_teardown),
        cmocka_unit_test_teardown(bad_configurations_are_refused, case_teardown),
        cmocka_unit_test_teardown(publish_waits_for_puback_and_needs_a_connection, case_teardown),
        cmocka_unit_test_teardown(a_full_receive_queue_drops_and_counts_new_messages, case_teardown),
        cmocka_unit_test_teardown(a_burst_of_2000_qos1_messages_all_arrive, case_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
