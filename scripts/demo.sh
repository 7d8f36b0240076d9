#!/usr/bin/env bash
# The README demo: a local Apache Kafka broker (one KRaft node from
# scripts/kafka.sh, installed into a cache by scripts/install-kafka.sh if
# missing), the logcatch daemon tailing the sample logs in config/samples
# plus a live file, and the offsets shown by logcatch-ctl. Everything it
# writes goes under target/demo; the broker is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=19092
DEMO=target/demo
BIN="${CARGO_TARGET_DIR:-target}/release"
echo "== installing Apache Kafka if missing"
scripts/install-kafka.sh >/dev/null
echo "== building logcatch (release)"
scripts/install-build-deps.sh
cargo build --release --bins --example consume

# A broker left by an interrupted run of this demo goes first.
scripts/kafka.sh stop --dir "$DEMO/kafka" --timeout 0 2>/dev/null || true
rm -rf "$DEMO" && mkdir -p "$DEMO"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is in use; stop whatever listens there first" >&2
    exit 1
fi

pids=()
cleanup() {
    for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
    scripts/kafka.sh stop --dir "$DEMO/kafka" --timeout 10 2>/dev/null || true
}
trap cleanup EXIT

echo "== starting Apache Kafka on 127.0.0.1:$PORT (log: $DEMO/kafka/node-1/logs/server.log)"
scripts/kafka.sh start --dir "$DEMO/kafka" --port "$PORT" >/dev/null

live() { seq "$1" "$2" | sed "s/^/$(date +%T) live line /" >>"$DEMO/live.log"; }
live 1 1000

echo "== starting logcatch (log: $DEMO/logcatch.log)"
"$BIN"/logcatch --config config/demo.yaml >"$DEMO/logcatch.log" 2>&1 &
daemon=$!
pids+=("$daemon")
for n in 1 2 3 4; do
    sleep 0.5
    live $((n * 1000 + 1)) $(((n + 1) * 1000))
done
sleep 2
echo "== logcatch-ctl offsets (live, through the admin socket)"
"$BIN"/logcatch-ctl --config config/demo.yaml offsets
echo "== logcatch-ctl queue"
"$BIN"/logcatch-ctl --config config/demo.yaml queue

echo "== stopping logcatch with SIGTERM"
kill -TERM "$daemon"
wait "$daemon"

echo "== logcatch-ctl offsets (daemon stopped: read from the store)"
"$BIN"/logcatch-ctl --config config/demo.yaml offsets

echo "== what reached Kafka"
"$BIN"/examples/consume "127.0.0.1:$PORT" demo-logs 2
"$BIN"/examples/consume "127.0.0.1:$PORT" demo-live 2
echo "(expected: 800 in demo-logs = 500 access.log + 300 app.log lines, 5000 in demo-live)"
