/*
 * test_partition.c — the NIID-Bench partitioners on the real Fashion-MNIST
 * training labels (60,000 samples, 6,000 per class): every sample in
 * exactly one party, iid sizes within one, #C=k parties holding exactly k
 * labels, Dirichlet's ≥ 10 rule and a skew that grows as β shrinks,
 * quantity skew's varied sizes, reproducibility from the seed, refused
 * specs, the printout, and out-of-memory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four it needs */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "partition.h"

static fmq_dataset train;
static const uint16_t *Y;
static uint32_t N;

static struct {
    int n;
    char last[512];
} logged;

static void capture_sink(void *arg, int level, const char *msg)
{
    (void)arg;
    (void)level;
    logged.n++;
    snprintf(logged.last, sizeof logged.last, "%s", msg);
}

static int setup(void **state)
{
    (void)state;
    if (fmq_data_load_fashion_mnist(NULL, true, &train) != FMQ_OK)
        return -1;
    Y = train.y;
    N = train.n;
    fmq_log_set_sink(capture_sink, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fmq_log_set_sink(NULL, NULL);
    fmq_data_fini(&train);
    return 0;
}

static void make(const char *spec, uint32_t parties, uint64_t seed,
                 fmq_partition *p)
{
    fmq_err e = fmq_partition_make(spec, Y, N, 10, parties, seed, p);
    if (e)
        fail_msg("%s over %u parties: %s (%s)", spec, parties, fmq_strerror(e),
                 logged.last);
    assert_int_equal(p->parties, parties);
}

/* off is non-decreasing from 0, and idx[0..off[P]) holds every sample at
 * most once (exactly once when covered is true). */
static void check_disjoint(const fmq_partition *p, uint32_t n, bool covered)
{
    assert_int_equal(p->off[0], 0);
    for (uint32_t j = 0; j < p->parties; j++)
        assert_true(p->off[j] <= p->off[j + 1]);
    assert_true(p->off[p->parties] <= n);
    if (covered)
        assert_int_equal(p->off[p->parties], n);
    uint8_t *seen = calloc(n, 1);
    assert_non_null(seen);
    for (uint32_t i = 0; i < p->off[p->parties]; i++) {
        assert_true(p->idx[i] < n);
        assert_int_equal(seen[p->idx[i]], 0);
        seen[p->idx[i]] = 1;
    }
    free(seen);
}

/* count[j * 10 + c]: samples of label c held by party j. Caller frees. */
static uint32_t *label_counts(const fmq_partition *p)
{
    uint32_t *count = calloc((size_t)p->parties * 10, sizeof *count);
    assert_non_null(count);
    for (uint32_t j = 0; j < p->parties; j++)
        for (uint32_t i = p->off[j]; i < p->off[j + 1]; i++)
            count[j * 10 + Y[p->idx[i]]]++;
    return count;
}

/* Skew: the mean over parties of the total-variation distance between a
 * party's label distribution and the global one (uniform here): 0 for
 * iid, 0.9 when every party holds one label. */
static double mean_tv(const fmq_partition *p)
{
    uint32_t *count = label_counts(p);
    double tv = 0;
    for (uint32_t j = 0; j < p->parties; j++) {
        double size = fmq_partition_size(p, j), d = 0;
        for (int c = 0; c < 10; c++)
            d += fabs(count[j * 10 + c] / size - 0.1);
        tv += d / 2;
    }
    free(count);
    return tv / p->parties;
}

static bool same(const fmq_partition *a, const fmq_partition *b)
{
    return a->parties == b->parties &&
           memcmp(a->off, b->off, (a->parties + 1) * sizeof *a->off) == 0 &&
           memcmp(a->idx, b->idx, a->off[a->parties] * sizeof *a->idx) == 0;
}

static const char *const specs[] = {
    "iid",      "dirichlet:0.5", "dirichlet:0.1", "labels:1",
    "labels:2", "labels:3",      "labels:10",     "quantity:0.5"};
#define NSPECS (sizeof specs / sizeof specs[0])

/* ------------------------------------------------------------ properties */

static void every_sample_is_in_exactly_one_party(void **state)
{
    (void)state;
    for (unsigned s = 0; s < NSPECS; s++) {
        for (uint32_t parties = 10; parties <= 100; parties *= 10) {
            /* quantity:0.5 over 100 parties takes ~200,000 redraws (see
             * partition.h); β = 1 takes a handful */
            const char *spec =
                parties == 100 && strcmp(specs[s], "quantity:0.5") == 0
                    ? "quantity:1"
                    : specs[s];
            fmq_partition p;
            make(spec, parties, 7, &p);
            check_disjoint(&p, N, true);
            fmq_partition_fini(&p);
            assert_null(p.off);
            assert_null(p.idx);
        }
    }
}

static void
iid_sizes_differ_by_at_most_one_and_labels_stay_balanced(void **state)
{
    (void)state;
    static const uint32_t parties[] = {10, 7, 13, 60000};
    for (unsigned t = 0; t < 4; t++) {
        fmq_partition p;
        make("iid", parties[t], 3, &p);
        uint32_t lo = UINT32_MAX, hi = 0;
        for (uint32_t j = 0; j < p.parties; j++) {
            uint32_t s = fmq_partition_size(&p, j);
            lo = s < lo ? s : lo;
            hi = s > hi ? s : hi;
            /* array_split: the first N mod n parts are the larger ones */
            assert_int_equal(s, N / parties[t] + (j < N % parties[t]));
        }
        assert_true(hi - lo <= 1);
        if (parties[t] == 10)
            assert_true(mean_tv(&p) < 0.03);
        fmq_partition_fini(&p);
    }
}

static void labels_k_parties_hold_exactly_k_labels_split_equally(void **state)
{
    (void)state;
    for (uint32_t k = 1; k <= 3; k++) {
        for (uint32_t parties = 10; parties <= 100; parties *= 10) {
            char spec[16];
            snprintf(spec, sizeof spec, "labels:%u", k);
            fmq_partition p;
            make(spec, parties, 11 + k, &p);
            uint32_t *count = label_counts(&p);
            uint32_t holders[10] = {0};
            for (uint32_t j = 0; j < parties; j++) {
                uint32_t held = 0;
                for (int c = 0; c < 10; c++) {
                    held += count[j * 10 + c] > 0;
                    holders[c] += count[j * 10 + c] > 0;
                }
                assert_int_equal(held, k);
                assert_true(count[j * 10 + j % 10] > 0); /* label j mod 10 */
            }
            /* each label's 6000 samples in equal shares (within one) */
            for (int c = 0; c < 10; c++) {
                assert_true(holders[c] > 0);
                for (uint32_t j = 0; j < parties; j++) {
                    uint32_t v = count[j * 10 + c];
                    if (v)
                        assert_true(v == 6000 / holders[c] ||
                                    v == 6000 / holders[c] + 1);
                }
            }
            if (k == 1 && parties == 10)
                assert_float_equal(mean_tv(&p), 0.9, 1e-9);
            free(count);
            fmq_partition_fini(&p);
        }
    }
}

/* With fewer parties than labels, labels nobody holds are left out. */
static void labels_k_drops_labels_that_no_party_holds(void **state)
{
    (void)state;
    fmq_partition p;
    make("labels:1", 3, 1, &p);
    check_disjoint(&p, N, false);
    assert_int_equal(p.off[3], 3 * 6000);
    uint32_t *count = label_counts(&p);
    for (uint32_t j = 0; j < 3; j++)
        assert_int_equal(count[j * 10 + j], 6000);
    free(count);
    fmq_partition_fini(&p);
}

static void
dirichlet_gives_every_party_10_and_small_beta_skews_more(void **state)
{
    (void)state;
    static const char *const dir[] = {"dirichlet:0.05", "dirichlet:0.1",
                                      "dirichlet:0.5", "dirichlet:100"};
    double tv[4];
    for (unsigned t = 0; t < 4; t++) {
        /* averaged over a few seeds: the order must hold for the mean */
        tv[t] = 0;
        for (uint64_t seed = 1; seed <= 3; seed++) {
            fmq_partition p;
            make(dir[t], 10, seed, &p);
            check_disjoint(&p, N, true);
            for (uint32_t j = 0; j < 10; j++)
                assert_true(fmq_partition_size(&p, j) >=
                            FMQ_PARTITION_MIN_SIZE);
            tv[t] += mean_tv(&p) / 3;
            fmq_partition_fini(&p);
        }
    }
    assert_true(tv[0] > tv[1]);
    assert_true(tv[1] > tv[2]);
    assert_true(tv[2] > tv[3]);
    assert_true(tv[1] > 0.5);  /* β = 0.1: most parties dominated by few */
    assert_true(tv[3] < 0.05); /* β = 100: close to iid */

    /* 100 parties of 600 on average: the rule still holds */
    fmq_partition p;
    make("dirichlet:0.1", 100, 5, &p);
    for (uint32_t j = 0; j < 100; j++)
        assert_true(fmq_partition_size(&p, j) >= FMQ_PARTITION_MIN_SIZE);
    fmq_partition_fini(&p);
}

/* NIID-Bench stops giving a class to parties that hold N/n already; with
 * few parties and a small β that is what bounds the largest party. */
static void dirichlet_stops_feeding_parties_past_n_over_parties(void **state)
{
    (void)state;
    fmq_partition p;
    make("dirichlet:0.1", 10, 9, &p);
    /* a party reaches N/n = 6000 only with the last class it was given,
     * and a class holds 6000: no party can exceed 12000 */
    for (uint32_t j = 0; j < 10; j++)
        assert_true(fmq_partition_size(&p, j) < 12000);
    fmq_partition_fini(&p);
}

static void quantity_sizes_vary_labels_do_not(void **state)
{
    (void)state;
    fmq_partition p;
    make("quantity:0.5", 10, 2, &p);
    check_disjoint(&p, N, true);
    uint32_t lo = UINT32_MAX, hi = 0;
    for (uint32_t j = 0; j < 10; j++) {
        uint32_t s = fmq_partition_size(&p, j);
        assert_true(s >= FMQ_PARTITION_MIN_SIZE);
        lo = s < lo ? s : lo;
        hi = s > hi ? s : hi;
    }
    assert_true(hi > 3 * lo);
    /* the largest party's labels are close to uniform */
    uint32_t *count = label_counts(&p);
    for (uint32_t j = 0; j < 10; j++) {
        uint32_t s = fmq_partition_size(&p, j);
        if (s != hi)
            continue;
        for (int c = 0; c < 10; c++)
            assert_true(fabs(count[j * 10 + c] / (double)s - 0.1) < 0.03);
    }
    free(count);
    fmq_partition_fini(&p);

    /* 100 parties: sizes at least 10 */
    make("quantity:1", 100, 4, &p);
    for (uint32_t j = 0; j < 100; j++)
        assert_true(fmq_partition_size(&p, j) >= FMQ_PARTITION_MIN_SIZE);
    fmq_partition_fini(&p);
}

static void
the_same_seed_gives_the_same_partition_another_seed_another(void **state)
{
    (void)state;
    for (unsigned s = 0; s < NSPECS; s++) {
        fmq_partition a, b, c;
        make(specs[s], 10, 42, &a);
        make(specs[s], 10, 42, &b);
        make(specs[s], 10, 43, &c);
        assert_true(same(&a, &b));
        assert_false(same(&a, &c));
        fmq_partition_fini(&a);
        fmq_partition_fini(&b);
        fmq_partition_fini(&c);
    }
}

/* A published experiment names its seed: a change to the algorithms (or to
 * the order in which they draw) would silently give other parties. This
 * pins the party sizes of one Dirichlet partition; change it only on
 * purpose, and say so in the commit. */
static void a_known_seed_gives_the_known_party_sizes(void **state)
{
    (void)state;
    fmq_partition p;
    make("dirichlet:0.5", 10, 2022, &p);
    char got[256];
    size_t at = 0;
    for (uint32_t j = 0; j < 10; j++)
        at += (size_t)snprintf(got + at, sizeof got - at, "%s%u", j ? " " : "",
                               fmq_partition_size(&p, j));
    assert_string_equal(got, "6085 5138 4650 3898 7528 4857 7934 6497 6773 "
                             "6640");
    fmq_partition_fini(&p);
}

/* ------------------------------------------------------------- refusals */

static void bad_specs_and_impossible_requests_are_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "IID",
        "iid ",
        "homo",
        "dirichlet",
        "dirichlet:",
        "dirichlet:0",
        "dirichlet:-1",
        "dirichlet:abc",
        "dirichlet:nan",
        "dirichlet:inf",
        "dirichlet:0.5x",
        "dirichlet: 0.5",
        "dirichlet:1e999",
        "labels:0",
        "labels:11",
        "labels:2.5",
        "labels:",
        "labels:-1",
        "labels:99999999999",
        "quantity:",
        "quantity:0",
        "quantity:x",
        "noniid-#label2",
    };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fmq_partition p;
        logged.n = 0;
        assert_int_equal(fmq_partition_make(bad[i], Y, N, 10, 10, 1, &p),
                         FMQ_ERR_CONFIG);
        assert_int_equal(logged.n, 1);
        assert_non_null(strstr(logged.last, "partition"));
        assert_null(p.off);
        assert_null(p.idx);
    }
    fmq_partition p;
    assert_int_equal(fmq_partition_make(NULL, Y, N, 10, 10, 1, &p),
                     FMQ_ERR_CONFIG);
    assert_int_equal(fmq_partition_make("iid", Y, N, 10, 0, 1, &p),
                     FMQ_ERR_CONFIG);
    assert_int_equal(fmq_partition_make("iid", Y, 5, 10, 6, 1, &p),
                     FMQ_ERR_CONFIG);
    /* 10 per party: 99 samples cannot serve 10 parties, 100 can */
    logged.n = 0;
    assert_int_equal(fmq_partition_make("dirichlet:0.5", Y, 99, 10, 10, 1, &p),
                     FMQ_ERR_CONFIG);
    assert_string_equal(logged.last, "partition 'dirichlet:0.5': every party "
                                     "needs 10 samples, but 10 parties share "
                                     "99");
    assert_int_equal(fmq_partition_make("quantity:0.5", Y, 99, 10, 10, 1, &p),
                     FMQ_ERR_CONFIG);
    assert_int_equal(fmq_partition_make("quantity:0.5", Y, N, 10, 10, 1, &p),
                     FMQ_OK);
    fmq_partition_fini(&p);
    /* a tiny β cannot give 600 parties 10 of 6000 samples each */
    logged.n = 0;
    assert_int_equal(
        fmq_partition_make("dirichlet:0.01", Y, 6000, 10, 600, 1, &p),
        FMQ_ERR_CONFIG);
    assert_non_null(strstr(logged.last, "no draw in 1000"));
    /* labels must be below classes */
    assert_int_equal(fmq_partition_make("iid", Y, N, 9, 10, 1, &p),
                     FMQ_ERR_INVAL);
    assert_non_null(strstr(logged.last, "is not below 9 classes"));
    assert_null(p.idx);
}

/* ---------------------------------------------------------------- print */

static void the_printout_has_a_line_per_party_and_a_summary(void **state)
{
    (void)state;
    fmq_partition p;
    make("labels:2", 10, 1, &p);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    fmq_partition_print(&p, Y, 10, f);
    fmq_partition_print(&p, Y, 10, NULL); /* nothing, no crash */
    assert_int_equal(fclose(f), 0);
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    assert_int_equal(lines, 11);
    assert_non_null(strstr(text, "party   0: "));
    assert_non_null(strstr(text, "party   9: "));
    assert_non_null(strstr(text, " (2 labels)\n"));
    assert_non_null(strstr(text, "10 parties, 60000 samples; size min "));
    assert_non_null(strstr(text, "; labels per party min 2 max 2 mean 2.00\n"));
    free(text);
    fmq_partition_fini(&p);
}

/* -------------------------------------------------------- out of memory */

static int fail_after;
static void *failing_malloc(void *arg, size_t n)
{
    (void)arg;
    return fail_after-- > 0 ? malloc(n) : NULL;
}
static void *failing_realloc(void *arg, void *p, size_t n)
{
    (void)arg;
    return fail_after-- > 0 ? realloc(p, n) : NULL;
}
static void plain_free(void *arg, void *p)
{
    (void)arg;
    free(p);
}

static void out_of_memory_is_reported_and_leaks_nothing(void **state)
{
    (void)state;
    fmq_allocator a = {failing_malloc, failing_realloc, plain_free, NULL};
    uint32_t n = 2000; /* a prefix of the labels keeps this quick */
    for (unsigned s = 0; s < NSPECS; s++) {
        int k;
        for (k = 0; k < 64; k++) {
            fmq_partition p;
            fail_after = k;
            fmq_set_allocator(&a);
            fmq_err e = fmq_partition_make(specs[s], Y, n, 10, 10, 1, &p);
            fmq_set_allocator(NULL);
            if (e == FMQ_OK) {
                check_disjoint(&p, n, true);
                fmq_partition_fini(&p);
                break;
            }
            assert_int_equal(e, FMQ_ERR_NOMEM);
            assert_null(p.off);
            assert_null(p.idx);
        }
        assert_true(k > 0 && k < 64);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_sample_is_in_exactly_one_party),
        cmocka_unit_test(
            iid_sizes_differ_by_at_most_one_and_labels_stay_balanced),
        cmocka_unit_test(labels_k_parties_hold_exactly_k_labels_split_equally),
        cmocka_unit_test(labels_k_drops_labels_that_no_party_holds),
        cmocka_unit_test(
            dirichlet_gives_every_party_10_and_small_beta_skews_more),
        cmocka_unit_test(dirichlet_stops_feeding_parties_past_n_over_parties),
        cmocka_unit_test(quantity_sizes_vary_labels_do_not),
        cmocka_unit_test(
            the_same_seed_gives_the_same_partition_another_seed_another),
        cmocka_unit_test(a_known_seed_gives_the_known_party_sizes),
        cmocka_unit_test(bad_specs_and_impossible_requests_are_refused),
        cmocka_unit_test(the_printout_has_a_line_per_party_and_a_summary),
        cmocka_unit_test(out_of_memory_is_reported_and_leaks_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
