/*
 * data.h — datasets for the training engine: Fashion-MNIST from the IDX
 * files of Debian's dataset-fashion-mnist package, CSV sensor logs,
 * normalisation and row subsets (one party's share of a partition, see
 * partition.h).
 *
 * A dataset is a plain struct in caller storage: n rows of dim floats and
 * n labels. The loaders fill *out only when they succeed; on any error
 * *out is left zeroed and nothing needs freeing. fmq_data_fini frees what
 * a successful call allocated (and is a no-op on a zeroed dataset).
 *
 * Bad files are refused with FMQ_ERR_DATA and a reason naming the file and
 * exactly what is wrong ("train-images-idx3-ubyte.gz: bad magic 0x00000804
 * (want 0x00000803)"). The reason is always logged with fmq_log_err; the
 * _ex forms also hand it back in an fmq_data_error so that a caller (or a
 * test) can show or check it.
 */
#ifndef FMQ_DATA_H
#define FMQ_DATA_H

#include "fmq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fmq_dataset {
    uint32_t n, dim, classes;
    uint32_t c, h, w; /* image shape; CSV: c=1,h=1,w=dim */
    float *x;         /* (n, dim) row-major */
    uint16_t *y;      /* (n,) labels in [0, classes) */
} fmq_dataset;

/* What was wrong with a file. reason is the whole message, as logged
 * ("<path>: <what>", or "<path>:<line>:<column>: <what>" for CSV); line and
 * column (1-based, CSV only) are 0 when they do not apply. reason is ""
 * after a call that succeeded. */
typedef struct fmq_data_error {
    char reason[384];
    uint32_t line, column;
} fmq_data_error;

/* Default location of Debian's dataset-fashion-mnist files. */
#define FMQ_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Read a pair of IDX files (LeCun's MNIST format): images with magic
 * 0x00000803 (unsigned bytes, 3 dimensions: count, rows, columns) and
 * labels with magic 0x00000801 (unsigned bytes, 1 dimension: count), both
 * big-endian. Either file may be gzipped or plain (zlib tells them apart).
 * Each file must hold exactly the bytes its header declares, and both the
 * same count. Pixels become x = byte / 255 in [0, 1]; c = 1, h = rows,
 * w = columns, dim = rows * columns; classes = largest label + 1.
 * Returns FMQ_OK; FMQ_ERR_NOTFOUND when a file does not exist; FMQ_ERR_IO
 * when it cannot be opened or read; FMQ_ERR_DATA for a bad file (reason in
 * *err when err is not NULL); FMQ_ERR_NOMEM. Blocks on file I/O. */
FMQ_NODISCARD fmq_err fmq_data_load_idx(const char *images_gz,
                                        const char *labels_gz,
                                        fmq_dataset *out);
FMQ_NODISCARD fmq_err fmq_data_load_idx_ex(const char *images_gz,
                                           const char *labels_gz,
                                           fmq_dataset *out,
                                           fmq_data_error *err);

/* Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): dir/train-images-idx3-ubyte.gz
 * and dir/train-labels-idx1-ubyte.gz when train, else the t10k- pair; dir
 * NULL means FMQ_FASHION_MNIST_DIR. On top of fmq_data_load_idx's checks
 * the images must be 28×28 and the labels below 10; classes is always 10.
 * Pixels are in [0, 1], not normalised (see fmq_data_stats). Same returns
 * as fmq_data_load_idx. */
FMQ_NODISCARD fmq_err fmq_data_load_fashion_mnist(const char *dir, bool train,
                                                  fmq_dataset *out);
FMQ_NODISCARD fmq_err fmq_data_load_fashion_mnist_ex(const char *dir,
                                                     bool train,
                                                     fmq_dataset *out,
                                                     fmq_data_error *err);

/* Read a CSV file of numbers: one row per line, fields separated by commas
 * (spaces and tabs around a field are ignored, CRLF line ends and blank
 * lines are accepted, quoting is not). label_column is the 0-based index
 * of the label field, any negative value meaning the last one; every other
 * field is a feature, in file order. With has_header the first line is
 * skipped, but its field count must match the rows'. Features must be
 * finite numbers (strtod's syntax); labels integers in [0, 65535] ("3" or
 * "3.0"). classes = largest label + 1; c = 1, h = 1, w = dim.
 * Returns FMQ_OK; FMQ_ERR_NOTFOUND; FMQ_ERR_IO; FMQ_ERR_DATA with line
 * and column for a field that is not a number, a row with another number
 * of fields than the first, a negative or non-integer label, a file with
 * no rows or no feature column (reason in *err when err is not NULL);
 * FMQ_ERR_TOO_LARGE for a file over 1 GiB; FMQ_ERR_NOMEM. Blocks. */
FMQ_NODISCARD fmq_err fmq_data_load_csv(const char *path, int label_column,
                                        bool has_header, fmq_dataset *out);
FMQ_NODISCARD fmq_err fmq_data_load_csv_ex(const char *path, int label_column,
                                           bool has_header, fmq_dataset *out,
                                           fmq_data_error *err);

/* Mean and standard deviation (population, ddof = 0, accumulated in
 * double) of a dataset's features. len = 1 gives one global figure over
 * every value (what images use: Fashion-MNIST's training set gives about
 * 0.2860 and 0.3530); len = ds->dim gives one per feature. mean and std
 * are (len,). Returns FMQ_OK, or FMQ_ERR_INVAL when len is neither 1 nor
 * dim or the dataset is empty. */
FMQ_NODISCARD fmq_err fmq_data_stats(const fmq_dataset *ds, float *mean,
                                     float *std, uint32_t len);

/* x = (x - mean) / std in place, with len = 1 (one mean and std for every
 * value) or len = ds->dim (one per feature); mean and std are (len,). A std
 * of 0 (a constant feature) or below FLT_MIN divides by 1, so the feature is
 * centred but never blown up. Apply the training set's statistics to the
 * test set too. Returns FMQ_OK or FMQ_ERR_INVAL (bad len, std negative or
 * not finite); on error ds is unchanged. */
FMQ_NODISCARD fmq_err fmq_data_normalize(fmq_dataset *ds, const float *mean,
                                         const float *std, uint32_t len);

/* Copy rows idx[0..n) of src (in that order, repeats allowed) into a new
 * dataset with src's shape and classes. idx is (n,); n = 0 gives an empty
 * dataset; out must not be src. A party's share of a partition p is
 *   fmq_data_subset(ds, p.idx + p.off[j], p.off[j + 1] - p.off[j], &out).
 * Returns FMQ_OK, FMQ_ERR_RANGE when an index is not below src->n (nothing
 * is allocated), FMQ_ERR_NOMEM. */
FMQ_NODISCARD fmq_err fmq_data_subset(const fmq_dataset *src,
                                      const uint32_t *idx, uint32_t n,
                                      fmq_dataset *out);

/* Free a dataset's rows and labels and zero it. NULL and a zeroed dataset
 * are fine; so is calling it twice. */
void fmq_data_fini(fmq_dataset *ds);

#ifdef __cplusplus
}
#endif
#endif /* FMQ_DATA_H */
