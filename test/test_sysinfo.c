/*
 * test_sysinfo.c — battery and temperature read from fake sysfs trees
 * shaped like a laptop's, a Raspberry Pi's and a mains-powered hub's; CPU
 * time of this process.
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
#include "sysinfo.h"

static char root[256];

static void put(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    assert_int_equal(fmq_mkdir_p(dir), FMQ_OK);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("FMQ_BUILD");
    snprintf(root, sizeof root, "%s/test/sysfs-%ld", b ? b : "build",
             (long)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static void a_laptop_reports_its_battery_not_its_charger(void **state)
{
    (void)state;
    put("class/power_supply/AC/type", "Mains\n");
    put("class/power_supply/AC/online", "1\n");
    put("class/power_supply/BAT0/type", "Battery\n");
    put("class/power_supply/BAT0/capacity", "87\n");
    assert_float_equal(fmq_sys_battery_pct(root), 87.0f, 0);
}

static void the_first_battery_by_name_counts_and_bad_values_are_skipped(void **state)
{
    (void)state;
    put("class/power_supply/BAT0/type", "Battery\n");
    put("class/power_supply/BAT0/capacity", "garbage\n");
    put("class/power_supply/BAT1/type", "Battery\n");
    put("class/power_supply/BAT1/capacity", "40\n");
    put("class/power_supply/BAT2/type", "Battery\n");
    put("class/power_supply/BAT2/capacity", "99\n");
    assert_float_equal(fmq_sys_battery_pct(root), 40.0f, 0);
    put("class/power_supply/BAT1/capacity", "140\n"); /* not a percentage */
    assert_float_equal(fmq_sys_battery_pct(root), 99.0f, 0);
}

static void a_hub_on_mains_has_no_battery(void **state)
{
    (void)state;
    put("class/power_supply/AC/type", "Mains\n");
    assert_true(isnan(fmq_sys_battery_pct(root)));
    assert_true(isnan(fmq_sys_battery_pct("/nonexistent-sysfs")));
}

static void the_hottest_plausible_zone_is_reported(void **state)
{
    (void)state;
    put("class/thermal/thermal_zone0/temp", "47250\n"); /* a Pi's cpu */
    put("class/thermal/thermal_zone1/temp", "61000\n");
    put("class/thermal/thermal_zone2/temp", "-273000\n"); /* a broken sensor */
    put("class/thermal/thermal_zone3/temp", "\n");
    put("class/thermal/cooling_device0/cur_state", "3\n"); /* not a zone */
    assert_float_equal(fmq_sys_temp_c(root), 61.0f, 1e-6);
    put("class/thermal/thermal_zone1/temp", "200000\n"); /* implausible */
    assert_float_equal(fmq_sys_temp_c(root), 47.25f, 1e-6);
}

static void no_thermal_zones_is_nan(void **state)
{
    (void)state;
    put("class/thermal/cooling_device0/cur_state", "0\n");
    assert_true(isnan(fmq_sys_temp_c(root)));
    assert_true(isnan(fmq_sys_temp_c("/nonexistent-sysfs")));
}

static void cpu_seconds_grow_with_work(void **state)
{
    (void)state;
    double a = fmq_sys_cpu_seconds();
    volatile double x = 0;
    for (long i = 0; i < 30000000; i++)
        x += (double)i * 1e-9;
    double b = fmq_sys_cpu_seconds();
    assert_true(isfinite(a) && a >= 0);
    assert_true(b > a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_laptop_reports_its_battery_not_its_charger, setup, teardown),
        cmocka_unit_test_setup_teardown(the_first_battery_by_name_counts_and_bad_values_are_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(a_hub_on_mains_has_no_battery, setup, teardown),
        cmocka_unit_test_setup_teardown(the_hottest_plausible_zone_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(no_thermal_zones_is_nan, setup, teardown),
        cmocka_unit_test(cpu_seconds_grow_with_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
