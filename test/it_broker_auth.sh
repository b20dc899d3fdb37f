# it_broker_auth.sh — the broker plugin (broker/fedmq_auth.so) in a real
# Mosquitto over TLS, with tokens from broker/fedmq-keygen and attacks made
# by hand (Python's cryptography and hmac), every case judged by behaviour:
# a connect refused as not authorised plus the broker's log line with its
# reason, or what a subscriber does and does not receive.
#   start    a missing or a private issuer key stops the broker at start-up
#   tokens   no token, malformed, non-UTF-8, too long, alg none, HS256 made
#            with the issuer's public key as the secret, lower-case es256,
#            another key (with and without the issuer's kid), tampered
#            claims, expired, not yet valid, sub != client id, other fleet,
#            unknown or missing role, wrong claim types, username != client
#            id: all refused with their reason; a Python-made ES256 token,
#            a token of the second (rotation) key and one inside the nbf
#            leeway connect
#   ACL      a device publishes only its own update and status (and will);
#            it cannot write another's update or status, the global, and
#            cannot subscribe to update/+, #, fedmq/#, another fleet; it
#            reads the global (also queued for its offline session); a
#            dashboard reads metrics and publishes nothing; the aggregator
#            of F cannot read fleet G
#   mTLS     on a require_certificate + use_identity_as_username listener a
#            device certificate (CN dev-0201) publishes its own update and
#            not another's; no certificate, no connection
#   reload   SIGHUP reads the issuer key files again (a rotated key file
#            takes effect, the old key's tokens are refused)
#   burst    1,000 bad-token connections (raw MQTT 5 CONNECTs over TLS from
#            4 threads) all refused (CONNACK 135), counted in the log; the
#            broker still serves a valid device afterwards, and its summary
#            at exit counts the refusals
#   batch    fedmq-keygen tokens for dev-0000..dev-0999 (fedmq-sim's ids):
#            all 1,000 connect (CONNACK 0)
#   expiry   a connected client whose 3 s token expires is disconnected by
#            the broker, and the same token is refused afterwards.
# One PASS/FAIL line per case; the exit status is the number of failures.
. test/fleet_lib.sh
KG="$B/bin/fedmq-keygen"
SO="$ROOT/$B/lib/fedmq_auth.so"
case $B in /*) SO="$B/lib/fedmq_auth.so" ;; esac
[ -x "$KG" ] && [ -f "$SO" ] || fail "build $KG and $SO first (make all)"
NFAIL=0
ok() { echo "PASS $IT_NAME: $*"; }
bad() {
  IT_FAILED=1
  NFAIL=$((NFAIL + 1))
  echo "FAIL $IT_NAME: $*"
}
LOG="$T/broker/mosquitto.log"
# wait_log REGEX [SECONDS]: the broker log gets a line matching REGEX
wait_log() {
  i=0
  while ! grep -Eq -- "$1" "$LOG" 2>/dev/null; do
    i=$((i + 1)); [ $i -le $((${2:-3} * 20)) ] || return 1
    sleep 0.05
  done
}
# wait_file FILE REGEX [SECONDS]
wait_file() {
  i=0
  while ! grep -Eq -- "$2" "$1" 2>/dev/null; do
    i=$((i + 1)); [ $i -le $((${3:-5} * 20)) ] || return 1
    sleep 0.05
  done
}
free_port() { "$PY" -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ------------------------------------------------------------- keys, certs
"$KG" key "$T/iss.pem" --pub "$T/iss.pub" >"$T/iss.kid" || fail "fedmq-keygen key"
"$KG" key "$T/iss2.pem" --pub "$T/iss2.pub" >"$T/iss2.kid" || fail "fedmq-keygen key (2)"
"$KG" key "$T/other.pem" >/dev/null || fail "fedmq-keygen key (other)"
"$KG" key "$T/iss3.pem" --pub "$T/iss3.pub" >"$T/iss3.kid" || fail "fedmq-keygen key (3)"
cp "$T/iss2.pub" "$T/rot.pub"  # the second key slot: iss2, rotated to iss3 below
KID=$(cat "$T/iss.kid")
[ "$("$KG" kid "$T/iss.pub")" = "$KID" ] || fail "fedmq-keygen kid of the public key differs"
CERTS="$T/certs"
sh "$ROOT/deploy/mkcerts.sh" "$CERTS" client dev-0201 >"$T/mkcerts.out" 2>&1 ||
  { cat "$T/mkcerts.out"; fail "mkcerts"; }
MPORT=$(free_port)

# ---------------------------------------------------------------- start-up
# bad_start NAME CONF-LINE TEXT: the broker does not start, its log says TEXT
bad_start() {
  printf 'plugin %s\n%s\n' "$SO" "$2" >"$T/$1.conf"
  if sh "$ROOT/deploy/broker.sh" start "$T/$1" --tls --certs "$CERTS" \
       --conf "$T/$1.conf" --watch $$ >"$T/$1.out" 2>&1; then
    sh "$ROOT/deploy/broker.sh" stop "$T/$1" >/dev/null 2>&1 || true
    bad "start-up with $1: the broker started"
  elif grep -q "$3" "$T/$1/mosquitto.log" "$T/$1/mosquitto.out" 2>/dev/null; then
    ok "start-up with $1: refused ($(grep -h "$3" "$T/$1/mosquitto.log" "$T/$1/mosquitto.out" 2>/dev/null | head -1 | sed 's/.*fedmq_auth: //'))"
  else
    bad "start-up with $1: no log line '$3'"
  fi
}
bad_start missing-key "plugin_opt_issuer_key $T/nonexistent.pub" "fedmq_auth: cannot open issuer key"
bad_start private-key "plugin_opt_issuer_key $T/iss.pem" "is a private key"

cat >"$T/auth.conf" <<EOF
# CONNACK without Nagle's delay (~40 ms per accepted connect otherwise)
set_tcp_nodelay true
plugin $SO
plugin_opt_issuer_key $T/iss.pub,$T/rot.pub
plugin_opt_fleet F
plugin_opt_mtls true
plugin_opt_log_ok true
# devices known by certificate: the CN is the identity and the client id
listener $MPORT 127.0.0.1
cafile $CERTS/ca.crt
certfile $CERTS/server.crt
keyfile $CERTS/server.key
require_certificate true
use_identity_as_username true
use_username_as_clientid true
EOF
sh "$ROOT/deploy/broker.sh" start "$T/broker" --tls --certs "$CERTS" --conf "$T/auth.conf" \
  --watch $$ >"$T/broker-start.out" 2>&1 || { cat "$T/broker-start.out" >&2; fail "broker did not start"; }
PORT=$(cat "$T/broker/port")
BPID=$(cat "$T/broker/pid")
C="-h 127.0.0.1 -p $PORT --cafile $CERTS/ca.crt -V mqttv5"
if wait_log "fedmq_auth: tokens ES256 from issuer keys $KID,$(cat "$T/iss2.kid"), fleet F"; then
  ok "plugin loaded: $(grep 'fedmq_auth: tokens' "$LOG" | sed 's/.*fedmq_auth: //')"
else
  bad "plugin start-up line missing"
fi

# ------------------------------------------------------------------ tokens
tok() { "$KG" token --key "$T/iss.pem" --fleet F "$@" 2>>"$T/keygen.err" || fail "fedmq-keygen token $*"; }
NOW=$(date +%s)
AGG=$(tok --sub fedmq-agg-F --role aggregator)
D1=$(tok --sub dev-0001 --role device)
D2=$(tok --sub dev-0002 --role device)
D3=$(tok --sub dev-0003 --role device)
DASH=$(tok --sub dashboard-1 --role dashboard)

"$PY" - "$T" "$KID" "$NOW" >"$T/crafted.txt" <<'PYEOF' || fail "crafting tokens"
import base64, hashlib, hmac, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
T, kid, now = sys.argv[1], sys.argv[2], int(sys.argv[3])
def b(x): return base64.urlsafe_b64encode(x).rstrip(b"=").decode()
def enc(o): return b(json.dumps(o, separators=(",", ":")).encode())
def key(name): return serialization.load_pem_private_key(open(T + "/" + name, "rb").read(), None)
iss, oth = key("iss.pem"), key("other.pem")
def claims(sub, **kw):
    c = dict(sub=sub, role="device", fleet="F", iat=now, exp=now + 3600)
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}
def es256(k, hdr, cl):
    si = enc(hdr) + "." + enc(cl)
    r, s = decode_dss_signature(k.sign(si.encode(), ec.ECDSA(hashes.SHA256())))
    return si + "." + b(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
H = {"alg": "ES256", "typ": "JWT", "kid": kid}
out = {}
out["none"] = enc({"alg": "none", "typ": "JWT"}) + "." + enc(claims("dev-0110")) + "."
si = enc({"alg": "HS256", "typ": "JWT"}) + "." + enc(claims("dev-0111"))
out["hs256"] = si + "." + b(hmac.new(open(T + "/iss.pub", "rb").read(), si.encode(), hashlib.sha256).digest())
out["lower"] = es256(iss, dict(H, alg="es256"), claims("dev-0112"))
out["otherkid"] = es256(oth, H, claims("dev-0113"))
out["nokid"] = es256(oth, {"alg": "ES256", "typ": "JWT"}, claims("dev-0114"))
h, _, s = es256(iss, H, claims("dev-0115")).split(".")
out["tampered"] = h + "." + enc(claims("dev-0115", role="aggregator")) + "." + s
out["role"] = es256(iss, H, claims("dev-0116", role="admin"))
out["norole"] = es256(iss, H, claims("dev-0117", role=None))
out["subnum"] = es256(iss, H, dict(claims("dev-0118"), sub=118))
out["expstr"] = es256(iss, H, claims("dev-0119", exp=str(now + 3600)))
out["noexp"] = es256(iss, H, claims("dev-0120", exp=None))
out["nofleet"] = es256(iss, H, claims("dev-0121", fleet=None))
out["array"] = es256(iss, H, ["dev-0122", "device"])
out["badjson"] = enc(H) + "." + b(b'{"sub":"dev-0123",') + "." + b(b"x" * 64)
out["python"] = es256(iss, H, claims("dev-0124"))
for k, v in out.items():
    print(k, v)
PYEOF
crafted() { awk -v k="$1" '$1 == k { print $2 }' "$T/crafted.txt"; }

# refused NAME ID REASON [mosquitto_pub args]: a connect as ID is refused as
# not authorised and the broker logs "refused client 'ID' ...: REASON"
refused() {
  name=$1; id=$2; reason=$3; shift 3
  if mosquitto_pub $C -i "$id" "$@" -t "fedmq/F/status/$id" -m x -q 1 >"$T/pub-$id.out" 2>&1; then
    bad "$name: connected as $id"
    return 0
  fi
  if ! grep -q "Not authorized" "$T/pub-$id.out"; then
    bad "$name: not refused as not authorised: $(head -1 "$T/pub-$id.out")"
  elif ! wait_log "refused client '$id' from 127\.0\.0\.1: $reason"; then
    bad "$name: no log line 'refused client '$id' ...: $reason' ($(grep "'$id'" "$LOG" | tail -1))"
  else
    ok "$name: $(grep "refused client '$id'" "$LOG" | tail -1 | sed 's/.*fedmq_auth: //')"
  fi
}
# accepted NAME ID [args]: a connect as ID with a QoS 1 publish on its status succeeds
accepted() {
  name=$1; id=$2; shift 2
  if mosquitto_pub $C -i "$id" "$@" -t "fedmq/F/status/$id" -m x -q 1 >"$T/pub-$id.out" 2>&1 &&
     ! grep -q . "$T/pub-$id.out"; then
    ok "$name: connected and published"
  else
    bad "$name: $(head -1 "$T/pub-$id.out")"
  fi
}

refused "no token" dev-0101 "no token"
refused "malformed token" dev-0102 "malformed token \(not three base64url parts" -P "not-a-token"
refused "three parts, not JSON" dev-0103 "malformed token \(header or claims" -P "abc.def.ghi"
refused "claims not valid JSON" dev-0123 "malformed token" -P "$(crafted badjson)"
refused "non-UTF-8 password" dev-0104 "malformed token" -P "$(printf '\377\376\001x.y.z')"
refused "4 KB+ password" dev-0105 "token too long \(more than 4096 bytes" -P "$("$PY" -c 'print("a"*5000)')"
refused "alg none" dev-0110 "bad alg \(alg none" -P "$(crafted none)"
refused "HS256 with the public key as secret" dev-0111 "bad alg \(alg HS256" -P "$(crafted hs256)"
refused "alg es256 (lower case)" dev-0112 "bad alg \(alg es256" -P "$(crafted lower)"
refused "another key, issuer's kid" dev-0113 "bad signature \(does not verify with issuer key $KID" -P "$(crafted otherkid)"
refused "another key, no kid" dev-0114 "bad signature \(does not verify with issuer key any" -P "$(crafted nokid)"
OTHER=$("$KG" token --key "$T/other.pem" --fleet F --sub dev-0106 --role device)
refused "another key (fedmq-keygen)" dev-0106 "bad signature \(kid [0-9a-f]{16} is not an issuer key" -P "$OTHER"
refused "claims changed under the signature" dev-0115 "bad signature" -P "$(crafted tampered)"
refused "expired" dev-0107 "token expired \(exp" -P "$(tok --sub dev-0107 --role device --now $((NOW - 7200)) --ttl 3600)"
refused "not yet valid" dev-0108 "token not yet valid \(nbf" -P "$(tok --sub dev-0108 --role device --nbf-skew 600)"
refused "sub != client id" dev-0109 "sub != client id \(sub 'dev-0001'" -P "$D1"
refused "another fleet" dev-0130 "wrong fleet \(token for fleet 'G'" \
  -P "$("$KG" token --key "$T/iss.pem" --fleet G --sub dev-0130 --role device)"
refused "unknown role" dev-0116 "unknown role \(role admin" -P "$(crafted role)"
refused "role missing" dev-0117 "unknown role" -P "$(crafted norole)"
refused "sub a number" dev-0118 "bad claims \(sub" -P "$(crafted subnum)"
refused "exp a string" dev-0119 "bad claims \(exp not an integer" -P "$(crafted expstr)"
refused "exp missing" dev-0120 "bad claims \(exp missing" -P "$(crafted noexp)"
refused "fleet missing" dev-0121 "bad claims \(fleet" -P "$(crafted nofleet)"
refused "claims an array" dev-0122 "bad claims" -P "$(crafted array)"
refused "username != client id" dev-0131 "username != client id" -u dev-0001 \
  -P "$(tok --sub dev-0131 --role device)"
accepted "a Python-made ES256 token" dev-0124 -P "$(crafted python)"
accepted "a token of the second issuer key" dev-0125 \
  -P "$("$KG" token --key "$T/iss2.pem" --fleet F --sub dev-0125 --role device)"
accepted "nbf 10 s ahead, inside the 30 s leeway" dev-0126 -P "$(tok --sub dev-0126 --role device --nbf-skew 10)"
accepted "username = client id" dev-0127 -u dev-0127 -P "$(tok --sub dev-0127 --role device)"

# --------------------------------------------------------------------- ACL
# The aggregator reads updates, statuses, the global and metrics.
mosquitto_sub $C -i fedmq-agg-F -P "$AGG" -q 1 -v -t 'fedmq/F/update/+' -t 'fedmq/F/status/+' \
  -t 'fedmq/F/model/global' -t 'fedmq/F/metrics' >"$T/agg.sub" 2>"$T/agg.err" &
IT_PIDS="$IT_PIDS $!"
# ready when it reads its own probe
n=0
until grep -q "fedmq/F/metrics probe" "$T/agg.sub" 2>/dev/null; do
  n=$((n + 1)); [ $n -le 50 ] || fail "the aggregator's subscriber did not start ($(cat "$T/agg.err"))"
  mosquitto_pub $C -i fedmq-agg-F-probe -P "$(tok --sub fedmq-agg-F-probe --role aggregator)" \
    -t fedmq/F/metrics -m probe -q 1 >/dev/null 2>&1 || true
  sleep 0.1
done
agg_pub() { mosquitto_pub $C -i fedmq-agg-P -P "$AGGP" -q 1 "$@" || bad "aggregator publish $*"; }
AGGP=$(tok --sub fedmq-agg-P --role aggregator)

d1() { mosquitto_pub $C -i dev-0001 -P "$D1" -q 1 "$@" >>"$T/d1.out" 2>&1 || true; }
d1 -t fedmq/F/update/dev-0002 -m forged-update
d1 -t fedmq/F/status/dev-0002 -m forged-status
d1 -t fedmq/F/model/global -m forged-global
d1 -t fedmq/F/metrics -m forged-metrics
d1 -t fedmq/G/update/dev-0001 -m other-fleet
d1 -t fedmq/F/update/dev-0001 -m own-update
d1 -t fedmq/F/status/dev-0001 -m own-status
if wait_file "$T/agg.sub" "^fedmq/F/update/dev-0001 own-update$" &&
   wait_file "$T/agg.sub" "^fedmq/F/status/dev-0001 own-status$"; then
  ok "device publishes its own update and status (the aggregator receives both)"
else
  bad "the aggregator did not receive dev-0001's own update and status"
fi
sleep 0.3
for m in forged-update forged-status forged-global forged-metrics; do
  if grep -q " $m$" "$T/agg.sub"; then bad "the aggregator received dev-0001's $m"; fi
done
if ! grep -q "forged-" "$T/agg.sub" && [ "$(grep -c "denied 'dev-0001' (device of F) publish on fedmq/F/" "$LOG")" -ge 4 ] &&
   grep -q "denied 'dev-0001' (device of F) publish on fedmq/G/update/dev-0001" "$LOG"; then
  ok "device cannot publish another's update or status, the global, metrics or in fleet G (never delivered; $(grep -c "denied 'dev-0001'" "$LOG") denial lines)"
else
  bad "device publish denials: $(grep "denied 'dev-0001'" "$LOG" | tail -3)"
fi

# sub_denied NAME ID TOKEN FILTER...: every filter of the SUBSCRIBE is refused
sub_denied() {
  name=$1; id=$2; tk=$3; shift 3
  args=""
  for f in "$@"; do args="$args -t $f"; done
  # shellcheck disable=SC2086
  mosquitto_sub $C -i "$id" -P "$tk" $args -W 3 >"$T/sub-$id.out" 2>&1 || true
  if grep -q "All subscription requests were denied" "$T/sub-$id.out" &&
     wait_log "denied '$id' .* subscribe on $(printf '%s' "$1" | sed 's/[+$#]/\\&/g')"; then
    ok "$name: refused ($*)"
  else
    bad "$name: $(head -2 "$T/sub-$id.out")"
  fi
}
sub_denied "device subscribes to update/+" dev-0003 "$D3" 'fedmq/F/update/+'
sub_denied "device subscribes to #" dev-0003 "$D3" '#'
sub_denied "device subscribes to fedmq/# and fedmq/F/#" dev-0003 "$D3" 'fedmq/#' 'fedmq/F/#'
sub_denied "device subscribes to another's status, metrics" dev-0003 "$D3" 'fedmq/F/status/dev-0001' 'fedmq/F/metrics'
sub_denied "aggregator subscribes to #" fedmq-agg-F2 "$(tok --sub fedmq-agg-F2 --role aggregator)" '#'
sub_denied "aggregator of F subscribes to fleet G" fedmq-agg-F3 "$(tok --sub fedmq-agg-F3 --role aggregator)" 'fedmq/G/update/+'
sub_denied "dashboard subscribes to the global" dashboard-1 "$DASH" 'fedmq/F/model/global'
sub_denied "\$SYS" dev-0003 "$D3" '$SYS/#'

# A device that asks for update/+ and the global gets the global only.
mosquitto_sub $C -i dev-0003 -P "$D3" -q 1 -v -t 'fedmq/F/update/+' -t 'fedmq/F/model/global' \
  -t 'fedmq/F/aggregator/status' >"$T/d3.sub" 2>&1 &
D3PID=$!
IT_PIDS="$IT_PIDS $D3PID"
n=0
until grep -q "fedmq/F/aggregator/status on" "$T/d3.sub" 2>/dev/null; do
  n=$((n + 1)); [ $n -le 50 ] || break
  agg_pub -t fedmq/F/aggregator/status -m on
  sleep 0.1
done
mosquitto_pub $C -i dev-0002 -P "$D2" -q 1 -t fedmq/F/update/dev-0002 -m d2-update || bad "dev-0002 publish"
agg_pub -t fedmq/F/model/global -m global-1
if wait_file "$T/d3.sub" "^fedmq/F/model/global global-1$" && wait_file "$T/agg.sub" " d2-update$"; then
  sleep 0.3
  if grep -q "d2-update" "$T/d3.sub"; then
    bad "device dev-0003 received dev-0002's update"
  else
    ok "device reads the global and aggregator/status, not another device's update (the aggregator got it)"
  fi
else
  bad "device dev-0003 did not receive the global ($(head -3 "$T/d3.sub"))"
fi
kill "$D3PID" 2>/dev/null || true

# Persistent session: a global published while the device is away is
# queued for it (the plugin still answers for the offline client).
mosquitto_sub $C -i dev-0006 -P "$(tok --sub dev-0006 --role device)" -c -x 3600 -q 1 \
  -t fedmq/F/model/global -W 1 >/dev/null 2>&1 || true
agg_pub -t fedmq/F/model/global -m global-while-away
if mosquitto_sub $C -i dev-0006 -P "$(tok --sub dev-0006 --role device)" -c -x 3600 -q 1 \
     -t fedmq/F/model/global -C 1 -W 5 >"$T/d6.sub" 2>&1 && grep -q "^global-while-away$" "$T/d6.sub"; then
  ok "a global queued for an offline device session is delivered when it returns"
else
  bad "offline session: $(head -2 "$T/d6.sub")"
fi

# Wills: its own status is published; one on another's status is not.
mosquitto_sub $C -i dev-0004 -P "$(tok --sub dev-0004 --role device)" -t fedmq/F/model/global \
  --will-topic fedmq/F/status/dev-0004 --will-payload will-own --will-qos 1 >/dev/null 2>&1 &
W4=$!
mosquitto_sub $C -i dev-0005 -P "$(tok --sub dev-0005 --role device)" -t fedmq/F/model/global \
  --will-topic fedmq/F/status/dev-0001 --will-payload will-forged --will-qos 1 >/dev/null 2>&1 &
W5=$!
IT_PIDS="$IT_PIDS $W4 $W5"
wait_log "client 'dev-0004' from" && wait_log "client 'dev-0005' from" || bad "will clients did not connect"
sleep 0.3
kill -KILL "$W4" "$W5" 2>/dev/null || true
if wait_file "$T/agg.sub" "^fedmq/F/status/dev-0004 will-own$" &&
   wait_log "denied 'dev-0005' \(device of F\) publish on fedmq/F/status/dev-0001"; then
  sleep 0.2
  if grep -q "will-forged" "$T/agg.sub"; then
    bad "dev-0005's will on dev-0001's status was delivered"
  else
    ok "a device's will on its own status is delivered, one on another device's status is not"
  fi
else
  bad "wills: $(grep -E "dev-000[45]" "$LOG" | tail -3)"
fi

# A dashboard reads metrics and status, and publishes nothing.
mosquitto_sub $C -i dashboard-1 -P "$DASH" -q 1 -v -t fedmq/F/metrics -t 'fedmq/F/status/+' \
  >"$T/dash.sub" 2>&1 &
DPID=$!
IT_PIDS="$IT_PIDS $DPID"
n=0
until grep -q "fedmq/F/metrics m-" "$T/dash.sub" 2>/dev/null; do
  n=$((n + 1)); [ $n -le 50 ] || break
  agg_pub -t fedmq/F/metrics -m "m-$n"
  sleep 0.1
done
mosquitto_pub $C -i dashboard-2 -P "$(tok --sub dashboard-2 --role dashboard)" -q 1 \
  -t fedmq/F/metrics -m dash-forged >/dev/null 2>&1 || true
mosquitto_pub $C -i dashboard-2 -P "$(tok --sub dashboard-2 --role dashboard)" -q 1 \
  -t fedmq/F/status/dashboard-2 -m dash-status >/dev/null 2>&1 || true
if grep -q "fedmq/F/metrics m-" "$T/dash.sub" &&
   wait_log "denied 'dashboard-2' \(dashboard of F\) publish on fedmq/F/metrics" &&
   wait_log "denied 'dashboard-2' \(dashboard of F\) publish on fedmq/F/status/dashboard-2"; then
  sleep 0.3
  if grep -q "dash-" "$T/agg.sub" "$T/dash.sub"; then
    bad "a dashboard's publish was delivered"
  else
    ok "dashboard reads metrics; its publishes on metrics and status are not delivered"
  fi
else
  bad "dashboard: $(head -2 "$T/dash.sub") $(grep "dashboard-2" "$LOG" | tail -1)"
fi
kill "$DPID" 2>/dev/null || true

# -------------------------------------------------------------------- mTLS
M="-h 127.0.0.1 -p $MPORT --cafile $CERTS/ca.crt -V mqttv5"
MC="--cert $CERTS/client-dev-0201.crt --key $CERTS/client-dev-0201.key"
# shellcheck disable=SC2086
mosquitto_pub $M $MC -i ignored -q 1 -t fedmq/F/update/dev-0201 -m mtls-own >"$T/m1.out" 2>&1 || true
# shellcheck disable=SC2086
mosquitto_pub $M $MC -q 1 -t fedmq/F/update/dev-0001 -m mtls-forged >"$T/m2.out" 2>&1 || true
if wait_file "$T/agg.sub" "^fedmq/F/update/dev-0201 mtls-own$" &&
   wait_log "denied 'dev-0201' \(device of F\) publish on fedmq/F/update/dev-0001"; then
  sleep 0.2
  if grep -q "mtls-forged" "$T/agg.sub"; then
    bad "certificate device dev-0201 published on dev-0001's update"
  else
    ok "certificate CN dev-0201: device of F, publishes its own update and not another's ($(grep "dev-0201' from" "$LOG" | tail -1 | sed 's/.*fedmq_auth: //'))"
  fi
else
  bad "mTLS: $(cat "$T/m1.out" "$T/m2.out" | head -2) $(grep dev-0201 "$LOG" | tail -1)"
fi
# The same id by token (as a dashboard) and then by certificate, five times:
# a freed connection's address is often reused, and the certificate
# connection must get the certificate identity (device), never the old
# token record's.
DT=$(tok --sub dev-0201 --role dashboard)
okc=0
for i in 1 2 3 4 5; do
  mosquitto_pub $C -i dev-0201 -P "$DT" -q 1 -t fedmq/F/metrics -m denied >/dev/null 2>&1 || true
  # shellcheck disable=SC2086
  mosquitto_pub $M $MC -q 1 -t fedmq/F/update/dev-0201 -m "mtls-after-token-$i" >/dev/null 2>&1 || true
  if wait_file "$T/agg.sub" "^fedmq/F/update/dev-0201 mtls-after-token-$i$" 3; then okc=$((okc + 1)); fi
done
if [ $okc -eq 5 ]; then
  ok "token (dashboard) then certificate (device) for the same id, 5 times: the certificate identity every time"
else
  bad "token then certificate for dev-0201: $okc/5 certificate publishes delivered"
fi
# shellcheck disable=SC2086
if mosquitto_pub $M -i dev-0202 -q 1 -t fedmq/F/update/dev-0202 -m nocert >"$T/m3.out" 2>&1; then
  bad "mTLS listener: a client without a certificate published"
else
  ok "mTLS listener: no client certificate, no connection ($(head -1 "$T/m3.out"))"
fi

# ------------------------------------------------------------------ reload
# SIGHUP reads the key files again: the second slot now holds key 3.
cp "$T/iss3.pub" "$T/rot.pub"
kill -HUP "$BPID"
if wait_log "fedmq_auth: tokens ES256 from issuer keys $KID,$(cat "$T/iss3.kid")"; then
  accepted "after SIGHUP, a token of the rotated-in key" dev-0140 \
    -P "$("$KG" token --key "$T/iss3.pem" --fleet F --sub dev-0140 --role device)"
  refused "after SIGHUP, a token of the rotated-out key" dev-0141 "bad signature \(kid $(cat "$T/iss2.kid") is not an issuer key" \
    -P "$("$KG" token --key "$T/iss2.pem" --fleet F --sub dev-0141 --role device)"
else
  bad "SIGHUP: the plugin did not reload the key files"
fi

# --------------------------------------------------------- burst, batch
# connect.py opens raw MQTT 5 CONNECTs over TLS from 4 threads and counts the
# CONNACK reason codes: 1,000 bad passwords, or every line of a token file.
cat >"$T/connect.py" <<'PYEOF'
import base64, random, socket, ssl, struct, sys, threading, time
# connect.py PORT CA bad HS256-TOKEN OTHER-KEY-TOKEN | PORT CA good TOKENS-FILE
port, ca, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
def s16(b): return struct.pack(">H", len(b)) + b
def varint(n):
    out = b""
    while True:
        d, n = n & 0x7F, n >> 7
        out += bytes([d | (0x80 if n else 0)])
        if not n: return out
def connect(cid, pw):
    # MQTT 5 CONNECT: clean start, password without a username (allowed in v5)
    vh = s16(b"MQTT") + b"\x05" + bytes([0x02 | 0x40]) + struct.pack(">H", 30) + b"\x00"
    body = vh + s16(cid.encode()) + s16(pw)
    return b"\x10" + varint(len(body)) + body
# A few known attacks, then random bytes and random base64url triples of
# random lengths (up to past the 4 KB limit): a small fuzz through the broker.
rnd = random.Random(5)
def rbytes(n): return bytes(rnd.getrandbits(8) for _ in range(n))
def b64(n): return base64.urlsafe_b64encode(rbytes(n)).rstrip(b"=")
hs, other = (sys.argv[4], sys.argv[5]) if mode == "bad" else ("", "")
bad = [b"garbage", b"a.b.c", hs.encode(), other.encode(), b"\xff" * 300, b""]
bad += [rbytes(rnd.randrange(1, 5000)) for _ in range(20)]
bad += [b".".join(b64(rnd.randrange(0, 1500)) for _ in range(3)) for _ in range(20)]
bad += [base64.urlsafe_b64encode(b'{"alg":"ES256","typ":"JWT"}').rstrip(b"=") + b"." + b64(rnd.randrange(1, 2000)) + b"." + b64(64) for _ in range(10)]
good = [l.split() for l in open(sys.argv[4])] if mode == "good" else []
n = len(good) if good else 1000
codes, errors, lock = {}, [], threading.Lock()
def worker(k):
    for j in range(k, n, 4):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    if good:
                        s.sendall(connect(good[j][0], good[j][1].encode()))
                    else:
                        s.sendall(connect("burst-%04d" % j, bad[j % len(bad)]))
                    got = b""
                    while len(got) < 4:
                        c = s.recv(16)
                        if not c: break
                        got += c
            rc = got[3] if len(got) >= 4 and got[0] == 0x20 else -1
        except OSError as e:
            rc = -1; errors.append(str(e))
        with lock: codes[rc] = codes.get(rc, 0) + 1
t0 = time.time()
th = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
for t in th: t.start()
for t in th: t.join()
dt = time.time() - t0
print("%d connections in %.2f s (%.0f/s), CONNACK reason codes %s%s" % (
    sum(codes.values()), dt, sum(codes.values()) / dt, codes, ", errors: " + errors[0] if errors else ""))
sys.exit(0 if codes == {0 if good else 0x87: n} else 1)
PYEOF
before=$(grep -c "refused client" "$LOG" || true)
"$PY" "$T/connect.py" "$PORT" "$CERTS/ca.crt" bad "$(crafted hs256)" "$(crafted otherkid)" >"$T/burst.out" 2>&1 ||
  bad "burst: $(tail -3 "$T/burst.out")"
if wait_log "refused client 'burst-0999'" 5; then :; fi
sleep 0.3
after=$(grep -c "refused client" "$LOG" || true)
nb=$(grep -c "refused client 'burst-" "$LOG" || true)
if [ "$nb" -eq 1000 ] && [ $((after - before)) -eq 1000 ]; then
  ok "burst: $(head -1 "$T/burst.out"); 1000 refusal lines in the log"
else
  bad "burst: $(head -1 "$T/burst.out"); $nb burst refusal lines"
fi
t0=$(date +%s.%N)
"$KG" tokens --key "$T/iss.pem" --fleet F --role device --count 1000 --out "$T/fleet.tokens" ||
  bad "fedmq-keygen tokens"
t1=$(date +%s.%N)
if "$PY" "$T/connect.py" "$PORT" "$CERTS/ca.crt" good "$T/fleet.tokens" >"$T/batch.out" 2>&1; then
  ok "fedmq-keygen tokens --count 1000 in $(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") s; dev-0000..dev-0999 each connect: $(head -1 "$T/batch.out")"
else
  bad "batch tokens: $(tail -2 "$T/batch.out")"
fi
d1 -t fedmq/F/update/dev-0001 -m after-burst
if kill -0 "$BPID" 2>/dev/null && wait_file "$T/agg.sub" "^fedmq/F/update/dev-0001 after-burst$"; then
  ok "after the burst the broker (pid $BPID) still serves: dev-0001's update received"
else
  bad "after the burst: broker alive? $(kill -0 "$BPID" 2>/dev/null && echo yes || echo no); update not received"
fi

# ------------------------------------------------------------------ expiry
# A connection outlives the check at connect only until its token expires:
# then the broker closes it (mosquitto_sub ends), and connecting again
# with the same token is refused as expired.
EXPTOK=$(tok --sub dev-0160 --role device --ttl 3)
mosquitto_sub $C -i dev-0160 -P "$EXPTOK" -q 1 -t 'fedmq/F/model/global' >"$T/exp.out" 2>&1 &
EXP_PID=$!
IT_PIDS="$IT_PIDS $EXP_PID"
gone=no
if wait_log "disconnected client 'dev-0160': token expired \(exp [0-9]+, now [0-9]+\)" 8; then
  i=0
  while kill -0 $EXP_PID 2>/dev/null && [ $i -lt 40 ]; do sleep 0.1; i=$((i + 1)); done
  kill -0 $EXP_PID 2>/dev/null || gone=yes
fi
mosquitto_sub $C -i dev-0160 -P "$EXPTOK" -q 1 -t 'fedmq/F/model/global' -C 1 -W 3 \
  >"$T/exp2.out" 2>&1 || true
if [ $gone = yes ] && wait_log "refused client 'dev-0160' from [^:]*: token expired" 3; then
  ok "a 3 s token: connected, closed by the broker when it expired, the same token refused after (token expired)"
else
  bad "token expiry (client gone: $gone): $(grep "dev-0160" "$LOG" | sed 's/^[0-9]*: //' | tail -3 | tr '\n' '|')"
fi
kill -TERM $EXP_PID 2>/dev/null || true

# ------------------------------------------------------------------ summary
for p in $IT_PIDS; do kill -TERM "$p" 2>/dev/null || true; done
sh "$ROOT/deploy/broker.sh" stop "$T/broker" >/dev/null 2>&1 || true
if grep -Eq "fedmq_auth: summary: accepted [0-9]+ by token, [0-9]+ by certificate; refused 10[0-9][0-9]: " "$LOG"; then
  ok "summary at exit: $(grep 'fedmq_auth: summary' "$LOG" | head -1 | sed 's/.*summary: //' | cut -c1-160)..."
else
  bad "no summary line at exit: $(grep 'fedmq_auth: summary' "$LOG")"
fi

if [ "$NFAIL" -ne 0 ]; then
  echo "---- broker log (fedmq_auth, last 20)"
  grep fedmq_auth "$LOG" | tail -20
  echo "FAIL $IT_NAME: $NFAIL cases failed"
  exit 1
fi
echo "ok   $IT_NAME: every case passed"
