#!/bin/sh
# Install the Debian packages fedmq needs that are not installed yet.
#
#   deploy/install-deps.sh [GROUP...]      groups: base (default), fuzz, bench, all
#   deploy/install-deps.sh --npm DIR       the web dashboard's npm packages
#
# Idempotent: a package already installed is left alone, and when nothing is
# missing no apt command runs at all. Uses sudo when not run as root. This is
# the one place that lists the packages; `make test`, `make demo`, `make fuzz`
# and `make bench` call it (through a stamp file in the build directory).
#
# Node.js: base needs `node` and `npm` (the dashboard's libraries and its
# browser test, deploy/dashboard/). A Node already on the machine (from
# Debian or elsewhere) is left alone; only when `node` or `npm` is missing
# are Debian's nodejs and npm installed.
#
# --npm DIR installs the exact versions of deploy/dashboard/package-lock.json
# (npm ci, no install scripts) into DIR/node_modules, with the apt step of
# base first; when DIR already holds that lock's packages, npm is not run.
# The Makefile calls it with DIR = $(BUILD)/npm (deploy/dashboard.mk). This
# step needs the npm registry; nothing does at run time.
set -eu

here=$(cd "$(dirname "$0")" && pwd)

if [ "${1:-}" = "--npm" ]; then
  [ $# -eq 2 ] || { echo "usage: $0 --npm DIR" >&2; exit 2; }
  sh "$0" base
  npm_dir=$2
  lock=$here/dashboard/package-lock.json
  mkdir -p "$npm_dir"
  if [ -f "$npm_dir/node_modules/.package-lock.json" ] &&
    cmp -s "$lock" "$npm_dir/package-lock.json" &&
    cmp -s "$here/dashboard/package.json" "$npm_dir/package.json"; then
    echo "install-deps: npm packages of deploy/dashboard/package-lock.json are installed in $npm_dir"
    exit 0
  fi
  cp "$here/dashboard/package.json" "$lock" "$npm_dir/"
  echo "install-deps: npm ci in $npm_dir (deploy/dashboard/package-lock.json)"
  (cd "$npm_dir" && npm ci --include=dev --no-audit --no-fund --ignore-scripts --loglevel=error) || {
    rm -f "$npm_dir/package-lock.json"
    echo "install-deps: npm ci failed" >&2
    exit 1
  }
  echo "install-deps: npm packages installed in $npm_dir"
  exit 0
fi

# Everything `make`, `make test` and `make demo` need.
BASE="
  make gcc libc6-dev pkg-config
  libpaho-mqtt-dev
  mosquitto mosquitto-clients libmosquitto-dev mosquitto-dev
  libmbedtls-dev libmsgpack-dev libcmocka-dev zlib1g-dev libopenblas-dev
  dataset-fashion-mnist
  openssl ca-certificates procps
  python3 python3-msgpack python3-cryptography python3-numpy
  libjwt-dev help2man
  chromium
"
# Node.js and npm, unless a node and an npm are there already (see above).
NODE=""
command -v node >/dev/null 2>&1 || NODE="nodejs"
command -v npm >/dev/null 2>&1 || NODE="$NODE npm"
# libFuzzer targets (`make fuzz`).
FUZZ="clang libclang-rt-14-dev"
# Benchmarks and their yardsticks (`make bench`). python3-numpy is in BASE
# too: test_strategy re-checks its stored vectors with test/strategy_ref.py.
BENCH="python3-numpy python3-torch gnuplot-nox"

groups=${*:-base}
want=""
for g in $groups; do
  case $g in
    base)  want="$want $BASE $NODE" ;;
    fuzz)  want="$want $BASE $NODE $FUZZ" ;;
    bench) want="$want $BASE $NODE $BENCH" ;;
    all)   want="$want $BASE $NODE $FUZZ $BENCH" ;;
    *) echo "install-deps: unknown group '$g' (base, fuzz, bench, all)" >&2; exit 2 ;;
  esac
done

missing=""
for p in $want; do
  case " $missing " in *" $p "*) continue ;; esac
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing="$missing $p"
  fi
done

if [ -z "$missing" ]; then
  echo "install-deps: all packages for '$groups' are installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "install-deps: missing packages:$missing" >&2
  echo "install-deps: not root and no sudo; install them as root and run again" >&2
  exit 1
fi

echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt has none (a fresh debootstrap root)
# or when an install fails because they are stale.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  $SUDO apt-get update -q
fi
# shellcheck disable=SC2086
if ! $SUDO apt-get install -y -q --no-install-recommends $missing; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends $missing
fi
echo "install-deps: done"
