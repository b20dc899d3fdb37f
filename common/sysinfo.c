/*
 * sysinfo.c — CPU time, battery and temperature for device reports (see
 * sysinfo.h).
 */
#include "sysinfo.h"

#include <dirent.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

double fmq_sys_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return NAN;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* The first line of a small file, without its end; false if unreadable. */
static bool read_line(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool ok = fgets(buf, (int)n, f) != NULL;
    fclose(f);
    if (ok)
        buf[strcspn(buf, "\r\n")] = 0;
    return ok;
}

/* A whole decimal integer (surrounding blanks allowed). */
static bool parse_long(const char *s, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s)
        return false;
    while (*end == ' ' || *end == '\t')
        end++;
    if (*end)
        return false;
    *out = v;
    return true;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

float fmq_sys_battery_pct(const char *sysfs)
{
    char dir[512], path[1024], line[64];
    snprintf(dir, sizeof dir, "%s/class/power_supply", sysfs ? sysfs : "/sys");
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, by_name);
    if (n < 0)
        return NAN;
    float pct = NAN;
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        if (name[0] == '.' || !isnan(pct))
            continue;
        snprintf(path, sizeof path, "%s/%s/type", dir, name);
        if (!read_line(path, line, sizeof line) || strcmp(line, "Battery"))
            continue;
        snprintf(path, sizeof path, "%s/%s/capacity", dir, name);
        long v;
        if (read_line(path, line, sizeof line) && parse_long(line, &v) &&
            v >= 0 && v <= 100)
            pct = (float)v;
    }
    for (int i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
    return pct;
}

static int thermal_zone(const struct dirent *e)
{
    return strncmp(e->d_name, "thermal_zone", 12) == 0;
}

float fmq_sys_temp_c(const char *sysfs)
{
    char dir[512], path[1024], line[64];
    snprintf(dir, sizeof dir, "%s/class/thermal", sysfs ? sysfs : "/sys");
    struct dirent **ents;
    int n = scandir(dir, &ents, thermal_zone, by_name);
    if (n < 0)
        return NAN;
    float hot = NAN;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s/temp", dir, ents[i]->d_name);
        long v;
        if (read_line(path, line, sizeof line) && parse_long(line, &v) &&
            v >= -40000 && v <= 150000) {
            float c = (float)v / 1000.0f;
            if (isnan(hot) || c > hot)
                hot = c;
        }
        free(ents[i]);
    }
    free(ents);
    return hot;
}
