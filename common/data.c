/*
 * data.c — the dataset loaders: IDX files (LeCun, Cortes & Burges' MNIST
 * format, which Fashion-MNIST keeps) read through zlib so that gzipped and
 * plain files both work, a CSV reader for sensor logs, normalisation and
 * row subsets. Every refusal names the file and says exactly what is
 * wrong; files come from disks and downloads, so nothing in them is
 * trusted: header sizes are checked before anything is allocated, and the
 * payload must be exactly as long as the header says.
 */
#include "data.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* Largest IDX payload accepted (pixel or label bytes): 2 GiB, which is 8 GiB
 * of floats, far beyond any dataset an edge device trains on. */
#define IDX_MAX_BYTES ((uint64_t)1 << 31)
#define IDX_MAX_SIDE  65535u
/* Largest CSV file read (fmq_file_read's limit). */
#define CSV_MAX_BYTES ((size_t)1 << 30)
#define CHUNK         (1u << 16)

/* Record a refusal: format it, log it, hand it to the caller. */
static void data__fail(fmq_data_error *err, uint32_t line, uint32_t column,
                       const char *fmt, ...) FMQ_PRINTF(4, 5);
static void data__fail(fmq_data_error *err, uint32_t line, uint32_t column,
                       const char *fmt, ...)
{
    char msg[sizeof err->reason];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fmq_log_err("%s", msg);
    if (err) {
        memcpy(err->reason, msg, sizeof msg);
        err->line = line;
        err->column = column;
    }
}

static void data__clear(fmq_data_error *err)
{
    if (err) {
        err->reason[0] = 0;
        err->line = err->column = 0;
    }
}

void fmq_data_fini(fmq_dataset *ds)
{
    if (!ds)
        return;
    fmq_free(ds->x);
    fmq_free(ds->y);
    memset(ds, 0, sizeof *ds);
}

/* ------------------------------------------------------------------- IDX */

/* One IDX file being read. */
typedef struct idx_file {
    const char *path;
    gzFile gz;
} idx_file;

static fmq_err idx__open(idx_file *f, const char *path, fmq_data_error *err)
{
    f->path = path;
    f->gz = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        data__fail(err, 0, 0, "%s: %s", path, strerror(e));
        return e == ENOENT ? FMQ_ERR_NOTFOUND : FMQ_ERR_IO;
    }
    f->gz = gzdopen(fd, "rb");
    if (!f->gz) {
        close(fd);
        data__fail(err, 0, 0, "%s: cannot start zlib", path);
        return FMQ_ERR_NOMEM;
    }
    (void)gzbuffer(f->gz, 128u * 1024u);
    return FMQ_OK;
}

static void idx__close(idx_file *f)
{
    if (f->gz)
        (void)gzclose_r(f->gz);
    f->gz = NULL;
}

/* Read up to len bytes; *got is what arrived before the end of the data.
 * A zlib error (corrupt deflate data, bad CRC, a gzip stream cut short) is
 * FMQ_ERR_DATA with zlib's words; reaching the end is not an error here. */
static fmq_err idx__read(idx_file *f, void *buf, size_t len, size_t *got,
                         fmq_data_error *err)
{
    uint8_t *p = buf;
    *got = 0;
    while (*got < len) {
        size_t want = len - *got;
        unsigned ask = want > CHUNK ? CHUNK : (unsigned)want;
        int r = gzread(f->gz, p + *got, ask);
        if (r > 0)
            *got += (size_t)r;
        int zerr = Z_OK;
        const char *zmsg = gzerror(f->gz, &zerr);
        /* zlib prefixes its message with the file's name, "<fd:3>" here */
        const char *colon = zmsg ? strstr(zmsg, ": ") : NULL;
        if (colon)
            zmsg = colon + 2;
        if (zerr == Z_BUF_ERROR) {
            data__fail(err, 0, 0,
                       "%s: gzip stream truncated (unexpected end of file)",
                       f->path);
            return FMQ_ERR_DATA;
        }
        if (zerr == Z_MEM_ERROR)
            return FMQ_ERR_NOMEM;
        if (zerr == Z_ERRNO) {
            data__fail(err, 0, 0, "%s: read error: %s", f->path,
                       strerror(errno));
            return FMQ_ERR_IO;
        }
        /* zlib inflates ahead of what it hands out, so where the damage
         * lies is not known more precisely than "in this file" */
        if (zerr != Z_OK || r < 0) {
            data__fail(err, 0, 0, "%s: corrupt gzip data (%s)", f->path,
                       zmsg && *zmsg ? zmsg : "zlib error");
            return FMQ_ERR_DATA;
        }
        if (r < (int)ask) /* end of data */
            break;
    }
    return FMQ_OK;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

/* Read and check the header: the magic, then ndims big-endian sizes. */
static fmq_err idx__header(idx_file *f, uint32_t want_magic, uint32_t *dims,
                           unsigned ndims, fmq_data_error *err)
{
    uint8_t h[16];
    size_t hlen = 4 + 4 * (size_t)ndims, got;
    fmq_err e = idx__read(f, h, hlen, &got, err);
    if (e)
        return e;
    if (got >= 4 && be32(h) != want_magic) {
        data__fail(err, 0, 0, "%s: bad magic 0x%08x (want 0x%08x)", f->path,
                   be32(h), want_magic);
        return FMQ_ERR_DATA;
    }
    if (got < hlen) {
        data__fail(err, 0, 0, "%s: truncated header: %zu of %zu bytes", f->path,
                   got, hlen);
        return FMQ_ERR_DATA;
    }
    for (unsigned i = 0; i < ndims; i++)
        dims[i] = be32(h + 4 + 4 * i);
    return FMQ_OK;
}

/* After the declared payload the file must end. Reading to the end also
 * makes zlib check the gzip trailer (CRC-32 and length). */
static fmq_err idx__expect_end(idx_file *f, const char *what, uint64_t declared,
                               fmq_data_error *err)
{
    uint8_t buf[4096];
    uint64_t extra = 0;
    for (;;) {
        size_t got;
        fmq_err e = idx__read(f, buf, sizeof buf, &got, err);
        if (e)
            return e;
        extra += got;
        if (got < sizeof buf)
            break;
    }
    if (extra) {
        data__fail(err, 0, 0,
                   "%s: %llu trailing bytes after the %llu %s declared",
                   f->path, (unsigned long long)extra,
                   (unsigned long long)declared, what);
        return FMQ_ERR_DATA;
    }
    return FMQ_OK;
}

/* Images: magic 0x00000803, count, rows, columns, then count*rows*columns
 * pixel bytes, converted to floats in [0, 1] chunk by chunk (no byte copy
 * of the whole file is kept). */
static fmq_err idx__load_images(const char *path, fmq_dataset *ds,
                                fmq_data_error *err)
{
    idx_file f;
    uint8_t *chunk = NULL;
    float *x = NULL;
    fmq_err e = idx__open(&f, path, err);
    if (e)
        return e;
    uint32_t d[3];
    e = idx__header(&f, 0x00000803u, d, 3, err);
    if (e)
        goto fail;
    if (d[0] == 0 || d[1] == 0 || d[2] == 0 || d[1] > IDX_MAX_SIDE ||
        d[2] > IDX_MAX_SIDE) {
        data__fail(err, 0, 0,
                   "%s: bad dimensions: %u images of %ux%u (want at least "
                   "one image, rows and columns 1..%u)",
                   path, d[0], d[1], d[2], IDX_MAX_SIDE);
        e = FMQ_ERR_DATA;
        goto fail;
    }
    uint64_t dim = (uint64_t)d[1] * d[2];
    uint64_t bytes = (uint64_t)d[0] * dim; /* < 2^64: 2^32 * 2^32 */
    if (bytes > IDX_MAX_BYTES || dim > UINT32_MAX) {
        data__fail(err, 0, 0,
                   "%s: %u images of %ux%u is %llu pixel bytes, over the "
                   "limit of %llu",
                   path, d[0], d[1], d[2], (unsigned long long)bytes,
                   (unsigned long long)IDX_MAX_BYTES);
        e = FMQ_ERR_DATA;
        goto fail;
    }
    x = fmq_alloc_array((size_t)bytes, sizeof *x);
    chunk = fmq_malloc(CHUNK);
    if (!x || !chunk) {
        e = FMQ_ERR_NOMEM;
        goto fail;
    }
    /* x = byte / 255, as torchvision's ToTensor does */
    for (uint64_t done = 0; done < bytes;) {
        size_t want = bytes - done > CHUNK ? CHUNK : (size_t)(bytes - done);
        size_t got;
        e = idx__read(&f, chunk, want, &got, err);
        if (e)
            goto fail;
        for (size_t i = 0; i < got; i++)
            x[done + i] = (float)chunk[i] / 255.0f;
        done += got;
        if (got < want) {
            data__fail(err, 0, 0,
                       "%s: truncated: %llu pixel bytes declared, %llu "
                       "present",
                       path, (unsigned long long)bytes,
                       (unsigned long long)done);
            e = FMQ_ERR_DATA;
            goto fail;
        }
    }
    e = idx__expect_end(&f, "pixel bytes", bytes, err);
    if (e)
        goto fail;
    idx__close(&f);
    fmq_free(chunk);
    ds->n = d[0];
    ds->c = 1;
    ds->h = d[1];
    ds->w = d[2];
    ds->dim = (uint32_t)dim;
    ds->x = x;
    return FMQ_OK;
fail:
    idx__close(&f);
    fmq_free(chunk);
    fmq_free(x);
    return e;
}

/* Labels: magic 0x00000801, count, then count label bytes. */
static fmq_err idx__load_labels(const char *path, uint16_t **yp, uint32_t *np,
                                uint32_t *classes, fmq_data_error *err)
{
    idx_file f;
    uint8_t *chunk = NULL;
    uint16_t *y = NULL;
    fmq_err e = idx__open(&f, path, err);
    if (e)
        return e;
    uint32_t n;
    e = idx__header(&f, 0x00000801u, &n, 1, err);
    if (e)
        goto fail;
    if (n == 0 || n > IDX_MAX_BYTES) {
        data__fail(err, 0, 0, "%s: bad label count %u", path, n);
        e = FMQ_ERR_DATA;
        goto fail;
    }
    y = fmq_alloc_array(n, sizeof *y);
    chunk = fmq_malloc(CHUNK);
    if (!y || !chunk) {
        e = FMQ_ERR_NOMEM;
        goto fail;
    }
    unsigned maxlab = 0;
    for (uint32_t done = 0; done < n;) {
        size_t want = n - done > CHUNK ? CHUNK : n - done;
        size_t got;
        e = idx__read(&f, chunk, want, &got, err);
        if (e)
            goto fail;
        for (size_t i = 0; i < got; i++) {
            y[done + i] = chunk[i];
            if (chunk[i] > maxlab)
                maxlab = chunk[i];
        }
        done += (uint32_t)got;
        if (got < want) {
            data__fail(err, 0, 0,
                       "%s: truncated: %u labels declared, %u present", path, n,
                       done);
            e = FMQ_ERR_DATA;
            goto fail;
        }
    }
    e = idx__expect_end(&f, "label bytes", n, err);
    if (e)
        goto fail;
    idx__close(&f);
    fmq_free(chunk);
    *yp = y;
    *np = n;
    *classes = maxlab + 1;
    return FMQ_OK;
fail:
    idx__close(&f);
    fmq_free(chunk);
    fmq_free(y);
    return e;
}

fmq_err fmq_data_load_idx_ex(const char *images_gz, const char *labels_gz,
                             fmq_dataset *out, fmq_data_error *err)
{
    memset(out, 0, sizeof *out);
    data__clear(err);
    if (!images_gz || !labels_gz)
        return FMQ_ERR_INVAL;
    fmq_dataset ds = {0};
    fmq_err e = idx__load_images(images_gz, &ds, err);
    if (e)
        return e;
    uint32_t nl = 0;
    e = idx__load_labels(labels_gz, &ds.y, &nl, &ds.classes, err);
    if (e) {
        fmq_data_fini(&ds);
        return e;
    }
    if (nl != ds.n) {
        data__fail(err, 0, 0, "%s: %u labels, but %s has %u images", labels_gz,
                   nl, images_gz, ds.n);
        fmq_data_fini(&ds);
        return FMQ_ERR_DATA;
    }
    *out = ds;
    return FMQ_OK;
}

fmq_err fmq_data_load_idx(const char *images_gz, const char *labels_gz,
                          fmq_dataset *out)
{
    return fmq_data_load_idx_ex(images_gz, labels_gz, out, NULL);
}

fmq_err fmq_data_load_fashion_mnist_ex(const char *dir, bool train,
                                       fmq_dataset *out, fmq_data_error *err)
{
    memset(out, 0, sizeof *out);
    data__clear(err);
    if (!dir)
        dir = FMQ_FASHION_MNIST_DIR;
    const char *set = train ? "train" : "t10k";
    char img[PATH_MAX], lab[PATH_MAX];
    int a = snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte.gz", dir, set);
    int b = snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte.gz", dir, set);
    if (a < 0 || b < 0 || (size_t)a >= sizeof img || (size_t)b >= sizeof lab)
        return FMQ_ERR_INVAL;
    fmq_dataset ds;
    fmq_err e = fmq_data_load_idx_ex(img, lab, &ds, err);
    if (e)
        return e;
    if (ds.h != 28 || ds.w != 28) {
        data__fail(err, 0, 0, "%s: images are %ux%u, Fashion-MNIST's are 28x28",
                   img, ds.h, ds.w);
        fmq_data_fini(&ds);
        return FMQ_ERR_DATA;
    }
    for (uint32_t i = 0; i < ds.n; i++) {
        if (ds.y[i] >= 10) {
            data__fail(err, 0, 0,
                       "%s: label %u at index %u is not below 10 (the "
                       "number of Fashion-MNIST classes)",
                       lab, ds.y[i], i);
            fmq_data_fini(&ds);
            return FMQ_ERR_DATA;
        }
    }
    ds.classes = 10;
    *out = ds;
    return FMQ_OK;
}

fmq_err fmq_data_load_fashion_mnist(const char *dir, bool train,
                                    fmq_dataset *out)
{
    return fmq_data_load_fashion_mnist_ex(dir, train, out, NULL);
}

/* ------------------------------------------------------------------- CSV */

static bool csv__blank(char c)
{
    return c == ' ' || c == '\t';
}

/* A field's text for a message: at most 40 bytes, unprintables as '?'. */
static void csv__show(char *dst, size_t cap, const char *s, size_t n)
{
    size_t k = n < cap - 1 ? n : cap - 1;
    if (k > 40)
        k = 40;
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[k] = 0;
    if (k < n && k >= 3)
        memcpy(dst + k - 3, "...", 3);
}

/* Number of comma-separated fields of line [s, e). In a header, commas
 * inside double quotes do not count (column names may be quoted); data
 * rows have no quoting. */
static uint32_t csv__count_fields(const char *s, const char *e, bool header)
{
    uint32_t n = 1;
    bool quoted = false;
    for (; s < e; s++) {
        if (*s == '"' && header)
            quoted = !quoted;
        else if (*s == ',' && !quoted)
            n++;
    }
    return n;
}

/* Parse one field [s, e) as a number. Returns false when it is not one. */
static bool csv__number(const char *s, const char *e, double *v)
{
    while (s < e && csv__blank(*s))
        s++;
    while (e > s && csv__blank(e[-1]))
        e--;
    char tmp[128];
    size_t n = (size_t)(e - s);
    if (n == 0 || n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    char *end;
    *v = strtod(tmp, &end);
    return end == tmp + n;
}

typedef struct csv_rows {
    float *x;
    uint16_t *y;
    uint32_t n, cap, dim;
} csv_rows;

static fmq_err csv__grow(csv_rows *r)
{
    if (r->n < r->cap)
        return FMQ_OK;
    uint32_t cap = r->cap ? r->cap * 2 : 1024;
    if (cap < r->cap)
        return FMQ_ERR_NOMEM;
    if ((size_t)cap * r->dim > SIZE_MAX / sizeof(float))
        return FMQ_ERR_NOMEM;
    float *x = fmq_realloc(r->x, (size_t)cap * r->dim * sizeof *x);
    if (!x)
        return FMQ_ERR_NOMEM;
    r->x = x;
    uint16_t *y = fmq_realloc(r->y, (size_t)cap * sizeof *y);
    if (!y)
        return FMQ_ERR_NOMEM;
    r->y = y;
    r->cap = cap;
    return FMQ_OK;
}

fmq_err fmq_data_load_csv_ex(const char *path, int label_column,
                             bool has_header, fmq_dataset *out,
                             fmq_data_error *err)
{
    memset(out, 0, sizeof *out);
    data__clear(err);
    if (!path)
        return FMQ_ERR_INVAL;
    uint8_t *buf;
    size_t len;
    fmq_err e = fmq_file_read(path, CSV_MAX_BYTES, &buf, &len);
    if (e) {
        if (e == FMQ_ERR_TOO_LARGE)
            data__fail(err, 0, 0, "%s: larger than %zu bytes", path,
                       CSV_MAX_BYTES);
        else
            data__fail(err, 0, 0, "%s: %s", path,
                       e == FMQ_ERR_NOTFOUND ? "no such file"
                                             : "cannot be read");
        return e;
    }
    csv_rows r = {0};
    uint32_t nfields = 0, label = 0, first_line = 0, line = 0;
    unsigned maxlab = 0;
    bool header_pending = has_header;
    const char *p = (const char *)buf, *end = p + len;
    while (p < end) {
        line++;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        if (!eol)
            eol = end;
        if (eol > p && eol[-1] == '\r')
            eol--;
        const char *s = p;
        p = next;
        const char *t = s;
        while (t < eol && csv__blank(*t))
            t++;
        if (t == eol)
            continue; /* blank line */
        uint32_t count = csv__count_fields(s, eol, header_pending);
        if (nfields == 0) {
            nfields = count;
            first_line = line;
            label = label_column < 0 ? nfields - 1 : (uint32_t)label_column;
            if (label_column >= 0 && (uint32_t)label_column >= nfields) {
                data__fail(err, line, 0,
                           "%s:%u: label column %d, but the rows have %u "
                           "fields (columns 0..%u)",
                           path, line, label_column, nfields, nfields - 1);
                e = FMQ_ERR_DATA;
                goto fail;
            }
            if (nfields < 2) {
                data__fail(err, line, 0,
                           "%s:%u: one field per row: a label but no "
                           "feature column",
                           path, line);
                e = FMQ_ERR_DATA;
                goto fail;
            }
            r.dim = nfields - 1;
        } else if (count != nfields) {
            data__fail(err, line, 0,
                       "%s:%u: %u fields, expected %u as on line %u", path,
                       line, count, nfields, first_line);
            e = FMQ_ERR_DATA;
            goto fail;
        }
        if (header_pending) {
            header_pending = false;
            continue;
        }
        if ((e = csv__grow(&r)) != FMQ_OK)
            goto fail;
        float *row = r.x + (size_t)r.n * r.dim;
        const char *f = s;
        for (uint32_t col = 0; col < nfields; col++) {
            const char *fe = memchr(f, ',', (size_t)(eol - f));
            if (!fe)
                fe = eol;
            double v;
            const char *why = NULL;
            if (!csv__number(f, fe, &v))
                why = "is not a number";
            else if (!isfinite(v))
                why = "is not a finite number";
            else if (col != label && fabs(v) > (double)FLT_MAX)
                why = "is beyond the range of float";
            else if (col == label)
                why = v < 0           ? "is negative"
                      : v != floor(v) ? "is not an integer"
                      : v > 65535.0   ? "is above 65535"
                                      : NULL;
            if (why) {
                char show[48];
                csv__show(show, sizeof show, f, (size_t)(fe - f));
                data__fail(err, line, col + 1, "%s:%u:%u: %s'%s' %s", path,
                           line, col + 1, col == label ? "label " : "", show,
                           why);
                e = FMQ_ERR_DATA;
                goto fail;
            }
            if (col == label) {
                r.y[r.n] = (uint16_t)v;
                if (r.y[r.n] > maxlab)
                    maxlab = r.y[r.n];
            } else {
                *row++ = (float)v;
            }
            f = fe + 1;
        }
        r.n++;
    }
    if (r.n == 0) {
        data__fail(err, 0, 0, "%s: no data rows", path);
        e = FMQ_ERR_DATA;
        goto fail;
    }
    fmq_free(buf);
    /* give back what the doubling over-allocated */
    float *x = fmq_realloc(r.x, (size_t)r.n * r.dim * sizeof *x);
    if (x)
        r.x = x;
    uint16_t *y = fmq_realloc(r.y, (size_t)r.n * sizeof *y);
    if (y)
        r.y = y;
    out->n = r.n;
    out->dim = r.dim;
    out->classes = maxlab + 1;
    out->c = 1;
    out->h = 1;
    out->w = r.dim;
    out->x = r.x;
    out->y = r.y;
    return FMQ_OK;
fail:
    fmq_free(buf);
    fmq_free(r.x);
    fmq_free(r.y);
    return e;
}

fmq_err fmq_data_load_csv(const char *path, int label_column, bool has_header,
                          fmq_dataset *out)
{
    return fmq_data_load_csv_ex(path, label_column, has_header, out, NULL);
}

/* --------------------------------------------------------- normalisation */

fmq_err fmq_data_stats(const fmq_dataset *ds, float *mean, float *std,
                       uint32_t len)
{
    if (!ds || ds->n == 0 || ds->dim == 0 || (len != 1 && len != ds->dim))
        return FMQ_ERR_INVAL;
    size_t n = ds->n, dim = ds->dim;
    const float *x = ds->x;
    if (len == 1) {
        /* two passes in double: the sum, then squared deviations */
        double s = 0;
        for (size_t i = 0; i < n * dim; i++)
            s += x[i];
        double m = s / (double)(n * dim), q = 0;
        for (size_t i = 0; i < n * dim; i++) {
            double d = x[i] - m;
            q += d * d;
        }
        mean[0] = (float)m;
        std[0] = (float)sqrt(q / (double)(n * dim));
        return FMQ_OK;
    }
    double *acc = fmq_calloc(2 * dim, sizeof *acc);
    if (!acc)
        return FMQ_ERR_NOMEM;
    double *m = acc, *q = acc + dim;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < dim; j++)
            m[j] += x[i * dim + j];
    for (size_t j = 0; j < dim; j++)
        m[j] /= (double)n;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < dim; j++) {
            double d = x[i * dim + j] - m[j];
            q[j] += d * d;
        }
    for (size_t j = 0; j < dim; j++) {
        mean[j] = (float)m[j];
        std[j] = (float)sqrt(q[j] / (double)n);
    }
    fmq_free(acc);
    return FMQ_OK;
}

fmq_err fmq_data_normalize(fmq_dataset *ds, const float *mean, const float *std,
                           uint32_t len)
{
    if (!ds || (len != 1 && len != ds->dim))
        return FMQ_ERR_INVAL;
    for (uint32_t j = 0; j < len; j++)
        if (!isfinite(mean[j]) || !isfinite(std[j]) || std[j] < 0)
            return FMQ_ERR_INVAL;
    size_t n = ds->n, dim = ds->dim;
    float *x = ds->x;
    /* (x - mean) / std, the same operations as torchvision's Normalize */
    if (len == 1) {
        float m = mean[0], s = std[0] >= FLT_MIN ? std[0] : 1.0f;
        for (size_t i = 0; i < n * dim; i++)
            x[i] = (x[i] - m) / s;
        return FMQ_OK;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < dim; j++) {
            float s = std[j] >= FLT_MIN ? std[j] : 1.0f;
            x[i * dim + j] = (x[i * dim + j] - mean[j]) / s;
        }
    return FMQ_OK;
}

/* ---------------------------------------------------------------- subset */

fmq_err fmq_data_subset(const fmq_dataset *src, const uint32_t *idx, uint32_t n,
                        fmq_dataset *out)
{
    assert(src != out);
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < n; i++)
        if (idx[i] >= src->n)
            return FMQ_ERR_RANGE;
    size_t dim = src->dim;
    float *x = fmq_alloc_array((size_t)n * dim, sizeof *x);
    uint16_t *y = fmq_alloc_array(n, sizeof *y);
    if (!x || !y || (dim && (size_t)n * dim / dim != n)) {
        fmq_free(x);
        fmq_free(y);
        return FMQ_ERR_NOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        memcpy(x + (size_t)i * dim, src->x + (size_t)idx[i] * dim,
               dim * sizeof *x);
        y[i] = src->y[idx[i]];
    }
    *out = *src;
    out->n = n;
    out->x = x;
    out->y = y;
    return FMQ_OK;
}
