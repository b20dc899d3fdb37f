#!/bin/sh
# Install the Debian packages fedmq needs that are not installed yet.
#
#   deploy/install-deps.sh [GROUP...]      groups: base (default), fuzz, bench, all
#
# Idempotent: a package already installed is left alone, and when nothing is
# missing no apt command runs at all. Uses sudo when not run as root. This is
# the one place that lists the packages; `make test`, `make demo`, `make fuzz`
# and `make bench` call it (through a stamp file in the build directory).
set -eu

# Everything `make`, `make test` and `make demo` need.
BASE="
  make gcc libc6-dev pkg-config
  libpaho-mqtt-dev
  mosquitto mosquitto-clients libmosquitto-dev mosquitto-dev
  libmbedtls-dev libmsgpack-dev libcmocka-dev zlib1g-dev libopenblas-dev
  dataset-fashion-mnist
  openssl ca-certificates procps
  python3 python3-msgpack python3-cryptography
  libjwt-dev help2man
"
# libFuzzer targets (`make fuzz`).
FUZZ="clang libclang-rt-14-dev"
# Benchmarks and their yardsticks (`make bench`).
BENCH="python3-numpy python3-torch"

groups=${*:-base}
want=""
for g in $groups; do
  case $g in
    base)  want="$want $BASE" ;;
    fuzz)  want="$want $BASE $FUZZ" ;;
    bench) want="$want $BASE $BENCH" ;;
    all)   want="$want $BASE $FUZZ $BENCH" ;;
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
