#!/usr/bin/env bash
# What the test suite needs besides the venv: Prometheus + promtool (Debian's `prometheus`),
# wrk is optional (benchmarks), and a Redis on 127.0.0.1:6379 (the Celery tests' broker).
# Installs what is missing (as root, with apt) and starts Redis when it is down. Idempotent.
set -euo pipefail

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "test-services: please install: ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v promtool >/dev/null || { echo "test-services: promtool not found" >&2; exit 1; }

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  dir=$(mktemp -d)
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log"
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.2; done
  redis-cli ping >/dev/null
fi
