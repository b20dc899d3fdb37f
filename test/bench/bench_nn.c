/*
 * bench_nn.c — training and evaluation throughput of the engine, samples/s,
 * for mlp:128 and cnn at batch 64, on one core and on two, with OpenBLAS
 * and with the portable kernels, beside PyTorch (Debian's python3-torch,
 * test/bench/torch_speed.py) measured in the same run on the same shapes.
 *
 * "Two cores" is measured two ways: one trainer with two BLAS threads, and
 * two trainers side by side (two simulated devices, one thread each), which
 * is how a 2-core hub or the fleet simulator uses the cores.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "nn.h"

#define BATCH 64
#define SECONDS 1.5

static fmq_dataset make_data(uint32_t n)
{
    fmq_dataset ds = {.n = n, .dim = 784, .classes = 10, .c = 1, .h = 28,
                      .w = 28};
    ds.x = malloc((size_t)n * 784 * sizeof(float));
    ds.y = malloc(n * sizeof(uint16_t));
    if (!ds.x || !ds.y)
        exit(1);
    fmq_rng r;
    fmq_rng_seed(&r, 1);
    for (size_t i = 0; i < (size_t)n * 784; i++)
        ds.x[i] = fmq_rng_float(&r);
    for (uint32_t i = 0; i < n; i++)
        ds.y[i] = (uint16_t)fmq_rng_below(&r, 10);
    return ds;
}

typedef struct job {
    const char *spec;
    const fmq_dataset *ds;
    bool eval;
    double rate; /* out: samples/s */
} job;

/* Best rate over repeated 0.2 s windows within SECONDS. */
static void *run_job(void *arg)
{
    job *j = arg;
    fmq_nn *m;
    if (fmq_nn_new(j->spec, 1, 28, 28, 10, &m))
        exit(1);
    fmq_nn_init(m, 1);
    fmq_nn_train_cfg cfg = {.epochs = 1, .batch = BATCH, .lr = 0.01f,
                            .momentum = 0.9f, .seed = 1};
    uint32_t chunk = 20 * BATCH; /* samples per call */
    fmq_dataset sub = *j->ds;
    sub.n = chunk;
    double best = 0, end = fmq_mono_seconds() + SECONDS;
    bool warm = false;
    while (fmq_mono_seconds() < end || !warm) {
        double t0 = fmq_mono_seconds();
        uint64_t n = 0;
        while (fmq_mono_seconds() - t0 < 0.2) {
            fmq_nn_train_result res;
            fmq_nn_eval ev;
            if (j->eval) {
                if (fmq_nn_evaluate(m, &sub, &ev))
                    exit(1);
                fmq_nn_eval_fini(&ev);
            } else if (fmq_nn_train(m, j->ds, NULL, chunk, &cfg, &res)) {
                exit(1);
            }
            n += chunk;
        }
        double rate = n / (fmq_mono_seconds() - t0);
        if (warm && rate > best)
            best = rate;
        warm = true;
    }
    fmq_nn_destroy(&m);
    j->rate = best;
    return NULL;
}

/* Rate of `par` trainers at once (their sum). */
static double measure(const char *spec, const fmq_dataset *ds, bool eval,
                      int par)
{
    job jobs[2];
    pthread_t th[2];
    for (int i = 0; i < par; i++) {
        jobs[i] = (job){spec, ds, eval, 0};
        if (pthread_create(&th[i], NULL, run_job, &jobs[i]))
            exit(1);
    }
    double sum = 0;
    for (int i = 0; i < par; i++) {
        pthread_join(th[i], NULL);
        sum += jobs[i].rate;
    }
    return sum;
}

struct torch_rates {
    double train[2][2], eval[2][2]; /* [threads-1][model] */
    bool ok;
};

static void run_torch(struct torch_rates *t)
{
    memset(t, 0, sizeof *t);
    const char *py = getenv("PYTHON") ? getenv("PYTHON") : "/usr/bin/python3";
    for (int th = 1; th <= 2; th++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "%s test/bench/torch_speed.py %d %g", py, th,
                 SECONDS);
        FILE *p = popen(cmd, "r");
        if (!p)
            return;
        char line[256], model[32], what[16];
        double rate;
        while (fgets(line, sizeof line, p))
            if (sscanf(line, "torch %31s %15s %lf", model, what, &rate) == 3) {
                int mi = strcmp(model, "cnn") == 0;
                if (strcmp(what, "train") == 0)
                    t->train[th - 1][mi] = rate;
                else
                    t->eval[th - 1][mi] = rate;
                t->ok = true;
            }
        pclose(p);
    }
}

int main(void)
{
    fmq_dataset ds = make_data(20 * BATCH);
    static const char *models[2] = {"mlp:128", "cnn"};
    struct torch_rates tr;
    printf("bench_nn: samples/s, batch %d, SGD momentum 0.9, best of 0.2 s "
           "windows over %.1f s\n",
           BATCH, SECONDS);
    run_torch(&tr);
    if (!tr.ok)
        printf("  (PyTorch yardstick not available: install python3-torch; "
               "deploy/install-deps.sh bench)\n");
    double one_core[2] = {0, 0}; /* training, one core, best engine */
    printf("%-8s %-5s %-28s %12s %12s %8s\n", "model", "what", "engine",
           "fedmq", "torch", "ratio");
    for (int mi = 0; mi < 2; mi++) {
        for (int ev = 0; ev < 2; ev++) {
            const char *what = ev ? "eval" : "train";
            struct {
                const char *name;
                bool blas;
                int threads, par, torch_threads;
            } cfgs[] = {
                {"openblas, 1 core", true, 1, 1, 1},
                {"portable, 1 core", false, 1, 1, 1},
                {"openblas, 2 threads", true, 2, 1, 2},
                {"openblas, 2 trainers x 1", true, 1, 2, 2},
                {"portable, 2 trainers x 1", false, 1, 2, 2},
            };
            for (unsigned c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
                if (cfgs[c].blas && !fmq_nn_have_blas())
                    continue;
                fmq_nn_set_blas(cfgs[c].blas);
                fmq_nn_set_threads(cfgs[c].threads);
                double r = measure(models[mi], &ds, ev, cfgs[c].par);
                if (!ev && cfgs[c].par == 1 && cfgs[c].threads == 1 &&
                    r > one_core[mi])
                    one_core[mi] = r;
                double t = ev ? tr.eval[cfgs[c].torch_threads - 1][mi]
                              : tr.train[cfgs[c].torch_threads - 1][mi];
                printf("%-8s %-5s %-28s %12.0f %12.0f %7.2fx\n", models[mi],
                       what, cfgs[c].name, r, t, t > 0 ? r / t : 0);
                fflush(stdout);
            }
        }
    }
    /* the target: one core, training, at least PyTorch's rate */
    for (int mi = 0; mi < 2 && tr.ok; mi++) {
        double r = one_core[mi], t = tr.train[0][mi];
        printf("target %s training on one core >= 1.0x torch: %s (%.2fx, %s)\n",
               models[mi], r >= t ? "met" : "NOT met", r / t,
               fmq_nn_have_blas() ? "openblas" : "portable");
    }
    free(ds.x);
    free(ds.y);
    return 0;
}
