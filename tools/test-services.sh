#!/usr/bin/env bash
# What the test suite needs besides the venv: Prometheus + promtool (Debian's `prometheus`) and
# the redis-server binary (the tests start a Redis of their own on a free port, as the Celery
# broker, and never touch one that is already running), and openssl. Installs what is missing with apt
# (as root); otherwise says what to install. Idempotent.
set -euo pipefail

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v openssl >/dev/null || missing+=(openssl)  # the TLS SMTP tests make a certificate
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "test-services: please install: ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in prometheus promtool redis-server openssl; do
  command -v "$tool" >/dev/null || { echo "test-services: $tool not found" >&2; exit 1; }
done
