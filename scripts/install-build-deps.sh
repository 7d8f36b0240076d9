#!/usr/bin/env bash
# Installs, with apt-get and only when missing, the Debian packages that
# building logcatch needs beyond Rust and a C compiler: OpenSSL's headers
# and pkg-config, for librdkafka's TLS and SASL SCRAM (the rdkafka `ssl`
# feature links the system's OpenSSL). Safe to rerun; does nothing where
# they are present. Used by .ci/run, scripts/test.sh, scripts/demo.sh and
# scripts/bench-e2e.sh, so each works alone on a fresh machine.
set -euo pipefail

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; }; then
    missing+=(libssl-dev)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-build-deps.sh: missing ${missing[*]} and no apt-get: install them by hand" >&2
    exit 1
fi
echo "install-build-deps.sh: apt-get install -y ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null 2>&1 || true; \
         DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
