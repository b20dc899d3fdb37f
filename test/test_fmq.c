/*
 * test_fmq.c — the base module: error names, logging levels and sink,
 * allocation hooks, the random generator's distributions, the byte buffer
 * and crash-safe files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fmq.h"

static void error_names_are_lower_case_and_round_trip(void **state)
{
    (void)state;
    assert_string_equal(fmq_errname(FMQ_ERR_TRUNCATED), "truncated");
    assert_string_equal(fmq_errname(FMQ_ERR_MISSING_KEY), "missing_key");
    assert_string_equal(fmq_strerror(FMQ_OK), "success");
    for (int i = 0; i < FMQ_ERR__COUNT; i++)
        assert_int_equal(fmq_err_from_name(fmq_errname((fmq_err)i)), i);
    assert_int_equal(fmq_err_from_name("no-such-error"), FMQ_ERR__COUNT);
    assert_string_equal(fmq_strerror((fmq_err)999), "unknown error");
}

struct capture {
    int n;
    int level;
    char msg[256];
};

static void capture_sink(void *arg, int level, const char *msg)
{
    struct capture *c = arg;
    c->n++;
    c->level = level;
    snprintf(c->msg, sizeof c->msg, "%s", msg);
}

static void log_records_above_the_level_are_dropped(void **state)
{
    (void)state;
    struct capture c = {0};
    fmq_log_set_sink(capture_sink, &c);
    fmq_log_set_level(FMQ_LOG_NOTICE);
    fmq_log_info("hidden %d", 1);
    assert_int_equal(c.n, 0);
    fmq_log_warn("round %d: %s", 7, "late");
    assert_int_equal(c.n, 1);
    assert_int_equal(c.level, FMQ_LOG_WARNING);
    assert_string_equal(c.msg, "round 7: late");
    fmq_log_set_sink(NULL, NULL);
    assert_int_equal(fmq_log_level_parse("debug"), 7);
    assert_int_equal(fmq_log_level_parse("4"), 4);
    assert_int_equal(fmq_log_level_parse("loud"), -1);
}

static int fail_after;
static size_t live_allocs;
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

static void allocation_hooks_see_every_allocation_and_failure(void **state)
{
    (void)state;
    fmq_allocator a = {counting_malloc, counting_realloc, counting_free, NULL};
    fail_after = 100;
    live_allocs = 0;
    fmq_set_allocator(&a);
    char *s = fmq_strdup("fleet");
    assert_non_null(s);
    assert_int_equal(live_allocs, 1);
    fmq_free(s);
    assert_int_equal(live_allocs, 0);
    assert_null(fmq_calloc(SIZE_MAX / 2, 4)); /* overflow, not a call */
    fmq_buf b;
    fmq_buf_init(&b);
    fail_after = 0;
    assert_int_equal(fmq_buf_append(&b, "x", 1), FMQ_ERR_NOMEM);
    assert_int_equal(b.len, 0);
    fail_after = 100;
    fmq_set_allocator(NULL);
    fmq_buf_fini(&b);
}

static void buffer_grows_and_keeps_its_bytes(void **state)
{
    (void)state;
    fmq_buf b;
    fmq_buf_init(&b);
    for (int i = 0; i < 10000; i++) {
        uint8_t v = (uint8_t)i;
        assert_int_equal(fmq_buf_append(&b, &v, 1), FMQ_OK);
    }
    assert_int_equal(b.len, 10000);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(b.data[i], (uint8_t)i);
    fmq_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_true(b.cap >= 10000);
    fmq_buf_fini(&b);
    assert_null(b.data);
}

static void rng_is_reproducible_and_uniform(void **state)
{
    (void)state;
    fmq_rng a, b;
    fmq_rng_seed(&a, 42);
    fmq_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++)
        assert_true(fmq_rng_u64(&a) == fmq_rng_u64(&b));
    fmq_rng_seed(&b, 43);
    assert_true(fmq_rng_u64(&a) != fmq_rng_u64(&b));
    /* 60,000 draws below 10: each bin expects 6,000 with sd ~73;
     * 6 sd is a bound that a correct generator essentially never hits. */
    int bins[10] = {0};
    for (int i = 0; i < 60000; i++)
        bins[fmq_rng_below(&a, 10)]++;
    for (int i = 0; i < 10; i++)
        assert_in_range(bins[i], 6000 - 440, 6000 + 440);
    double s = 0;
    for (int i = 0; i < 100000; i++) {
        float f = fmq_rng_float(&a);
        assert_true(f >= 0.0f && f < 1.0f);
        s += f;
    }
    /* mean of U(0,1): sd of the mean = 1/sqrt(12 * 1e5) ~ 0.0009 */
    assert_true(fabs(s / 100000 - 0.5) < 0.006);
}

static void normal_and_gamma_have_the_right_moments(void **state)
{
    (void)state;
    fmq_rng r;
    fmq_rng_seed(&r, 7);
    const int n = 200000;
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
        double x = fmq_rng_normal(&r);
        s += x;
        s2 += x * x;
    }
    assert_true(fabs(s / n) < 0.015);        /* sd of mean 0.0022 */
    assert_true(fabs(s2 / n - 1.0) < 0.02);  /* sd of var ~0.0032 */
    const double shapes[] = {0.1, 0.5, 1.0, 3.5};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        double a = shapes[k], g = 0, g2 = 0;
        for (int i = 0; i < n; i++) {
            double x = fmq_rng_gamma(&r, a);
            assert_true(x >= 0.0);
            g += x;
            g2 += x * x;
        }
        double mean = g / n, var = g2 / n - mean * mean;
        /* Gamma(a, 1): mean a, variance a. sd of the mean sqrt(a/n). */
        assert_true(fabs(mean - a) < 6 * sqrt(a / n));
        assert_true(fabs(var - a) / a < 0.1);
    }
}

static void shuffle_is_a_permutation(void **state)
{
    (void)state;
    fmq_rng r;
    fmq_rng_seed(&r, 1);
    uint32_t v[1000];
    for (uint32_t i = 0; i < 1000; i++)
        v[i] = i;
    fmq_rng_shuffle_u32(&r, v, 1000);
    int seen[1000] = {0}, moved = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        seen[v[i]]++;
        moved += v[i] != i;
    }
    for (int i = 0; i < 1000; i++)
        assert_int_equal(seen[i], 1);
    assert_true(moved > 900);
}

static void atomic_write_replaces_the_whole_file(void **state)
{
    (void)state;
    const char *build = getenv("FMQ_BUILD");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/tmp/test_fmq/a/b", build ? build : "build");
    assert_int_equal(fmq_mkdir_p(dir), FMQ_OK);
    assert_int_equal(fmq_mkdir_p(dir), FMQ_OK); /* exists: fine */
    snprintf(path, sizeof path, "%s/ckpt", dir);
    assert_int_equal(fmq_file_write_atomic(path, "first version", 13), FMQ_OK);
    assert_int_equal(fmq_file_write_atomic(path, "second", 6), FMQ_OK);
    uint8_t *data;
    size_t len;
    assert_int_equal(fmq_file_read(path, 1 << 20, &data, &len), FMQ_OK);
    assert_int_equal(len, 6);
    assert_memory_equal(data, "second", 6);
    fmq_free(data);
    assert_int_equal(fmq_file_read(path, 3, &data, &len), FMQ_ERR_TOO_LARGE);
    assert_null(data);
    char missing[640];
    snprintf(missing, sizeof missing, "%s/none", dir);
    assert_int_equal(fmq_file_read(missing, 10, &data, &len), FMQ_ERR_NOTFOUND);
    /* no temporary file is left behind */
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    struct stat st;
    assert_int_not_equal(stat(tmp, &st), 0);
    snprintf(path, sizeof path, "%s/no-such-dir/x", dir);
    assert_int_equal(fmq_file_write_atomic(path, "x", 1), FMQ_ERR_IO);
}

static void clocks_move_forward(void **state)
{
    (void)state;
    double a = fmq_mono_seconds();
    uint64_t now = fmq_now_ms();
    assert_true(now > 1700000000000ull); /* after Nov 2023 */
    usleep(2000);
    assert_true(fmq_mono_seconds() > a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(error_names_are_lower_case_and_round_trip),
        cmocka_unit_test(log_records_above_the_level_are_dropped),
        cmocka_unit_test(allocation_hooks_see_every_allocation_and_failure),
        cmocka_unit_test(buffer_grows_and_keeps_its_bytes),
        cmocka_unit_test(rng_is_reproducible_and_uniform),
        cmocka_unit_test(normal_and_gamma_have_the_right_moments),
        cmocka_unit_test(shuffle_is_a_permutation),
        cmocka_unit_test(atomic_write_replaces_the_whole_file),
        cmocka_unit_test(clocks_move_forward),
    };
    return cmocka_run_group_tests_name("fmq", tests, NULL, NULL);
}
