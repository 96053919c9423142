#!/usr/bin/env bash
# Benchmark of the webhook on this machine, loopback only.
#
# Builds the release binaries and the load generator (benches/review_load.rs), starts
# `sts-emulator` and `ram-authenticator server`, and measures:
#   - the cache path (a few tokens reviewed over and over) at 1, 32 and 256 connections,
#   - the STS path (every review a token never seen before) at 1, 32 and 256 connections,
#   - the cache path again with the audit log off (RUST_LOG=warn), at 32 connections,
#   - the server's memory with 100,000 cached identities: 100,000 tokens of 100,000 different
#     RAM users, and 100,000 tokens of one RAM user (each on a fresh server).
# Prints the tables and writes them, with a description of the machine, into
# docs/benchmarks.md between the "bench:results" markers (the text around them is kept).
#
#   - the cache path in kube-apiserver's shape: one HTTP/2 connection carrying 32 concurrent
#     streams (`cache-h2`), next to 32 HTTP/1.1 connections.
# Environment: BENCH_SECONDS (length of each run, default 8), BENCH_STS_TOKENS (tokens minted per
# STS run, default 120000), BENCH_RSS_IDENTITIES (default 100000), BENCH_DOC (default
# docs/benchmarks.md; empty = do not write it), BENCH_LEVELS (default 1,32,256),
# BENCH_SERVER_BIN (the server binary to measure, default target/release/ram-authenticator; the
# load generator and the emulator are always this tree's), BENCH_SETUP (a prefix for the setup
# column, e.g. "baseline"), BENCH_SHAPES_ONLY=1 (only the two cache shapes: 32 HTTP/1.1
# connections and one HTTP/2 connection with 32 streams; nothing is written to BENCH_DOC).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
STS_TOKENS=${BENCH_STS_TOKENS:-120000}
RSS_IDENTITIES=${BENCH_RSS_IDENTITIES:-100000}
LEVELS=${BENCH_LEVELS:-1,32,256}
DOC=${BENCH_DOC-docs/benchmarks.md}
SERVER_BIN=${BENCH_SERVER_BIN:-$ROOT/target/release/ram-authenticator}
SETUP=${BENCH_SETUP:+$BENCH_SETUP, }
SHAPES_ONLY=${BENCH_SHAPES_ONLY:-}
if [ -n "$SHAPES_ONLY" ]; then DOC=""; fi

AKID=LTAI5tBenchUser
SECRET=BenchSecretNotReal
CLUSTER=cbench0000000000

echo "== building release binaries and the load generator" >&2
cargo build --release --locked --bins
cargo bench --locked --bench review_load --no-run

WORK=$(mktemp -d /tmp/ram-authenticator-bench.XXXXXX)
EMU_PID=""
SRV_PID=""
stop_pid() {
    local pid=$1
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || return 0
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    stop_pid "$SRV_PID"
    stop_pid "$EMU_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT

# The bench user, and one generated RAM user per cached identity of the memory run (the load
# generator derives the same AccessKeys: LTAI5tBenchKey<n> / BenchKeySecret<n>).
{
    cat <<EOF
keys:
  - accessKeyId: $AKID
    accessKeySecret: $SECRET
    identity: {type: RAMUser, accountId: "1234567890123456", userName: bench, userId: "7001"}
EOF
    awk -v n="$RSS_IDENTITIES" 'BEGIN {
        for (i = 0; i < n; i++)
            printf "  - {accessKeyId: LTAI5tBenchKey%d, accessKeySecret: BenchKeySecret%d, identity: {type: RAMUser, accountId: \"2222222222222222\", userName: user%d, userId: \"%d\"}}\n", i, i, i, 300000000 + i
    }'
} >"$WORK/keys.yaml"
cat >"$WORK/config.yaml" <<EOF
clusterID: $CLUSTER
server:
  mapUsers:
    - userARN: acs:ram::1234567890123456:user/bench
      username: bench
      groups: [bench]
  mapAccounts: ["2222222222222222"]
EOF

# wait_for FILE PREFIX: prints what follows PREFIX on the first line of FILE that starts with it.
wait_for() {
    local file=$1 prefix=$2 line
    for _ in $(seq 1 600); do
        line=$(grep -m1 "^$prefix" "$file" 2>/dev/null || true)
        if [ -n "$line" ]; then
            echo "${line#"$prefix"}" | tr -d ' '
            return 0
        fi
        sleep 0.1
    done
    echo "timed out waiting for '$prefix' in $file" >&2
    return 1
}

# The emulator stands in for STS; its own request log is not what is measured.
RUST_LOG=warn "$ROOT/target/release/sts-emulator" --listen 127.0.0.1:0 --keys "$WORK/keys.yaml" \
    >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
EMU_PID=$!
EMU_URL=$(wait_for "$WORK/emulator.out" "listening on") || { cat "$WORK/emulator.err" >&2; exit 1; }
echo "== emulator $EMU_URL (pid $EMU_PID)" >&2

# start_server NAME RUST_LOG: starts a fresh server; sets SRV_PID, SRV_URL, SRV_HEALTH, SRV_DIR.
start_server() {
    local name=$1 log=$2
    SRV_DIR="$WORK/$name"
    mkdir -p "$SRV_DIR"
    RUST_LOG=$log "$SERVER_BIN" server \
        --config "$WORK/config.yaml" --state-dir "$SRV_DIR/state" \
        --generate-kubeconfig "$SRV_DIR/webhook.kubeconfig" \
        --port 0 --health-address 127.0.0.1:0 --sts-endpoint "$EMU_URL" \
        >"$SRV_DIR/server.out" 2>"$SRV_DIR/server.err" &
    SRV_PID=$!
    SRV_URL=$(wait_for "$SRV_DIR/server.out" "serving") || { cat "$SRV_DIR/server.err" >&2; exit 1; }
    SRV_HEALTH=$(wait_for "$SRV_DIR/server.out" "health") || { cat "$SRV_DIR/server.err" >&2; exit 1; }
    echo "== server ($name, RUST_LOG=$log) $SRV_URL health $SRV_HEALTH (pid $SRV_PID)" >&2
}

RESULTS="$WORK/results"
mkdir -p "$RESULTS"
# load LABEL RSS_KEYS PHASE...: runs the load generator against the current server.
load() {
    local label=$1 rss_keys=$2
    shift 2
    local phases=()
    for p in "$@"; do phases+=(--phase "$p"); done
    cargo bench --locked --bench review_load -- \
        --server "$SRV_URL" --kubeconfig "$SRV_DIR/webhook.kubeconfig" --health "$SRV_HEALTH" \
        --emulator "$EMU_URL" --server-pid "$SRV_PID" --emulator-pid "$EMU_PID" \
        --access-key-id "$AKID" --access-key-secret "$SECRET" --cluster "$CLUSTER" \
        --seconds "$SECONDS_PER_RUN" --sts-tokens "$STS_TOKENS" --rss-identities "$RSS_IDENTITIES" --rss-keys "$rss_keys" \
        --label "$label" --markdown-dir "$RESULTS" "${phases[@]}" >/dev/null
}

if [ -n "$SHAPES_ONLY" ]; then
    start_server shapes info
    load "${SETUP}audit log on" 1 "cache:32" "cache-h2:32"
    stop_pid "$SRV_PID"; rm -rf "$SRV_DIR"
    SRV_PID=""
    echo
    cat "$RESULTS/runs.md"
    exit 0
fi

start_server main info
load "${SETUP}audit log on" 1 "cache:$LEVELS" "cache-h2:32" "sts:$LEVELS"
stop_pid "$SRV_PID"; rm -rf "$SRV_DIR"

start_server quiet warn
load "${SETUP}audit log off" 1 "cache:32"
stop_pid "$SRV_PID"; rm -rf "$SRV_DIR"

start_server rss-distinct info
load "${SETUP}fresh server, $RSS_IDENTITIES RAM users" "$RSS_IDENTITIES" "rss:64"
stop_pid "$SRV_PID"; rm -rf "$SRV_DIR"

start_server rss-one info
load "${SETUP}fresh server, 1 RAM user" 1 "rss:64"
stop_pid "$SRV_PID"; rm -rf "$SRV_DIR"
SRV_PID=""

cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem_total=$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
{
    echo "Run: \`scripts/bench.sh\` (BENCH_SECONDS=$SECONDS_PER_RUN, connections $LEVELS; \`cache-h2\`: one HTTP/2 connection, 32 streams), $(date -u +%Y-%m-%dT%H:%M:%SZ)."
    echo
    echo "Machine: $(nproc) CPUs ($cpu_model), $mem_total memory, Linux $(uname -r), $(rustc --version)."
    echo "Load generator, server and emulator all run on this machine and share its CPUs."
    echo
    cat "$RESULTS/runs.md"
    echo
    cat "$RESULTS/rss.md"
} >"$WORK/section.md"

echo
cat "$WORK/section.md"

if [ -n "$DOC" ]; then
    if [ ! -f "$DOC" ] || ! grep -q '<!-- bench:results:begin -->' "$DOC"; then
        {
            echo "# Benchmarks"
            echo
            echo "<!-- bench:results:begin -->"
            echo "<!-- bench:results:end -->"
        } >>"$DOC"
    fi
    awk -v section="$WORK/section.md" '
        /<!-- bench:results:begin -->/ { print; while ((getline line < section) > 0) print line; skip = 1; next }
        /<!-- bench:results:end -->/ { skip = 0 }
        !skip { print }
    ' "$DOC" >"$WORK/doc.md"
    cp "$WORK/doc.md" "$DOC"
    echo "== results written to $DOC" >&2
fi
