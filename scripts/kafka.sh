#!/usr/bin/env bash
# Starts and stops local Apache Kafka 4 KRaft clusters on loopback, for the
# tests, the demo, the benches and CI. Each node is a combined broker and
# controller (process.roles=broker,controller) with a dynamic KRaft quorum.
# Kafka itself comes from scripts/install-kafka.sh (a cache outside the tree).
#
#   scripts/kafka.sh start --dir DIR [--nodes N] [--port BASE] [--ctrl-port C]
#                          [--advertise HOST:PORT[,HOST:PORT]...]
#                          [--prop KEY=VALUE]... [--node I] [--timeout S]
#                          [--owner PID] [--static-quorum] [--add-scram SPEC]...
#       Node i (1..N) has node.id=i, its broker listener PLAINTEXT on
#       127.0.0.1:BASE+i-1 and its controller listener on 127.0.0.1:C+i-1
#       (C defaults to BASE+50), its files in DIR/node-i/ (server.properties,
#       data/, logs/server.log, stdout.log) and its pid in DIR/node-i.pid.
#       Replication: default.replication.factor and the internal topics'
#       factors are min(3, N); min.insync.replicas is 2 from 3 nodes up, else
#       1. --prop adds a broker setting to every node (kept for restarts).
#       Formats the storage once (the cluster id is kept in DIR/cluster.env),
#       starts every node that is not running, and waits until each running
#       node answers Metadata listing all N brokers (so a controller has been
#       elected and every broker is registered and unfenced). Rerun on the
#       same DIR (without --nodes/--port, or with the same values) to restart
#       nodes that were stopped or killed; --node I starts node I only.
#       --advertise: the i-th HOST:PORT is what node i advertises for its
#       broker listener (e.g. a TCP proxy in front of it) instead of its own
#       address; kept for restarts like --prop. --owner PID: a watchdog
#       SIGKILLs the nodes started by this call once process PID is gone
#       (a test harness that dies without stopping its broker).
#       --static-quorum: a static controller quorum (controller.quorum.voters)
#       instead of a dynamic one; a one-node cluster's storage is then
#       copied from a template formatted once in the Kafka cache, which
#       saves the format JVM (about 1.5 s): for throwaway test brokers.
#       --add-scram SPEC: a SCRAM credential made when the storage is
#       formatted (StorageTool format --add-scram), e.g.
#       'SCRAM-SHA-512=[name=alice,password=alice-secret]'; repeatable,
#       taken only when a cluster is created and kept for the formats of
#       later restarts (a node whose storage is gone). With it the storage
#       is always really formatted (never copied from the template).
#       Extra listeners (TLS, SASL) are --prop settings: a --prop line
#       comes after the generated ones in server.properties, and the last
#       value of a key wins, so --prop listeners=..., advertised.listeners
#       =... and listener.security.protocol.map=... replace the generated
#       ones (they must then keep PLAINTEXT on the node's port, which the
#       readiness check asks, and CONTROLLER on its controller port).
#       Prints the time taken to stderr and the bootstrap list
#       (127.0.0.1:BASE,...) as its last line. Defaults: N=1, BASE=19100,
#       timeout 180 s. On a failure it stops the nodes it started.
#   scripts/kafka.sh stop --dir DIR [--node I] [--timeout S]
#       SIGTERM to every node (or node I), then SIGKILL to those still alive
#       after S seconds (default 30; 0 kills at once). Idempotent.
#   scripts/kafka.sh cds
#       Builds the class-data-sharing archive (KAFKA/cds/kafka.jsa: the
#       classes a broker loads while starting) that every later start uses,
#       about a second faster: starts a throwaway node and stops it. Does
#       nothing when the archive matches this install and this java.
#       LOGCATCH_KAFKA_CDS=0 makes start ignore the archive.
#   scripts/kafka.sh status --dir DIR
#       One line a node: its pid and whether it is alive.
#   scripts/kafka.sh tool CLASS|ALIAS [ARGS...]
#       Runs a Kafka CLI class with Kafka's jars; ALIAS is one of topics,
#       configs, acls, produce, consume, quorum, cluster, storage, groups.
#       E.g. scripts/kafka.sh tool topics --bootstrap-server B --list
#
# Environment: LOGCATCH_KAFKA_VERSION and LOGCATCH_KAFKA_HOME (see
# install-kafka.sh); LOGCATCH_KAFKA_HEAP (default -Xms128m -Xmx512m) and
# LOGCATCH_KAFKA_JVM_OPTS (default: serial GC and the C1 JIT only, which
# start fastest on 2 cores; a bench may want -XX:+UseG1GC instead).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

kafka_home() {
    # The install's folder; installs Kafka when the cache is empty.
    local out
    out="$("$here/install-kafka.sh")" || die "install-kafka.sh failed"
    printf '%s\n' "$out" | tail -n1
}

new_uuid() {
    # A Kafka Uuid string: 16 random bytes in unpadded base64url, not
    # starting with '-' (Kafka avoids those: they look like flags).
    local u
    while :; do
        u="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$u" == -* ]] || { echo "$u"; return; }
    done
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

node_pid() {
    # $1: DIR, $2: node number. The pid of a live node, or nothing.
    local f="$1/node-$2.pid" p
    [ -f "$f" ] || return 0
    p="$(cat "$f" 2>/dev/null || true)"
    if alive "$p" && grep -q 'kafka\.Kafka' "/proc/$p/cmdline" 2>/dev/null; then
        echo "$p"
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sends Metadata v4 (no topics) to 127.0.0.1:$1 and prints the broker ids it
# lists, sorted, on one line. Fails when the node does not answer.
metadata_brokers() {
    python3 - "$1" <<'EOF'
import socket, struct, sys
port = int(sys.argv[1])
client = b"kafka.sh"
req = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">i", 0) + b"\x00"
s = socket.create_connection(("127.0.0.1", port), 3)
s.settimeout(3)
s.sendall(struct.pack(">i", len(req)) + req)
def read(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("connection closed")
        b += c
    return b
(size,) = struct.unpack(">i", read(4))
d = read(size)
o = 8  # correlation id, throttle_time_ms
(n,) = struct.unpack_from(">i", d, o); o += 4
ids = []
for _ in range(n):
    node, hl = struct.unpack_from(">ih", d, o); o += 6 + hl + 4
    (rl,) = struct.unpack_from(">h", d, o); o += 2 + max(rl, 0)
    ids.append(node)
print(" ".join(str(i) for i in sorted(ids)))
EOF
}

# ---- start ----------------------------------------------------------------

write_properties() {
    # $1: node number. Writes DIR/node-$1/server.properties.
    local i="$1" nd="$dir/node-$1" rf mi voters="" static_voters="" j adv
    rf=$(( nodes < 3 ? nodes : 3 ))
    mi=$(( nodes >= 3 ? 2 : 1 ))
    for ((j = 1; j <= nodes; j++)); do
        voters+="${voters:+,}127.0.0.1:$((ctrl_port + j - 1))"
        static_voters+="${static_voters:+,}$j@127.0.0.1:$((ctrl_port + j - 1))"
    done
    adv="127.0.0.1:$((port + i - 1))"
    if [ -n "${advertise:-}" ]; then
        IFS=, read -ra advs <<<"$advertise"
        adv="${advs[$((i - 1))]}"
    fi
    mkdir -p "$nd/data" "$nd/logs"
    {
        echo "# Written by logcatch's scripts/kafka.sh; rewritten at every start."
        echo "process.roles=broker,controller"
        echo "node.id=$i"
        if [ "${quorum:-dynamic}" = static ]; then
            echo "controller.quorum.voters=$static_voters"
        else
            echo "controller.quorum.bootstrap.servers=$voters"
        fi
        echo "listeners=PLAINTEXT://127.0.0.1:$((port + i - 1)),CONTROLLER://127.0.0.1:$((ctrl_port + i - 1))"
        echo "advertised.listeners=PLAINTEXT://$adv,CONTROLLER://127.0.0.1:$((ctrl_port + i - 1))"
        echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        echo "controller.listener.names=CONTROLLER"
        echo "inter.broker.listener.name=PLAINTEXT"
        echo "log.dirs=$nd/data"
        echo "num.partitions=1"
        echo "default.replication.factor=$rf"
        echo "min.insync.replicas=$mi"
        echo "offsets.topic.replication.factor=$rf"
        echo "transaction.state.log.replication.factor=$rf"
        echo "transaction.state.log.min.isr=$mi"
        echo "share.coordinator.state.topic.replication.factor=$rf"
        echo "share.coordinator.state.topic.min.isr=$mi"
        # Fewer internal partitions and threads: faster on a small machine.
        echo "offsets.topic.num.partitions=8"
        echo "transaction.state.log.num.partitions=8"
        echo "share.coordinator.state.topic.num.partitions=8"
        echo "group.initial.rebalance.delay.ms=0"
        echo "num.network.threads=2"
        echo "num.io.threads=4"
        echo "num.recovery.threads.per.data.dir=1"
        echo "background.threads=4"
        if [ -s "$dir/extra.properties" ]; then
            echo "# --prop settings"
            cat "$dir/extra.properties"
        fi
    } >"$nd/server.properties"
}

format_node() {
    # $1: node number. Formats its storage unless already formatted.
    local i="$1" nd="$dir/node-$1" args spec scram=()
    [ -f "$nd/data/meta.properties" ] && return 0
    if [ -s "$dir/scram.args" ]; then
        while IFS= read -r spec; do scram+=(--add-scram "$spec"); done <"$dir/scram.args"
    fi
    if [ "${quorum:-dynamic}" = static ] && [ "$nodes" -eq 1 ] && [ ${#scram[@]} -eq 0 ]; then
        copy_template "$nd/data"
        return
    fi
    if [ "${quorum:-dynamic}" = static ]; then
        args=()
    elif [ "$nodes" -eq 1 ]; then
        args=(--standalone)
    else
        args=(--initial-controllers "$initial_controllers")
    fi
    args+=(${scram[@]+"${scram[@]}"})
    if ! java -Xmx256m $tool_jvm -Dlog4j2.configurationFile="$khome/config/tools-log4j2.xml" \
        -cp "$khome/libs/*" kafka.tools.StorageTool format -t "$cluster_id" \
        -c "$nd/server.properties" ${args[@]+"${args[@]}"} >"$nd/format.log" 2>&1; then
        cat "$nd/format.log" >&2
        return 1
    fi
}

copy_template() {
    # $1: a node's empty data folder. Fills it from the formatted storage
    # of a one-node static-quorum cluster (node.id=1), made once into the
    # Kafka cache. Static: nothing in it names a port, so any node 1 of a
    # one-node cluster can start from a copy (all such copies share one
    # cluster id, which is harmless for separate throwaway clusters).
    local template="$khome/templates/static-node1" tmp
    if [ ! -f "$template/data/meta.properties" ]; then
        tmp="$khome/templates/.tmp.$$.$RANDOM"
        mkdir -p "$tmp/data"
        {
            echo "process.roles=broker,controller"
            echo "node.id=1"
            echo "controller.quorum.voters=1@127.0.0.1:9093"
            echo "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
            echo "controller.listener.names=CONTROLLER"
            echo "log.dirs=$tmp/data"
        } >"$tmp/server.properties"
        if ! java -Xmx256m $tool_jvm -Dlog4j2.configurationFile="$khome/config/tools-log4j2.xml" \
            -cp "$khome/libs/*" kafka.tools.StorageTool format -t "$(new_uuid)" \
            -c "$tmp/server.properties" >"$tmp/format.log" 2>&1; then
            cat "$tmp/format.log" >&2
            rm -rf "$tmp"
            return 1
        fi
        # Another start may have made it meanwhile: keep the first.
        mv -T "$tmp" "$template" 2>/dev/null || rm -rf "$tmp"
    fi
    cp -R "$template/data/." "$1/"
}

launch_node() {
    # $1: node number. Starts its JVM in a new session; the pid goes to
    # DIR/node-$1.pid.
    local i="$1" nd="$dir/node-$1"
    # shellcheck disable=SC2086
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/node-$i.pid" \
        java $heap $jvm_opts -Djava.awt.headless=true -XX:+ExitOnOutOfMemoryError \
        -Dkafka.logs.dir="$nd/logs" -Dlog4j2.configurationFile="$khome/config/log4j2.xml" \
        -cp "$khome/libs/*" kafka.Kafka "$nd/server.properties" \
        </dev/null >>"$nd/stdout.log" 2>&1 &
    # Wait for the pid file (written before exec).
    local k
    for ((k = 0; k < 50; k++)); do
        [ -s "$dir/node-$i.pid" ] && return 0
        sleep 0.1
    done
    die "node $i did not start"
}

watch_owner() {
    # $1: the owner's pid, $2: node number. A detached watchdog that
    # SIGKILLs the node once the owner is gone; it ends with the node.
    local node; node="$(cat "$dir/node-$2.pid")"
    setsid bash -c '
        while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
        if grep -q "kafka\.Kafka" "/proc/$2/cmdline" 2>/dev/null; then kill -KILL "$2"; fi
    ' _ "$1" "$node" </dev/null >/dev/null 2>&1 &
}

show_failure() {
    # $1: node number. The end of its stdout and its errors, to stderr.
    local nd="$dir/node-$1"
    log "node $1: last lines of $nd/stdout.log and errors in logs/server.log:"
    tail -n 20 "$nd/stdout.log" >&2 2>/dev/null || true
    grep -E ' (ERROR|FATAL) ' "$nd/logs/server.log" 2>/dev/null | tail -n 10 >&2 || true
}

cmd_start() {
    local want_nodes="" want_port="" want_ctrl="" want_adv="" want_quorum="" owner="" only="" timeout=180 props=() scrams=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --nodes) want_nodes="$2"; shift 2 ;;
            --dir) dir="$2"; shift 2 ;;
            --port) want_port="$2"; shift 2 ;;
            --ctrl-port) want_ctrl="$2"; shift 2 ;;
            --advertise) want_adv="$2"; shift 2 ;;
            --owner) owner="$2"; shift 2 ;;
            --static-quorum) want_quorum=static; shift ;;
            --prop) props+=("$2"); shift 2 ;;
            --node) only="$2"; shift 2 ;;
            --timeout) timeout="$2"; shift 2 ;;
            --add-scram) scrams+=("$2"); shift 2 ;;
            *) usage ;;
        esac
    done
    [ -n "${dir:-}" ] || usage
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"

    local t0; t0="$(now)"
    khome="$(kafka_home)"

    if [ -f "$dir/cluster.env" ]; then
        # shellcheck disable=SC1091
        . "$dir/cluster.env"
        [ -z "$want_nodes" ] || [ "$want_nodes" = "$nodes" ] || die "$dir holds a $nodes-node cluster, not $want_nodes"
        [ -z "$want_port" ] || [ "$want_port" = "$port" ] || die "$dir's cluster uses port $port, not $want_port"
        [ -z "$want_ctrl" ] || [ "$want_ctrl" = "$ctrl_port" ] || die "$dir's cluster uses controller port $ctrl_port, not $want_ctrl"
        [ ${#props[@]} -eq 0 ] || die "--prop is taken only when a cluster is created"
        [ ${#scrams[@]} -eq 0 ] || die "--add-scram is taken only when a cluster is created"
        [ -z "$want_adv" ] || [ "$want_adv" = "${advertise:-}" ] || die "--advertise is taken only when a cluster is created"
        [ -z "$want_quorum" ] || [ "$want_quorum" = "${quorum:-dynamic}" ] || die "$dir's cluster has a ${quorum:-dynamic} quorum"
    else
        nodes="${want_nodes:-1}"
        port="${want_port:-19100}"
        ctrl_port="${want_ctrl:-$((port + 50))}"
        advertise="$want_adv"
        quorum="${want_quorum:-dynamic}"
        [[ "$nodes" =~ ^[1-9]$ ]] || die "--nodes takes 1 to 9"
        if [ -n "$advertise" ]; then
            local a n_adv=0
            IFS=, read -ra advs <<<"$advertise"
            for a in "${advs[@]}"; do
                [[ "$a" =~ ^[^:,]+:[0-9]+$ ]] || die "--advertise takes HOST:PORT[,HOST:PORT]..., not $advertise"
                n_adv=$((n_adv + 1))
            done
            [ "$n_adv" -eq "$nodes" ] || die "--advertise names $n_adv address(es) for $nodes node(s)"
        fi
        cluster_id="$(new_uuid)"
        initial_controllers=""
        local j
        for ((j = 1; j <= nodes; j++)); do
            initial_controllers+="${initial_controllers:+,}$j@127.0.0.1:$((ctrl_port + j - 1)):$(new_uuid)"
        done
        : >"$dir/extra.properties"
        local p
        for p in ${props[@]+"${props[@]}"}; do
            [[ "$p" == *=* ]] || die "--prop takes KEY=VALUE, not $p"
            echo "$p" >>"$dir/extra.properties"
        done
        : >"$dir/scram.args"
        for p in ${scrams[@]+"${scrams[@]}"}; do
            [[ "$p" == SCRAM-SHA-*=\[*\] ]] || die "--add-scram takes SCRAM-SHA-256|512=[name=N,password=P], not $p"
            echo "$p" >>"$dir/scram.args"
        done
        printf 'nodes=%s\nport=%s\nctrl_port=%s\ncluster_id=%s\ninitial_controllers=%s\nadvertise=%s\nquorum=%s\n' \
            "$nodes" "$port" "$ctrl_port" "$cluster_id" "$initial_controllers" "$advertise" "$quorum" >"$dir/cluster.env"
    fi
    if [ -n "$owner" ]; then
        [[ "$owner" =~ ^[0-9]+$ ]] && alive "$owner" || die "--owner takes the pid of a running process, not $owner"
    fi
    if [ -n "$only" ]; then
        [[ "$only" =~ ^[0-9]+$ ]] && [ "$only" -ge 1 ] && [ "$only" -le "$nodes" ] || die "--node takes 1 to $nodes"
    fi

    heap="${LOGCATCH_KAFKA_HEAP:--Xms128m -Xmx512m}"
    jvm_opts="${LOGCATCH_KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData}"
    tool_jvm="-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData"
    if [ -n "${cds_dump:-}" ]; then
        jvm_opts+=" -XX:ArchiveClassesAtExit=$cds_dump"
    elif [ "${LOGCATCH_KAFKA_CDS:-1}" != 0 ] && [ -s "$khome/cds/kafka.jsa" ]; then
        jvm_opts+=" -XX:SharedArchiveFile=$khome/cds/kafka.jsa -Xshare:auto"
    fi

    # Which nodes to start: those not running.
    local i todo=()
    for ((i = 1; i <= nodes; i++)); do
        [ -n "$only" ] && [ "$i" != "$only" ] && continue
        if [ -n "$(node_pid "$dir" "$i")" ]; then
            log "node $i is already running (pid $(node_pid "$dir" "$i"))"
            continue
        fi
        port_open "$((port + i - 1))" && die "port $((port + i - 1)) is taken by another process"
        port_open "$((ctrl_port + i - 1))" && die "port $((ctrl_port + i - 1)) is taken by another process"
        todo+=("$i")
    done

    # Format (in parallel: each is a JVM start), then launch.
    local pids=() fail=0
    for i in ${todo[@]+"${todo[@]}"}; do
        write_properties "$i"
        format_node "$i" &
        pids+=($!)
    done
    for p in ${pids[@]+"${pids[@]}"}; do wait "$p" || fail=1; done
    [ "$fail" -eq 0 ] || die "formatting the storage failed"
    local t1; t1="$(now)"
    [ ${#todo[@]} -gt 0 ] && log "formatted in $(elapsed "$t0") s; starting node(s) ${todo[*]} of $nodes (Kafka at $khome)"
    for i in ${todo[@]+"${todo[@]}"}; do
        rm -f "$dir/node-$i.pid"
        echo "---- $(date -u +%FT%TZ) start" >>"$dir/node-$i/stdout.log"
        launch_node "$i"
        [ -z "$owner" ] || watch_owner "$owner" "$i"
    done
    started=("${todo[@]+"${todo[@]}"}")
    trap 'on_start_failure' EXIT

    # Ready: every running node answers Metadata with all N brokers.
    local deadline want ids bad
    deadline=$(( $(date +%s) + timeout ))
    want="$(seq -s ' ' 1 "$nodes")"
    command -v python3 >/dev/null 2>&1 || log "no python3: checking TCP only"
    while :; do
        bad=""
        for ((i = 1; i <= nodes; i++)); do
            if [ -z "$(node_pid "$dir" "$i")" ]; then
                if [[ " ${started[*]-} " == *" $i "* ]]; then
                    show_failure "$i"
                    die "node $i exited during startup"
                fi
                bad="node $i is not running"
                break
            fi
            if ! port_open "$((port + i - 1))"; then
                bad="node $i does not accept connections yet"
                break
            fi
            if command -v python3 >/dev/null 2>&1; then
                ids="$(metadata_brokers "$((port + i - 1))" 2>/dev/null || true)"
                if [ "$ids" != "$want" ]; then
                    bad="node $i lists brokers [${ids}], not [$want]"
                    break
                fi
            fi
        done
        [ -z "$bad" ] && break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            for i in ${started[@]+"${started[@]}"}; do show_failure "$i"; done
            die "not ready after $timeout s: $bad"
        fi
        sleep 0.1
    done
    trap - EXIT

    local bootstrap=""
    for ((i = 1; i <= nodes; i++)); do
        bootstrap+="${bootstrap:+,}127.0.0.1:$((port + i - 1))"
    done
    echo "$bootstrap" >"$dir/bootstrap"
    log "$nodes-node cluster ready in $(elapsed "$t0") s (JVMs up in $(elapsed "$t1") s of it); bootstrap $bootstrap"
    echo "$bootstrap"
}

on_start_failure() {
    local rc=$? i p
    [ "$rc" -eq 0 ] && return
    for i in ${started[@]+"${started[@]}"}; do
        p="$(node_pid "$dir" "$i")"
        if [ -n "$p" ]; then
            log "stopping node $i (pid $p)"
            kill -KILL "$p" 2>/dev/null || true
        fi
        rm -f "$dir/node-$i.pid"
    done
}

# ---- stop -----------------------------------------------------------------

cmd_stop() {
    local only="" timeout=30
    while [ $# -gt 0 ]; do
        case "$1" in
            --dir) dir="$2"; shift 2 ;;
            --node) only="$2"; shift 2 ;;
            --timeout) timeout="$2"; shift 2 ;;
            *) usage ;;
        esac
    done
    [ -n "${dir:-}" ] || usage
    [ -d "$dir" ] || { log "no $dir: nothing to stop"; return 0; }
    local t0 f i p pids=() names=()
    t0="$(now)"
    for f in "$dir"/node-*.pid; do
        [ -e "$f" ] || continue
        i="${f##*/node-}"; i="${i%.pid}"
        [ -n "$only" ] && [ "$i" != "$only" ] && continue
        p="$(node_pid "$dir" "$i")"
        if [ -n "$p" ]; then
            pids+=("$p"); names+=("$i")
            if [ "$timeout" = 0 ]; then kill -KILL "$p" 2>/dev/null || true
            else kill -TERM "$p" 2>/dev/null || true; fi
        else
            rm -f "$f"
        fi
    done
    [ ${#pids[@]} -gt 0 ] || { log "no node running in $dir"; return 0; }
    local deadline left k
    deadline=$(( $(date +%s) + timeout ))
    while :; do
        left=()
        for k in "${!pids[@]}"; do alive "${pids[$k]}" && left+=("$k"); done
        [ ${#left[@]} -eq 0 ] && break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            for k in "${left[@]}"; do
                [ "$timeout" = 0 ] || log "node ${names[$k]} (pid ${pids[$k]}) still up after $timeout s: SIGKILL"
                kill -KILL "${pids[$k]}" 2>/dev/null || true
            done
            for k in "${left[@]}"; do
                while alive "${pids[$k]}"; do sleep 0.1; done
            done
            break
        fi
        sleep 0.2
    done
    for i in "${names[@]}"; do rm -f "$dir/node-$i.pid"; done
    log "stopped node(s) ${names[*]} in $(elapsed "$t0") s"
}

cmd_cds() {
    [ $# -eq 0 ] || usage
    khome="$(kafka_home)"
    local want have tmp rc=0
    want="$(cat "$khome/.installed") java $(readlink -f "$(command -v java)")"
    have="$(cat "$khome/cds/stamp" 2>/dev/null || true)"
    if [ "$want" = "$have" ] && [ -s "$khome/cds/kafka.jsa" ]; then
        log "the CDS archive $khome/cds/kafka.jsa is up to date"
        return 0
    fi
    mkdir -p "$khome/cds"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/kafka-cds.XXXXXX")"
    cds_dump="$khome/cds/kafka.jsa.tmp.$$"
    rm -f "$cds_dump"
    log "building the CDS archive: a throwaway node starts and stops"
    # The archive is written when the JVM exits normally: a graceful stop.
    local p
    p="$(free_port_from 29500)"
    ( cmd_start --dir "$tmp" --port "$p" --ctrl-port "$((p + 1))" --static-quorum >/dev/null ) || rc=$?
    ( cmd_stop --dir "$tmp" --timeout 60 ) || rc=$?
    if [ "$rc" -eq 0 ] && [ -s "$cds_dump" ]; then
        mv -f "$cds_dump" "$khome/cds/kafka.jsa"
        echo "$want" >"$khome/cds/stamp"
        log "CDS archive: $khome/cds/kafka.jsa ($(du -m "$khome/cds/kafka.jsa" | cut -f1) MB)"
    else
        rm -f "$cds_dump"
        log "no CDS archive was written (starts stay a little slower); see $tmp"
        return 0
    fi
    rm -rf "$tmp"
}

free_port_from() {
    # $1: a port. The first port from there on that it and the next are
    # free.
    local p="$1"
    while port_open "$p" || port_open "$((p + 1))"; do p=$((p + 2)); done
    echo "$p"
}

cmd_status() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --dir) dir="$2"; shift 2 ;;
            *) usage ;;
        esac
    done
    [ -f "${dir:-}/cluster.env" ] || die "no cluster in ${dir:-?}"
    # shellcheck disable=SC1091
    . "$dir/cluster.env"
    local i p
    for ((i = 1; i <= nodes; i++)); do
        p="$(node_pid "$dir" "$i")"
        if [ -n "$p" ]; then
            echo "node $i: running, pid $p, 127.0.0.1:$((port + i - 1))"
        else
            echo "node $i: stopped, 127.0.0.1:$((port + i - 1))"
        fi
    done
}

cmd_tool() {
    [ $# -ge 1 ] || usage
    local class="$1"; shift
    case "$class" in
        topics) class=org.apache.kafka.tools.TopicCommand ;;
        configs) class=kafka.admin.ConfigCommand ;;  # or as tools.env says
        acls) class=org.apache.kafka.tools.AclCommand ;;
        produce) class=org.apache.kafka.tools.ConsoleProducer ;;
        consume) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
        quorum) class=org.apache.kafka.tools.MetadataQuorumCommand ;;
        cluster) class=org.apache.kafka.tools.ClusterTool ;;
        storage) class=kafka.tools.StorageTool ;;
        groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    esac
    khome="$(kafka_home)"
    if [ "$class" = kafka.admin.ConfigCommand ] && [ -f "$khome/tools.env" ]; then
        # shellcheck disable=SC1091
        class="$(. "$khome/tools.env"; echo "$config_command")"
    fi
    exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData \
        -Dlog4j2.configurationFile="$khome/config/tools-log4j2.xml" \
        -cp "$khome/libs/*" "$class" "$@"
}

[ $# -ge 1 ] || usage
sub="$1"; shift
case "$sub" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    cds) cmd_cds "$@" ;;
    tool) cmd_tool "$@" ;;
    -h|--help|help) usage ;;
    *) usage ;;
esac
