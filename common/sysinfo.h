/*
 * sysinfo.h — what a device reports about its host in its status message
 * (proto/SPEC.md §6.3): the process's CPU time, and the battery charge and
 * temperature where Linux's sysfs exposes them (a hub on mains power, or a
 * container, often has neither: then the fields are left out).
 *
 * sysfs is the sysfs mount point: "/sys", or NULL for it; tests pass a
 * fake tree. Nothing here allocates or logs; every function is safe to
 * call from any thread.
 */
#ifndef FMQ_SYSINFO_H
#define FMQ_SYSINFO_H

#ifdef __cplusplus
extern "C" {
#endif

/* User plus system CPU seconds of this process; NaN if unknown. */
double fmq_sys_cpu_seconds(void);

/* Charge of the first power supply of type "Battery" under
 * <sysfs>/class/power_supply/ (its `capacity`, percent, 0..100), in name
 * order; NaN when there is none or it does not read as a percentage. */
float fmq_sys_battery_pct(const char *sysfs);

/* The hottest of <sysfs>/class/thermal/thermal_zone<N>/temp (millidegrees
 * Celsius), in degrees; readings outside -40..150 °C are ignored as
 * sensor faults; NaN when none is left. */
float fmq_sys_temp_c(const char *sysfs);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_SYSINFO_H */
