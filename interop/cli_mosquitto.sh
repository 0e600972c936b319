#!/usr/bin/env bash
# mosquitto_pub / mosquitto_sub (Debian mosquitto-clients) against Bourse,
# MQTT 3.1.1 and 5.
set -euo pipefail
t="interop/cli/$$"
for v in mqttv311 mqttv5; do
  mosquitto_sub -h "$MQTT_HOST" -p "$MQTT_PORT" -u guest -P guest -V "$v" -t "$t/$v" -q 1 -C 3 -W 10 >"/tmp/mosq.$$" &
  sub=$!
  sleep 0.5
  for i in 1 2 3; do mosquitto_pub -h "$MQTT_HOST" -p "$MQTT_PORT" -u guest -P guest -V "$v" -t "$t/$v" -q 1 -m "m$i"; done
  wait "$sub"
  [ "$(tr '\n' ' ' <"/tmp/mosq.$$")" = "m1 m2 m3 " ] || { echo "$v got: $(cat /tmp/mosq.$$)"; exit 1; }
done
rm -f "/tmp/mosq.$$"
echo ok
