/*
 * rng.c — xoshiro256** seeded through splitmix64 (Blackman & Vigna,
 * "Scrambled linear pseudorandom number generators", 2018), and the
 * distributions fedmq draws from: uniform, bounded integers (Lemire 2019),
 * normal (Marsaglia polar) and gamma (Marsaglia & Tsang 2000, with the
 * shape < 1 boost), which the Dirichlet partitioners need.
 */
#include "fmq.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void fmq_rng_seed(fmq_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t fmq_rng_u64(fmq_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float fmq_rng_float(fmq_rng *r)
{
    return (float)(fmq_rng_u64(r) >> 40) * 0x1.0p-24f;
}

double fmq_rng_double(fmq_rng *r)
{
    return (double)(fmq_rng_u64(r) >> 11) * 0x1.0p-53;
}

uint64_t fmq_rng_below(fmq_rng *r, uint64_t n)
{
    /* Lemire's nearly divisionless method, exact (rejects the bias). */
    unsigned __int128 m = (unsigned __int128)fmq_rng_u64(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t t = -n % n;
        while (lo < t) {
            m = (unsigned __int128)fmq_rng_u64(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double fmq_rng_normal(fmq_rng *r)
{
    double u, v, s;
    do {
        u = 2.0 * fmq_rng_double(r) - 1.0;
        v = 2.0 * fmq_rng_double(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    return u * sqrt(-2.0 * log(s) / s);
}

double fmq_rng_gamma(fmq_rng *r, double shape)
{
    if (shape < 1.0) {
        /* Gamma(a) = Gamma(a + 1) * U^(1/a). */
        double u;
        do
            u = fmq_rng_double(r);
        while (u == 0.0);
        return fmq_rng_gamma(r, shape + 1.0) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = fmq_rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = fmq_rng_double(r);
        if (u < 1.0 - 0.0331 * x * x * x * x)
            return d * v;
        if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
            return d * v;
    }
}

void fmq_rng_shuffle_u32(fmq_rng *r, uint32_t *v, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)fmq_rng_below(r, i);
        uint32_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}
