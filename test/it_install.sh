#!/bin/sh
# it_install.sh — `make install` as an operator or a packager uses it:
#   - PREFIX=$T/usr installs programs, libfedmq (static and shared, soname
#     libfedmq.so.1), headers, fedmq.pc, the broker plugin, examples,
#     systemd units and man pages, and nothing outside the prefix;
#   - a program of a product built against the installed library through
#     pkg-config (shared, then static) runs: it quantizes a delta, encodes
#     and decodes an update message, and checks the result;
#   - every installed program has a man page that renders (when man is
#     installed), and fedmq.conf(5);
#   - the systemd units pass `systemd-analyze verify` (when systemd is
#     installed; a minimal container may have none);
#   - the example configuration files hold only keys the programs know;
#   - --log-format json writes one JSON object per record, journal a <N>
#     priority prefix.
set -eu
B=${FMQ_BUILD:-build}
ROOT=$(pwd)
PY=/usr/bin/python3
T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-install.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   it_install: $*"; }
bad() { echo "FAIL it_install: $*" >&2; fails=$((fails + 1)); }

P=$T/usr
env -u MAKEFLAGS -u MFLAGS make -s --no-print-directory BUILD="$B" PREFIX="$P" install \
  >"$T/install.log" 2>&1 || { tail -20 "$T/install.log" >&2; echo "FAIL it_install: make install" >&2; exit 1; }

missing=""
for f in bin/fedmq-aggregator bin/fedmq-device bin/fedmq-sim bin/fedmq-train bin/fedmq-keygen \
         lib/libfedmq.a lib/libfedmq.so.1 lib/libfedmq.so lib/pkgconfig/fedmq.pc \
         lib/fedmq/fedmq_auth.so include/fedmq/fmq.h include/fedmq/device.h include/fedmq/quant.h \
         lib/systemd/system/fedmq-aggregator.service lib/systemd/system/fedmq-device@.service \
         share/fedmq/examples/aggregator.conf share/fedmq/examples/device.conf \
         share/fedmq/examples/fedmq-broker.conf share/man/man5/fedmq.conf.5 \
         share/fedmq/dashboard/index.html; do
  [ -e "$P/$f" ] || missing="$missing $f"
done
[ -z "$missing" ] && ok "installed: $(cd "$P" && find . -type f -o -type l | wc -l) files under PREFIX" ||
  bad "missing after make install:$missing"
outside=$(find "$T" -mindepth 1 -maxdepth 1 ! -name usr ! -name '*.log' | head -3)
[ -z "$outside" ] && ok "nothing written outside PREFIX" || bad "written outside PREFIX: $outside"
[ "$(readlink "$P/lib/libfedmq.so")" = libfedmq.so.1 ] &&
  objdump -p "$P/lib/libfedmq.so.1" | grep -q 'SONAME *libfedmq.so.1' &&
  ok "libfedmq.so -> libfedmq.so.1, SONAME libfedmq.so.1" || bad "shared library name or soname"

# A product's program against the installed library.
cat >"$T/product.c" <<'CEOF'
#include <fedmq/codec.h>
#include <fedmq/device.h>
#include <fedmq/quant.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    enum { P = 1000 };
    float x[P], y[P];
    for (int i = 0; i < P; i++)
        x[i] = sinf((float)i) * 0.01f;
    fmq_msg_update u, v;
    fmq_msg_update_init(&u);
    snprintf(u.fleet, sizeof u.fleet, "kitchen");
    snprintf(u.device, sizeof u.device, "dev-0003");
    u.round = u.version = 1;
    u.samples = 50;
    fmq_quant_cfg qc = {FMQ_Q_Q8, 256, false};
    fmq_buf b;
    fmq_buf_init(&b);
    if (fmq_quant_encode(&qc, x, P, NULL, &u.delta) ||
        fmq_codec_encode_update(&u, &b) ||
        fmq_codec_decode_update(b.data, b.len, NULL, &v, NULL) ||
        fmq_quant_decode(&v.delta, y)) {
        fprintf(stderr, "product: fedmq call failed\n");
        return 1;
    }
    float err = 0;
    for (int i = 0; i < P; i++)
        err = fmaxf(err, fabsf(x[i] - y[i]));
    printf("product: %zu-byte update for %s, max error %.2g\n", b.len, v.device, err);
    int rc = strcmp(v.device, "dev-0003") != 0 || err > 1e-4f;
    fmq_qtensor_fini(&u.delta);

    fmq_buf_fini(&b);
    return rc;
}
CEOF
export PKG_CONFIG_PATH="$P/lib/pkgconfig"
if cc -std=c11 -Wall -Werror $(pkg-config --cflags fedmq) "$T/product.c" -o "$T/product" \
     $(pkg-config --libs fedmq) -lm 2>"$T/cc.log" &&
   LD_LIBRARY_PATH="$P/lib" "$T/product" >"$T/product.out" 2>&1 &&
   LD_LIBRARY_PATH="$P/lib" ldd "$T/product" | grep -q "$P/lib/libfedmq.so.1"; then
  ok "shared: built with pkg-config --libs fedmq, linked to the installed libfedmq.so.1: $(cat "$T/product.out")"
else
  bad "a program against the shared libfedmq: $(cat "$T/cc.log" "$T/product.out" 2>/dev/null | head -5)"
fi
if cc -std=c11 -Wall -Werror $(pkg-config --cflags fedmq) "$T/product.c" -o "$T/product-static" \
     "$P/lib/libfedmq.a" $(pkg-config --static --libs-only-other --libs-only-L fedmq) \
     $(pkg-config --static --libs-only-l fedmq | sed 's/-lfedmq//') -lm 2>"$T/cc2.log" &&
   "$T/product-static" >"$T/product2.out" 2>&1 &&
   ! ldd "$T/product-static" | grep -q libfedmq; then
  ok "static: libfedmq.a with pkg-config --static: $(cat "$T/product2.out")"
else
  bad "a program against the static libfedmq: $(cat "$T/cc2.log" "$T/product2.out" 2>/dev/null | head -5)"
fi

# Man pages.
for p in "$P"/bin/*; do
  m="$P/share/man/man1/$(basename "$p").1"
  [ -f "$m" ] || { bad "no man page for $(basename "$p")"; continue; }
  grep -q '^\.SH NAME' "$m" || bad "$(basename "$m") has no NAME section"
done
if command -v man >/dev/null 2>&1; then
  n=0
  for m in "$P"/share/man/man1/*.1 "$P"/share/man/man5/*.5; do
    MANWIDTH=80 man -l "$m" >"$T/man.out" 2>"$T/man.err" && [ -s "$T/man.out" ] && n=$((n + 1)) ||
      bad "man -l $(basename "$m"): $(head -2 "$T/man.err")"
  done
  ok "$n man pages render with man -l"
else
  ok "man pages present for every program (man is not installed here: not rendered)"
fi

# systemd units.
if command -v systemd-analyze >/dev/null 2>&1; then
  cp "$P/lib/systemd/system/fedmq-device@.service" "$T/fedmq-device@kitchen.service"
  for u in "$P/lib/systemd/system/fedmq-aggregator.service" "$T/fedmq-device@kitchen.service"; do
    # its man pages are not in MANPATH: those checks are the only ones left out
    if systemd-analyze verify "$u" 2>&1 | grep -v "Command 'man " >"$T/verify.out"; then :; fi
    [ -s "$T/verify.out" ] && bad "systemd-analyze verify $(basename "$u"): $(head -3 "$T/verify.out")" ||
      ok "systemd-analyze verify $(basename "$u"): clean; exposure $(systemd-analyze security --offline=yes "$u" 2>/dev/null | sed -n 's/.*exposure level for [^:]*: //p')"
  done
  grep -q "^ExecStart=$P/bin/fedmq-aggregator " "$P/lib/systemd/system/fedmq-aggregator.service" &&
    grep -q '^Restart=on-failure' "$P/lib/systemd/system/fedmq-device@.service" &&
    ok "units start the installed programs and restart on failure" || bad "unit ExecStart or Restart"
else
  ok "systemd-analyze is not installed here: units not verified"
fi

# The examples hold only known keys: a program given one fails at the
# network or at a key file, never at the configuration.
"$B/bin/fedmq-keygen" key "$T/agg.pem" --pub "$T/agg.pub" >/dev/null
for ex in device aggregator; do
  if [ $ex = device ]; then
    set -- "$P/bin/fedmq-device" --config "$P/share/fedmq/examples/device.conf" --agg-key "$T/agg.pub" \
      --state-dir "$T/dev" --connect-ms 300
  else
    set -- "$P/bin/fedmq-aggregator" --config "$P/share/fedmq/examples/aggregator.conf" \
      --sign-key "$T/agg.pem" --state-dir "$T/agg" --holdout none --model logreg
  fi
  timeout 10 "$@" --broker mqtt://127.0.0.1:1 >"$T/$ex.out" 2>&1 || true
  if grep -q -- '--help lists the options' "$T/$ex.out"; then
    bad "example $ex.conf: $(head -2 "$T/$ex.out")"
  elif grep -q 'connect' "$T/$ex.out"; then
    ok "example $ex.conf loads (the program went on to connect)"
  else
    bad "example $ex.conf: unexpected: $(head -3 "$T/$ex.out")"
  fi
done

# Log formats.
timeout 10 "$P/bin/fedmq-device" --config "$P/share/fedmq/examples/device.conf" --agg-key "$T/agg.pub" \
  --state-dir "$T/dev" --connect-ms 300 --broker mqtt://127.0.0.1:1 --log-format json \
  >/dev/null 2>"$T/json.err" || true
if "$PY" - "$T/json.err" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
assert recs, "no JSON records"
for r in recs:
    assert set(r) == {"ts", "level", "prog", "msg"}, r
    assert r["prog"] == "fedmq-device" and r["level"] in ("err", "warning", "notice", "info"), r
print(len(recs), "records, e.g.", json.dumps(recs[0])[:120])
PYEOF
then ok "--log-format json: one object per record ($(tail -1 "$T/json.err" | cut -c1-60)...)"
else bad "--log-format json: $(head -3 "$T/json.err")"; fi
timeout 10 env JOURNAL_STREAM=8:1 "$P/bin/fedmq-device" --config "$P/share/fedmq/examples/device.conf" \
  --agg-key "$T/agg.pub" --state-dir "$T/dev" --connect-ms 300 --broker mqtt://127.0.0.1:1 \
  >/dev/null 2>"$T/journal.err" || true
grep -q '^<3>fedmq-device: ' "$T/journal.err" &&
  ok "under the journal (JOURNAL_STREAM set) records carry syslog priorities: $(grep -m1 '^<' "$T/journal.err" | cut -c1-60)..." ||
  bad "journal format: $(head -2 "$T/journal.err")"

[ $fails -eq 0 ] || { echo "it_install: $fails failed" >&2; exit 1; }
