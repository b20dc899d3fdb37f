/*
 * test_cohort.c — the cohort rule of SPEC §8 against values computed
 * independently (Python's hashlib: sha256(struct.pack('>QQ', s, r) + d)).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "cohort.h"

static void draws_match_an_independent_sha256(void **state)
{
    (void)state;
    assert_float_equal(fmq_cohort_draw(7, 3, "dev-001"), 0.47367375569154024,
                       1e-15);
    assert_float_equal(fmq_cohort_draw(0, 1, "a"), 0.9319221885716149, 1e-15);
    assert_float_equal(fmq_cohort_draw(12345, 99, "hub.kitchen"),
                       0.2785252365815549, 1e-15);
}

static void fraction_selects_about_that_share_and_lists_are_exact(void **state)
{
    (void)state;
    fmq_cohort c = {.kind = FMQ_COHORT_FRACTION, .fraction = 0.3, .seed = 5};
    int n = 0;
    char id[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "d%d", i);
        n += fmq_cohort_member(&c, 2, id);
    }
    assert_int_equal(n, 294); /* the same count as hashlib gives */
    char ids[2][FMQ_ID_MAX + 1] = {"a", "b"};
    fmq_cohort l = {.kind = FMQ_COHORT_IDS, .ids = ids, .nids = 2};
    assert_true(fmq_cohort_member(&l, 1, "b"));
    assert_false(fmq_cohort_member(&l, 1, "c"));
    assert_true(fmq_cohort_member(NULL, 1, "c"));
    fmq_cohort all = {.kind = FMQ_COHORT_ALL};
    assert_true(fmq_cohort_member(&all, 9, "x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(draws_match_an_independent_sha256),
        cmocka_unit_test(fraction_selects_about_that_share_and_lists_are_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
