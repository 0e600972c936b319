#!/usr/bin/env bash
# make bench: installs RabbitMQ (its STOMP and MQTT plugins ship with it) and
# Mosquitto from Debian packages if missing, then runs ./bench, which starts
# every broker on free loopback ports with throwaway data dirs, runs the
# scenarios alternating brokers, writes bench/RESULTS.md and stops what it
# started. BENCH_FLAGS passes flags (e.g. BENCH_FLAGS=-quick).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in rabbitmq-server mosquitto; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The Debian packages may start system instances; they are not used.
go run ./bench ${BENCH_FLAGS:-}
