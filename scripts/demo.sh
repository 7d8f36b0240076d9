#!/usr/bin/env bash
# The README demo: a local tansu broker, the logcatch daemon tailing the
# sample logs in config/samples plus a live file, and the offsets shown by
# logcatch-ctl. Everything it writes goes under target/demo.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=19092
TANSU=$(bash scripts/install-tansu.sh | tail -n 1)
echo "== building logcatch (release)"
cargo build --release --bins --example consume

DEMO=target/demo
rm -rf "$DEMO" && mkdir -p "$DEMO"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is in use; stop whatever listens there first" >&2
    exit 1
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "== starting tansu on 127.0.0.1:$PORT (log: $DEMO/tansu.log)"
"$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine memory://tansu/ >"$DEMO/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

live() { seq "$1" "$2" | sed "s/^/$(date +%T) live line /" >>"$DEMO/live.log"; }
live 1 1000

echo "== starting logcatch (log: $DEMO/logcatch.log)"
target/release/logcatch --config config/demo.yaml >"$DEMO/logcatch.log" 2>&1 &
daemon=$!
pids+=("$daemon")
for n in 1 2 3 4; do
    sleep 0.5
    live $((n * 1000 + 1)) $(((n + 1) * 1000))
done
sleep 2
echo "== logcatch-ctl offsets (live, through the admin socket)"
target/release/logcatch-ctl --config config/demo.yaml offsets
echo "== logcatch-ctl queue"
target/release/logcatch-ctl --config config/demo.yaml queue

echo "== stopping logcatch with SIGTERM"
kill -TERM "$daemon"
wait "$daemon"

echo "== logcatch-ctl offsets (daemon stopped: read from the store)"
target/release/logcatch-ctl --config config/demo.yaml offsets

echo "== what reached Kafka"
target/release/examples/consume "127.0.0.1:$PORT" demo-logs 2
target/release/examples/consume "127.0.0.1:$PORT" demo-live 2
echo "(expected: 800 in demo-logs = 500 access.log + 300 app.log lines, 5000 in demo-live)"
