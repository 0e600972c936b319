#!/usr/bin/env bash
# amqp-tools (Debian) against Bourse: declare, publish, get, consume.
set -euo pipefail
url="amqp://guest:guest@${AMQP_ADDR}/"
q="interop-cli-$$"
amqp-declare-queue --url "$url" -q "$q" -d
for i in 1 2 3; do amqp-publish --url "$url" -r "$q" -p -b "cli-$i"; done
[ "$(amqp-get --url "$url" -q "$q")" = "cli-1" ]
out=$(amqp-consume --url "$url" -q "$q" -c 2 cat)
[ "$out" = "cli-2cli-3" ] || { echo "consumed: $out"; exit 1; }
amqp-delete-queue --url "$url" -q "$q"
echo ok
