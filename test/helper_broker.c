/*
 * helper_broker.c — start, stop, kill and restart a private Mosquitto for
 * C tests by calling deploy/broker.sh, so tests, `make demo` and the
 * integration scripts configure the broker in one place. See
 * helper_broker.h.
 */
#include "helper_broker.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned g_seq;

static const char *build_dir(void)
{
    const char *b = getenv("FMQ_BUILD");
    return b && b[0] ? b : "build";
}

fmq_err fmq_test_tmpdir(const char *tag, char *out, size_t cap)
{
    char cwd[512];
    const char *b = build_dir();
    if (b[0] != '/') {
        if (!getcwd(cwd, sizeof cwd))
            return FMQ_ERR_IO;
    } else {
        cwd[0] = '\0';
    }
    int n = snprintf(out, cap, "%s%s%s/tmp/%s-%ld-%u", cwd, cwd[0] ? "/" : "",
                     b, tag, (long)getpid(), g_seq++);
    if (n < 0 || (size_t)n >= cap)
        return FMQ_ERR_RANGE;
    if (fmq_test_sh("rm -rf '%s'", out) != 0)
        return FMQ_ERR_IO;
    return fmq_mkdir_p(out);
}

int fmq_test_sh(const char *fmt, ...)
{
    char cmd[4096], log[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd)
        return -1;
    snprintf(log, sizeof log, "%s/tmp", build_dir());
    if (fmq_mkdir_p(log) != FMQ_OK)
        return -1;
    snprintf(log, sizeof log, "%s/tmp/sh-%ld.log", build_dir(), (long)getpid());

    char full[4800];
    n = snprintf(full, sizeof full, "( %s ) >'%s' 2>&1", cmd, log);
    if (n < 0 || (size_t)n >= sizeof full)
        return -1;
    int st = system(full);
    int rc = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    if (rc != 0) {
        fprintf(stderr, "fmq_test_sh: '%s' exited %d:\n", cmd, rc);
        FILE *f = fopen(log, "r");
        if (f) {
            char line[512];
            while (fgets(line, sizeof line, f))
                fputs(line, stderr);
            fclose(f);
        }
    }
    unlink(log); /* one per command: a run leaves none behind */
    return rc;
}

static int read_int_file(const char *dir, const char *name)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int v = -1;
    if (fscanf(f, "%d", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

static fmq_err run_start(fmq_test_broker *b, bool same_port)
{
    char port[32] = "";
    char conf[700] = "";
    if (same_port)
        snprintf(port, sizeof port, " --port %d", b->port);
    if (b->conf[0])
        snprintf(conf, sizeof conf, " --conf '%s'", b->conf);
    if (fmq_test_sh("deploy/broker.sh start '%s'%s%s%s --watch %ld", b->dir,
                    b->tls ? " --tls" : "", port, conf, (long)getpid()) != 0)
        return FMQ_ERR_IO;
    int p = read_int_file(b->dir, "port");
    if (p <= 0)
        return FMQ_ERR_IO;
    b->port = p;
    snprintf(b->uri, sizeof b->uri, "%s://127.0.0.1:%d",
             b->tls ? "mqtts" : "mqtt", p);
    b->running = true;
    return FMQ_OK;
}

fmq_err fmq_test_broker_start_conf(bool tls, const char *extra_conf,
                                   fmq_test_broker *b)
{
    memset(b, 0, sizeof *b);
    b->tls = tls;
    fmq_err e = fmq_test_tmpdir("broker", b->dir, sizeof b->dir);
    if (e != FMQ_OK)
        return e;
    if (tls)
        snprintf(b->ca_file, sizeof b->ca_file, "%s/certs/ca.crt", b->dir);
    if (extra_conf) {
        snprintf(b->conf, sizeof b->conf, "%s/extra.conf", b->dir);
        FILE *f = fopen(b->conf, "w");
        if (!f)
            return FMQ_ERR_IO;
        fputs(extra_conf, f);
        fputc('\n', f);
        if (fclose(f) != 0)
            return FMQ_ERR_IO;
    }
    return run_start(b, false);
}

fmq_err fmq_test_broker_start(bool tls, fmq_test_broker *b)
{
    return fmq_test_broker_start_conf(tls, NULL, b);
}

/* Not a process any more, or a zombie nobody has reaped yet. */
static bool gone(pid_t pid)
{
    char path[64], buf[512];
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return true;
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return !p || p[1] == '\0' || p[2] == 'Z';
}

void fmq_test_broker_kill(fmq_test_broker *b)
{
    if (!b->running)
        return;
    int w = read_int_file(b->dir, "watch.pid");
    if (w > 0)
        kill((pid_t)w, SIGTERM);
    int pid = read_int_file(b->dir, "pid");
    if (pid > 0) {
        kill((pid_t)pid, SIGKILL);
        for (int i = 0; i < 1000 && !gone((pid_t)pid); i++)
            usleep(10000);
    }
    char path[700];
    snprintf(path, sizeof path, "%s/pid", b->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/watch.pid", b->dir);
    unlink(path);
    b->running = false;
}

void fmq_test_broker_stop(fmq_test_broker *b)
{
    if (!b->dir[0])
        return;
    if (b->running)
        (void)fmq_test_sh("deploy/broker.sh stop '%s'", b->dir);
    b->running = false;
    if (!getenv("FMQ_KEEP_TMP"))
        (void)fmq_test_sh("rm -rf '%s'", b->dir);
    b->dir[0] = '\0';
}

fmq_err fmq_test_broker_restart(fmq_test_broker *b)
{
    if (b->running && fmq_test_sh("deploy/broker.sh stop '%s'", b->dir) != 0)
        return FMQ_ERR_IO;
    b->running = false;
    return run_start(b, true);
}
