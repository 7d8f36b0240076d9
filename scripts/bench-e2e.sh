#!/usr/bin/env bash
# The end-to-end benchmark set of issue 5, on the real `logcatch` binary and
# a local tansu broker (installed if missing), with the durable defaults
# (fsync per group commit, acks=all, idempotence):
#   - W1 catch-up at 0.5 M, 2 M and 8 M lines of 146 bytes, three runs each,
#     each beside a plain rdkafka producer through the same broker, then a
#     table of how CPU per line and peak RSS grow with the size;
#   - many files: 1,000 tailed, 10 active at 1,000 lines/s: idle and active
#     CPU, RSS, write-to-Kafka latency p50/p99.
# Figures go to stdout and to target/bench-e2e.json.
# Arguments replace the defaults, e.g.
#   scripts/bench-e2e.sh --lines 2000000 --runs 1
#   scripts/bench-e2e.sh --lines 8000000 --perf target/w1.perf
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${TANSU_BIN:-}" ] || [ ! -x "${TANSU_BIN}" ]; then
    TANSU_BIN="$(scripts/install-tansu.sh | tail -n1)"
fi
export TANSU_BIN

if [ "$#" -eq 0 ]; then
    set -- --lines 500000,2000000,8000000 --runs 3 --many-files
fi
echo "bench-e2e: $(nproc) cores, $(uname -r), tansu $("$TANSU_BIN" --version 2>/dev/null | head -n1)"
exec cargo bench --bench e2e -- --json target/bench-e2e.json "$@"
