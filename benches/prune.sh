#!/usr/bin/env bash
# Times prune on a repository of 100 snapshots (issue 15: the cost of verifying domains and
# anchors), for one or two coffer binaries on the same data, interleaved.
#
#   benches/prune.sh                         # target/release/coffer
#   benches/prune.sh OLD_BINARY NEW_BINARY   # both, same repository built by each, 3 rounds
#
# Each round: init, 100 backups of a 64 MiB tree in which 2 % of the files change between
# backups, `forget --keep-last 50`, then a timed `prune` (wall clock), then a timed `check`.
# Environment: BENCH_DIR (default /var/tmp/coffer-prune-bench), BENCH_ROUNDS (default 3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/coffer-prune-bench}
ROUNDS=${BENCH_ROUNDS:-3}
if [ $# -eq 0 ]; then
    (cd "$ROOT" && cargo build --release --bin coffer >/dev/null)
    set -- "$ROOT/target/release/coffer"
fi
export COFFER_PASSWORD=prune-bench

rm -rf "$WORK" && mkdir -p "$WORK/src"
# 64 MiB in 1,024 files of 64 KiB, incompressible.
for d in $(seq 0 15); do
    mkdir -p "$WORK/src/d$d"
    for f in $(seq 0 63); do head -c 65536 /dev/urandom >"$WORK/src/d$d/f$f"; done
done

now() { date +%s.%N; }
declare -A PRUNE CHECK
for round in $(seq 1 "$ROUNDS"); do
    for bin in "$@"; do
        repo="$WORK/repo" cache="$WORK/cache"
        rm -rf "$repo" "$cache"
        export COFFER_CACHE_DIR=$cache
        "$bin" --repo "$repo" init -q >/dev/null 2>&1
        for i in $(seq 1 100); do
            # 2 % of the files change between backups.
            for j in $(seq 1 20); do head -c 65536 /dev/urandom >"$WORK/src/d$((RANDOM % 16))/f$((RANDOM % 64))"; done
            "$bin" --repo "$repo" backup -q "$WORK/src" >/dev/null 2>&1
        done
        "$bin" --repo "$repo" forget -q --keep-last 50 >/dev/null
        start=$(now)
        "$bin" --repo "$repo" prune -q >/dev/null
        PRUNE[$bin]+="$(echo "$(now) - $start" | bc) "
        start=$(now)
        "$bin" --repo "$repo" check -q >/dev/null
        CHECK[$bin]+="$(echo "$(now) - $start" | bc) "
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-40s %12s %12s  (rounds: prune | check)\n' binary "prune s" "check s"
for bin in "$@"; do
    printf '%-40s %12s %12s  (%s| %s)\n' "$bin" "$(echo "${PRUNE[$bin]}" | median)" \
        "$(echo "${CHECK[$bin]}" | median)" "${PRUNE[$bin]}" "${CHECK[$bin]}"
done
