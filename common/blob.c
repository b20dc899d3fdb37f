/*
 * blob.c — little-endian state-file records with a CRC-32 trailer; see
 * blob.h.
 */
#include "blob.h"

#include <string.h>
#include <zlib.h>

void fmq_wr_init(fmq_wr *w)
{
    fmq_buf_init(&w->b);
    w->e = FMQ_OK;
}

void fmq_wr_fini(fmq_wr *w) { fmq_buf_fini(&w->b); }

void fmq_wr_bytes(fmq_wr *w, const void *p, size_t n)
{
    if (!w->e && n)
        w->e = fmq_buf_append(&w->b, p, n);
}

void fmq_wr_u8(fmq_wr *w, uint8_t v) { fmq_wr_bytes(w, &v, 1); }

void fmq_wr_u32(fmq_wr *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                    (uint8_t)(v >> 24)};
    fmq_wr_bytes(w, b, 4);
}

void fmq_wr_u64(fmq_wr *w, uint64_t v)
{
    fmq_wr_u32(w, (uint32_t)v);
    fmq_wr_u32(w, (uint32_t)(v >> 32));
}

void fmq_wr_f64(fmq_wr *w, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    fmq_wr_u64(w, u);
}

void fmq_wr_floats(fmq_wr *w, const float *x, uint32_t n)
{
    if (w->e || (w->e = fmq_buf_reserve(&w->b, (size_t)n * 4)))
        return;
    for (uint32_t i = 0; i < n; i++)
        fmq_store_f32le(w->b.data + w->b.len + 4 * (size_t)i, x[i]);
    w->b.len += (size_t)n * 4;
}

void fmq_wr_str(fmq_wr *w, const char *s, size_t cap)
{
    if (w->e || (w->e = fmq_buf_reserve(&w->b, cap)))
        return;
    uint8_t *p = w->b.data + w->b.len;
    memset(p, 0, cap);
    size_t n = s ? strnlen(s, cap ? cap - 1 : 0) : 0;
    if (n)
        memcpy(p, s, n);
    w->b.len += cap;
}

void fmq_wr_crc(fmq_wr *w)
{
    if (!w->e)
        fmq_wr_u32(w, (uint32_t)crc32(0, w->b.data, (uInt)w->b.len));
}

bool fmq_rd_init_crc(fmq_rd *r, const uint8_t *buf, size_t len)
{
    r->p = buf;
    r->left = 0;
    r->bad = true;
    if (len < 4 || len - 4 > UINT32_MAX)
        return false;
    const uint8_t *t = buf + len - 4;
    uint32_t want = (uint32_t)t[0] | (uint32_t)t[1] << 8 |
                    (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
    if ((uint32_t)crc32(0, buf, (uInt)(len - 4)) != want)
        return false;
    r->left = len - 4;
    r->bad = false;
    return true;
}

const uint8_t *fmq_rd_view(fmq_rd *r, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

void fmq_rd_bytes(fmq_rd *r, void *out, size_t n)
{
    const uint8_t *p = fmq_rd_view(r, n);
    if (p)
        memcpy(out, p, n);
    else
        memset(out, 0, n);
}

uint8_t fmq_rd_u8(fmq_rd *r)
{
    uint8_t v;
    fmq_rd_bytes(r, &v, 1);
    return v;
}

uint32_t fmq_rd_u32(fmq_rd *r)
{
    uint8_t b[4];
    fmq_rd_bytes(r, b, 4);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
           (uint32_t)b[3] << 24;
}

uint64_t fmq_rd_u64(fmq_rd *r)
{
    uint64_t lo = fmq_rd_u32(r);
    return lo | (uint64_t)fmq_rd_u32(r) << 32;
}

double fmq_rd_f64(fmq_rd *r)
{
    uint64_t u = fmq_rd_u64(r);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

void fmq_rd_floats(fmq_rd *r, float *x, uint32_t n)
{
    const uint8_t *p = fmq_rd_view(r, (size_t)n * 4);
    if (!p)
        return;
    for (uint32_t i = 0; i < n; i++)
        x[i] = fmq_load_f32le(p + 4 * (size_t)i);
}

void fmq_rd_str(fmq_rd *r, char *out, size_t cap)
{
    fmq_rd_bytes(r, out, cap);
    if (cap)
        out[cap - 1] = '\0';
}
