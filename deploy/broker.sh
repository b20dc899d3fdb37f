#!/bin/sh
# A private Mosquitto on loopback for fedmq's tests and demos.
#
#   deploy/broker.sh start DIR [--tls] [--port N] [--certs CERTDIR] [--conf FILE]
#                              [--watch PID] [--dashboard HTTPDIR [--ws-port N]]
#   deploy/broker.sh stop DIR
#
# start writes DIR/mosquitto.conf, starts /usr/sbin/mosquitto in the
# background, writes DIR/port and DIR/pid and returns once the port accepts
# connections (DIR/mosquitto.log has the broker's log). The listener is on
# 127.0.0.1, on a free port unless --port is given (a restart passes the old
# one: `--port $(cat DIR/port)`). Persistence is on, in DIR, so sessions,
# retained and queued messages survive a restart; it is saved when the broker
# stops and every FMQ_BROKER_AUTOSAVE seconds (default 5).
#
# --tls        the listener speaks TLS with the certificates in CERTDIR
#              (default DIR/certs), made by deploy/mkcerts.sh if missing;
#              clients verify it against CERTDIR/ca.crt. No client
#              certificate is required.
# --conf FILE  lines appended to the configuration (a later line wins for
#              single-valued options), e.g. a password file, an ACL, a plugin.
# --watch PID  stop the broker when process PID ends (tests pass their own
#              pid, so a crashed test leaves no broker behind).
# --dashboard HTTPDIR
#              also a websockets listener on 127.0.0.1, on a free port
#              unless --ws-port N is given, that serves the files of HTTPDIR
#              over plain HTTP (Mosquitto's http_dir: the web dashboard,
#              $(BUILD)/dashboard, deploy/dashboard/README.md) and MQTT over
#              websockets to the page. Its port goes to DIR/ws_port. It is
#              added after the --conf lines, so their listener options stay
#              on the main listener. Loopback only: reach it from another
#              machine through an SSH tunnel.
#
# stop sends SIGTERM (the broker saves its database), waits up to 10 s, then
# SIGKILL. MOSQUITTO=/path/to/mosquitto selects another binary.
set -eu

MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
here=$(cd "$(dirname "$0")" && pwd)

usage() {
  echo "usage: $0 start DIR [--tls] [--port N] [--certs CERTDIR] [--conf FILE] [--watch PID]" >&2
  echo "                 [--dashboard HTTPDIR [--ws-port N]]" >&2
  echo "       $0 stop DIR" >&2
  exit 2
}

# alive PID: the process exists and is not a zombie (an orphaned broker whose
# parent does not reap it stays a zombie; it no longer holds the port).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || st=""
  [ "$st" != Z ]
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  "$PY" -c 'import socket,sys
s=socket.socket(); s.settimeout(0.5)
try: s.connect(("127.0.0.1",int(sys.argv[1])))
except OSError: sys.exit(1)' "$1"
}

free_port() {
  "$PY" -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2

case $cmd in
stop)
  [ $# -eq 0 ] || usage
  if [ ! -f "$dir/pid" ]; then
    echo "broker: not running (no $dir/pid)"
    exit 0
  fi
  pid=$(cat "$dir/pid")
  if [ -f "$dir/watch.pid" ]; then
    kill -TERM "$(cat "$dir/watch.pid")" 2>/dev/null || true
    rm -f "$dir/watch.pid"
  fi
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while alive "$pid" && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    if alive "$pid"; then
      echo "broker: pid $pid ignored SIGTERM for 10 s, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      while alive "$pid"; do sleep 0.05; done
    fi
    echo "broker: stopped (pid $pid)"
  else
    echo "broker: pid $pid was not running"
  fi
  rm -f "$dir/pid"
  ;;

start)
  tls=0
  port=""
  certs=""
  extra=""
  watch=""
  http_dir=""
  ws_port=""
  while [ $# -gt 0 ]; do
    case $1 in
      --tls) tls=1 ;;
      --port) [ $# -ge 2 ] || usage; port=$2; shift ;;
      --certs) [ $# -ge 2 ] || usage; certs=$2; shift ;;
      --conf) [ $# -ge 2 ] || usage; extra=$2; shift ;;
      --watch) [ $# -ge 2 ] || usage; watch=$2; shift ;;
      --dashboard) [ $# -ge 2 ] || usage; http_dir=$2; shift ;;
      --ws-port) [ $# -ge 2 ] || usage; ws_port=$2; shift ;;
      *) usage ;;
    esac
    shift
  done
  [ -x "$MOSQUITTO" ] || { echo "broker: $MOSQUITTO not found (deploy/install-deps.sh)" >&2; exit 1; }
  if [ -n "$extra" ] && [ ! -r "$extra" ]; then
    echo "broker: cannot read $extra" >&2
    exit 1
  fi
  if [ -n "$ws_port" ] && [ -z "$http_dir" ]; then
    echo "broker: --ws-port needs --dashboard" >&2
    exit 2
  fi
  if [ -n "$http_dir" ]; then
    [ -d "$http_dir" ] || { echo "broker: no directory $http_dir (make all builds the dashboard)" >&2; exit 1; }
    http_dir=$(cd "$http_dir" && pwd)
  fi
  mkdir -p "$dir"
  chmod 0700 "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pid" ] && alive "$(cat "$dir/pid")"; then
    echo "broker: already running in $dir (pid $(cat "$dir/pid"))" >&2
    exit 1
  fi
  if [ -z "$port" ]; then
    port=$(free_port)
  fi
  case $port in
    "" | *[!0-9]*) echo "broker: bad port '$port'" >&2; exit 2 ;;
  esac
  if [ -n "$http_dir" ]; then
    if [ -z "$ws_port" ]; then
      ws_port=$(free_port)
      while [ "$ws_port" = "$port" ]; do ws_port=$(free_port); done
    fi
    case $ws_port in
      "" | *[!0-9]*) echo "broker: bad websockets port '$ws_port'" >&2; exit 2 ;;
    esac
  fi

  if [ $tls -eq 1 ]; then
    certs=${certs:-$dir/certs}
    "$here/mkcerts.sh" "$certs"
    certs=$(cd "$certs" && pwd)
  fi

  conf=$dir/mosquitto.conf
  {
    echo "# Written by deploy/broker.sh: a private broker for fedmq tests and demos."
    echo "per_listener_settings false"
    echo "persistence true"
    echo "persistence_location $dir/"
    echo "persistence_file mosquitto.db"
    echo "autosave_interval ${FMQ_BROKER_AUTOSAVE:-5}"
    echo "log_dest file $dir/mosquitto.log"
    echo "log_type error"
    echo "log_type warning"
    echo "log_type notice"
    echo "log_type information"
    echo "connection_messages true"
    echo "# Paho's MQTT v5 client stalls 1 s whenever the broker's receive maximum"
    echo "# (this value; Mosquitto's default is 20) is exhausted."
    echo "max_inflight_messages 1000"
    echo "max_queued_messages 10000"
    echo "max_packet_size 268435456"
    echo "# answer at once: with Nagle on, each CONNACK and small ack waits ~40 ms"
    echo "set_tcp_nodelay true"
    echo "# Identity and ACL come from the fedmq plugin (broker/) when it is configured."
    echo "allow_anonymous true"
    # Started as root, Mosquitto drops to user mosquitto before reading the
    # TLS key and the persistence directory, and then fails.
    if [ "$(id -u)" -eq 0 ]; then
      echo "user root"
    fi
    echo "listener $port 127.0.0.1"
    if [ $tls -eq 1 ]; then
      echo "cafile $certs/ca.crt"
      echo "certfile $certs/server.crt"
      echo "keyfile $certs/server.key"
      echo "require_certificate false"
    fi
    if [ -n "$extra" ]; then
      echo "# --- from $extra"
      cat "$extra"
    fi
    if [ -n "$http_dir" ]; then
      echo "# --- the dashboard: its files over HTTP and MQTT over websockets,"
      echo "# loopback only (without socket_domain, libwebsockets binds every"
      echo "# interface whatever the address). Small messages only: large"
      echo "# payloads are very slow over this listener."
      echo "listener $ws_port 127.0.0.1"
      echo "socket_domain ipv4"
      echo "protocol websockets"
      echo "http_dir $http_dir"
    fi
  } >"$conf.tmp"
  mv "$conf.tmp" "$conf"

  "$MOSQUITTO" -c "$conf" >>"$dir/mosquitto.out" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/pid"
  echo "$port" >"$dir/port"
  rm -f "$dir/ws_port"
  [ -z "$http_dir" ] || echo "$ws_port" >"$dir/ws_port"

  i=0
  until port_open "$port" && { [ -z "$http_dir" ] || port_open "$ws_port"; }; do
    if ! alive "$pid"; then
      echo "broker: mosquitto exited during start-up; its log:" >&2
      tail -n 20 "$dir/mosquitto.out" "$dir/mosquitto.log" >&2 2>/dev/null || true
      rm -f "$dir/pid"
      exit 1
    fi
    i=$((i + 1))
    if [ $i -gt 200 ]; then
      echo "broker: port $port${http_dir:+ or $ws_port} did not open within 10 s" >&2
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$dir/pid"
      exit 1
    fi
    sleep 0.05
  done
  if [ -n "$watch" ]; then
    # One python process polls both (a shell loop would leave its sleep
    # children behind when stop kills it).
    PID="$pid" WATCH="$watch" "$PY" -c 'import os,time,signal
p=int(os.environ["PID"]); w=int(os.environ["WATCH"])
def alive(x):
    try:
        with open("/proc/%d/stat" % x) as f: return f.read().rsplit(")",1)[1].split()[0] != "Z"
    except OSError: return False
while alive(p) and alive(w): time.sleep(0.5)
if alive(p): os.kill(p, signal.SIGTERM)' >/dev/null 2>&1 </dev/null &
    echo "$!" >"$dir/watch.pid"
  fi
  if [ $tls -eq 1 ]; then mode="TLS, CA $certs/ca.crt"; else mode="plain TCP"; fi
  echo "broker: mosquitto pid $pid on 127.0.0.1:$port ($mode), config $conf"
  [ -z "$http_dir" ] || echo "broker: dashboard on http://127.0.0.1:$ws_port/ (files of $http_dir, MQTT over websockets)"
  ;;

*) usage ;;
esac
