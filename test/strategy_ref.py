#!/usr/bin/python3
"""strategy_ref.py: the aggregation strategies of aggregator/strategy/,
computed independently with numpy in float64 from the papers' formulas, for
test/test_strategy.c.

    strategy_ref.py [--out test/strategy_vectors.h]    write the vectors
    strategy_ref.py --check test/strategy_vectors.h    regenerate in memory
                                                       and require the same
                                                       text (exit 1 if not)

Every case is a strategy spec with hyper-parameters and a norm bound, a
model of P values (w0), and rounds of updates. An update is given as wire
bytes (scheme, block, codes, float32 scales), made here from seeded random
numbers, so both sides start from the same bytes; this script dequantizes
them per proto/SPEC.md §5 itself (float32 products, as the spec defines
x' = c·s), then applies the core's norm bound and the strategy in float64,
and stores the weights expected after every round as float32. The C test
compares within each case's tolerance (float32 arithmetic on its side).

Nothing here imports fedmq code. `make strategy-vectors` rewrites the
header (deterministically); test_strategy runs --check, so a header that no
longer matches this script fails the unit tests.

The rules, as the C implements them (README.md, "Aggregation strategies"):
  norm bound  the L2 norm of the update as received; over a fixed bound,
              or over mult × the previous round's median of received norms
              (streaming strategies; none in round 1): rejected or scaled to
              the bound. Strategies that keep updates (median, trimmed-mean,
              krum, multi-krum) apply the median multiple of the current
              round when it closes.
  fedavg      w += Σ n_k/√(1+τ_k)·Δ_k / Σ n_k/√(1+τ_k)
  fedopt      Reddi et al. 2021, Algorithm 2 on that mean, m0 = 0, v0 = τ²
  fedbuff     w += η·Σ Δ_k/√(1+τ_k) / count
  median      coordinate-wise; mean of the two middle values for even n
  trimmed     k = floor(β·n + 1e-9) dropped from each side, mean of the rest
  krum        score = sum of the n−f−2 smallest squared distances; ties by
              device id, then staleness; multi-krum averages the m best
  dp-fedavg   w += η·(Σ min(1, S/‖Δ_k‖)/√(1+τ_k)·Δ_k + noise) / cohort
              (cases here use z = 0; test_strategy checks the noise itself)
"""
import copy
import math
import sys

import numpy as np

P = 37  # 5 q8 blocks of 8 (the last partial), q1 codes end inside a byte

SCHEMES = {"f32": 0, "f16": 1, "q8": 2, "q4": 3, "q1": 4}


# ------------------------------------------------------------- tensors (§5)

class Update:
    def __init__(self, dev, samples, staleness, scheme, block, codes, scales):
        self.dev, self.samples, self.staleness = dev, samples, staleness
        self.scheme, self.block = scheme, block
        self.codes = bytes(codes)
        self.scales = np.asarray(scales, dtype=np.float32)
        self.reject = None  # the reason the core refuses it on arrival

    def values(self):
        """Dequantized per SPEC §5, as float32."""
        s, n, c = self.scheme, P, self.codes
        if s == "f32":
            return np.frombuffer(c, dtype="<f4").astype(np.float32)
        if s == "f16":
            return np.frombuffer(c, dtype="<f2").astype(np.float32)
        out = np.zeros(n, dtype=np.float32)
        for i in range(n):
            sc = self.scales[i // self.block]
            if s == "q8":
                code = c[i] - 256 if c[i] > 127 else c[i]
                out[i] = np.float32(sc) * np.float32(code)
            elif s == "q4":
                nib = (c[i >> 1] >> ((i & 1) * 4)) & 0xF
                code = nib - 16 if nib & 8 else nib
                out[i] = np.float32(sc) * np.float32(code)
            else:
                out[i] = sc if (c[i >> 3] >> (i & 7)) & 1 else -sc
        return out

    def norm(self):
        x = self.values().astype(np.float64)
        return math.sqrt(float(np.sum(x * x)))


def encode(x, scheme, block):
    """Codes and scales for float values x (any rule would do: the C side
    only decodes; this one is SPEC §5's nearest rounding)."""
    x = np.asarray(x, dtype=np.float32)
    if scheme == "f32":
        return x.astype("<f4").tobytes(), []
    if scheme == "f16":
        return x.astype("<f2").tobytes(), []
    nb = (P + block - 1) // block
    scales, codes = [], []
    bits = []
    for b in range(nb):
        blk = x[b * block:(b + 1) * block].astype(np.float64)
        m = float(np.max(np.abs(blk)))
        if scheme == "q1":
            s = float(np.mean(np.abs(blk)))
            scales.append(s)
            bits.extend(1 if v > 0 else 0 for v in blk)
            continue
        lim = 127 if scheme == "q8" else 7
        s = float(np.float32(m / lim))
        scales.append(s)
        for v in blk:
            c = 0 if s == 0 else int(np.clip(np.rint(v / s), -lim, lim))
            codes.append(c)
    if scheme == "q8":
        return bytes((c + 256) % 256 for c in codes), scales
    if scheme == "q4":
        out = bytearray((P + 1) // 2)
        for i, c in enumerate(codes):
            out[i >> 1] |= (c & 0xF) << ((i & 1) * 4)
        return bytes(out), scales
    out = bytearray((P + 7) // 8)
    for i, bit in enumerate(bits):
        out[i >> 3] |= bit << (i & 7)
    return bytes(out), scales


def make(rng, dev, scheme="q8", block=8, mag=0.05, samples=None, staleness=0,
         values=None):
    if values is None:
        values = rng.normal(0, mag, P)
    codes, scales = encode(values, scheme, block)
    if samples is None:
        samples = int(rng.randint(1, 500))
    return Update(dev, samples, staleness, scheme,
                  block if scheme in ("q8", "q4", "q1") else 0, codes, scales)


# ------------------------------------------------------------- strategies

KEEPS = {"median", "trimmed-mean", "krum", "multi-krum"}


def median_norm(norms):
    return float(np.median(np.asarray(norms, dtype=np.float64)))


class Case:
    def __init__(self, name, spec, rounds, rng, **kw):
        self.name, self.spec = name, spec
        # own copies: an update object may appear in several cases
        self.rounds = [[copy.copy(u) for u in r] for r in rounds]
        for r in self.rounds:
            for u in r:
                u.reject = None
        self.hp = kw.pop("hp", {})
        self.norm_bound = kw.pop("norm_bound", 0.0)
        self.norm_median = kw.pop("norm_median", 0.0)
        self.norm_action = kw.pop("norm_action", "reject")
        self.cohort = kw.pop("cohort", 10)
        self.quorum = kw.pop("quorum", 0)
        self.max_staleness = kw.pop("max_staleness", 2)
        self.rtol = kw.pop("rtol", 1e-5)
        self.atol = kw.pop("atol", 1e-6)
        self.note = kw.pop("note", "")
        assert not kw, kw
        self.w0 = rng.normal(0, 0.1, P).astype(np.float32)
        self.expect = []  # per round: (float32 weights, used, norm_rejected)
        self.run()

    @property
    def name_only(self):
        return self.spec.split(":")[0]

    def args(self):
        return self.spec.split(":", 1)[1] if ":" in self.spec else None

    def run(self):
        kind = self.name_only
        keeps = kind in KEEPS
        w = self.w0.astype(np.float64)
        prev_median = None
        m = np.zeros(P)
        hp = self.hp
        tau = hp.get("tau_adapt", 1e-3)
        v = np.full(P, tau * tau)
        for r, ups in enumerate(self.rounds, start=1):
            # the core: the bound on arrival
            bound = self.norm_bound
            if self.norm_median and not keeps and prev_median and prev_median > 0:
                mb = self.norm_median * prev_median
                bound = min(bound, mb) if bound > 0 else mb
            acc = []  # (update, values after clipping, received norm, factor)
            for u in ups:
                n = u.norm()
                f = 1.0
                if bound > 0 and n > bound:
                    if self.norm_action == "reject":
                        u.reject = "norm"
                        continue
                    f = bound / n
                acc.append([u, n, f])
            received = [a[1] for a in acc]
            rejected_at_close = 0
            if keeps and self.norm_median and acc:
                mb = self.norm_median * median_norm(received)
                keep = []
                for a in acc:
                    if a[1] * a[2] > mb:
                        if self.norm_action == "reject":
                            rejected_at_close += 1
                            continue
                        a[2] = mb / a[1]
                    keep.append(a)
                acc = keep
            X = np.array([a[0].values().astype(np.float64) * a[2]
                          for a in acc]).reshape(len(acc), P)
            n_k = np.array([a[0].samples for a in acc], dtype=np.float64)
            tau_k = np.array([a[0].staleness for a in acc], dtype=np.float64)
            s_k = 1.0 / np.sqrt(1.0 + tau_k)
            used = len(acc)
            if kind in ("fedavg", "fedprox"):
                wt = n_k * s_k
                w = w + (wt @ X) / wt.sum()
            elif kind in ("fedavgm", "fedadam", "fedyogi", "fedadagrad"):
                wt = n_k * s_k
                d = (wt @ X) / wt.sum()
                lr = hp.get("server_lr", {"fedavgm": 1.0, "fedadagrad": 0.1}
                            .get(kind, 0.01))
                if kind == "fedavgm":
                    m = hp.get("server_momentum", 0.9) * m + d
                    w = w + lr * m
                else:
                    b1 = hp.get("beta1", 0.9)
                    b2 = hp.get("beta2", 0.99)
                    m = b1 * m + (1 - b1) * d
                    if kind == "fedadagrad":
                        v = v + d * d
                    elif kind == "fedyogi":
                        v = v - (1 - b2) * d * d * np.sign(v - d * d)
                    else:
                        v = b2 * v + (1 - b2) * d * d
                    w = w + lr * m / (np.sqrt(v) + tau)
            elif kind == "fedbuff":
                lr = hp.get("server_lr", 1.0)
                w = w + lr * (s_k @ X) / len(acc)
            elif kind == "median":
                w = w + np.median(X, axis=0)
            elif kind == "trimmed-mean":
                beta = float(self.args()) if self.args() else 0.1
                n = len(acc)
                k = int(math.floor(beta * n + 1e-9))
                S = np.sort(X, axis=0)
                w = w + S[k:n - k].mean(axis=0)
            elif kind in ("krum", "multi-krum"):
                a = self.args().split(",")
                f = int(a[0])
                n = len(acc)
                mm = 1 if kind == "krum" else (int(a[1]) if len(a) > 1 else n - f)
                mm = min(mm, n - f)
                D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=2)
                scores = []
                for i in range(n):
                    d = np.sort(np.delete(D[i], i))
                    scores.append(float(d[:n - f - 2].sum()))
                order = sorted(range(n), key=lambda i: (
                    scores[i], acc[i][0].dev, acc[i][0].staleness))
                chosen = order[:mm]
                w = w + X[chosen].mean(axis=0)
                used = mm
            elif kind == "dp-fedavg":
                S = hp.get("dp_clip", 1.0)
                assert hp.get("dp_noise", 1.0) == 0, "cases here are noiseless"
                lr = hp.get("server_lr", 1.0)
                norms = np.array([a[1] * a[2] for a in acc])
                cf = np.where(norms > S, S / np.maximum(norms, 1e-300), 1.0)
                w = w + lr * ((cf * s_k) @ X) / self.cohort
            else:
                raise SystemExit("no reference for " + kind)
            if received:
                prev_median = median_norm(received)
            self.expect.append((w.astype(np.float32), used, rejected_at_close))


# ------------------------------------------------------------------ cases

def cases():
    rng = np.random.RandomState(20240601)
    out = []

    def ups(n, **kw):
        return [make(rng, "dev-%02d" % i, **kw) for i in range(n)]

    # FedAvg: sample weights, a late update, one update, identical updates,
    # and the schemes mixed in one round
    out.append(Case("fedavg weighs by samples", "fedavg", [ups(5)], rng))
    late = ups(4)
    late[1].staleness, late[3].staleness = 1, 3
    out.append(Case("fedavg folds late updates with n/sqrt(1+tau)", "fedavg",
                    [late], rng))
    out.append(Case("fedavg of a single update is that update", "fedavg",
                    [ups(1)], rng))
    mixed = [make(rng, "dev-%02d" % i, scheme=s, block=b)
             for i, (s, b) in enumerate([("f32", 0), ("f16", 0), ("q8", 8),
                                         ("q4", 5), ("q1", 16)])]
    out.append(Case("fedavg of every scheme at once", "fedavg", [mixed], rng))
    out.append(Case("fedprox aggregates as fedavg", "fedprox", [ups(4)], rng,
                    hp={"mu": 0.1}))
    same = make(rng, "dev-00")
    ident = [Update("dev-%02d" % i, 10 + i, 0, same.scheme, same.block,
                    same.codes, same.scales) for i in range(5)]
    for spec in ("fedavg", "median", "trimmed-mean:0.2", "krum:1",
                 "multi-krum:1,3"):
        out.append(Case("%s of identical updates is that update" % spec, spec,
                        [ident], rng, quorum=5))

    # server optimizers over three rounds
    for spec, hp in (("fedavgm", {}), ("fedavgm", {"server_lr": 0.5,
                                                   "server_momentum": 0.5}),
                     ("fedadam", {}), ("fedyogi", {}), ("fedadagrad", {}),
                     ("fedadam", {"server_lr": 0.03, "beta1": 0.5,
                                  "beta2": 0.9, "tau_adapt": 0.01})):
        out.append(Case("%s steps over three rounds%s" % (
            spec, " (hyper-parameters given)" if hp else ""), spec,
            [ups(3), ups(4), ups(3)], rng, hp=hp))

    # FedBuff: staleness weights 1/sqrt(1+tau), two versions of K = 4
    b1, b2 = ups(4), ups(4)
    for u, t in zip(b1 + b2, (0, 1, 2, 3, 0, 0, 5, 1)):
        u.staleness = t
    out.append(Case("fedbuff weighs by 1/sqrt(1+tau) and divides by K",
                    "fedbuff", [b1, b2], rng, hp={"buffer_k": 4},
                    max_staleness=5))
    b3 = ups(3)
    b3[2].staleness = 2
    out.append(Case("fedbuff with a server learning rate", "fedbuff", [b3],
                    rng, hp={"buffer_k": 3, "server_lr": 0.5},
                    max_staleness=5))

    # coordinate-wise median and trimmed mean
    out.append(Case("median of an odd count", "median", [ups(5)], rng))
    out.append(Case("median of an even count averages the two middle values",
                    "median", [ups(6)], rng))
    tie = ups(4)
    tie[2] = Update("dev-02", 7, 0, tie[0].scheme, tie[0].block, tie[0].codes,
                    tie[0].scales)
    out.append(Case("median with tied values", "median", [tie], rng))
    out.append(Case("median across schemes", "median", [mixed], rng))
    out.append(Case("trimmed-mean:0.25 of 7 drops floor(1.75) = 1 each side",
                    "trimmed-mean:0.25", [ups(7)], rng))
    out.append(Case("trimmed-mean:0.3 of 10 drops 3 each side",
                    "trimmed-mean:0.3", [ups(10)], rng))
    out.append(Case("trimmed-mean:0.29 of 100 drops 29 each side (0.29*100 "
                    "is 28.999999999999996 in binary)", "trimmed-mean:0.29",
                    [ups(100)], rng, cohort=100))
    out.append(Case("trimmed-mean:0.1 of 5 drops none (floor(0.5) = 0)",
                    "trimmed-mean:0.1", [ups(5)], rng))
    out.append(Case("trimmed-mean without beta trims 0.1", "trimmed-mean",
                    [ups(10)], rng))

    # Krum: five honest updates near one point, two hostile far away
    center = rng.normal(0, 0.05, P)

    def honest(i):
        return make(rng, "dev-%02d" % i, scheme="f32",
                    values=center + rng.normal(0, 0.005, P))

    hostile = [make(rng, "dev-05", scheme="f32", values=-10 * center),
               make(rng, "dev-06", scheme="f32",
                    values=rng.normal(0, 1.0, P))]
    crowd = [honest(i) for i in range(5)] + hostile
    out.append(Case("krum:2 picks an honest update with 2 hostile", "krum:2",
                    [crowd], rng, quorum=7))
    out.append(Case("multi-krum:2,3 averages three honest updates",
                    "multi-krum:2,3", [crowd], rng, quorum=7))
    out.append(Case("multi-krum:2 averages n - f = 5", "multi-krum:2",
                    [crowd], rng, quorum=7))
    # equal scores: points 0..4 on a line; 1, 2 and 3 score the same
    line = [make(rng, dev, scheme="f32", samples=1,
                 values=np.full(P, 0.125 * k))
            for k, dev in enumerate(["dev-e", "dev-c", "dev-a", "dev-b",
                                     "dev-d"])]
    out.append(Case("krum ties go to the lowest device id", "krum:1", [line],
                    rng, quorum=5))

    # the norm bound before any strategy
    big = ups(5)
    big[4] = make(rng, "dev-04", mag=2.0)
    out.append(Case("a fixed bound rejects the update over it", "fedavg",
                    [big], rng, norm_bound=1.0, norm_action="reject"))
    out.append(Case("a fixed bound clips the update over it", "fedavg",
                    [big], rng, norm_bound=1.0, norm_action="clip"))
    out.append(Case("median-multiple clip on a streaming strategy uses the "
                    "previous round", "fedavg", [ups(4), big, big], rng,
                    norm_median=1.5, norm_action="clip"))
    out.append(Case("median-multiple reject on a streaming strategy uses the "
                    "previous round", "fedavg", [ups(4), big], rng,
                    norm_median=1.5, norm_action="reject"))
    out.append(Case("median-multiple clip of kept updates uses the round's "
                    "median", "trimmed-mean:0.2", [big], rng, norm_median=2,
                    norm_action="clip"))
    out.append(Case("median-multiple reject of kept updates at close",
                    "median", [big], rng, norm_median=2,
                    norm_action="reject"))

    # DP-FedAvg without noise: clipping and the fixed denominator
    dpu = ups(4)
    dpu[0] = make(rng, "dev-00", mag=1.0)
    dpu[2].staleness = 1
    out.append(Case("dp-fedavg clips to S and divides by the cohort",
                    "dp-fedavg", [dpu, ups(3)], rng,
                    hp={"dp_clip": 0.2, "dp_noise": 0.0, "dp_seed": 7},
                    cohort=5))
    return out


# ------------------------------------------------------------------ output

def cfloat(x):
    r = "%.9g" % float(np.float32(x))
    if "e" not in r and "." not in r and "n" not in r:
        r += ".0"
    return r + "f"


def cdouble(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "NAN"
    return repr(float(x))


def chex(b):
    return ", ".join("0x%02x" % c for c in b)


def wrap(items, indent="    ", width=79):
    lines, cur = [], indent
    for it in items:
        piece = it + ","
        if len(cur) + len(piece) + 1 > width and cur.strip():
            lines.append(cur.rstrip())
            cur = indent
        cur += piece + " "
    if cur.strip():
        lines.append(cur.rstrip())
    return "\n".join(lines)


def render(cs):
    o = []
    o.append("/*\n * strategy_vectors.h — GENERATED by test/strategy_ref.py "
             "(make strategy-vectors);\n * do not edit. Every aggregation "
             "strategy on stored updates, with the\n * weights the numpy "
             "reference expects after each round (test_strategy.c).\n */")
    o.append("#ifndef FMQ_STRATEGY_VECTORS_H\n#define FMQ_STRATEGY_VECTORS_H\n")
    o.append("#include <math.h>\n#include <stdint.h>\n")
    o.append("#define SV_P %d\n" % P)
    o.append("""typedef struct sv_update {
    const char *dev;
    uint64_t samples, staleness;
    int scheme; /* fmq_scheme */
    uint32_t block;
    const uint8_t *codes;
    uint32_t codes_len;
    const float *scales;
    uint32_t nscales;
    const char *reject; /* the reason the core refuses it, or NULL */
} sv_update;

typedef struct sv_round {
    uint32_t n;
    const sv_update *u;
    const float *expect; /* (SV_P,) the weights after the round */
    uint32_t used, norm_rejected;
} sv_round;

typedef struct sv_hp {
    double server_lr, beta1, beta2, tau_adapt, server_momentum, mu;
    uint32_t buffer_k;
    double dp_clip, dp_noise;
    uint64_t dp_seed;
} sv_hp;

typedef struct sv_case {
    const char *name, *spec;
    sv_hp hp;
    double norm_bound, norm_median;
    int norm_clip; /* 1 = clip, 0 = reject */
    uint32_t cohort, quorum, max_staleness;
    double rtol, atol;
    const float *w0;
    uint32_t nrounds;
    const sv_round *rounds;
} sv_case;
""")
    body = []
    for ci, c in enumerate(cs):
        body.append("/* %d: %s */" % (ci, c.name))
        body.append("static const float sv_w0_%d[SV_P] = {\n%s\n};" % (
            ci, wrap([cfloat(x) for x in c.w0])))
        for ri, ups in enumerate(c.rounds):
            for ui, u in enumerate(ups):
                body.append("static const uint8_t sv_c_%d_%d_%d[] = {\n%s\n};" % (
                    ci, ri, ui, wrap(["0x%02x" % b for b in u.codes])))
                if len(u.scales):
                    body.append("static const float sv_s_%d_%d_%d[] = {\n%s\n};" % (
                        ci, ri, ui, wrap([cfloat(x) for x in u.scales])))
            items = []
            for ui, u in enumerate(ups):
                sc = "sv_s_%d_%d_%d" % (ci, ri, ui) if len(u.scales) else "NULL"
                items.append(
                    '    {"%s", %d, %d, %d, %d, sv_c_%d_%d_%d, %d, %s, %d, %s}' % (
                        u.dev, u.samples, u.staleness, SCHEMES[u.scheme],
                        u.block, ci, ri, ui, len(u.codes), sc, len(u.scales),
                        '"%s"' % u.reject if u.reject else "NULL"))
            body.append("static const sv_update sv_u_%d_%d[] = {\n%s,\n};" % (
                ci, ri, ",\n".join(items)))
            w, used, nrej = c.expect[ri]
            body.append("static const float sv_e_%d_%d[SV_P] = {\n%s\n};" % (
                ci, ri, wrap([cfloat(x) for x in w])))
        rounds = ",\n".join(
            "    {%d, sv_u_%d_%d, sv_e_%d_%d, %d, %d}" % (
                len(ups), ci, ri, ci, ri, c.expect[ri][1], c.expect[ri][2])
            for ri, ups in enumerate(c.rounds))
        body.append("static const sv_round sv_r_%d[] = {\n%s,\n};\n" % (ci, rounds))
    o.extend(body)
    rows = []
    for ci, c in enumerate(cs):
        hp = c.hp
        def g(k):
            return cdouble(hp.get(k))
        rows.append(
            '    {"%s", "%s",\n     {%s, %s, %s, %s, %s, %s, %d, %s, %s, %du},\n'
            '     %s, %s, %d, %d, %d, %d, %s, %s, sv_w0_%d, %d, sv_r_%d}' % (
                c.name, c.spec, g("server_lr"), g("beta1"), g("beta2"),
                g("tau_adapt"), g("server_momentum"), g("mu"),
                hp.get("buffer_k", 0), g("dp_clip"), g("dp_noise"),
                hp.get("dp_seed", 0), cdouble(c.norm_bound),
                cdouble(c.norm_median), 1 if c.norm_action == "clip" else 0,
                c.cohort, c.quorum, c.max_staleness, cdouble(c.rtol),
                cdouble(c.atol), ci, len(c.rounds), ci))
    o.append("static const sv_case sv_cases[] = {\n%s,\n};" % ",\n".join(rows))
    o.append("#define SV_NCASES (sizeof sv_cases / sizeof sv_cases[0])\n")
    o.append("#endif /* FMQ_STRATEGY_VECTORS_H */")
    return "\n".join(o) + "\n"


def main(argv):
    text = render(cases())
    if len(argv) == 3 and argv[1] == "--check":
        have = open(argv[2]).read()
        if have != text:
            sys.stderr.write("strategy_ref: %s is not what this script "
                             "computes; run make strategy-vectors\n" % argv[2])
            return 1
        print("strategy_ref: %s matches the numpy reference (%d cases)" % (
            argv[2], len(cases())))
        return 0
    out = argv[2] if len(argv) == 3 and argv[1] == "--out" else \
        "test/strategy_vectors.h"
    if len(argv) not in (1, 3):
        sys.stderr.write(__doc__)
        return 2
    open(out, "w").write(text)
    print("strategy_ref: wrote %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
