#!/usr/bin/env bash
# make interop: drive a real `bourse serve` with clients written in other
# languages: Debian's python3-pika, python3-stomp, python3-paho-mqtt,
# mosquitto-clients and amqp-tools; npm's @stomp/stompjs in Debian's Chromium
# driven by playwright-core, and npm's mqtt over WebSocket. Installs what is
# missing, starts the broker on free loopback ports with a throwaway data
# dir, runs every check, stops the broker, and exits non-zero if any check
# failed. The browser screenshot is kept in interop/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in python3-pika python3-stomp python3-paho-mqtt mosquitto-clients amqp-tools chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "interop: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

(cd interop/web && npm ci --no-audit --no-fund --loglevel=error)

make -s build
work=$(mktemp -d)
ready="$work/ready.json"
./bin/bourse serve --data-dir "$work/data" \
  --amqp-addr 127.0.0.1:0 --mqtt-addr 127.0.0.1:0 --stomp-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
  --ready-file "$ready" --ws-origin '127.0.0.1:*' >"$work/bourse.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  [ -s "$ready" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/bourse.log"; echo "interop: broker exited"; exit 1; }
  sleep 0.1
done
[ -s "$ready" ] || { cat "$work/bourse.log"; echo "interop: broker not ready"; exit 1; }

addr() { /usr/bin/python3 -c "import json,sys; print(json.load(open('$ready'))['$1'])"; }
export AMQP_ADDR=$(addr amqp) MQTT_ADDR=$(addr mqtt) STOMP_ADDR=$(addr stomp) HTTP_ADDR=$(addr http)
export AMQP_HOST=${AMQP_ADDR%:*} AMQP_PORT=${AMQP_ADDR##*:}
export MQTT_HOST=${MQTT_ADDR%:*} MQTT_PORT=${MQTT_ADDR##*:}
export STOMP_HOST=${STOMP_ADDR%:*} STOMP_PORT=${STOMP_ADDR##*:}

pass=0 fail=0
check() {
  local name=$1; shift
  if timeout 60 "$@" >"$work/$name.out" 2>&1; then
    echo "PASS $name"; pass=$((pass+1))
  else
    echo "FAIL $name"; sed 's/^/    /' "$work/$name.out"; fail=$((fail+1))
  fi
}

for t in interop/*.py; do
  check "$(basename "$t" .py)" /usr/bin/python3 "$t"
done
check cli-amqp-tools bash interop/cli_amqp_tools.sh
check cli-mosquitto bash interop/cli_mosquitto.sh
check browser-stomp-websocket env ARTIFACTS="$PWD/interop/artifacts" node interop/web/browser_test.mjs
check browser-console env ARTIFACTS="$PWD/interop/artifacts" node interop/web/console_test.mjs

# The demo: its services against this broker, its page in Chromium.
go build -o bin/bourse-demo ./deploy/demo
dash=127.0.0.1:$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BOURSE_AMQP_URL="amqp://guest:guest@$AMQP_ADDR/" BOURSE_STOMP_ADDR=$STOMP_ADDR BOURSE_MQTT_ADDR=$MQTT_ADDR \
  BOURSE_WS_URL="ws://$HTTP_ADDR/ws" DASHBOARD_ADDR=$dash DEMO_RATE=4 ./bin/bourse-demo all >"$work/demo.log" 2>&1 &
demo=$!
check browser-demo env ARTIFACTS="$PWD/interop/artifacts" DASHBOARD_ADDR=$dash node interop/web/demo_test.mjs
kill "$demo" 2>/dev/null || true
wait "$demo" 2>/dev/null || true

# The compose file is checked by docker-compose itself (no engine needed).
dpkg -s docker-compose >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }
check docker-compose-config docker-compose -f docker-compose.yml config -q
check docker-compose-cluster-config docker-compose -f docker-compose.yml --profile cluster config -q
# Each of the three cluster nodes gets route credentials: the defaults, or
# the ones set in the environment.
check docker-compose-cluster-route-credentials bash -c '
  set -e
  out=$(env -u BOURSE_CLUSTER_ROUTE_USER -u BOURSE_CLUSTER_ROUTE_PASSWORD docker-compose -f docker-compose.yml --profile cluster config)
  echo "$out"
  [ "$(grep -cE "BOURSE_CLUSTER_ROUTE_USER: route$" <<<"$out")" -eq 3 ]
  [ "$(grep -cE "BOURSE_CLUSTER_ROUTE_PASSWORD: demo-route-secret$" <<<"$out")" -eq 3 ]
  out=$(BOURSE_CLUSTER_ROUTE_PASSWORD=s3cret docker-compose -f docker-compose.yml --profile cluster config)
  [ "$(grep -cE "BOURSE_CLUSTER_ROUTE_PASSWORD: s3cret$" <<<"$out")" -eq 3 ]'

echo "$pass passed, $fail failed"
if [ "$fail" -gt 0 ]; then
  echo "--- broker log"; tail -50 "$work/bourse.log"
  exit 1
fi
