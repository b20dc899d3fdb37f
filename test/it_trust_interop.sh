# it_trust_interop.sh — fedmq's signed and sealed envelopes (proto/SPEC.md
# §7) against an independent implementation: test/trust_interop.py with
# Debian's python3-cryptography and python3-msgpack drives
# $FMQ_BUILD/tools/trust_tool both ways (C signs/seals, Python
# verifies/opens, and the other way round).
B="${FMQ_BUILD:-build}"
PY="${PYTHON:-/usr/bin/python3}"
TOOL="$B/tools/trust_tool"
# Builds trust_tool when it is missing or stale (a no-op when check-it
# already built it, and for a run of this script on its own).
env -u MAKEFLAGS -u MFLAGS make -s --no-print-directory BUILD="$B" "$TOOL" || exit 1
T="$B/it/trust_interop"
rm -rf "$T" && mkdir -p "$T" || exit 1
"$PY" test/trust_interop.py "$TOOL" "$T" || { echo "it_trust_interop: FAILED"; exit 1; }
rm -rf "$T"
