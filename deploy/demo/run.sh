#!/usr/bin/env bash
# make demo: Bourse and the demo services as local processes (no Docker).
# Bourse listens on its usual loopback ports; the dashboard on :8080.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o bin/bourse ./cmd/bourse
go build -o bin/bourse-demo ./deploy/demo
data=$(mktemp -d)
./bin/bourse serve --data-dir "$data" --ws-origin '127.0.0.1:*' --ws-origin 'localhost:*' --ready-file "$data/ready.json" &
broker=$!
cleanup() {
  kill "$broker" "${demo:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do [ -s "$data/ready.json" ] && break; sleep 0.1; done
[ -s "$data/ready.json" ] || { echo "demo: the broker did not start"; exit 1; }
./bin/bourse-demo all &
demo=$!
sleep 1
cat <<MSG

  Bourse demo is running.
    dashboard:   http://127.0.0.1:8080/      payments, invoices and telemetry, live
    console:     http://127.0.0.1:15672/     (guest / guest)
    read the payment stream:   ./bin/bourse tail payments --from first --follow
  Ctrl-C stops everything.

MSG
wait "$demo"
