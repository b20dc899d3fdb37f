/*
 * test_data.c — the dataset loaders: Fashion-MNIST from Debian's
 * dataset-fashion-mnist files (sizes, shape, balanced labels, pixel values
 * against numpy's reading of the same files), IDX files crafted to be
 * wrong in exactly one way (each refused with its reason, logged and handed
 * back), CSV files good and bad, normalisation, subsets and out-of-memory.
 * Crafted files go to $FMQ_BUILD/tmp/test_data (FMQ_BUILD defaults to
 * "build").
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
#include <zlib.h>

#include "data.h"

static fmq_dataset train, test;
static char tmpdir[512];

/* ------------------------------------------------------------ helpers */

/* Every log record is caught: the last one is compared with the reason. */
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

static const char *tmp_path(const char *name)
{
    static char buf[16][640]; /* a few names live at once */
    static int which;
    char *p = buf[which++ % 16];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

static void write_plain(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void write_gz(const char *path, const void *p, size_t n)
{
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, p, (unsigned)n), (int)n);
    assert_int_equal(gzclose(g), Z_OK);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An IDX image file image: magic, count, rows, cols, then `have` pixel
 * bytes (i * 37 mod 256), whatever the header says. Caller frees. */
static uint8_t *idx_images(uint32_t magic, uint32_t count, uint32_t rows,
                           uint32_t cols, size_t have, size_t *len)
{
    uint8_t *b = malloc(16 + have);
    assert_non_null(b);
    put_be32(b, magic);
    put_be32(b + 4, count);
    put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    for (size_t i = 0; i < have; i++)
        b[16 + i] = (uint8_t)(i * 37);
    *len = 16 + have;
    return b;
}

/* An IDX label file image: magic, count, then `have` labels i mod 7
 * (label[2] = third, so crafted label values can be placed). */
static uint8_t *idx_labels(uint32_t count, size_t have, size_t *len)
{
    uint8_t *b = malloc(8 + have);
    assert_non_null(b);
    put_be32(b, 0x00000801);
    put_be32(b + 4, count);
    for (size_t i = 0; i < have; i++)
        b[8 + i] = (uint8_t)(i % 7);
    *len = 8 + have;
    return b;
}

/* A good 5 x 4x4 pair, gzipped: images.gz, labels.gz. */
static void write_good_pair(const char *img, const char *lab)
{
    size_t n;
    uint8_t *b = idx_images(0x803, 5, 4, 4, 80, &n);
    write_gz(img, b, n);
    free(b);
    b = idx_labels(5, 5, &n);
    write_gz(lab, b, n);
    free(b);
}

static bool all_zero(const fmq_dataset *ds)
{
    static const fmq_dataset zero;
    return memcmp(ds, &zero, sizeof zero) == 0;
}

/* Load the pair and expect FMQ_ERR_DATA with exactly this reason (after
 * "<path>: "), the same text logged, and *out untouched-zero. */
static void expect_idx_refusal(const char *img, const char *lab,
                               const char *path_in_reason, const char *what)
{
    fmq_dataset ds;
    fmq_data_error err;
    logged.n = 0;
    assert_int_equal(fmq_data_load_idx_ex(img, lab, &ds, &err), FMQ_ERR_DATA);
    char want[1024];
    snprintf(want, sizeof want, "%s: %s", path_in_reason, what);
    assert_string_equal(err.reason, want);
    assert_int_equal(err.line, 0);
    assert_true(logged.n >= 1);
    assert_string_equal(logged.last, want);
    assert_true(all_zero(&ds));
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("FMQ_BUILD");
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp/test_data", b && *b ? b : "build");
    if (fmq_mkdir_p(tmpdir) != FMQ_OK)
        return -1;
    if (fmq_data_load_fashion_mnist(NULL, true, &train) != FMQ_OK)
        return -1;
    if (fmq_data_load_fashion_mnist(NULL, false, &test) != FMQ_OK)
        return -1;
    fmq_log_set_sink(capture_sink, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fmq_log_set_sink(NULL, NULL);
    fmq_data_fini(&train);
    fmq_data_fini(&test);
    return 0;
}

/* ---------------------------------------------------- the real files */

static void check_fashion(const fmq_dataset *ds, uint32_t n, uint64_t bytes)
{
    assert_int_equal(ds->n, n);
    assert_int_equal(ds->dim, 784);
    assert_int_equal(ds->c, 1);
    assert_int_equal(ds->h, 28);
    assert_int_equal(ds->w, 28);
    assert_int_equal(ds->classes, 10);
    uint32_t hist[10] = {0};
    for (uint32_t i = 0; i < ds->n; i++) {
        assert_true(ds->y[i] < 10);
        hist[ds->y[i]]++;
    }
    for (int c = 0; c < 10; c++)
        assert_int_equal(hist[c], n / 10);
    /* every pixel in [0, 1] and a multiple of 1/255; the byte total is
     * numpy's sum over the same file */
    float lo = 1, hi = 0;
    uint64_t sum = 0;
    for (size_t i = 0; i < (size_t)ds->n * ds->dim; i++) {
        float v = ds->x[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        long b = lrintf(v * 255.0f);
        assert_true(v == (float)b / 255.0f);
        sum += (uint64_t)b;
    }
    assert_true(lo == 0.0f);
    assert_true(hi == 1.0f);
    assert_true(sum == bytes);
}

static void fashion_mnist_train_is_60000_balanced_28x28_images(void **state)
{
    (void)state;
    check_fashion(&train, 60000, 3431114169ull);
    /* row-major, in file order: numpy says labels 9 0 0 3, image 0 sums
     * to 76247 and its first lit pixel is 96 with byte 1 */
    assert_int_equal(train.y[0], 9);
    assert_int_equal(train.y[3], 3);
    assert_true(train.x[95] == 0.0f);
    assert_true(train.x[96] == 1.0f / 255.0f);
    assert_true(train.x[300] == 210.0f / 255.0f);
    double s = 0;
    for (int i = 0; i < 784; i++)
        s += train.x[i] * 255.0;
    assert_float_equal(s, 76247.0, 1e-2);
}

static void fashion_mnist_test_is_10000_balanced_28x28_images(void **state)
{
    (void)state;
    check_fashion(&test, 10000, 573469082ull);
    assert_int_equal(test.y[0], 9);
    assert_int_equal(test.y[1], 2);
}

static void a_missing_directory_is_not_found(void **state)
{
    (void)state;
    fmq_dataset ds;
    fmq_data_error err;
    assert_int_equal(
        fmq_data_load_fashion_mnist_ex(tmp_path("nowhere"), true, &ds, &err),
        FMQ_ERR_NOTFOUND);
    assert_non_null(strstr(err.reason, "train-images-idx3-ubyte.gz"));
    assert_non_null(strstr(err.reason, "No such file"));
    assert_true(all_zero(&ds));
}

/* ------------------------------------------------------- crafted IDX */

static void a_small_pair_loads_gzipped_or_plain(void **state)
{
    (void)state;
    const char *img = tmp_path("good-images.gz"),
               *lab = tmp_path("good-lab.gz");
    write_good_pair(img, lab);
    fmq_dataset ds;
    fmq_data_error err;
    assert_int_equal(fmq_data_load_idx_ex(img, lab, &ds, &err), FMQ_OK);
    assert_string_equal(err.reason, "");
    assert_int_equal(ds.n, 5);
    assert_int_equal(ds.dim, 16);
    assert_int_equal(ds.h, 4);
    assert_int_equal(ds.w, 4);
    assert_int_equal(ds.classes, 5); /* labels 0..4: largest + 1 */
    for (int i = 0; i < 80; i++)
        assert_true(ds.x[i] == (float)(uint8_t)(i * 37) / 255.0f);
    for (int i = 0; i < 5; i++)
        assert_int_equal(ds.y[i], i);
    fmq_data_fini(&ds);
    assert_true(all_zero(&ds));
    fmq_data_fini(&ds); /* twice is fine */

    size_t n;
    uint8_t *b = idx_images(0x803, 5, 4, 4, 80, &n);
    write_plain(tmp_path("plain-images"), b, n);
    free(b);
    b = idx_labels(5, 5, &n);
    write_plain(tmp_path("plain-labels"), b, n);
    free(b);
    assert_int_equal(fmq_data_load_idx(tmp_path("plain-images"),
                                       tmp_path("plain-labels"), &ds),
                     FMQ_OK);
    assert_int_equal(ds.n, 5);
    assert_true(ds.x[79] == (float)(uint8_t)(79 * 37) / 255.0f);
    fmq_data_fini(&ds);
}

static void bad_magic_is_refused_with_both_numbers(void **state)
{
    (void)state;
    const char *img = tmp_path("train-images-idx3-ubyte.gz");
    const char *lab = tmp_path("lab.gz");
    write_good_pair(tmp_path("unused.gz"), lab);
    size_t n;
    uint8_t *b = idx_images(0x804, 5, 4, 4, 80, &n);
    write_gz(img, b, n);
    free(b);
    expect_idx_refusal(img, lab, img, "bad magic 0x00000804 (want 0x00000803)");
    /* a labels file where the images should be, and the other way round */
    expect_idx_refusal(lab, lab, lab, "bad magic 0x00000801 (want 0x00000803)");
    write_good_pair(img, lab);
    expect_idx_refusal(img, img, img, "bad magic 0x00000803 (want 0x00000801)");
}

static void truncated_images_say_declared_and_present(void **state)
{
    (void)state;
    const char *img = tmp_path("trunc-images.gz"), *lab = tmp_path("lab.gz");
    write_good_pair(tmp_path("unused.gz"), lab);
    size_t n;
    uint8_t *b = idx_images(0x803, 5, 4, 4, 30, &n);
    write_gz(img, b, n);
    free(b);
    expect_idx_refusal(img, lab, img,
                       "truncated: 80 pixel bytes declared, 30 present");
    b = idx_images(0x803, 5, 4, 4, 0, &n);
    write_gz(img, b, 10); /* the header itself cut short */
    free(b);
    expect_idx_refusal(img, lab, img, "truncated header: 10 of 16 bytes");
    write_gz(img, "", 0);
    expect_idx_refusal(img, lab, img, "truncated header: 0 of 16 bytes");
}

static void truncated_labels_are_refused(void **state)
{
    (void)state;
    const char *img = tmp_path("img.gz"), *lab = tmp_path("trunc-labels.gz");
    write_good_pair(img, tmp_path("unused.gz"));
    size_t n;
    uint8_t *b = idx_labels(5, 3, &n);
    write_gz(lab, b, n);
    free(b);
    expect_idx_refusal(img, lab, lab,
                       "truncated: 5 labels declared, 3 present");
}

static void trailing_bytes_are_refused(void **state)
{
    (void)state;
    const char *img = tmp_path("long-images.gz"), *lab = tmp_path("lab.gz");
    write_good_pair(tmp_path("unused.gz"), lab);
    size_t n;
    uint8_t *b = idx_images(0x803, 5, 4, 4, 83, &n);
    write_gz(img, b, n);
    free(b);
    expect_idx_refusal(img, lab, img,
                       "3 trailing bytes after the 80 pixel bytes declared");
    b = idx_labels(5, 6, &n);
    write_plain(tmp_path("long-labels"), b, n);
    free(b);
    write_good_pair(img, tmp_path("unused.gz"));
    expect_idx_refusal(img, tmp_path("long-labels"), tmp_path("long-labels"),
                       "1 trailing bytes after the 5 label bytes declared");
}

static void image_and_label_counts_must_agree(void **state)
{
    (void)state;
    const char *img = tmp_path("five-images.gz"), *lab = tmp_path("four.gz");
    write_good_pair(img, tmp_path("unused.gz"));
    size_t n;
    uint8_t *b = idx_labels(4, 4, &n);
    write_gz(lab, b, n);
    free(b);
    char what[1024];
    snprintf(what, sizeof what, "4 labels, but %s has 5 images", img);
    expect_idx_refusal(img, lab, lab, what);
}

static void impossible_dimensions_are_refused(void **state)
{
    (void)state;
    const char *img = tmp_path("dims-images.gz"), *lab = tmp_path("lab.gz");
    write_good_pair(tmp_path("unused.gz"), lab);
    size_t n;
    uint8_t *b = idx_images(0x803, 5, 0, 4, 0, &n);
    write_gz(img, b, n);
    free(b);
    expect_idx_refusal(img, lab, img,
                       "bad dimensions: 5 images of 0x4 (want at least one "
                       "image, rows and columns 1..65535)");
    b = idx_images(0x803, 0, 4, 4, 0, &n);
    write_gz(img, b, n);
    free(b);
    expect_idx_refusal(img, lab, img,
                       "bad dimensions: 0 images of 4x4 (want at least one "
                       "image, rows and columns 1..65535)");
    /* a header asking for 64 GiB is refused before anything is allocated */
    b = idx_images(0x803, 1u << 20, 256, 256, 0, &n);
    write_gz(img, b, n);
    free(b);
    expect_idx_refusal(img, lab, img,
                       "1048576 images of 256x256 is 68719476736 pixel bytes, "
                       "over the limit of 2147483648");
}

/* Fashion-MNIST files in a directory of our own, wrong in one way each. */
static void fashion_mnist_checks_shape_and_label_range(void **state)
{
    (void)state;
    char dir[700];
    snprintf(dir, sizeof dir, "%s/fashion", tmpdir);
    assert_int_equal(fmq_mkdir_p(dir), FMQ_OK);
    char img[800], lab[800];
    snprintf(img, sizeof img, "%s/t10k-images-idx3-ubyte.gz", dir);
    snprintf(lab, sizeof lab, "%s/t10k-labels-idx1-ubyte.gz", dir);
    size_t n;
    uint8_t *b = idx_images(0x803, 3, 27, 28, 3 * 27 * 28, &n);
    write_gz(img, b, n);
    free(b);
    uint8_t l[8 + 3];
    put_be32(l, 0x801);
    put_be32(l + 4, 3);
    l[8] = 0, l[9] = 9, l[10] = 10;
    write_gz(lab, l, sizeof l);

    fmq_dataset ds;
    fmq_data_error err;
    char want[1024];
    assert_int_equal(fmq_data_load_fashion_mnist_ex(dir, false, &ds, &err),
                     FMQ_ERR_DATA);
    snprintf(want, sizeof want,
             "%s: images are 27x28, Fashion-MNIST's are "
             "28x28",
             img);
    assert_string_equal(err.reason, want);
    assert_true(all_zero(&ds));

    b = idx_images(0x803, 3, 28, 28, 3 * 784, &n);
    write_gz(img, b, n);
    free(b);
    assert_int_equal(fmq_data_load_fashion_mnist_ex(dir, false, &ds, &err),
                     FMQ_ERR_DATA);
    snprintf(want, sizeof want,
             "%s: label 10 at index 2 is not below 10 (the number of "
             "Fashion-MNIST classes)",
             lab);
    assert_string_equal(err.reason, want);
    assert_string_equal(logged.last, want);

    l[10] = 1; /* now good: classes is 10 even though only 0, 1, 9 occur */
    write_gz(lab, l, sizeof l);
    assert_int_equal(fmq_data_load_fashion_mnist_ex(dir, false, &ds, &err),
                     FMQ_OK);
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.classes, 10);
    fmq_data_fini(&ds);
}

static void corrupt_gzip_is_refused_with_zlibs_reason(void **state)
{
    (void)state;
    const char *img = tmp_path("good-images.gz"), *lab = tmp_path("lab.gz");
    /* 50 images of 16x16, compressed; then one byte of the deflate data
     * flipped, and separately the compressed file cut in half */
    size_t n;
    uint8_t *b = idx_images(0x803, 50, 16, 16, 50 * 256, &n);
    write_gz(img, b, n);
    free(b);
    b = idx_labels(50, 50, &n);
    write_gz(lab, b, n);
    free(b);
    fmq_dataset ds;
    assert_int_equal(fmq_data_load_idx(img, lab, &ds), FMQ_OK);
    fmq_data_fini(&ds);

    uint8_t *gz;
    size_t gzlen;
    assert_int_equal(fmq_file_read(img, 1 << 20, &gz, &gzlen), FMQ_OK);
    assert_true(gzlen > 40);
    const char *bad = tmp_path("corrupt-images.gz");
    gz[gzlen / 2] ^= 0x55;
    write_plain(bad, gz, gzlen);
    fmq_data_error err;
    logged.n = 0;
    assert_int_equal(fmq_data_load_idx_ex(bad, lab, &ds, &err), FMQ_ERR_DATA);
    char want[1024];
    snprintf(want, sizeof want, "%s: corrupt gzip data (", bad);
    assert_memory_equal(err.reason, want, strlen(want));
    assert_string_equal(logged.last, err.reason);
    assert_true(all_zero(&ds));

    gz[gzlen / 2] ^= 0x55;
    gz[gzlen - 6] ^= 0x01; /* the CRC-32 in the gzip trailer */
    write_plain(bad, gz, gzlen);
    assert_int_equal(fmq_data_load_idx_ex(bad, lab, &ds, &err), FMQ_ERR_DATA);
    snprintf(want, sizeof want, "%s: corrupt gzip data (incorrect data check)",
             bad);
    assert_string_equal(err.reason, want);

    gz[gzlen - 6] ^= 0x01;
    write_plain(bad, gz, gzlen / 2);
    assert_int_equal(fmq_data_load_idx_ex(bad, lab, &ds, &err), FMQ_ERR_DATA);
    snprintf(want, sizeof want,
             "%s: gzip stream truncated (unexpected end of file)", bad);
    assert_string_equal(err.reason, want);
    fmq_free(gz);
}

/* --------------------------------------------------------------- CSV */

static const char *write_text(const char *name, const char *text)
{
    const char *p = tmp_path(name);
    write_plain(p, text, strlen(text));
    return p;
}

static void csv_reads_features_and_label_in_any_column(void **state)
{
    (void)state;
    const char *p = write_text("good.csv", "temp,\"hum, %\",label\r\n"
                                           " 1.5, -2 ,3\r\n"
                                           "\r\n"
                                           "1e-3,4.25e2,0\n"
                                           "\t7 ,8,3.0\n"
                                           "-0, +9 ,1"); /* no final newline */
    fmq_dataset ds;
    fmq_data_error err;
    assert_int_equal(fmq_data_load_csv_ex(p, -1, true, &ds, &err), FMQ_OK);
    assert_string_equal(err.reason, "");
    assert_int_equal(ds.n, 4);
    assert_int_equal(ds.dim, 2);
    assert_int_equal(ds.classes, 4);
    assert_int_equal(ds.c, 1);
    assert_int_equal(ds.h, 1);
    assert_int_equal(ds.w, 2);
    static const float x[8] = {1.5f, -2, 1e-3f, 425, 7, 8, -0.0f, 9};
    static const uint16_t y[4] = {3, 0, 3, 1};
    for (int i = 0; i < 8; i++)
        assert_true(ds.x[i] == x[i]);
    for (int i = 0; i < 4; i++)
        assert_int_equal(ds.y[i], y[i]);
    fmq_data_fini(&ds);

    /* label first, no header */
    p = write_text("first.csv", "2,0,0.25\n0,1,2\n");
    assert_int_equal(fmq_data_load_csv(p, 0, false, &ds), FMQ_OK);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.dim, 2);
    assert_int_equal(ds.classes, 3);
    assert_int_equal(ds.y[0], 2);
    assert_true(ds.x[0] == 0.0f && ds.x[1] == 0.25f && ds.x[3] == 2.0f);
    fmq_data_fini(&ds);

    /* label in the middle */
    assert_int_equal(fmq_data_load_csv(p, 1, false, &ds), FMQ_OK);
    assert_int_equal(ds.y[0], 0);
    assert_int_equal(ds.y[1], 1);
    assert_true(ds.x[0] == 2.0f && ds.x[1] == 0.25f);
    fmq_data_fini(&ds);
}

/* One bad CSV: status, reason after "<path>:", line and column. */
static void expect_csv_refusal(const char *text, int label, bool header,
                               fmq_err want_e, const char *what, uint32_t line,
                               uint32_t col)
{
    const char *p = write_text("bad.csv", text);
    fmq_dataset ds;
    fmq_data_error err;
    logged.n = 0;
    assert_int_equal(fmq_data_load_csv_ex(p, label, header, &ds, &err), want_e);
    char want[1024];
    snprintf(want, sizeof want, "%s%s", p, what);
    assert_string_equal(err.reason, want);
    assert_string_equal(logged.last, want);
    assert_int_equal(err.line, line);
    assert_int_equal(err.column, col);
    assert_true(all_zero(&ds));
}

static void csv_errors_name_line_and_column(void **state)
{
    (void)state;
    const fmq_err D = FMQ_ERR_DATA;
    expect_csv_refusal("a,b,y\n1,2,0\n3,x4,1\n", -1, true, D,
                       ":3:2: 'x4' is not a number", 3, 2);
    expect_csv_refusal("1,,0\n", -1, false, D, ":1:2: '' is not a number", 1,
                       2);
    expect_csv_refusal("1,2,0\n1,2\n", -1, false, D,
                       ":2: 2 fields, expected 3 as on line 1", 2, 0);
    expect_csv_refusal("a,b,y\n1,2,0,5\n", -1, true, D,
                       ":2: 4 fields, expected 3 as on line 1", 2, 0);
    expect_csv_refusal("1,2,0\n\n1,2,-1\n", -1, false, D,
                       ":3:3: label '-1' is negative", 3, 3);
    expect_csv_refusal("1,2,0.5\n", -1, false, D,
                       ":1:3: label '0.5' is not an integer", 1, 3);
    expect_csv_refusal("1,2,70000\n", -1, false, D,
                       ":1:3: label '70000' is above 65535", 1, 3);
    expect_csv_refusal("1,2,cat\n", -1, false, D,
                       ":1:3: label 'cat' is not a number", 1, 3);
    expect_csv_refusal("nan,2,1\n", -1, false, D,
                       ":1:1: 'nan' is not a finite number", 1, 1);
    expect_csv_refusal("1e39,2,1\n", -1, false, D,
                       ":1:1: '1e39' is beyond the range of float", 1, 1);
    expect_csv_refusal("1,2,1\n", 3, false, D,
                       ":1: label column 3, but the rows have 3 fields "
                       "(columns 0..2)",
                       1, 0);
    expect_csv_refusal("0\n1\n", -1, false, D,
                       ":1: one field per row: a label but no feature column",
                       1, 0);
    expect_csv_refusal("a,b,y\n\n", -1, true, D, ": no data rows", 0, 0);
    expect_csv_refusal("", -1, false, D, ": no data rows", 0, 0);

    fmq_dataset ds;
    fmq_data_error err;
    assert_int_equal(
        fmq_data_load_csv_ex(tmp_path("none.csv"), -1, false, &ds, &err),
        FMQ_ERR_NOTFOUND);
    assert_non_null(strstr(err.reason, "none.csv: no such file"));
}

/* ------------------------------------------------------ normalisation */

static void global_stats_of_train_match_numpy_and_normalise_to_0_1(void **state)
{
    (void)state;
    float m, s;
    assert_int_equal(fmq_data_stats(&train, &m, &s, 1), FMQ_OK);
    /* numpy over the same file (float64): 0.286041, 0.353024 */
    assert_float_equal(m, 0.286041, 1e-5);
    assert_float_equal(s, 0.353024, 1e-5);

    /* normalise a copy (the shared train set stays in [0, 1]) */
    uint32_t *all = malloc(train.n * sizeof *all);
    assert_non_null(all);
    for (uint32_t i = 0; i < train.n; i++)
        all[i] = i;
    fmq_dataset ds;
    assert_int_equal(fmq_data_subset(&train, all, train.n, &ds), FMQ_OK);
    free(all);
    assert_int_equal(fmq_data_normalize(&ds, &m, &s, 1), FMQ_OK);
    float m2, s2;
    assert_int_equal(fmq_data_stats(&ds, &m2, &s2, 1), FMQ_OK);
    assert_float_equal(m2, 0.0, 1e-5);
    assert_float_equal(s2, 1.0, 1e-5);
    /* a pixel of 0 is now -mean/std */
    assert_float_equal(ds.x[0], -m / s, 1e-6);
    fmq_data_fini(&ds);

    /* the test set with the training statistics: close to 0 and 1 */
    assert_int_equal(fmq_data_stats(&test, &m2, &s2, 1), FMQ_OK);
    assert_float_equal(m2, 0.286849, 1e-5);
}

static void per_feature_stats_and_normalisation(void **state)
{
    (void)state;
    /* 4 rows of 3 features; the third is constant */
    float x[12] = {1, 10, 5, 2, 20, 5, 3, 30, 5, 4, 40, 5};
    uint16_t y[4] = {0, 1, 0, 1};
    fmq_dataset ds = {4, 3, 2, 1, 1, 3, x, y};
    float m[3], s[3];
    assert_int_equal(fmq_data_stats(&ds, m, s, 3), FMQ_OK);
    assert_float_equal(m[0], 2.5, 1e-6);
    assert_float_equal(m[1], 25, 1e-5);
    assert_float_equal(m[2], 5, 1e-6);
    assert_float_equal(s[0], sqrt(1.25), 1e-6);
    assert_float_equal(s[1], sqrt(125.0), 1e-5);
    assert_true(s[2] == 0.0f);
    assert_int_equal(fmq_data_normalize(&ds, m, s, 3), FMQ_OK);
    assert_int_equal(fmq_data_stats(&ds, m, s, 3), FMQ_OK);
    for (int j = 0; j < 2; j++) {
        assert_float_equal(m[j], 0, 1e-6);
        assert_float_equal(s[j], 1, 1e-6);
    }
    for (int i = 0; i < 4; i++)
        assert_true(x[3 * i + 2] == 0.0f); /* centred, not divided by 0 */

    float bad = -1, ok = 1, nan = NAN;
    assert_int_equal(fmq_data_stats(&ds, m, s, 2), FMQ_ERR_INVAL);
    assert_int_equal(fmq_data_normalize(&ds, m, s, 2), FMQ_ERR_INVAL);
    assert_int_equal(fmq_data_normalize(&ds, &ok, &bad, 1), FMQ_ERR_INVAL);
    assert_int_equal(fmq_data_normalize(&ds, &nan, &ok, 1), FMQ_ERR_INVAL);
    fmq_dataset empty = {0};
    assert_int_equal(fmq_data_stats(&empty, m, s, 1), FMQ_ERR_INVAL);
}

/* ------------------------------------------------------------ subsets */

static void subset_copies_the_chosen_rows_in_order(void **state)
{
    (void)state;
    uint32_t idx[3] = {59999, 0, 59999};
    fmq_dataset ds;
    assert_int_equal(fmq_data_subset(&train, idx, 3, &ds), FMQ_OK);
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.dim, 784);
    assert_int_equal(ds.classes, 10);
    assert_int_equal(ds.h, 28);
    for (int i = 0; i < 3; i++) {
        assert_memory_equal(ds.x + 784 * i, train.x + 784 * (size_t)idx[i],
                            784 * sizeof(float));
        assert_int_equal(ds.y[i], train.y[idx[i]]);
    }
    assert_true(ds.x != train.x);
    fmq_data_fini(&ds);

    assert_int_equal(fmq_data_subset(&train, idx, 0, &ds), FMQ_OK);
    assert_int_equal(ds.n, 0);
    fmq_data_fini(&ds);

    idx[1] = 60000;
    assert_int_equal(fmq_data_subset(&train, idx, 3, &ds), FMQ_ERR_RANGE);
    assert_true(all_zero(&ds));
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

/* Every allocation failing in turn gives FMQ_ERR_NOMEM and leaks nothing
 * (the ASan pass checks the leaks); with enough, each loader succeeds. */
static void out_of_memory_is_reported_and_leaks_nothing(void **state)
{
    (void)state;
    const char *img = tmp_path("oom-images.gz"), *lab = tmp_path("oom-lab.gz");
    write_good_pair(img, lab);
    /* 3000 rows: the CSV reader's arrays grow twice */
    static char csv[3000 * 8 + 1];
    for (int i = 0; i < 3000; i++)
        memcpy(csv + 8 * i, "1,2.5,3\n", 8);
    const char *cp = write_text("oom.csv", csv);
    fmq_allocator a = {failing_malloc, failing_realloc, plain_free, NULL};
    for (int which = 0; which < 3; which++) {
        int k;
        for (k = 0; k < 100; k++) {
            fmq_dataset ds;
            fail_after = k;
            fmq_set_allocator(&a);
            fmq_err e =
                which == 0 ? fmq_data_load_idx(img, lab, &ds)
                : which == 1
                    ? fmq_data_load_csv(cp, -1, false, &ds)
                    : fmq_data_subset(&test, (uint32_t[]){1, 2}, 2, &ds);
            fmq_set_allocator(NULL);
            if (e == FMQ_OK) {
                assert_true(ds.n == 5 || ds.n == 3000 || ds.n == 2);
                fmq_data_fini(&ds);
                break;
            }
            assert_int_equal(e, FMQ_ERR_NOMEM);
            assert_true(all_zero(&ds));
        }
        assert_true(k > 0 && k < 100);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fashion_mnist_train_is_60000_balanced_28x28_images),
        cmocka_unit_test(fashion_mnist_test_is_10000_balanced_28x28_images),
        cmocka_unit_test(a_missing_directory_is_not_found),
        cmocka_unit_test(a_small_pair_loads_gzipped_or_plain),
        cmocka_unit_test(bad_magic_is_refused_with_both_numbers),
        cmocka_unit_test(truncated_images_say_declared_and_present),
        cmocka_unit_test(truncated_labels_are_refused),
        cmocka_unit_test(trailing_bytes_are_refused),
        cmocka_unit_test(image_and_label_counts_must_agree),
        cmocka_unit_test(impossible_dimensions_are_refused),
        cmocka_unit_test(fashion_mnist_checks_shape_and_label_range),
        cmocka_unit_test(corrupt_gzip_is_refused_with_zlibs_reason),
        cmocka_unit_test(csv_reads_features_and_label_in_any_column),
        cmocka_unit_test(csv_errors_name_line_and_column),
        cmocka_unit_test(
            global_stats_of_train_match_numpy_and_normalise_to_0_1),
        cmocka_unit_test(per_feature_stats_and_normalisation),
        cmocka_unit_test(subset_copies_the_chosen_rows_in_order),
        cmocka_unit_test(out_of_memory_is_reported_and_leaks_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
