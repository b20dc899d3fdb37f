#!/usr/bin/python3
"""check_vectors.py: check proto/vectors/ (SPEC.md §11) with a decoder that
shares no code with fedmq's C.

    check_vectors.py [--dump build/tools/vector_dump] [-v] proto/vectors

For every good vector <name>.msgpack + <name>.json this script
  1. decodes the bytes itself: a bounded scan written from SPEC §4, then
     Debian's python3-msgpack, then a validator written from the tables of
     SPEC §6-7, and dequantizes each tensor per SPEC §5 (float32 exact);
  2. compares the map with the JSON "message" (exactly: same types, floats
     as the same double) and the tensors with "tensors" (as float32, exactly);
  3. where the JSON has "input" (the float32 values that were quantized),
     checks the encoder rules of SPEC §5 (scales, rounding, unused bits);
  4. unless the JSON says "canonical": false, re-encodes the map the way
     SPEC §3 says an encoder writes it (float32/float64 by field, smallest
     integer and length encodings) and requires the identical bytes;
  5. with --dump, runs fedmq's vector_dump and requires the same message (as
     a decoder understands it: known keys, defaults left out, floats at their
     field's width) and the same float32 tensors; a signed vector's body is
     decoded both ways too.
For every bad vector bad/<name>.msgpack + {"description", "error"} the
independent decoder and vector_dump must both refuse it with that reason.
Finally every message type, every scheme (with a partial last block for the
scaled ones, and stochastic rounding) and every reason a decoder can give
must have a vector; what is missing is named.

Exit status: 0 when everything agrees, 1 on any mismatch, 2 on usage errors.
Uses only the standard library and python3-msgpack (run it with Debian's
/usr/bin/python3).
"""

import argparse
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile

import msgpack

# ---------------------------------------------------------------- SPEC data

TYPES = ["global", "update", "status", "metrics", "agg", "signed", "sealed",
         "delta"]
SCHEMES = {"f32": 32, "f16": 16, "q8": 8, "q4": 4, "q1": 1}
SCALED = ("q8", "q4", "q1")
# The reasons of SPEC §10 that a decoder (as opposed to a validator that
# knows the fleet, keys and model) can give.
DECODER_REASONS = [
    "empty", "truncated", "malformed", "trailing", "too_deep", "too_large",
    "not_map", "bad_key", "dup_key", "missing_key", "wrong_type",
    "bad_value", "version", "wrong_msg", "scheme", "shape", "nonfinite",
]
LIMITS = {
    "max_msg": 64 << 20, "max_n": 100_000_000, "max_count": 65536,
    "max_depth": 8, "max_ids": 10000, "max_classes": 16,
}
BLOCK_MIN, BLOCK_MAX = 1, 1 << 20
FLT_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
ID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     b"0123456789._-")
SPEC_CHARS = ID_CHARS | frozenset(b":,")


class Refuse(Exception):
    """The message is invalid: reason is a SPEC §10 name."""

    def __init__(self, reason, what):
        super().__init__("%s: %s" % (reason, what))
        self.reason = reason
        self.what = what


class Map(list):
    """A msgpack map as its list of (key, value) pairs, so that keys that are
    not strings, and keys that appear twice, survive unpacking."""


MISSING = object()


def get(m, k):
    for kk, v in m:
        if kk == k:
            return v
    return MISSING


def f32(x):
    """x rounded to float32 (as a Python float); overflow gives infinity."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


# ------------------------------------------------- 1. bounded scan (SPEC §4)

_FIXED = {0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1,
          0xd1: 2, 0xd2: 4, 0xd3: 8, 0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9,
          0xd8: 17}
# byte -> (width of the length field, extra bytes after it)
_VAR = {0xc4: (1, 0), 0xc5: (2, 0), 0xc6: (4, 0), 0xd9: (1, 0),
        0xda: (2, 0), 0xdb: (4, 0), 0xc7: (1, 1), 0xc8: (2, 1),
        0xc9: (4, 1)}
# byte -> (kind, width of the count field)
_CONT = {0xdc: ("array", 2), 0xdd: ("array", 4), 0xde: ("map", 2),
         0xdf: ("map", 4)}


def scan(b):
    """Walk the bytes without building anything. Every length and count is
    checked against the bytes that remain (an array element needs at least
    one byte, a map entry two, and so does every element an enclosing
    container still owes), then against the limits. Returns the offsets of
    the type bytes of ext values."""
    n = len(b)
    if n == 0:
        raise Refuse("empty", "zero-length payload")
    if n > LIMITS["max_msg"]:
        raise Refuse("too_large", "%d bytes" % n)
    left = []       # elements still owed by each open container
    pending = 1     # their sum, plus the top object
    pos = 0
    ext_types = []
    while True:
        if left:
            left[-1] -= 1
        pending -= 1
        if pos >= n:
            raise Refuse("truncated", "ends at byte %d inside an object" % n)
        at, c = pos, b[pos]
        pos += 1
        kind, count, need = None, 0, 0
        if c <= 0x7f or c >= 0xe0 or c in (0xc0, 0xc2, 0xc3):
            pass
        elif c <= 0x8f:
            kind, count = "map", c & 0x0f
        elif c <= 0x9f:
            kind, count = "array", c & 0x0f
        elif c <= 0xbf:
            need = c & 0x1f
        elif c == 0xc1:
            raise Refuse("malformed", "byte %d is 0xc1" % at)
        elif c in _FIXED:
            need = _FIXED[c]
            if c >= 0xd4:
                ext_types.append(pos)
        elif c in _VAR:
            width, extra = _VAR[c]
            if n - pos < width:
                raise Refuse("truncated", "header at byte %d cut" % at)
            need = int.from_bytes(b[pos:pos + width], "big") + extra
            pos += width
            if extra:
                ext_types.append(pos)
        else:
            kind, width = _CONT[c]
            if n - pos < width:
                raise Refuse("truncated", "header at byte %d cut" % at)
            count = int.from_bytes(b[pos:pos + width], "big")
            pos += width
        if kind is None:
            if need > n - pos:
                raise Refuse("truncated", "value at byte %d needs %d bytes, "
                             "%d remain" % (at, need, n - pos))
            pos += need
        else:
            items = 2 * count if kind == "map" else count
            if items + pending > n - pos:
                raise Refuse("truncated", "%s of %d at byte %d" %
                             (kind, count, at))
            if count > LIMITS["max_count"]:
                raise Refuse("too_large", "%s of %d at byte %d" %
                             (kind, count, at))
            if len(left) + 1 > LIMITS["max_depth"]:
                raise Refuse("too_deep", "%s at byte %d" % (kind, at))
            if items:
                left.append(items)
                pending += items
                continue
        while left and left[-1] == 0:
            left.pop()
        if not left:
            break
    if pos != n:
        raise Refuse("trailing", "%d bytes after the message" % (n - pos))
    return ext_types


class Ext:
    """An ext value: no fedmq field has this type."""

    def __init__(self, code, data):
        self.code, self.data = code, data


def unpack(b, ext_types=()):
    """Bytes -> tree, with Map for maps, str for str (undecodable bytes kept
    through surrogateescape), bytes for bin, Ext for ext. python3-msgpack
    reads ext type -1 as a timestamp and fails on other lengths; ext values
    are opaque to fedmq, so their type bytes are set to 0 first."""
    if ext_types:
        b = bytearray(b)
        for i in ext_types:
            b[i] = 0
        b = bytes(b)
    return msgpack.unpackb(b, raw=False, unicode_errors="surrogateescape",
                           strict_map_key=False, object_pairs_hook=Map,
                           use_list=True, ext_hook=Ext)


def check_keys(o, path="top"):
    """SPEC §3.1: every key a string, no key twice; in tree order."""
    if isinstance(o, Map):
        for i, (k, _) in enumerate(o):
            if not isinstance(k, str):
                raise Refuse("bad_key", "%s: key %d is %s" %
                             (path, i, type(k).__name__))
        seen = set()
        for k, _ in o:
            if k in seen:
                raise Refuse("dup_key", "%s.%s twice" % (path, k))
            seen.add(k)
        for k, v in o:
            check_keys(v, "%s.%s" % (path, k))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            check_keys(v, "%s[%d]" % (path, i))


# ---------------------------------------- 2. field validation (SPEC §5-8)
# Each validator takes the wire value and its path and returns the value as
# a decoder understands it, in JSON form: the "view" that vector_dump must
# print. Bins become {"hex": ...}, floats are rounded to their field's width.

def v_id(x, p, spec=False, maxlen=64):
    if type(x) is not str:
        raise Refuse("wrong_type", "%s: expected str" % p)
    raw = x.encode("utf-8", "surrogateescape")
    allowed = SPEC_CHARS if spec else ID_CHARS
    if not 1 <= len(raw) <= maxlen or any(ch not in allowed for ch in raw):
        raise Refuse("bad_value", "%s: not an id" % p)
    return x


def v_uint(lo=0, hi=2**64 - 1):
    def check(x, p):
        if type(x) is not int:
            raise Refuse("wrong_type", "%s: expected uint" % p)
        if x < 0:
            raise Refuse("bad_value", "%s: negative" % p)
        if not lo <= x <= hi:
            raise Refuse("bad_value", "%s: %d not in [%d, %d]" %
                         (p, x, lo, hi))
        return x
    return check


def _number(x, p):
    if type(x) not in (int, float):
        raise Refuse("wrong_type", "%s: expected a number" % p)
    return float(x)


RANGES = {
    "any": lambda d: True, "pos": lambda d: d > 0, "nonneg": lambda d: d >= 0,
    "unit": lambda d: 0 <= d < 1, "prob": lambda d: 0 <= d <= 1,
    "frac": lambda d: 0 < d <= 1, "pct": lambda d: 0 <= d <= 100,
}


def v_float(width, rng="any"):
    """float32 or float64 field: any msgpack number, finite, converted to
    the field's width (SPEC §3.3). The range must hold for the wire's value
    and for the value the field keeps (1e-50 is > 0 but 0 as float32)."""
    def check(x, p):
        d = _number(x, p)
        if not math.isfinite(d) or (width == 32 and abs(d) > FLT_MAX):
            raise Refuse("nonfinite", "%s: %r" % (p, d))
        for v in (d, f32(d)) if width == 32 else (d,):
            if not RANGES[rng](v):
                raise Refuse("bad_value", "%s: %r out of range %s" %
                             (p, v, rng))
        return f32(d) if width == 32 else d
    check.width = width
    return check


def v_bool(x, p):
    if type(x) is not bool:
        raise Refuse("wrong_type", "%s: expected bool" % p)
    return x


def v_bin(minlen=0, exact=None, first=None):
    def check(x, p):
        if type(x) is not bytes:
            raise Refuse("wrong_type", "%s: expected bin" % p)
        if exact is not None and len(x) != exact:
            raise Refuse("bad_value", "%s: %d bytes, %d expected" %
                         (p, len(x), exact))
        if len(x) < minlen:
            raise Refuse("bad_value", "%s: %d bytes, at least %d" %
                         (p, len(x), minlen))
        if first is not None and x[0] != first:
            raise Refuse("bad_value", "%s: first byte 0x%02x" % (p, x[0]))
        return {"hex": x.hex()}
    return check


def v_map(fields):
    def check(x, p, ctx=None):
        if not isinstance(x, Map):
            raise Refuse("wrong_type", "%s: expected map" % p)
        return fields_view(fields, x, p, ctx)
    return check


def v_array_of(elem):
    def check(x, p):
        if not isinstance(x, list) or isinstance(x, Map):
            raise Refuse("wrong_type", "%s: expected array" % p)
        return [elem(e, "%s[%d]" % (p, i)) for i, e in enumerate(x)]
    return check


def _scheme(x, p):
    if type(x) is not str:
        raise Refuse("wrong_type", "%s: expected str" % p)
    if x not in SCHEMES:
        raise Refuse("scheme", "%s: %r" % (p, x))
    return x


def v_tensor(weights):
    """SPEC §5. Records the tensor in ctx["tensors"] for dequantization."""
    def check(x, p, ctx):
        if not isinstance(x, Map):
            raise Refuse("wrong_type", "%s: expected a tensor map" % p)
        s = get(x, "s")
        if s is MISSING:
            raise Refuse("missing_key", "%s.s" % p)
        s = _scheme(s, p + ".s")
        if weights and s not in ("f32", "f16"):
            raise Refuse("bad_value", "%s.s: %s for weights" % (p, s))
        scaled = s in SCALED
        n = get(x, "n")
        if n is MISSING:
            raise Refuse("missing_key", "%s.n" % p)
        n = v_uint()(n, p + ".n")
        if n == 0:
            raise Refuse("bad_value", "%s.n = 0" % p)
        if n > LIMITS["max_n"]:
            raise Refuse("too_large", "%s.n = %d" % (p, n))
        b = None
        if scaled:
            b = get(x, "b")
            if b is MISSING:
                raise Refuse("missing_key", "%s.b" % p)
            b = v_uint(BLOCK_MIN, BLOCK_MAX)(b, p + ".b")
        c = get(x, "c")
        if c is MISSING:
            raise Refuse("missing_key", "%s.c" % p)
        if type(c) is not bytes:
            raise Refuse("wrong_type", "%s.c: expected bin" % p)
        sc = b""
        if scaled:
            sc = get(x, "sc")
            if sc is MISSING:
                raise Refuse("missing_key", "%s.sc" % p)
            if type(sc) is not bytes:
                raise Refuse("wrong_type", "%s.sc: expected bin" % p)
        if len(c) != (n * SCHEMES[s] + 7) // 8:
            raise Refuse("shape", "%s.c: %d bytes for %s n=%d" %
                         (p, len(c), s, n))
        nb = (n + b - 1) // b if scaled else 0
        if scaled and len(sc) != 4 * nb:
            raise Refuse("shape", "%s.sc: %d bytes for %d blocks" %
                         (p, len(sc), nb))
        if scaled:
            for i, v in enumerate(struct.unpack("<%df" % nb, sc)):
                if not math.isfinite(v):
                    raise Refuse("nonfinite", "%s.sc[%d]" % (p, i))
                if v < 0:
                    raise Refuse("bad_value", "%s.sc[%d] < 0" % (p, i))
        elif s == "f32":
            if not all(map(math.isfinite, struct.unpack("<%df" % n, c))):
                raise Refuse("nonfinite", "%s: an f32 value" % p)
        else:
            for i in range(n):
                if (c[2 * i + 1] & 0x7c) == 0x7c:
                    raise Refuse("nonfinite", "%s: f16 value %d" % (p, i))
        ctx["tensors"][p] = (s, n, b, c, sc)
        view = {"s": s, "n": n, "c": {"hex": c.hex()}}
        if scaled:
            view["b"] = b
            view["sc"] = {"hex": sc.hex()}
        return view
    check.ctx = True
    return check


def v_uq(x, p):
    """§6.1 uq: {"s", "b" (scaled only), "sr" = false, "ef" = true}."""
    if not isinstance(x, Map):
        raise Refuse("wrong_type", "%s: expected map" % p)
    s = get(x, "s")
    if s is MISSING:
        raise Refuse("missing_key", p + ".s")
    view = {"s": _scheme(s, p + ".s")}
    if s in SCALED:
        b = get(x, "b")
        if b is MISSING:
            raise Refuse("missing_key", p + ".b")
        view["b"] = v_uint(BLOCK_MIN, BLOCK_MAX)(b, p + ".b")
    for k, default in (("sr", False), ("ef", True)):
        v = get(x, k)
        if v is not MISSING and v_bool(v, "%s.%s" % (p, k)) != default:
            view[k] = v
    return view


def v_uqc(x, p):
    if not isinstance(x, Map):
        raise Refuse("wrong_type", "%s: expected map" % p)
    if len(x) > LIMITS["max_classes"]:
        raise Refuse("too_large", "%s: %d classes" % (p, len(x)))
    view = {}
    for k, v in x:
        v_id(k, "%s key" % p)
        view[k] = v_uq(v, "%s.%s" % (p, k))
    return view


def v_cohort(x, p):
    """§8: {f: float64 in (0, 1], s: uint} or {ids: [id]}."""
    if not isinstance(x, Map):
        raise Refuse("wrong_type", "%s: expected map" % p)
    f, ids = get(x, "f"), get(x, "ids")
    if (f is MISSING) == (ids is MISSING):
        raise Refuse("bad_value", "%s: needs exactly one of f and ids" % p)
    if f is not MISSING:
        fv = v_float(64, "frac")(f, p + ".f")
        s = get(x, "s")
        if s is MISSING:
            raise Refuse("missing_key", p + ".s")
        return {"f": fv, "s": v_uint()(s, p + ".s")}
    if not isinstance(ids, list) or isinstance(ids, Map):
        raise Refuse("wrong_type", p + ".ids: expected array")
    if len(ids) > LIMITS["max_ids"]:
        raise Refuse("too_large", "%s.ids: %d" % (p, len(ids)))
    return {"ids": [v_id(d, "%s.ids[%d]" % (p, i))
                    for i, d in enumerate(ids)]}


def v_rej(x, p):
    if not isinstance(x, Map):
        raise Refuse("wrong_type", "%s: expected map" % p)
    view = {}
    for k, v in x:
        v_id(k, "%s key" % p, maxlen=31)
        view[k] = v_uint()(v, "%s.%s" % (p, k))
    return view


def v_name(x, p):
    return v_id(x, p, maxlen=31)


REQ, OPT = "req", "opt"
NODEF = object()


def v_base(x, p, ctx):
    """§6.6 bv: a uint with 1 <= bv < mv (mv comes before it)."""
    bv = v_uint()(x, p)
    mv = ctx["seen"].get("mv")
    if bv < 1 or mv is None or bv >= mv:
        raise Refuse("bad_value", "%s = %d, mv = %s" % (p, bv, mv))
    return bv


v_base.ctx = True

# (key, required?, validator, default): an optional field equal to its
# default is what a decoder cannot tell from absent, so the view leaves it
# out, as fedmq's encoder does. Durations (tts, cpu), norms and standard
# deviations are >= 0: SPEC §6 implies it by their meaning, fedmq checks it.
TC = [("ep", REQ, v_uint(1, 1000), NODEF), ("bs", REQ, v_uint(1, 65536), NODEF),
      ("lr", REQ, v_float(32, "pos"), NODEF),
      ("mo", OPT, v_float(32, "unit"), 0.0),
      ("wd", OPT, v_float(32, "nonneg"), 0.0),
      ("mu", OPT, v_float(32, "nonneg"), 0.0)]
FLAG = [("dev", REQ, v_id, NODEF), ("why", REQ, v_name, NODEF)]

MESSAGES = {
    "global": [
        ("fl", REQ, v_id, NODEF), ("r", REQ, v_uint(1), NODEF),
        ("mv", REQ, v_uint(1), NODEF), ("dl", REQ, v_uint(), NODEF),
        ("ts", OPT, v_uint(), NODEF),
        ("m", REQ, lambda x, p: v_id(x, p, spec=True), NODEF),
        ("w", REQ, v_tensor(weights=True), NODEF),
        ("tc", REQ, v_map(TC), NODEF), ("co", OPT, v_cohort, NODEF),
        ("uq", REQ, v_uq, NODEF), ("uqc", OPT, v_uqc, NODEF),
        ("st", OPT, v_id, NODEF), ("as", OPT, v_bool, False),
        ("ms", OPT, v_uint(0, 2**32 - 1), 0), ("gd", OPT, v_bool, False),
    ],
    "delta": [
        ("fl", REQ, v_id, NODEF), ("r", REQ, v_uint(1), NODEF),
        ("mv", REQ, v_uint(2), NODEF), ("bv", REQ, v_base, NODEF),
        ("dl", REQ, v_uint(), NODEF), ("ts", OPT, v_uint(), NODEF),
        ("m", REQ, lambda x, p: v_id(x, p, spec=True), NODEF),
        ("d", REQ, v_tensor(weights=False), NODEF),
        ("tc", REQ, v_map(TC), NODEF), ("co", OPT, v_cohort, NODEF),
        ("uq", REQ, v_uq, NODEF), ("uqc", OPT, v_uqc, NODEF),
        ("st", OPT, v_id, NODEF), ("as", OPT, v_bool, False),
        ("ms", OPT, v_uint(0, 2**32 - 1), 0), ("gd", OPT, v_bool, False),
    ],
    "update": [
        ("fl", REQ, v_id, NODEF), ("dev", REQ, v_id, NODEF),
        ("r", REQ, v_uint(), NODEF), ("mv", REQ, v_uint(), NODEF),
        ("n", REQ, v_uint(1), NODEF), ("loss", REQ, v_float(32), NODEF),
        ("d", REQ, v_tensor(weights=False), NODEF),
        ("ts", OPT, v_uint(), NODEF),
        ("tts", OPT, v_float(32, "nonneg"), NODEF),
        ("cls", OPT, v_id, NODEF),
    ],
    "status": [
        ("fl", REQ, v_id, NODEF), ("dev", REQ, v_id, NODEF),
        ("on", REQ, v_bool, NODEF), ("mv", OPT, v_uint(), NODEF),
        ("lr", OPT, v_uint(), NODEF), ("n", OPT, v_uint(), NODEF),
        ("tts", OPT, v_float(32, "nonneg"), NODEF),
        ("rss", OPT, v_uint(), NODEF),
        ("cpu", OPT, v_float(32, "nonneg"), NODEF),
        ("norm", OPT, v_float(32, "nonneg"), NODEF),
        ("bat", OPT, v_float(32, "pct"), NODEF),
        ("temp", OPT, v_float(32), NODEF), ("ts", OPT, v_uint(), NODEF),
    ],
    "metrics": [
        ("fl", REQ, v_id, NODEF), ("r", REQ, v_uint(), NODEF),
        ("mv", REQ, v_uint(), NODEF), ("co", REQ, v_uint(), NODEF),
        ("pa", REQ, v_uint(), NODEF), ("late", REQ, v_uint(), NODEF),
        ("rej", OPT, v_rej, NODEF), ("ls", OPT, v_float(64), NODEF),
        ("lsd", OPT, v_float(64, "nonneg"), NODEF), ("tl", OPT, v_float(64), NODEF),
        ("acc", OPT, v_float(64, "prob"), NODEF),
        ("bi", REQ, v_uint(), NODEF), ("bo", REQ, v_uint(), NODEF),
        ("sec", REQ, v_float(64, "nonneg"), NODEF),
        ("st", OPT, v_id, NODEF),
        ("dpc", OPT, v_float(64, "nonneg"), NODEF),
        ("dpz", OPT, v_float(64, "nonneg"), NODEF),
        ("fg", OPT, v_array_of(v_map(FLAG)), NODEF),
        ("ts", OPT, v_uint(), NODEF),
    ],
    "agg": [
        ("fl", REQ, v_id, NODEF), ("on", REQ, v_bool, NODEF),
        ("r", OPT, v_uint(), NODEF), ("mv", OPT, v_uint(), NODEF),
        ("ts", OPT, v_uint(), NODEF),
    ],
    "signed": [
        ("kid", REQ, v_id, NODEF), ("body", REQ, v_bin(minlen=1), NODEF),
        ("sig", REQ, v_bin(exact=64), NODEF),
    ],
    "sealed": [
        ("kid", REQ, v_id, NODEF), ("r", REQ, v_uint(), NODEF),
        ("epk", REQ, v_bin(exact=65, first=0x04), NODEF),
        ("iv", REQ, v_bin(exact=12), NODEF),
        ("ct", REQ, v_bin(minlen=16), NODEF),
    ],
}

# Float width of every float field, by path (for the canonical re-encoding).
FLOAT_WIDTH = {}
for _t, _fields in MESSAGES.items():
    for _k, _, _v, _ in _fields:
        if hasattr(_v, "width"):
            FLOAT_WIDTH[(_t, _k)] = _v.width
for _t in ("global", "delta"):
    for _k, _, _v, _ in TC:
        if hasattr(_v, "width"):
            FLOAT_WIDTH[(_t, "tc", _k)] = _v.width
    FLOAT_WIDTH[(_t, "co", "f")] = 64


def fields_view(fields, m, path, ctx):
    """SPEC §10's order: fields in table order; for one field missing, then
    type, then value. Unknown keys are ignored."""
    view = {}
    for key, req, check, default in fields:
        p = "%s.%s" % (path, key) if path else key
        x = get(m, key)
        if x is MISSING:
            if req == REQ:
                raise Refuse("missing_key", p)
            continue
        v = check(x, p, ctx) if getattr(check, "ctx", False) else check(x, p)
        if ctx is not None:
            ctx.setdefault("seen", {})[p] = v
        if default is NODEF or v != default:
            view[key] = v
    return view


def decode(b):
    """The independent decoder: bytes -> (type, view, tensors, tree), or
    Refuse with the reason SPEC §10's precedence gives first."""
    tree = unpack(b, scan(b))
    if not isinstance(tree, Map):
        raise Refuse("not_map", "top level is %s" % type(tree).__name__)
    check_keys(tree)
    v = get(tree, "v")
    if v is MISSING:
        raise Refuse("missing_key", "v")
    if type(v) is int and v != 1:
        raise Refuse("version", "v = %d" % v)
    if type(v) is not int:
        raise Refuse("wrong_type", "v: expected uint")
    t = get(tree, "t")
    if t is MISSING:
        raise Refuse("missing_key", "t")
    if type(t) is not str:
        raise Refuse("wrong_type", "t: expected str")
    if t not in MESSAGES:
        raise Refuse("wrong_msg", "t = %r" % t)
    ctx = {"tensors": {}, "seen": {}}
    view = {"v": 1, "t": t}
    view.update(fields_view(MESSAGES[t], tree, "", ctx))
    return t, view, ctx["tensors"], tree


# ------------------------------------------------------ dequantization (§5)

def dequant(s, n, b, c, sc):
    """x'[i] as float32 values (Python floats)."""
    if s == "f32":
        return list(struct.unpack("<%df" % n, c))
    if s == "f16":
        return list(struct.unpack("<%de" % n, c))
    scales = struct.unpack("<%df" % ((n + b - 1) // b), sc)
    out = []
    for i in range(n):
        sv = scales[i // b]
        if s == "q8":
            code = c[i] - 256 if c[i] >= 128 else c[i]
            out.append(f32(code * sv))
        elif s == "q4":
            nib = (c[i >> 1] >> (4 * (i & 1))) & 0x0f
            out.append(f32((nib - 16 if nib >= 8 else nib) * sv))
        else:
            out.append(sv if (c[i >> 3] >> (i & 7)) & 1 else -sv)
    return out


def codes_of(s, n, c):
    if s == "q8":
        return [v - 256 if v >= 128 else v for v in c[:n]]
    if s == "q4":
        nibs = [(c[i >> 1] >> (4 * (i & 1))) & 0xf for i in range(n)]
        return [v - 16 if v & 8 else v for v in nibs]
    return [(c[i >> 3] >> (i & 7)) & 1 for i in range(n)]


def ulps_apart(a, b):
    ia = struct.unpack("<i", struct.pack("<f", a))[0]
    ib = struct.unpack("<i", struct.pack("<f", b))[0]
    if ia < 0:
        ia = -0x80000000 - ia
    if ib < 0:
        ib = -0x80000000 - ib
    return abs(ia - ib)


def check_encoder(tensor, x, stochastic, canonical):
    """The encoder rules of SPEC §5, given the float32 input x. Returns a
    list of problems (empty when all hold)."""
    s, n, b, c, sc = tensor
    bad = []
    if len(x) != n:
        return ["input has %d values, tensor %d" % (len(x), n)]
    x = [f32(v) for v in x]
    xq = dequant(s, n, b, c, sc)
    if s == "f32":
        bad += ["value %d: %r, input %r" % (i, xq[i], x[i])
                for i in range(n) if xq[i] != x[i]]
    elif s == "f16":
        want = [struct.unpack("<e", struct.pack("<e", v))[0] for v in x]
        bad += ["value %d: %r, nearest-even binary16 of %r is %r" %
                (i, xq[i], x[i], want[i]) for i in range(n) if xq[i] != want[i]]
    else:
        scales = struct.unpack("<%df" % ((n + b - 1) // b), sc)
        codes = codes_of(s, n, c)
        lim = {"q8": 127, "q4": 7}.get(s)
        for blk, sv in enumerate(scales):
            lo, hi = blk * b, min(n, blk * b + b)
            xs = x[lo:hi]
            amax = max(abs(v) for v in xs)
            if s == "q1" and not stochastic:
                acc = 0.0
                for v in xs:
                    acc += abs(v)
                want = f32(acc / len(xs))
            elif s == "q1":
                want = amax
            else:
                want = f32(amax / lim)
            if ulps_apart(sv, want) > (4 if s == "q1" else 1):
                bad.append("block %d: scale %r, SPEC gives %r" % (blk, sv, want))
                continue
            for i in range(lo, hi):
                if sv == 0:
                    if codes[i] != 0:
                        bad.append("value %d: code %d in a zero block" %
                                   (i, codes[i]))
                    continue
                if s == "q1":
                    if not stochastic and x[i] != 0 and codes[i] != (x[i] > 0):
                        bad.append("value %d: bit %d for %r" % (i, codes[i], x[i]))
                    if stochastic and abs(x[i]) == sv and codes[i] != (x[i] > 0):
                        bad.append("value %d: bit %d for %r = +-scale" %
                                   (i, codes[i], x[i]))
                    continue
                t = x[i] / sv
                if not -lim <= codes[i] <= lim:
                    bad.append("value %d: code %d outside [-%d, %d]" %
                               (i, codes[i], lim, lim))
                err = abs(t - codes[i])
                if err > (1 if stochastic else 0.5) + 1e-6:
                    bad.append("value %d: code %d for x/s = %.9g (%s)" %
                               (i, codes[i], t, "stochastic" if stochastic
                                else "nearest"))
    if canonical:
        used = n * SCHEMES[s]
        if used % 8 and c[-1] >> (used % 8):
            bad.append("unused bits of the last code byte are not zero")
    return bad


# ---------------------------------------- canonical re-encoding (SPEC §3)

def _hdr(n, fix, c16, c32):
    if n < 16:
        return bytes([fix | n])
    if n < 65536:
        return bytes([c16]) + n.to_bytes(2, "big")
    return bytes([c32]) + n.to_bytes(4, "big")


def canonical(o, path):
    """The bytes fedmq's encoder (and SPEC §3) would write for tree o."""
    if isinstance(o, Map):
        out = _hdr(len(o), 0x80, 0xde, 0xdf)
        for k, v in o:
            out += msgpack.packb(k, use_bin_type=True)
            out += canonical(v, path + (k,))
        return out
    if isinstance(o, list):
        return _hdr(len(o), 0x90, 0xdc, 0xdd) + b"".join(
            canonical(v, path + ("[]",)) for v in o)
    if type(o) is float:
        width = FLOAT_WIDTH.get(path)
        if width is None:
            raise ValueError("no float width known for %s" % ".".join(path))
        return struct.pack(">Bf", 0xca, o) if width == 32 else \
            struct.pack(">Bd", 0xcb, o)
    return msgpack.packb(o, use_bin_type=True)


# ----------------------------------------------------------- comparisons

def jsonable(o):
    if isinstance(o, Map):
        return {k: jsonable(v) for k, v in o}
    if isinstance(o, list):
        return [jsonable(v) for v in o]
    if type(o) is bytes:
        return {"hex": o.hex()}
    return o


def diff(a, b, path="message"):
    """None when a and b are the same (types included, floats exactly), else
    where they first differ."""
    if type(a) is not type(b):
        return "%s: %r (%s) vs %r (%s)" % (path, a, type(a).__name__, b,
                                          type(b).__name__)
    if isinstance(a, dict):
        if set(a) != set(b):
            return "%s: keys %s vs %s" % (path, sorted(a), sorted(b))
        for k in a:
            d = diff(a[k], b[k], "%s.%s" % (path, k))
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return "%s: %d vs %d elements" % (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, "%s[%d]" % (path, i))
            if d:
                return d
        return None
    return None if a == b else "%s: %r vs %r" % (path, a, b)


def diff_tensors(want, got, what):
    """want: {key: [float32]}; got: {key: [numbers from JSON]}."""
    if not isinstance(got, dict) or set(want) != set(got):
        return "%s: tensor keys %s, expected %s" % (
            what, sorted(got) if isinstance(got, dict) else got, sorted(want))
    for k in want:
        w, g = want[k], got[k]
        if len(w) != len(g):
            return "%s[%s]: %d values, expected %d" % (what, k, len(g), len(w))
        for i, (a, b) in enumerate(zip(w, g)):
            if type(b) not in (int, float) or f32(b) != a:
                return "%s[%s][%d]: %r, SPEC §5 gives %r" % (what, k, i, b, a)
    return None


# --------------------------------------------------------------- checking

class Checker:
    def __init__(self, root, dump, verbose):
        self.root, self.dump, self.verbose = root, dump, verbose
        self.failures = []
        self.good = self.bad = 0
        self.cov_types, self.cov_schemes = set(), set()
        self.cov_partial, self.cov_stoch = set(), set()
        self.cov_reasons = set()
        self.tmp = tempfile.TemporaryDirectory(prefix="check_vectors.")

    def fail(self, name, msg):
        self.failures.append("%s: %s" % (name, msg))

    def run_dump(self, path):
        if not self.dump:
            return None
        r = subprocess.run([self.dump, path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError("vector_dump exited %d: %s" %
                               (r.returncode, r.stderr.decode(errors="replace")))
        return json.loads(r.stdout)

    def compare_dump(self, name, path, t, view, tensors):
        out = self.run_dump(path)
        if out is None:
            return
        if "error" in out:
            self.fail(name, "vector_dump refused it: %s (%s)" %
                      (out["error"], out.get("what")))
            return
        if out.get("type") != t:
            self.fail(name, "vector_dump says type %r" % out.get("type"))
        d = diff(view, out.get("message"), "vector_dump message")
        if d:
            self.fail(name, d)
        d = diff_tensors(tensors, out.get("tensors"), "vector_dump tensors")
        if d:
            self.fail(name, d)

    def check_good(self, name, path, data, meta):
        self.good += 1
        try:
            t, view, tens, tree = decode(data)
        except Refuse as e:
            self.fail(name, "the independent decoder refuses it: %s" % e)
            return
        if meta.get("type") != t:
            self.fail(name, "JSON type %r, message t %r" % (meta.get("type"), t))
        self.cov_types.add(t)
        d = diff(meta.get("message"), jsonable(tree))
        if d:
            self.fail(name, "JSON vs python3-msgpack: " + d)
        want = {k: dequant(*v) for k, v in tens.items()}
        d = diff_tensors(want, meta.get("tensors"), "JSON tensors")
        if d:
            self.fail(name, d)
        is_canon = meta.get("canonical", True)
        for k, v in tens.items():
            s, n, b = v[0], v[1], v[2]
            self.cov_schemes.add((t, s))
            if s in SCALED and n % b:
                self.cov_partial.add(s)
            if meta.get("stochastic") and s in SCALED:
                self.cov_stoch.add(s)
            x = meta.get("input", {}).get(k)
            if x is not None:
                for problem in check_encoder(v, x, bool(meta.get("stochastic")),
                                             is_canon):
                    self.fail(name, "%s: encoder rule: %s" % (k, problem))
        if is_canon:
            try:
                again = canonical(tree, (t,))
            except ValueError as e:
                again = None
                self.fail(name, str(e))
            if again is not None and again != data:
                at = next((i for i, (a, b) in enumerate(zip(again, data))
                           if a != b), min(len(again), len(data)))
                self.fail(name, "not the canonical encoding (SPEC §3): first "
                          "difference at byte %d" % at)
        self.compare_dump(name, path, t, view, want)
        if t == "signed":
            body = bytes.fromhex(view["body"]["hex"])
            try:
                bt, bview, btens, _ = decode(body)
            except Refuse as e:
                self.fail(name, "body: the independent decoder refuses it: %s"
                          % e)
                return
            p = os.path.join(self.tmp.name, name + ".body.msgpack")
            with open(p, "wb") as f:
                f.write(body)
            self.compare_dump(name + " (body)", p, bt, bview,
                              {k: dequant(*v) for k, v in btens.items()})

    def check_bad(self, name, path, data, meta):
        self.bad += 1
        want = meta.get("error")
        if want not in DECODER_REASONS:
            self.fail(name, "error %r is not a decoder reason of SPEC §10"
                      % want)
            return
        self.cov_reasons.add(want)
        try:
            decode(data)
            self.fail(name, "the independent decoder accepts it (expected %s)"
                      % want)
        except Refuse as e:
            if e.reason != want:
                self.fail(name, "the independent decoder says %s, expected %s"
                          % (e, want))
        out = self.run_dump(path)
        if out is not None and out.get("error") != want:
            self.fail(name, "vector_dump says %s, expected %s" %
                      (out.get("error") or "OK (accepted)", want))

    def check_dir(self, sub, check):
        d = os.path.join(self.root, sub)
        files = sorted(os.listdir(d))
        names = sorted({f.rsplit(".", 1)[0] for f in files
                        if f.endswith((".msgpack", ".json"))})
        for name in names:
            label = (sub + "/" if sub else "") + name
            mp, js = (os.path.join(d, name + e) for e in (".msgpack", ".json"))
            if not os.path.exists(mp) or not os.path.exists(js):
                self.fail(label, "needs both .msgpack and .json")
                continue
            with open(mp, "rb") as f:
                data = f.read()
            with open(js, encoding="utf-8") as f:
                meta = json.load(f)
            if not isinstance(meta.get("description"), str):
                self.fail(label, "no description")
            before = len(self.failures)
            check(label, mp, data, meta)
            if self.verbose:
                print("%-45s %s" % (label, "ok" if len(self.failures) == before
                                    else "FAIL"))

    def coverage(self):
        missing = []
        for t in TYPES:
            if t not in self.cov_types:
                missing.append("a good %s message" % t)
        for s in SCHEMES:
            if ("update", s) not in self.cov_schemes:
                missing.append("an update with a %s delta" % s)
        for s in ("f32", "f16"):
            if ("global", s) not in self.cov_schemes:
                missing.append("a global with %s weights" % s)
        for s in SCALED:
            if s not in self.cov_partial:
                missing.append("a %s tensor with a partial last block" % s)
            if s not in self.cov_stoch:
                missing.append("a %s tensor with stochastic rounding" % s)
        for r in DECODER_REASONS:
            if r not in self.cov_reasons:
                missing.append("a bad vector with error %s" % r)
        for m in missing:
            self.fail("coverage", "no vector for " + m)


def spec_reasons(root):
    """The names in SPEC.md §10's table, if SPEC.md is beside the vectors."""
    p = os.path.join(root, os.pardir, "SPEC.md")
    if not os.path.exists(p):
        return None
    with open(p, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^## 10\..*?$(.*?)^## ", text, re.S | re.M)
    return set(re.findall(r"^\| `([a-z_]+)` \|", m.group(1), re.M)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dump", help="fedmq's vector_dump, to compare with")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("dir", help="the vectors directory (proto/vectors)")
    a = ap.parse_args()
    if not os.path.isdir(a.dir) or not os.path.isdir(os.path.join(a.dir, "bad")):
        print("check_vectors: %s: no such vectors directory (with bad/)" % a.dir,
              file=sys.stderr)
        return 2
    if a.dump and not os.access(a.dump, os.X_OK):
        print("check_vectors: %s: not executable" % a.dump, file=sys.stderr)
        return 2
    names = spec_reasons(a.dir)
    if names is not None and not set(DECODER_REASONS) <= names:
        print("check_vectors: SPEC.md §10 lacks %s" %
              sorted(set(DECODER_REASONS) - names), file=sys.stderr)
        return 1
    c = Checker(a.dir, a.dump, a.verbose)
    c.check_dir("", c.check_good)
    c.check_dir("bad", c.check_bad)
    c.coverage()
    size = sum(os.path.getsize(os.path.join(dp, f))
               for dp, _, fs in os.walk(a.dir) for f in fs)
    for f in c.failures:
        print("FAIL " + f)
    verdict = "%d mismatches" % len(c.failures) if c.failures else "all agree"
    print("check_vectors: %d good, %d bad vectors (%d bytes); python3-msgpack "
          "%s%s: %s" % (c.good, c.bad, size,
                        ".".join(map(str, msgpack.version)),
                        " and vector_dump" if a.dump else "", verdict))
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
