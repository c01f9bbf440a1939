#!/usr/bin/env bash
# Mount comparison (issue 3's figures): `coffer mount` beside `restic mount` and `borg mount`,
# on the same data, one tool after another, page cache dropped before every cold figure.
#
#   benches/mount.sh            # /usr/share (as copied by compare.sh) + its 1 GiB file
#   benches/mount.sh --quick    # /usr/share/doc + 256 MiB
#
# Environment: BENCH_DIR (default /var/tmp/coffer-bench; the data copies of compare.sh are
# reused, or made), COFFER_BIN (default target/release/coffer, built if missing),
# BENCH_TOOLS (default "coffer restic borg"), CACHE_SIZE for coffer (default 256MiB).
#
# Figures per tool: time from starting the mount to a readable snapshot folder; cold and warm
# sequential read of the large file (MB/s); cold `find` over the small-file tree; 8 parallel
# readers of different files (aggregate MB/s); peak RSS of the mount process during the large
# read. For Coffer also the mount time at 10 and at 200 snapshots.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = --quick ] && QUICK=1
BENCH_DIR=${BENCH_DIR:-/var/tmp/coffer-bench}
TOOLS=${BENCH_TOOLS:-coffer restic borg}
CACHE_SIZE=${CACHE_SIZE:-256MiB}
if [ $QUICK = 1 ]; then DATA=$BENCH_DIR/data-quick SMALL_NAME=doc BIG_SIZE=256M
else DATA=$BENCH_DIR/data-full SMALL_NAME=share BIG_SIZE=1G; fi
SMALL=$DATA/$SMALL_NAME
BIG=$DATA/big.bin
W=$BENCH_DIR/mount-run
PW=mount-bench-password
COFFER=${COFFER_BIN:-$PWD/target/release/coffer}

say() { printf '\n== %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
mbps() { awk -v bytes="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", bytes / s / 1e6; else print "-" }'; }

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need fusermount3 fuse3
[ -x "$COFFER" ] || cargo build --release
[[ " $TOOLS " == *" restic "* ]] && need restic restic
if [[ " $TOOLS " == *" borg "* ]]; then
  need borg borgbackup
  python3 -c 'import llfuse' 2>/dev/null || python3 -c 'import pyfuse3' 2>/dev/null \
    || apt-get install -y -qq python3-llfuse >/dev/null 2>&1 || apt-get install -y -qq python3-pyfuse3 >/dev/null
fi

# The data: the copies compare.sh makes, or new ones.
mkdir -p "$DATA"
if [ ! -d "$SMALL" ]; then
  if [ $QUICK = 1 ]; then cp -a /usr/share/doc "$SMALL"; else cp -a /usr/share "$SMALL"; fi
fi
# tar is cut off by head (SIGPIPE): not a failure.
[ -f "$BIG" ] || { tar c /usr/lib 2>/dev/null | head -c "$BIG_SIZE" > "$BIG" || true; }
BIG_BYTES=$(stat -c %s "$BIG")
mapfile -t EIGHT < <(find "$SMALL" -type f -size +200k -printf '%s %p\n' | sort -rn | head -n 8 | cut -d' ' -f2-)
EIGHT_BYTES=0
for f in "${EIGHT[@]}"; do EIGHT_BYTES=$((EIGHT_BYTES + $(stat -c %s "$f"))); done
FILES=$(find "$SMALL" | wc -l)

rm -rf "$W"; mkdir -p "$W"
declare -A R
MOUNT_PID=""
MNT=$W/mnt

unmount() {
  if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" 2>/dev/null || fusermount -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"; fi
  [ -n "$MOUNT_PID" ] && { wait "$MOUNT_PID" 2>/dev/null || true; }
  MOUNT_PID=""
}
trap unmount EXIT

# Starts "$@" (a foreground mount) and waits until $1 (a path inside the mount) lists; sets
# MOUNT_SECONDS to how long that took (and MOUNT_PID: not run in a subshell for that reason).
mount_and_time() {
  local probe=$1; shift
  mkdir -p "$MNT"
  local t0; t0=$(now)
  "$@" > "$W/mount.log" 2>&1 &
  MOUNT_PID=$!
  local deadline=$((SECONDS + 120))
  until ls "$probe" >/dev/null 2>&1 && [ -n "$(ls -A "$probe" 2>/dev/null)" ]; do
    [ $SECONDS -lt $deadline ] || { cat "$W/mount.log" >&2; echo "mount did not come up" >&2; return 1; }
    sleep 0.005
  done
  MOUNT_SECONDS=$(since "$t0")
}

peak_rss_mib() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo -; }

# The figures for one mounted snapshot root ($1: where the source paths start inside the mount).
measure() {
  local tool=$1 root=$2
  local big=$root$BIG small=$root$SMALL
  drop
  local t0; t0=$(now)
  dd if="$big" of=/dev/null bs=1M status=none
  local cold; cold=$(since "$t0")
  R[$tool:read_cold]=$(mbps "$BIG_BYTES" "$cold")
  R[$tool:rss]=$(peak_rss_mib "$MOUNT_PID")
  t0=$(now)
  dd if="$big" of=/dev/null bs=1M status=none
  R[$tool:read_warm]=$(mbps "$BIG_BYTES" "$(since "$t0")")
  t0=$(now)
  local pids=()
  for f in "${EIGHT[@]}"; do cat "$root$f" > /dev/null & pids+=($!); done
  wait "${pids[@]}"
  R[$tool:parallel8]=$(mbps "$EIGHT_BYTES" "$(since "$t0")")
}

# `find` on a freshly started mount with caches dropped: nothing in memory anywhere.
measure_find() {
  local tool=$1 root=$2
  drop
  local t0; t0=$(now)
  find "$root$SMALL" -printf '%s\n' > /dev/null
  R[$tool:find]=$(since "$t0")
  # Again on the same mount: what the kernel and the tool cached answers.
  t0=$(now)
  find "$root$SMALL" -printf '%s\n' > /dev/null
  R[$tool:find_warm]=$(since "$t0")
}

run_coffer() {
  say coffer
  export COFFER_PASSWORD=$PW COFFER_CACHE_DIR=$W/coffer-cache COFFER_REPOSITORY=$W/coffer-repo
  "$COFFER" init -q
  "$COFFER" backup -q "$SMALL" "$BIG"
  local mount=("$COFFER" mount "$MNT" --cache-size "$CACHE_SIZE")
  drop
  mount_and_time "$MNT/snapshots" "${mount[@]}"
  R[coffer:mount]=$MOUNT_SECONDS
  measure coffer "$MNT/latest"
  unmount
  mount_and_time "$MNT/snapshots" "${mount[@]}"
  measure_find coffer "$MNT/latest"
  unmount

  # Mount time against the number of snapshots, in a repository of many small snapshots.
  export COFFER_REPOSITORY=$W/coffer-many
  "$COFFER" init -q
  mkdir -p "$W/tiny"
  for n in $(seq 1 200); do
    echo "$n" > "$W/tiny/counter"
    "$COFFER" backup -q "$W/tiny"
    if [ "$n" = 10 ] || [ "$n" = 200 ]; then
      drop
      mount_and_time "$MNT/snapshots" "$COFFER" mount "$MNT"
      R[coffer:mount_$n]=$MOUNT_SECONDS
      unmount
    fi
  done
  unset COFFER_PASSWORD COFFER_CACHE_DIR COFFER_REPOSITORY
}

run_restic() {
  say restic
  export RESTIC_PASSWORD=$PW RESTIC_CACHE_DIR=$W/restic-cache RESTIC_REPOSITORY=$W/restic-repo
  restic init -q
  restic backup -q "$SMALL" "$BIG"
  drop
  mount_and_time "$MNT/snapshots" restic mount "$MNT"
  R[restic:mount]=$MOUNT_SECONDS
  measure restic "$MNT/snapshots/latest"
  unmount
  mount_and_time "$MNT/snapshots" restic mount "$MNT"
  measure_find restic "$MNT/snapshots/latest"
  unmount
  unset RESTIC_PASSWORD RESTIC_CACHE_DIR RESTIC_REPOSITORY
}

run_borg() {
  say borg
  export BORG_PASSPHRASE=$PW BORG_BASE_DIR=$W/borg-base BORG_DISPLAY_PASSPHRASE=no
  borg init -e repokey "$W/borg-repo" 2>/dev/null
  borg create --compression zstd,3 "$W/borg-repo::a1" "$SMALL" "$BIG"
  drop
  mount_and_time "$MNT/a1" borg mount -f "$W/borg-repo" "$MNT"
  R[borg:mount]=$MOUNT_SECONDS
  # borg stores paths without the leading slash: $MNT/a1/var/tmp/…
  measure borg "$MNT/a1"
  unmount
  mount_and_time "$MNT/a1" borg mount -f "$W/borg-repo" "$MNT"
  measure_find borg "$MNT/a1"
  unmount
  unset BORG_PASSPHRASE BORG_BASE_DIR BORG_DISPLAY_PASSPHRASE
}

for tool in $TOOLS; do "run_$tool"; done

ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
say "results ($( [ $QUICK = 1 ] && echo quick || echo full ): $FILES entries, $(mbps "$BIG_BYTES" 1) MB file)"
printf '%-34s %9s %9s %9s %9s %9s\n' figure coffer restic borg c/restic c/borg
for f in mount read_cold read_warm find find_warm parallel8 rss; do
  case $f in
    mount) label="mount to readable folder (s)" ;;
    read_cold) label="cold sequential read (MB/s)" ;;
    read_warm) label="second read (MB/s)" ;;
    find) label="find over the tree, cold (s)" ;;
    find_warm) label="find again, same mount (s)" ;;
    parallel8) label="8 parallel readers (MB/s)" ;;
    rss) label="peak RSS during the read (MiB)" ;;
  esac
  printf '%-34s %9s %9s %9s %9s %9s\n' "$label" "${R[coffer:$f]:--}" "${R[restic:$f]:--}" "${R[borg:$f]:--}" \
    "$(ratio "${R[coffer:$f]:-}" "${R[restic:$f]:-}")" "$(ratio "${R[coffer:$f]:-}" "${R[borg:$f]:-}")"
done
printf '%-34s %9s\n' "coffer mount, 10 snapshots (s)" "${R[coffer:mount_10]:--}"
printf '%-34s %9s\n' "coffer mount, 200 snapshots (s)" "${R[coffer:mount_200]:--}"

say "targets (issues 3 and 16)"
check() { awk -v v="$2" -v lim="$3" -v op="$4" -v l="$1" 'BEGIN {
  if (v == "" || v == "-") { printf "  ----  %-44s (no figure)\n", l; exit }
  ok = (op == "<=") ? (v + 0 <= lim + 0) : (v + 0 >= lim + 0)
  printf "  %s  %-44s %8s  (target %s %s)\n", ok ? "PASS" : "MISS", l, v, op, lim }'; }
check "mount time, 10 snapshots (s)" "${R[coffer:mount_10]:-}" 0.5 "<="
check "mount time, 200 snapshots (s)" "${R[coffer:mount_200]:-}" 0.5 "<="
check "cold read throughput / restic's" "$(ratio "${R[coffer:read_cold]:-}" "${R[restic:read_cold]:-}")" 3 ">="
check "find, cold / restic's" "$(ratio "${R[coffer:find]:-}" "${R[restic:find]:-}")" 0.2 "<="
check "cold sequential read (MB/s)" "${R[coffer:read_cold]:-}" 1000 ">="
check "find again, same mount (s)" "${R[coffer:find_warm]:-}" 0.2 "<="
check "8 readers / single reader" "$(ratio "${R[coffer:parallel8]:-}" "${R[coffer:read_cold]:-}")" 1 ">="
cache_mib=$(awk -v s="$CACHE_SIZE" 'BEGIN { n = s + 0; if (s ~ /G/) n *= 1024; print n + 64 }')
check "peak RSS <= cache + 64 MiB (MiB)" "${R[coffer:rss]:-}" "$cache_mib" "<="
