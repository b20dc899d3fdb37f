/*
 * blob.h — little-endian records for fedmq's state files (the aggregator's
 * checkpoint, a device's device.state): a writer that appends to an
 * fmq_buf and remembers its first error, a reader that never reads past
 * the end (it marks itself bad and returns zeros instead), and a CRC-32
 * trailer (zlib's) so a torn or corrupt file is recognised.
 *
 * A file is: the fields in order | u32 CRC-32 of everything before it.
 */
#ifndef FMQ_BLOB_H
#define FMQ_BLOB_H

#include "fmq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fmq_wr {
    fmq_buf b;
    fmq_err e; /* the first error; later puts do nothing */
} fmq_wr;

void fmq_wr_init(fmq_wr *w);
void fmq_wr_fini(fmq_wr *w);
void fmq_wr_bytes(fmq_wr *w, const void *p, size_t n);
void fmq_wr_u8(fmq_wr *w, uint8_t v);
void fmq_wr_u32(fmq_wr *w, uint32_t v);
void fmq_wr_u64(fmq_wr *w, uint64_t v);
void fmq_wr_f64(fmq_wr *w, double d);
void fmq_wr_floats(fmq_wr *w, const float *x, uint32_t n); // x is (n,)
/* A fixed-size text field of cap bytes (NUL-padded; s is truncated). */
void fmq_wr_str(fmq_wr *w, const char *s, size_t cap);
/* Appends the CRC-32 of everything written so far. */
void fmq_wr_crc(fmq_wr *w);

typedef struct fmq_rd {
    const uint8_t *p;
    size_t left;
    bool bad; /* read past the end, or a bad CRC */
} fmq_rd;

/* Checks the trailing CRC of buf[0..len) and sets r to read what it
 * covers. false (r->bad set) when len < 4 or the CRC does not match. */
bool fmq_rd_init_crc(fmq_rd *r, const uint8_t *buf, size_t len);
void fmq_rd_bytes(fmq_rd *r, void *out, size_t n);
/* A view of the next n bytes (NULL, and bad, when fewer remain). */
const uint8_t *fmq_rd_view(fmq_rd *r, size_t n);
uint8_t fmq_rd_u8(fmq_rd *r);
uint32_t fmq_rd_u32(fmq_rd *r);
uint64_t fmq_rd_u64(fmq_rd *r);
double fmq_rd_f64(fmq_rd *r);
void fmq_rd_floats(fmq_rd *r, float *x, uint32_t n); // x is (n,)
/* A field written by fmq_wr_str; out (cap bytes) is always terminated. */
void fmq_rd_str(fmq_rd *r, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_BLOB_H */
