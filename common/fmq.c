/*
 * fmq.c — the base of libfedmq: error strings, the logging sink, the
 * allocation hooks, the growable buffer, crash-safe files and clocks.
 */
#include "fmq.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- errors */
static const char *const err_str[] = {
#define FMQ__ERR_STR(name, str) str,
    FMQ_ERR_MAP(FMQ__ERR_STR)
#undef FMQ__ERR_STR
};

/* Lower-case names, made once from the X-macro's first column. */
static const char *const err_name_upper[] = {
#define FMQ__ERR_NAME(name, str) #name,
    FMQ_ERR_MAP(FMQ__ERR_NAME)
#undef FMQ__ERR_NAME
};
static char err_name[FMQ_ERR__COUNT][24];

static void err_names_init(void)
{
    if (err_name[0][0])
        return;
    for (int i = 0; i < FMQ_ERR__COUNT; i++) {
        const char *s = err_name_upper[i];
        size_t j = 0;
        for (; s[j] && j + 1 < sizeof err_name[i]; j++) {
            char c = s[j];
            err_name[i][j] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        err_name[i][j] = 0;
    }
}

const char *fmq_strerror(fmq_err e)
{
    if ((int)e < 0 || e >= FMQ_ERR__COUNT)
        return "unknown error";
    return err_str[e];
}

const char *fmq_errname(fmq_err e)
{
    if ((int)e < 0 || e >= FMQ_ERR__COUNT)
        return "unknown";
    err_names_init();
    return err_name[e];
}

fmq_err fmq_err_from_name(const char *name)
{
    if (!name)
        return FMQ_ERR__COUNT;
    err_names_init();
    for (int i = 0; i < FMQ_ERR__COUNT; i++)
        if (strcmp(err_name[i], name) == 0)
            return (fmq_err)i;
    return FMQ_ERR__COUNT;
}

/* --------------------------------------------------------------- logging */
static const char *const level_names[] = {"emerg", "alert", "crit", "err",
                                          "warning", "notice", "info", "debug"};

static void log_default_sink(void *arg, int level, const char *msg)
{
    (void)arg;
    fprintf(stderr, "fedmq[%s]: %s\n", fmq_log_level_name(level), msg);
}

static fmq_log_fn log_sink = log_default_sink;
static void *log_arg;
static int log_level = -1; /* -1: not decided yet (read FMQ_LOG_LEVEL) */

void fmq_log_set_sink(fmq_log_fn fn, void *arg)
{
    log_sink = fn ? fn : log_default_sink;
    log_arg = fn ? arg : NULL;
}

int fmq_log_level_parse(const char *s)
{
    if (!s || !*s)
        return -1;
    if (s[0] >= '0' && s[0] <= '9' && s[1] == 0)
        return s[0] - '0';
    for (int i = 0; i < 8; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    if (strcmp(s, "warn") == 0)
        return FMQ_LOG_WARNING;
    if (strcmp(s, "error") == 0)
        return FMQ_LOG_ERR;
    return -1;
}

const char *fmq_log_level_name(int level)
{
    if (level < 0 || level > 7)
        return "?";
    return level_names[level];
}

void fmq_log_set_level(int level)
{
    log_level = level < 0 ? 0 : level > 7 ? 7 : level;
}

int fmq_log_get_level(void)
{
    if (log_level < 0) {
        int l = fmq_log_level_parse(getenv("FMQ_LOG_LEVEL"));
        log_level = l >= 0 ? l : FMQ_LOG_NOTICE;
    }
    return log_level;
}

void fmq_vlog(int level, const char *fmt, va_list ap)
{
    if (level > fmq_log_get_level())
        return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    log_sink(log_arg, level, msg);
}

void fmq_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fmq_vlog(level, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ allocation */
static void *libc_malloc(void *arg, size_t size)
{
    (void)arg;
    return malloc(size);
}
static void *libc_realloc(void *arg, void *p, size_t size)
{
    (void)arg;
    return realloc(p, size);
}
static void libc_free(void *arg, void *p)
{
    (void)arg;
    free(p);
}
static fmq_allocator alloc = {libc_malloc, libc_realloc, libc_free, NULL};

void fmq_set_allocator(const fmq_allocator *a)
{
    if (a)
        alloc = *a;
    else
        alloc = (fmq_allocator){libc_malloc, libc_realloc, libc_free, NULL};
}

void *fmq_malloc(size_t size)
{
    return alloc.malloc_fn(alloc.arg, size ? size : 1);
}

void *fmq_alloc_array(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    return fmq_malloc(n * size);
}

void *fmq_calloc(size_t n, size_t size)
{
    void *p = fmq_alloc_array(n, size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void *fmq_realloc(void *ptr, size_t size)
{
    return alloc.realloc_fn(alloc.arg, ptr, size ? size : 1);
}

void fmq_free(void *ptr)
{
    if (ptr)
        alloc.free_fn(alloc.arg, ptr);
}

char *fmq_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = fmq_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---------------------------------------------------------------- bytes */
void fmq_buf_init(fmq_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void fmq_buf_fini(fmq_buf *b)
{
    fmq_free(b->data);
    fmq_buf_init(b);
}

void fmq_buf_reset(fmq_buf *b)
{
    b->len = 0;
}

fmq_err fmq_buf_reserve(fmq_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len)
        return FMQ_ERR_NOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return FMQ_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = fmq_realloc(b->data, cap);
    if (!p)
        return FMQ_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return FMQ_OK;
}

fmq_err fmq_buf_append(fmq_buf *b, const void *p, size_t n)
{
    fmq_err e = fmq_buf_reserve(b, n);
    if (e)
        return e;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return FMQ_OK;
}

/* ---------------------------------------------------------------- files */
static fmq_err write_all(int fd, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return FMQ_ERR_IO;
        }
        p += w;
        len -= (size_t)w;
    }
    return FMQ_OK;
}

static void fsync_parent_dir(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else {
        size_t n = (size_t)(slash - path);
        if (n == 0)
            n = 1;
        if (n >= sizeof dir)
            return;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

fmq_err fmq_file_write_atomic(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return FMQ_ERR_INVAL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fmq_log_err("cannot create %s: %s", tmp, strerror(errno));
        return FMQ_ERR_IO;
    }
    fmq_err e = write_all(fd, data, len);
    if (!e && fsync(fd) != 0)
        e = FMQ_ERR_IO;
    if (close(fd) != 0 && !e)
        e = FMQ_ERR_IO;
    if (!e && rename(tmp, path) != 0)
        e = FMQ_ERR_IO;
    if (e) {
        fmq_log_err("cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return e;
    }
    fsync_parent_dir(path);
    return FMQ_OK;
}

fmq_err fmq_file_read(const char *path, size_t max_len, uint8_t **data,
                      size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? FMQ_ERR_NOTFOUND : FMQ_ERR_IO;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return FMQ_ERR_IO;
    }
    if ((uint64_t)st.st_size > max_len) {
        close(fd);
        return FMQ_ERR_TOO_LARGE;
    }
    size_t cap = (size_t)st.st_size;
    uint8_t *buf = fmq_malloc(cap + 1);
    if (!buf) {
        close(fd);
        return FMQ_ERR_NOMEM;
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != cap) {
        fmq_free(buf);
        return FMQ_ERR_IO;
    }
    buf[got] = 0; /* convenience for text files; not counted in len */
    *data = buf;
    *len = got;
    return FMQ_OK;
}

fmq_err fmq_mkdir_p(const char *path)
{
    char p[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof p)
        return FMQ_ERR_INVAL;
    memcpy(p, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] == '/' || p[i] == 0) {
            char c = p[i];
            p[i] = 0;
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                fmq_log_err("cannot create directory %s: %s", p,
                            strerror(errno));
                return FMQ_ERR_IO;
            }
            p[i] = c;
        }
    }
    return FMQ_OK;
}

/* ----------------------------------------------------------------- time */
uint64_t fmq_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double fmq_mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
