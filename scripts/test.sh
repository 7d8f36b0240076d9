#!/usr/bin/env bash
# The project's test command: unit tests, doc tests and integration tests.
# The integration tests run against Apache Kafka (a one-node KRaft broker per
# test, from scripts/kafka.sh) and, in one smoke test, tansu: both are
# installed here if missing (Kafka's jars into a cache outside the work tree,
# see scripts/install-kafka.sh; it needs Java 17 and Maven, which it installs
# with apt-get when missing).
# Extra arguments are passed to the test binaries as filters/flags, e.g.
#   scripts/test.sh rotation     # only tests whose name contains "rotation"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# OpenSSL's headers and pkg-config, for librdkafka's TLS and SASL.
scripts/install-build-deps.sh

LOGCATCH_KAFKA_HOME="$(scripts/install-kafka.sh | tail -n1)"
export LOGCATCH_KAFKA_HOME
echo "test.sh: LOGCATCH_KAFKA_HOME=$LOGCATCH_KAFKA_HOME"
# The class-data-sharing archive that makes each broker start faster (built
# once, kept in the cache).
scripts/kafka.sh cds

if [ -z "${TANSU_BIN:-}" ] || [ ! -x "${TANSU_BIN}" ]; then
    TANSU_BIN="$(scripts/install-tansu.sh | tail -n1)"
fi
export TANSU_BIN
echo "test.sh: TANSU_BIN=$TANSU_BIN"

# Installs Debian package $2 with apt-get when command $1 is missing (no
# `apt-get update` first unless the install fails); $3 says what is lost
# if it cannot.
install_if_missing() {
    command -v "$1" >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || return 0
    echo "test.sh: apt-get install -y $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 || true; \
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1; } \
        || echo "test.sh: could not install $2; $3"
}

# libfaketime, for the test that runs logcatch with its clock 2 h ahead
# (Debian's package `faketime`).
install_if_missing faketime faketime "the clock test will fail"

# fusermount3 (Debian's `fuse3`), for the power-loss tests' FUSE file system
# (tests/common/lazyfs.rs) where mount(2) needs it; as root the mount works
# without it. Where FUSE cannot be mounted (no /dev/fuse) those tests print
# a `SKIPPED:` line, counted below as skipped, never as passed.
install_if_missing fusermount3 fuse3 "the power-loss tests mount only as root"
[ -e /dev/fuse ] || echo "test.sh: no /dev/fuse: the power-loss tests will be skipped"

# Two cores: two tests at a time (each e2e test runs a broker and a daemon).
threads="${TEST_THREADS:-2}"

out="$(mktemp "${TMPDIR:-/tmp}/logcatch-test.XXXXXX")"
# The cluster fault suite's figures (tests/integration/cluster/), one line
# a case and client, printed at the end.
LOGCATCH_CLUSTER_REPORT="${LOGCATCH_CLUSTER_REPORT:-$out.cluster}"
export LOGCATCH_CLUSTER_REPORT
rm -f "$LOGCATCH_CLUSTER_REPORT"
# The power-loss tests' figures (tests/integration/power_loss.rs), one line
# a scenario.
LOGCATCH_POWER_REPORT="${LOGCATCH_POWER_REPORT:-$out.power}"
export LOGCATCH_POWER_REPORT
rm -f "$LOGCATCH_POWER_REPORT"
# The rotation soak's figures (tests/integration/rotation/soak.rs), one
# line a mode.
LOGCATCH_ROTATION_REPORT="${LOGCATCH_ROTATION_REPORT:-$out.rotation}"
export LOGCATCH_ROTATION_REPORT
rm -f "$LOGCATCH_ROTATION_REPORT"
trap 'rm -f "$out" "$out.cluster" "$out.power" "$out.rotation"' EXIT
status=0

# Doc tests (cargo test with target selectors skips them otherwise).
cargo test --doc -- --test-threads="$threads" "$@" 2>&1 | tee -a "$out" || status=$?
# Unit tests of the library and binaries, and every integration test in
# tests/. Benches are compiled (by clippy in CI) but not run.
if [ "$status" -eq 0 ]; then
    cargo test --lib --bins --tests -- --test-threads="$threads" "$@" 2>&1 | tee -a "$out" || status=$?
fi

passed="$(sed -n 's/^test result: .*[^0-9]\([0-9][0-9]*\) passed; \([0-9][0-9]*\) failed.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')"
failed="$(sed -n 's/^test result: .*[^0-9]\([0-9][0-9]*\) passed; \([0-9][0-9]*\) failed.*/\2/p' "$out" | awk '{s+=$1} END {print s+0}')"
# Tests marked #[ignore] (the rotation soak, which still finds open bugs)
# are not run: listed and counted, never as passed.
ignored="$(sed -n 's/^test result: .* \([0-9][0-9]*\) ignored;.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')"
# A skipped test prints a line starting `SKIPPED:` and passes in cargo's
# count: it is counted here as skipped instead.
skipped="$(grep -c '^SKIPPED:' "$out" || true)"
passed=$((passed - skipped))
if [ "$skipped" -gt 0 ]; then
    echo
    echo "skipped:"
    grep '^SKIPPED:' "$out"
fi
if [ -s "$LOGCATCH_POWER_REPORT" ]; then
    echo
    echo "power-loss tests:"
    cat "$LOGCATCH_POWER_REPORT"
fi
if [ -s "$LOGCATCH_ROTATION_REPORT" ]; then
    echo
    echo "rotation soak:"
    cat "$LOGCATCH_ROTATION_REPORT"
fi
if [ -s "$LOGCATCH_CLUSTER_REPORT" ]; then
    echo
    echo "cluster fault suite (LOGCATCH_CLUSTER_LONG=${LOGCATCH_CLUSTER_LONG:-0}):"
    cat "$LOGCATCH_CLUSTER_REPORT"
fi
if [ "$ignored" -gt 0 ]; then
    echo
    echo "ignored (not run):"
    grep ' \.\.\. ignored' "$out" | sort -u
fi
echo
echo "tests: $passed passed, $failed failed, $skipped skipped, $ignored ignored"
exit "$status"
