#!/usr/bin/env bash
# What `make bench` needs besides the venv: wrk (load generator; without it the benchmark falls
# back to its built-in Python one) and redis-server (its own Redis for the Celery comparison).
# Installs what is missing with apt when run as root; otherwise says what is missing. Idempotent.
set -uo pipefail

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
command -v wrk >/dev/null || echo "bench-tools: wrk not found (apt-get install wrk): using the built-in load generator" >&2
command -v redis-server >/dev/null || echo "bench-tools: redis-server not found (apt-get install redis-server): the celery part will fail" >&2
exit 0
