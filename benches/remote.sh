#!/usr/bin/env bash
# Remote repositories across a round trip: Coffer and restic (and rustic where installed) on
# S3 (moto_server on loopback) behind benches/delay_proxy.py, at 0 and 15 ms each way (issue 16).
#
#   benches/remote.sh                    # /usr/share/doc and a 256 MiB file; delays 0 and 15 ms
#   benches/remote.sh --quick            # 15 ms only, Coffer only
#
# Environment:
#   BENCH_DIR    work folder (default /var/tmp/coffer-bench-remote); everything in it is rebuilt
#   COFFER_BIN   use this binary instead of building target/release/coffer
#   DELAYS       one-way delays in ms (default "0 15")
#   RATE_MBIT    bandwidth cap per direction for the proxy (default none)
#   BIG_MIB      size of the large file (default 256)
#   BENCH_TOOLS  default "coffer restic rustic" (rustic only where installed)
#   COLD_CACHE   1: every tool restores and mounts with an empty cache (a new machine); default 0:
#                each tool keeps its own cache folder from its backup (Coffer's local database,
#                restic's/rustic's --cache-dir), as on the machine that made the backup
#
# Prints one table: per step and delay, wall time for each tool, and for Coffer the store
# requests it sent (COFFER_STORE_STATS=1: reads/writes/stats/lists). Every restore and copy is
# compared with its source. moto keeps objects in memory: expect ~1-2 GiB of RAM for it.
set -uo pipefail

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done
DELAYS=${DELAYS:-0 15}
TOOLS=${BENCH_TOOLS:-coffer restic rustic}
if [ $QUICK = 1 ]; then DELAYS=15 TOOLS=coffer; fi
BIG_MIB=${BIG_MIB:-256}
RATE_MBIT=${RATE_MBIT:-0}
COLD_CACHE=${COLD_CACHE:-0}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/coffer-bench-remote}
SMALL_SRC=/usr/share/doc
die() { echo "remote.sh: $*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*" >&2; }

if [ -n "${COFFER_BIN:-}" ]; then BIN=$COFFER_BIN
else
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN=$ROOT/target/release/coffer
fi
python3 -c 'import moto.server' 2>/dev/null || die "moto is not installed (tests/install-deps.sh installs it)"
if [[ " $TOOLS " == *" restic "* ]] && ! command -v restic >/dev/null; then
    apt-get install -y -qq restic >/dev/null 2>&1 || TOOLS=${TOOLS/restic/}
fi
command -v rustic >/dev/null || TOOLS=${TOOLS/rustic/}
CAN_MOUNT=0
[ -e /dev/fuse ] && command -v fusermount3 >/dev/null && CAN_MOUNT=1

rm -rf "$WORK"; mkdir -p "$WORK/data" "$WORK/logs" "$WORK/out"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
python3 -m moto.server -H 127.0.0.1 -p "$PORT" >"$WORK/logs/moto.log" 2>&1 &
MOTO=$!
MNT=$WORK/mnt
PROXY=
MOUNT_PID=
cleanup() {
    mountpoint -q "$MNT" 2>/dev/null && fusermount3 -uz "$MNT"
    [ -n "$MOUNT_PID" ] && kill "$MOUNT_PID" 2>/dev/null
    [ -n "$PROXY" ] && kill "$PROXY" 2>/dev/null
    kill "$MOTO" 2>/dev/null; wait "$MOTO" 2>/dev/null
    # Restored copies are removed only now: thousands of files deleted between steps made
    # ext4 slow to allocate inodes for the next restore (seconds of `recently_deleted` in the
    # kernel), which timed the disk instead of the tools.
    rm -rf "$WORK/out"
}
trap cleanup EXIT
for _ in $(seq 100); do
    python3 -c "import http.client as h; c=h.HTTPConnection('127.0.0.1',$PORT,timeout=1); c.request('PUT','/bench'); r=c.getresponse(); exit(0 if r.status==200 else 1)" 2>/dev/null && break
    sleep 0.2
done

# proxy DELAY: (re)starts the delay proxy in front of moto; sets PPORT.
proxy() {
    [ -n "$PROXY" ] && { kill "$PROXY" 2>/dev/null; wait "$PROXY" 2>/dev/null; }
    local log=$WORK/logs/proxy-$1.log
    python3 "$ROOT/benches/delay_proxy.py" --upstream "127.0.0.1:$PORT" --delay-ms "$1" \
        --rate-mbit "$RATE_MBIT" --max-seconds 7200 >"$log" 2>&1 &
    PROXY=$!
    for _ in $(seq 100); do grep -q '^listening on' "$log" 2>/dev/null && break; sleep 0.1; done
    PPORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$log")
    [ -n "$PPORT" ] || die "the delay proxy did not start"
}

export COFFER_PASSWORD=coffer-bench-password RESTIC_PASSWORD=coffer-bench-password
export RUSTIC_PASSWORD=coffer-bench-password COFFER_STORE_STATS=1
export BENCH_S3_SECRET=moto-accepts-anything AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=moto-accepts-anything
export AWS_DEFAULT_REGION=us-east-1
S3_OPTS=(--option access_key_id=bench --option secret_access_key=env:BENCH_S3_SECRET)

now() { date +%s.%N; }
RESULTS=$WORK/results.tsv
: >"$RESULTS"
# timed TOOL STEP DELAY CMD...: runs CMD, records wall time and Coffer's request line.
timed() {
    local tool=$1 step=$2 delay=$3; shift 3
    local log=$WORK/logs/$tool-$step-$delay start end reqs
    start=$(now)
    "$@" >"$log.out" 2>"$log.err" || { tail -5 "$log.err" >&2; die "$tool $step at $delay ms failed"; }
    end=$(now)
    reqs=$(grep -h 'store requests' "$log.err" | tail -1 | sed 's/.*store requests: //' \
        | awk '{for(i=1;i<=NF;i++){split($i,a,"="); if(a[1]!="read_bytes"&&a[1]!="write_bytes"&&a[2]>0) printf "%s%s=%s", sep, a[1], a[2]; if(a[2]>0&&a[1]!="read_bytes"&&a[1]!="write_bytes") sep=" "}}')
    printf '%s\t%s\t%s\t%.2f\t%s\n' "$step" "$delay" "$tool" "$(awk "BEGIN{print $end - $start}")" "$reqs" >>"$RESULTS"
    printf '  %-8s %-14s %3s ms  %7.2f s  %s\n' "$tool" "$step" "$delay" "$(awk "BEGIN{print $end - $start}")" "$reqs" >&2
}
same() { diff -r --no-dereference "$1" "$2" >/dev/null || die "$3: restored data differs from the source"; }

# mount_and TOOL REPO_ARGS... -- CMD: mounts, waits for the snapshot folder, runs CMD, unmounts.
wait_mounted() { for _ in $(seq 600); do [ -d "$1" ] && return 0; sleep 0.1; done; die "mount did not come up"; }
unmount() {
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
    wait "$MOUNT_PID" 2>/dev/null; MOUNT_PID=
}

say "data: $SMALL_SRC (copy) and ${BIG_MIB} MiB of random bytes"
cp -a "$SMALL_SRC" "$WORK/data/small"
mkdir -p "$WORK/data/big"
head -c $((BIG_MIB << 20)) /dev/urandom >"$WORK/data/big/big.bin"
SMALL=$WORK/data/small BIG=$WORK/data/big
printf 'small-file tree: %s files, %s\n' "$(find "$SMALL" -type f | wc -l)" "$(du -sh "$SMALL" | cut -f1)" >&2

coffer_run() {
    local d=$1 repo; local ep="http://127.0.0.1:$PPORT"
    for kind in small big; do
        repo="s3://bench/coffer-$d-$kind?endpoint=$ep&region=us-east-1"
        local c=("$BIN" -r "$repo" "${S3_OPTS[@]}")
        export COFFER_CACHE_DIR=$WORK/cache-coffer-$d-$kind
        "${c[@]}" init -q 2>/dev/null || die "coffer init failed"
        local src=$SMALL; [ $kind = big ] && src=$BIG
        timed coffer "backup-$kind" "$d" "${c[@]}" backup -q "$src"
        [ "$COLD_CACHE" = 1 ] && rm -rf "$COFFER_CACHE_DIR"
        timed coffer "restore-$kind" "$d" "${c[@]}" restore -q latest --target "$WORK/out/coffer-$d-$kind"
        same "$src" "$WORK/out/coffer-$d-$kind$src" "coffer restore $kind"
        if [ $CAN_MOUNT = 1 ]; then
            mkdir -p "$MNT"
            "${c[@]}" mount "$MNT" 2>"$WORK/logs/coffer-mount-$d-$kind.err" &
            MOUNT_PID=$!
            wait_mounted "$MNT/latest$src"
            local start end
            start=$(now)
            if [ $kind = small ]; then cp -r "$MNT/latest$src" "$WORK/out/cp-coffer-$d-$kind"; else cat "$MNT/latest$src/big.bin" >"$WORK/out/cp-coffer-$d-$kind"; fi
            end=$(now)
            unmount
            if [ $kind = small ]; then same "$src" "$WORK/out/cp-coffer-$d-$kind" "coffer mount copy"; else cmp -s "$src/big.bin" "$WORK/out/cp-coffer-$d-$kind" || die "coffer mount read differs"; fi
            printf '%s\t%s\tcoffer\t%.2f\t%s\n' "mount-$kind" "$d" "$(awk "BEGIN{print $end - $start}")" \
                "$(grep -h 'store requests' "$WORK/logs/coffer-mount-$d-$kind.err" | tail -1 | grep -o ' reads=[0-9]*' | sed 's/^ /whole mount: /')" >>"$RESULTS"
        fi
    done
}

restic_like_run() {
    local tool=$1 d=$2 repo; local ep="http://127.0.0.1:$PPORT"
    for kind in small big; do
        repo="s3:$ep/bench/$tool-$d-$kind"
        # A cache of its own per run, kept from backup to restore and mount like Coffer's local
        # database (restic without one reads every index and tree from the store each time).
        local cache=$WORK/cache-$tool-$d-$kind
        local c=("$tool" -r "$repo" --cache-dir "$cache")
        "${c[@]}" init >/dev/null 2>&1 || die "$tool init failed"
        local src=$SMALL; [ $kind = big ] && src=$BIG
        timed "$tool" "backup-$kind" "$d" "${c[@]}" backup "$src"
        [ "$COLD_CACHE" = 1 ] && rm -rf "$cache"
        timed "$tool" "restore-$kind" "$d" "${c[@]}" restore latest --target "$WORK/out/$tool-$d-$kind"
        same "$src" "$WORK/out/$tool-$d-$kind$src" "$tool restore $kind"
        if [ $CAN_MOUNT = 1 ] && [ "$tool" = restic ]; then
            mkdir -p "$MNT"
            "${c[@]}" mount "$MNT" >"$WORK/logs/$tool-mount-$d-$kind.log" 2>&1 &
            MOUNT_PID=$!
            wait_mounted "$MNT/snapshots/latest$src"
            local start end
            start=$(now)
            if [ $kind = small ]; then cp -r "$MNT/snapshots/latest$src" "$WORK/out/cp-$tool-$d-$kind"; else cat "$MNT/snapshots/latest$src/big.bin" >"$WORK/out/cp-$tool-$d-$kind"; fi
            end=$(now)
            unmount
            printf '%s\t%s\t%s\t%.2f\t\n' "mount-$kind" "$d" "$tool" "$(awk "BEGIN{print $end - $start}")" >>"$RESULTS"
        fi
    done
}

for d in $DELAYS; do
    proxy "$d"
    say "${d} ms each way (proxy on port $PPORT)"
    for tool in $TOOLS; do
        case $tool in
            coffer) coffer_run "$d" ;;
            restic|rustic) restic_like_run "$tool" "$d" ;;
        esac
    done
done

# The table: one row per step and delay, one column per tool (Coffer's requests beside it).
label() {
    case $1 in
        backup-small) echo "backup $SMALL_SRC" ;;
        restore-small) echo "restore that snapshot" ;;
        mount-small) echo "cp -r of that folder out of the mount" ;;
        backup-big) echo "backup a ${BIG_MIB} MiB file" ;;
        restore-big) echo "restore the ${BIG_MIB} MiB file" ;;
        mount-big) echo "cold cat of that file in the mount" ;;
    esac
}
echo
printf '| step | delay each way |'; for t in $TOOLS; do printf ' %s |' "$t"; done; echo ' Coffer requests |'
printf '|---|---|'; for t in $TOOLS; do printf -- '---|'; done; echo '---|'
for step in backup-small restore-small mount-small backup-big restore-big mount-big; do
    for d in $DELAYS; do
        grep -q "^$step	$d	" "$RESULTS" || continue
        printf '| %s | %s ms |' "$(label $step)" "$d"
        for t in $TOOLS; do
            printf ' %s |' "$(awk -F'\t' -v s="$step" -v d="$d" -v t="$t" '$1==s&&$2==d&&$3==t{printf "%s s", $4}' "$RESULTS")"
        done
        printf ' %s |\n' "$(awk -F'\t' -v s="$step" -v d="$d" '$1==s&&$2==d&&$3=="coffer"{print $5}' "$RESULTS")"
    done
done
