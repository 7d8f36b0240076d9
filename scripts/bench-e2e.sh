#!/usr/bin/env bash
# The end-to-end benchmark set of issue 5, on the real `logcatch` binary and
# a local Apache Kafka broker (one KRaft node from scripts/kafka.sh, a fresh
# one per W1 run; installed into a cache if missing), with the durable
# defaults (fsync per group commit, acks=all, idempotence):
#   - W1 catch-up at 0.5 M, 2 M and 8 M lines of 146 bytes, three runs each,
#     each beside a plain rdkafka producer through the same broker, then a
#     table of how CPU per line and peak RSS grow with the size;
#   - many files: 1,000 tailed, 10 active at 1,000 lines/s: idle and active
#     CPU, RSS, write-to-Kafka latency p50/p99.
# Figures go to stdout and to target/bench-e2e.json.
# Arguments replace the defaults, e.g.
#   scripts/bench-e2e.sh --lines 2000000 --runs 1
#   scripts/bench-e2e.sh --lines 8000000 --perf target/w1.perf
#   scripts/bench-e2e.sh --lines 2000000 --broker tansu   # the tansu broker
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

broker=kafka
prev=""
for a in "$@"; do
    [ "$prev" = --broker ] && broker="$a"
    prev="$a"
done

if [ "$broker" = tansu ]; then
    if [ -z "${TANSU_BIN:-}" ] || [ ! -x "${TANSU_BIN}" ]; then
        TANSU_BIN="$(scripts/install-tansu.sh | tail -n1)"
    fi
    export TANSU_BIN
    version="tansu $("$TANSU_BIN" --version 2>/dev/null | head -n1)"
else
    LOGCATCH_KAFKA_HOME="$(scripts/install-kafka.sh | tail -n1)"
    export LOGCATCH_KAFKA_HOME
    scripts/kafka.sh cds
    version="Apache Kafka $(basename "$(ls "$LOGCATCH_KAFKA_HOME"/libs/kafka_2.13-*.jar)" .jar | sed 's/^kafka_2.13-//'), $(java -version 2>&1 | head -n1)"
fi

if [ "$#" -eq 0 ]; then
    set -- --lines 500000,2000000,8000000 --runs 3 --many-files
fi
echo "bench-e2e: $(nproc) cores, $(uname -r), $version"
scripts/install-build-deps.sh
exec cargo bench --bench e2e -- --json target/bench-e2e.json "$@"
