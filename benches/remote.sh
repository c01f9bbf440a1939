#!/usr/bin/env bash
# Remote repositories: Coffer backing up to and restoring from S3 (moto_server on loopback)
# next to a local folder, with the number of store requests each step sends.
#
#   benches/remote.sh            # small files: /usr/share/doc; large: 1 GiB of random bytes
#   benches/remote.sh --quick    # 256 MiB large file
#
# Environment:
#   BENCH_DIR   work folder (default /var/tmp/coffer-bench-remote); everything in it is rebuilt
#   COFFER_BIN  use this binary instead of building target/release/coffer
#
# Measured: wall time of backup and restore of the small-file tree (local folder, then S3); the
# store requests per GiB backed up (1 GiB file to S3); the store requests and time of a cold
# read of that 1 GiB file through `coffer mount` of the S3 repository. Request counts come from
# COFFER_STORE_STATS=1 (one line on stderr per command: reads, writes, stats, lists, deletes).
# moto keeps objects in memory: expect ~2 GiB of RAM for the server.
set -uo pipefail

BIG_MIB=1024
for arg in "$@"; do
    case "$arg" in
        --quick) BIG_MIB=256 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/coffer-bench-remote}
SMALL_SRC=/usr/share/doc
die() { echo "remote.sh: $*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*"; }

if [ -n "${COFFER_BIN:-}" ]; then BIN=$COFFER_BIN
else
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN=$ROOT/target/release/coffer
fi
python3 -c 'import moto.server' 2>/dev/null || die "moto is not installed (tests/install-deps.sh installs it)"

rm -rf "$WORK"; mkdir -p "$WORK/data" "$WORK/logs"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$PORT" >"$WORK/logs/moto.log" 2>&1 &
MOTO=$!
MNT=$WORK/mnt
cleanup() {
    mountpoint -q "$MNT" 2>/dev/null && fusermount3 -uz "$MNT"
    kill "$MOTO" 2>/dev/null; wait "$MOTO" 2>/dev/null
}
trap cleanup EXIT
for _ in $(seq 100); do
    python3 -c "import http.client as h; c=h.HTTPConnection('127.0.0.1',$PORT,timeout=1); c.request('PUT','/bench'); r=c.getresponse(); exit(0 if r.status==200 else 1)" 2>/dev/null && break
    sleep 0.2
done

export COFFER_PASSWORD=coffer-bench-password COFFER_CACHE_DIR=$WORK/cache COFFER_STORE_STATS=1
export BENCH_S3_SECRET=moto-accepts-anything
S3="s3://bench/repo?endpoint=http://127.0.0.1:$PORT&region=us-east-1"
S3_OPTS=(--option access_key_id=bench --option secret_access_key=env:BENCH_S3_SECRET)

now() { date +%s.%N; }
# timed NAME CMD...: runs CMD, prints its wall time and the store request line it printed.
timed() {
    local name=$1; shift
    local start end
    start=$(now)
    "$@" >"$WORK/logs/$name.out" 2>"$WORK/logs/$name.err" || { cat "$WORK/logs/$name.err" >&2; die "$name failed"; }
    end=$(now)
    printf '%-28s %8.2f s   %s\n' "$name" "$(awk "BEGIN{print $end - $start}")" \
        "$(grep -h 'store requests' "$WORK/logs/$name.err" | tail -1 | sed 's/.*store requests: //')"
}

say "data: $SMALL_SRC (copy) and ${BIG_MIB} MiB of random bytes"
cp -a "$SMALL_SRC" "$WORK/data/small"
head -c $((BIG_MIB << 20)) /dev/urandom >"$WORK/data/big.bin"
printf 'small-file tree: %s files, %s\n' "$(find "$WORK/data/small" -type f | wc -l)" "$(du -sh "$WORK/data/small" | cut -f1)"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null

say "small-file tree"
"$BIN" -r "$WORK/local" init -q 2>/dev/null
timed "local backup" "$BIN" -r "$WORK/local" backup -q "$WORK/data/small"
timed "local restore" "$BIN" -r "$WORK/local" restore -q latest --target "$WORK/restore-local"
"$BIN" -r "$S3" "${S3_OPTS[@]}" init -q 2>/dev/null
timed "s3 backup" "$BIN" -r "$S3" "${S3_OPTS[@]}" backup -q "$WORK/data/small"
timed "s3 unchanged re-backup" "$BIN" -r "$S3" "${S3_OPTS[@]}" backup -q "$WORK/data/small"
rm -rf "$COFFER_CACHE_DIR"
timed "s3 restore (cold cache)" "$BIN" -r "$S3" "${S3_OPTS[@]}" restore -q latest --target "$WORK/restore-s3"
diff -r --no-dereference "$WORK/data/small" "$WORK/restore-s3$WORK/data/small" >/dev/null || die "S3 restore differs"

say "${BIG_MIB} MiB file to S3 (requests per GiB)"
S3BIG="s3://bench/big?endpoint=http://127.0.0.1:$PORT&region=us-east-1"
"$BIN" -r "$S3BIG" "${S3_OPTS[@]}" init -q 2>/dev/null
timed "s3 backup big" "$BIN" -r "$S3BIG" "${S3_OPTS[@]}" backup -q "$WORK/data/big.bin"
writes=$(grep -ho 'writes=[0-9]*' "$WORK/logs/s3 backup big.err" | tail -1 | cut -d= -f2)
stats=$(grep -ho 'stats=[0-9]*' "$WORK/logs/s3 backup big.err" | tail -1 | cut -d= -f2)
reads=$(grep -ho ' reads=[0-9]*' "$WORK/logs/s3 backup big.err" | tail -1 | cut -d= -f2)
lists=$(grep -ho 'lists=[0-9]*' "$WORK/logs/s3 backup big.err" | tail -1 | cut -d= -f2)
total=$((writes + stats + reads + lists))
echo "requests per GiB backed up: $((total * 1024 / BIG_MIB)) (writes $writes, stats $stats, reads $reads, lists $lists for ${BIG_MIB} MiB)"

if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null; then
    say "mount of the S3 repository: cold read of the ${BIG_MIB} MiB file"
    rm -rf "$COFFER_CACHE_DIR"; mkdir -p "$MNT"
    "$BIN" -r "$S3BIG" "${S3_OPTS[@]}" mount "$MNT" 2>"$WORK/logs/mount.err" &
    MOUNT_PID=$!
    for _ in $(seq 300); do [ -d "$MNT/latest" ] && break; sleep 0.1; done
    start=$(now)
    cat "$MNT/latest$WORK/data/big.bin" >/dev/null || die "reading through the mount failed"
    end=$(now)
    fusermount3 -u "$MNT"; wait "$MOUNT_PID"
    printf 'cold read: %.2f s; mount requests in all (snapshot listing included): %s\n' \
        "$(awk "BEGIN{print $end - $start}")" "$(grep -h 'store requests' "$WORK/logs/mount.err" | tail -1 | sed 's/.*store requests: //')"
else
    echo "(no /dev/fuse or fusermount3: mount figures skipped)"
fi
