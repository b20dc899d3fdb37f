# it_dashboard.sh — the web dashboard and fedmq-status against a running
# fleet: a real Mosquitto over TLS with the fedmq_auth plugin (tokens, ACL
# by identity) and the dashboard's websockets listener (deploy/broker.sh
# --dashboard $B/dashboard), fedmq-aggregator and fedmq-sim (4 devices,
# logreg; a cohort of 5 with a quorum of 4, so that each round closes at
# its 1 s deadline, and a fifth device's malformed update that the
# aggregator rejects).
#
#   page     headless Chromium (Debian's /usr/bin/chromium) driven by
#            playwright-core (test/dashboard_check.js) opens the address
#            deploy/dashboard.sh prints, before the fleet starts; the page
#            connects with its read-only dashboard token, the token leaves
#            the address bar, and the page follows the fleet until round
#            $ROUNDS closed with 4 devices online, the chart has a point per
#            round, and what it shows per round (participants, accuracy,
#            rejected) equals the aggregator's progress lines; nothing is
#            loaded from anywhere but the broker; a screenshot is kept in
#            $B/it_dashboard/dashboard.png. A token of another issuer is
#            refused and the page says so.
#   status   fedmq-status --once --json with its own dashboard token: device
#            count, online, round, participants and accuracy equal the
#            aggregator's last line; the table lists every device; the
#            refreshing view prints again; a device token (not a dashboard)
#            is denied the subscriptions.
. test/fleet_lib.sh

N=4
COHORT=5
ROUNDS=4
FLEET=dash
KG="$B/bin/fedmq-keygen"
NODE=${NODE:-node}
if [ -f "$B/dashboard/UNAVAILABLE" ]; then
  # make could not install the page's npm libraries (deploy/dashboard.mk)
  echo "SKIP $IT_NAME: $(tr '\n' ' ' <"$B/dashboard/UNAVAILABLE")"
  exit 0
fi
for f in "$B/bin/fedmq-status" "$B/lib/fedmq_auth.so" "$B/dashboard/index.html" \
  "$B/dashboard/vendor/mqtt.min.js" "$B/npm/node_modules/playwright-core/package.json"; do
  [ -e "$f" ] || fail "$f is missing (make all: deploy/dashboard.mk)"
done
[ -x /usr/bin/chromium ] || [ -n "${CHROMIUM:-}" ] || fail "/usr/bin/chromium is missing (deploy/install-deps.sh)"
command -v "$NODE" >/dev/null 2>&1 || fail "node is missing (deploy/install-deps.sh)"

# ------------------------------------------------------------ keys, broker
"$KG" key "$T/issuer.pem" --pub "$T/issuer.pub" >/dev/null || fail "fedmq-keygen key"
"$KG" key "$T/other.pem" >/dev/null || fail "fedmq-keygen key (other)"
"$KG" tokens --key "$T/issuer.pem" --fleet $FLEET --role device --prefix dev --count $N \
  --ttl 3600 --out "$T/devices.tokens" || fail "fedmq-keygen tokens"
printf 'password %s\n' "$("$KG" token --key "$T/issuer.pem" --fleet $FLEET \
  --sub fedmq-agg-$FLEET --role aggregator --ttl 3600)" >"$T/agg.conf"
printf 'password %s\n' "$("$KG" token --key "$T/issuer.pem" --fleet $FLEET \
  --sub dashboard-status --role dashboard --ttl 3600)" >"$T/status.conf"
printf 'client_id dev-0000\npassword %s\n' "$("$KG" token --key "$T/issuer.pem" --fleet $FLEET \
  --sub dev-0000 --role device --ttl 3600)" >"$T/status-dev.conf"
bad_dev_token=$("$KG" token --key "$T/issuer.pem" --fleet $FLEET --sub dev-0009 --role device \
  --ttl 3600) || fail "fedmq-keygen token (dev-0009)"
chmod 600 "$T/agg.conf" "$T/status.conf" "$T/status-dev.conf"
printf 'plugin %s\nplugin_opt_issuer_key %s\nplugin_opt_fleet %s\n' \
  "$(cd "$B/lib" && pwd)/fedmq_auth.so" "$T/issuer.pub" $FLEET >"$T/auth.conf"
sh "$ROOT/deploy/broker.sh" start "$T/broker" --tls --conf "$T/auth.conf" \
  --dashboard "$B/dashboard" --watch $$ >"$T/broker-start.out" 2>&1 ||
  { cat "$T/broker-start.out" >&2; fail "broker did not start"; }
PORT=$(cat "$T/broker/port")
URI="mqtts://127.0.0.1:$PORT"
CA="$T/broker/certs/ca.crt"
WS=$(cat "$T/broker/ws_port")
grep -q "^listener $WS 127.0.0.1" "$T/broker/mosquitto.conf" || fail "no loopback websockets listener"
url=$(sh "$ROOT/deploy/dashboard.sh" url "$B" "$T/broker" "$T/issuer.pem" $FLEET) ||
  fail "deploy/dashboard.sh url"
case $url in
  "http://127.0.0.1:$WS/#fleet=$FLEET&id=dashboard-1&token="?*) ;;
  *) fail "dashboard.sh printed '$url'" ;;
esac
bad_url=$(sh "$ROOT/deploy/dashboard.sh" url "$B" "$T/broker" "$T/other.pem" $FLEET dashboard-9) ||
  fail "deploy/dashboard.sh url (other key)"
# the page's files over HTTP, the token nowhere near the server
code=$("$PY" -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).status)' \
  "http://127.0.0.1:$WS/vendor/uPlot.iife.min.js" 2>&1) || true
[ "$code" = 200 ] || fail "the dashboard's files are not served ($code)"
pass "broker with fedmq_auth on $PORT (TLS) and the dashboard on http://127.0.0.1:$WS/ (loopback)"

# ------------------------------------------------------------------- page
OUT="$B/it_dashboard"
mkdir -p "$OUT"
rm -f "$OUT/dashboard.png"
t0=$(date +%s.%N)
NODE_PATH="$B/npm/node_modules" "$NODE" "$ROOT/test/dashboard_check.js" --url "$url" \
  --refused-url "$bad_url" --devices $N --rounds $ROUNDS --out "$OUT" \
  --ready "$T/page.ready" --timeout 90 >"$T/page.json" 2>"$T/page.log" &
PAGE_PID=$!
IT_PIDS="$IT_PIDS $PAGE_PID"
i=0
until [ -f "$T/page.ready" ]; do
  kill -0 $PAGE_PID 2>/dev/null || { cat "$T/page.log" >&2; fail "the page did not connect"; }
  i=$((i + 1)); [ $i -le 300 ] || fail "the page did not connect in 30 s"
  sleep 0.1
done

# The fleet: 4 devices of a cohort of 5, so each round waits for its 1 s
# deadline and closes with the quorum of 4; once the aggregator listens, a
# fifth device (its own token: the ACL lets it publish its own update)
# sends bytes that are no update, rejected in round 1 (or a later one).
it_sim sim --fleet $FLEET --tokens "$T/devices.tokens" --devices $N --parties $N \
  --partition iid --seed 1
it_agg agg --config "$T/agg.conf" --fleet $FLEET --model logreg --seed 1 --cohort $COHORT \
  --quorum $N --round-ms 1000 --rounds $ROUNDS --state-dir "$T/agg-state"
it_wait_line "$T/agg.log" "^fedmq-aggregator: globals" 30
mosquitto_pub -h 127.0.0.1 -p "$PORT" --cafile "$CA" -V 5 -i dev-0009 -u dev-0009 -P "$bad_dev_token" \
  -q 1 -t "fedmq/$FLEET/update/dev-0009" -m "not an update" 2>"$T/pub.err" ||
  fail "mosquitto_pub as dev-0009: $(cat "$T/pub.err")"
it_wait_pid $AGG_PID 90 || fail "the aggregator failed"
grep -q "^fedmq-aggregator: done after round $ROUNDS" "$T/agg.log" || fail "the aggregator did not finish $ROUNDS rounds"
it_wait_pid $PAGE_PID 90 || { cat "$T/page.log" >&2; fail "the dashboard check failed"; }
t1=$(date +%s.%N)
[ -s "$OUT/dashboard.png" ] || fail "no screenshot"

"$PY" - "$T/page.json" "$T/agg.log" $N $ROUNDS <<'EOF' || fail "the page does not show what the aggregator did"
import json, re, sys
page = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
agg = open(sys.argv[2]).read()
n, rounds = int(sys.argv[3]), int(sys.argv[4])
lines = {int(m.group(1)): m for m in re.finditer(
    r"^round (\d+): (\d+)/(\d+) devices, (\d+) late \(\d+ folded\), (\d+) rejected.*test acc ([\d.]+)", agg, re.M)}
s, dom, series = page["snapshot"], page["dom"], page["series"]
bad = []
def check(ok, what):
    if not ok: bad.append(what)
check(sorted(lines) == list(range(1, rounds + 1)), "aggregator lines %s" % sorted(lines))
check(s["lastClosed"] == rounds and dom["roundClosed"] == str(rounds), "closed round %s / %s" % (s["lastClosed"], dom["roundClosed"]))
check(dom["round"] == str(rounds + 1), "round shown %r (the next one)" % dom["round"])
check(dom["online"] == str(n) and dom["rows"] == n and dom["rowsOnline"] == n, "devices %s/%s/%s" % (dom["online"], dom["rows"], dom["rowsOnline"]))
check(dom["rowIds"] == ["dev-%04d" % i for i in range(n)], "rows %s" % dom["rowIds"])
check(dom["accPoints"] == len(series) >= 3 and dom["accCanvas"], "chart points %s, series %d" % (dom["accPoints"], len(series)))
check("token=" not in dom["href"], "token in the address bar")
# the page was open before round 1: it saw every round close
check([p["r"] for p in series] == list(range(1, rounds + 1)), "chart rounds %s" % [p["r"] for p in series])
for p in series:
    m = lines.get(p["r"])
    if not m: continue
    pa, co, late, rej, acc = int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)), float(m.group(6))
    check(p["pa"] == pa and p["co"] == co, "round %d participants %s/%s, log %d/%d" % (p["r"], p["pa"], p["co"], pa, co))
    check(p["late"] == late and p["rej"] == rej, "round %d late/rejected %s/%s, log %d/%d" % (p["r"], p["late"], p["rej"], late, rej))
    check(abs(p["acc"] - acc) < 6e-5, "round %d accuracy %s, log %s" % (p["r"], p["acc"], acc))
last = lines.get(rounds)
if last:
    check(dom["participants"] == "%s/%s" % (last.group(2), last.group(3)), "participants shown %r" % dom["participants"])
    check(dom["accuracy"] == "%.2f %%" % (100 * float(last.group(6))), "accuracy shown %r" % dom["accuracy"])
    check(dom["rejected"] == last.group(5), "rejected shown %r" % dom["rejected"])
check(s["rejectedTotal"] == sum(int(m.group(5)) for m in lines.values()) == 1, "rejected total %s" % s["rejectedTotal"])
check(s["refused"] == 0, "messages refused by the page: %s" % s["refused"])
check(page["refused"] and "not authorised" in page["refused"]["conn"] and page["refused"]["rows"] == 0,
      "other issuer's token: %r" % (page["refused"],))
if bad:
    print("  " + "\n  ".join(bad)); sys.exit(1)
steps = sorted({x["closed"] for x in page["seen"]})
print("  page: connected in %d ms; saw rounds close %s; %d points; %s online; first row %s; refused page: %r"
      % (page["connectedMs"], steps, dom["accPoints"], dom["online"], dom["firstRow"], page["refused"]["conn"][:60]))
EOF
pass "page followed $ROUNDS rounds of $N devices (chart, table, counts equal the aggregator's lines), other issuer refused; screenshot $OUT/dashboard.png; $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s"

# ----------------------------------------------------------- fedmq-status
ST="$B/bin/fedmq-status"
"$ST" --config "$T/status.conf" --broker "$URI" --ca "$CA" --fleet $FLEET --once --json \
  >"$T/status.json" 2>"$T/status.log" || fail "fedmq-status --once --json failed: $(cat "$T/status.log")"
"$PY" - "$T/status.json" "$T/agg.log" $N $ROUNDS <<'EOF' || fail "fedmq-status --json does not show what the aggregator did"
import json, re, sys
s = json.loads(open(sys.argv[1]).read())
agg = open(sys.argv[2]).read()
n, rounds = int(sys.argv[3]), int(sys.argv[4])
m = re.findall(r"^round (\d+): (\d+)/(\d+) devices, (\d+) late \(\d+ folded\), (\d+) rejected.*test acc ([\d.]+)", agg, re.M)[-1]
lr = s["last_round"] or {}
bad = []
if s["devices_known"] != n or s["devices_online"] != n or len(s["devices"]) != n: bad.append("devices %s/%s" % (s["devices_known"], s["devices_online"]))
if [d["id"] for d in s["devices"]] != ["dev-%04d" % i for i in range(n)]: bad.append("ids %s" % [d["id"] for d in s["devices"]])
if lr.get("round") != int(m[0]) or int(m[0]) != rounds: bad.append("last round %s, log %s" % (lr.get("round"), m[0]))
if s["round"] != rounds + 1: bad.append("round %s" % s["round"])
if (lr.get("participants"), lr.get("cohort"), lr.get("rejected")) != (int(m[1]), int(m[2]), int(m[4])): bad.append("participants %s" % lr)
if lr.get("test_acc") is None or abs(lr["test_acc"] - float(m[5])) > 6e-5: bad.append("accuracy %s, log %s" % (lr.get("test_acc"), m[5]))
if s["aggregator"] is None or s["aggregator"]["online"]: bad.append("aggregator %s (it has stopped)" % s["aggregator"])
# the devices train the final global too (round rounds + 1) once it is out
if any(d["last_round"] not in (rounds, rounds + 1) or d["version"] not in (rounds, rounds + 1) for d in s["devices"]):
    bad.append("device rounds %s" % [(d["id"], d["last_round"], d["version"]) for d in s["devices"]])
if any(d["rss_bytes"] is None or d["train_s"] is None for d in s["devices"]): bad.append("rss/train_s missing")
if s["refused"]: bad.append("refused %s" % s["refused"])
if bad:
    print("  " + "\n  ".join(bad)); sys.exit(1)
print("  fedmq-status: round %d, last closed %d: %d/%d devices, acc %.4f; %d of %d devices online"
      % (s["round"], lr["round"], lr["participants"], lr["cohort"], lr["test_acc"],
         s["devices_online"], s["devices_known"]))
EOF
"$ST" --config "$T/status.conf" --broker "$URI" --ca "$CA" --fleet $FLEET --once \
  >"$T/status.txt" 2>>"$T/status.log" || fail "fedmq-status --once failed"
[ "$(grep -c '^dev-000[0-9] .* yes ' "$T/status.txt")" -eq $N ] || { cat "$T/status.txt" >&2; fail "the table does not list $N online devices"; }
grep -q "^round $ROUNDS closed: $N/$COHORT devices" "$T/status.txt" || { cat "$T/status.txt" >&2; fail "the table's fleet line"; }
timeout 10 "$ST" --config "$T/status.conf" --broker "$URI" --ca "$CA" --fleet $FLEET --json \
  --interval 0.3 >"$T/status-live.json" 2>>"$T/status.log" &
live=$!
sleep 1.5
kill -TERM $live 2>/dev/null || true
wait $live 2>/dev/null || true
[ "$(grep -c '"devices_online":4' "$T/status-live.json")" -ge 3 ] || fail "the refreshing view printed $(wc -l <"$T/status-live.json") lines"
if "$ST" --config "$T/status-dev.conf" --broker "$URI" --ca "$CA" --fleet $FLEET --once \
  >"$T/status-dev.out" 2>&1; then
  fail "a device token read the fleet's status"
fi
grep -q "not authorised" "$T/status-dev.out" || fail "device token: $(cat "$T/status-dev.out")"
pass "fedmq-status --once --json and the table: $N devices online, round $ROUNDS closed, as the aggregator said; refreshes; a device identity is denied"
