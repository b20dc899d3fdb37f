#!/bin/sh
# The web dashboard's address (deploy/dashboard/README.md).
#
#   deploy/dashboard.sh url BUILD BROKERDIR ISSUER.pem FLEET [ID [TTL]]
#
# Makes a read-only dashboard token (fedmq-keygen token --role dashboard,
# sub ID, default dashboard-1, valid TTL seconds, default 3600) with the
# fleet's token issuer key and prints the address of the dashboard that the
# broker in BROKERDIR serves (deploy/broker.sh start BROKERDIR --dashboard
# BUILD/dashboard writes its port to BROKERDIR/ws_port):
#
#   http://127.0.0.1:PORT/#fleet=FLEET&id=ID&token=TOKEN
#
# The token is in the fragment: a browser never sends it to the server, so
# it is in no HTTP log; the page keeps it in the tab's sessionStorage and
# takes it out of the address bar. Anyone who has the address can read the
# fleet's status until the token expires: hand it out as you would the
# token itself. The listener is on loopback; from another machine use an
# SSH tunnel (ssh -L PORT:127.0.0.1:PORT hub) and the same address.
set -eu

usage() {
  echo "usage: $0 url BUILD BROKERDIR ISSUER.pem FLEET [ID [TTL]]" >&2
  exit 2
}

[ $# -ge 5 ] && [ $# -le 7 ] || usage
[ "$1" = url ] || usage
build=$2
bdir=$3
issuer=$4
fleet=$5
id=${6:-dashboard-1}
ttl=${7:-3600}

kg=$build/bin/fedmq-keygen
[ -x "$kg" ] || { echo "dashboard: $kg is missing (make all)" >&2; exit 1; }
[ -f "$build/dashboard/index.html" ] || { echo "dashboard: $build/dashboard is not built (make all)" >&2; exit 1; }
[ -f "$bdir/ws_port" ] || {
  echo "dashboard: no $bdir/ws_port: start the broker with deploy/broker.sh start $bdir --dashboard $build/dashboard" >&2
  exit 1
}
case $id in
  dashboard-*) ;;
  *) echo "dashboard: the id should start with dashboard- (certificate identities use that prefix too)" >&2 ;;
esac
port=$(cat "$bdir/ws_port")
token=$("$kg" token --key "$issuer" --fleet "$fleet" --sub "$id" --role dashboard --ttl "$ttl")
echo "http://127.0.0.1:$port/#fleet=$fleet&id=$id&token=$token"
