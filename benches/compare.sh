#!/usr/bin/env bash
# End-to-end comparison of Coffer with restic and borg (and bupstash when it is installed):
# one run, same data, same machine, one tool after another.
#
#   benches/compare.sh            # /usr/share (copied once) + 1 GiB from a tar of /usr/lib
#   benches/compare.sh --quick    # /usr/share/doc + 256 MiB: a smoke run of a minute or two
#
# Environment:
#   BENCH_DIR          work folder (default /var/tmp/coffer-bench); data copies are kept there
#                      between runs, repositories and restores are deleted
#   COFFER_BIN         use this coffer binary instead of building target/release/coffer
#   BENCH_DROP_CACHES  1 (default): drop the page cache before every timed step, so every figure
#                      is cold (needs root; ignored when it fails). 0: keep caches warm.
#   BENCH_TOOLS        subset to run, e.g. "coffer restic" (default: coffer restic borg bupstash)
#   BENCH_ROUNDS       rounds of every tool's steps, tools interleaved (default 3; --quick 1).
#                      Each figure is the median of its rounds: on a shared virtual machine one
#                      round of the same step varies by 10-30 % with the host's load.
#
# Measured per tool: initial backup of the small-file tree, unchanged re-backup of it, initial
# backup of the large file, restore of each, peak RSS of each backup (/usr/bin/time -v), CPU use,
# and repository size (du -sb). Each data set goes to its own repository so "latest" is never
# ambiguous and sizes are reported per data set. Prints a table with Coffer/peer ratios and
# PASS/MISS against the targets of issue 2 ("Measured"). Timing is wall clock (date +%s.%N).
set -uo pipefail

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (use --quick or nothing)" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/coffer-bench}
DROP=${BENCH_DROP_CACHES:-1}
TOOLS=${BENCH_TOOLS:-coffer restic borg bupstash}
if [ "$QUICK" = 1 ]; then MODE=quick; SMALL_SRC=/usr/share/doc; BIG_MIB=256; ROUNDS=${BENCH_ROUNDS:-1}
else MODE=full; SMALL_SRC=/usr/share; BIG_MIB=1024; ROUNDS=${BENCH_ROUNDS:-3}; fi
DATA=$WORK/data-$MODE
RUN=$WORK/run-$MODE
LOGS=$WORK/logs-$MODE
PW=coffer-bench-password

say() { printf '\n== %s\n' "$*"; }
die() { echo "compare.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
need_apt=()
command -v restic >/dev/null || need_apt+=(restic)
command -v borg >/dev/null || need_apt+=(borgbackup)
[ -x /usr/bin/time ] || need_apt+=(time)
if [ ${#need_apt[@]} -gt 0 ]; then
    say "installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null || die "apt-get install ${need_apt[*]} failed"
fi
BUPSTASH=$(command -v bupstash || { [ -x "$HOME/.cargo/bin/bupstash" ] && echo "$HOME/.cargo/bin/bupstash"; } || true)

mkdir -p "$WORK/bin" "$DATA" "$LOGS"
if [ -n "${COFFER_BIN:-}" ]; then
    [ "$COFFER_BIN" -ef "$WORK/bin/coffer" ] || cp "$COFFER_BIN" "$WORK/bin/coffer"
else
    say "building coffer (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin coffer) || die "cargo build --release failed"
    cp "$ROOT/target/release/coffer" "$WORK/bin/coffer"   # frozen copy: others may rebuild meanwhile
fi
COFFER=$WORK/bin/coffer

active=()
for t in $TOOLS; do
    case $t in
        bupstash) [ -n "$BUPSTASH" ] && active+=(bupstash) || echo "(bupstash not installed: skipped; cargo install bupstash to include it)" ;;
        coffer|restic|borg) active+=("$t") ;;
        *) die "unknown tool $t" ;;
    esac
done

# ---------------------------------------------------------------- data (made once)
SMALL=$DATA/$(basename "$SMALL_SRC")
BIG=$DATA/big.bin
if [ ! -e "$DATA/.small-done" ]; then
    say "copying $SMALL_SRC to $SMALL (once)"
    rm -rf "$SMALL" && cp -a "$SMALL_SRC" "$SMALL" && touch "$DATA/.small-done" || die "copy failed"
fi
if [ ! -e "$DATA/.big-done" ]; then
    say "making $BIG ($BIG_MIB MiB of a tar of /usr/lib, once)"
    tar c /usr/lib 2>/dev/null | head -c "$((BIG_MIB << 20))" > "$BIG"
    [ "$(stat -c %s "$BIG")" = "$((BIG_MIB << 20))" ] && touch "$DATA/.big-done" || die "could not make $BIG"
fi
tree_stats() { # files+dirs+links count, total bytes of regular files
    find "$1" | wc -l | tr -d '\n'; printf ' '
    find "$1" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%d\n", s}'
}
read -r SMALL_COUNT SMALL_BYTES < <(tree_stats "$SMALL")
BIG_BYTES=$(stat -c %s "$BIG")
BIG_SUM=$(cksum < "$BIG")

# ---------------------------------------------------------------- measurement
declare -A R   # R[tool:metric] = seconds; R[tool:metric:rss] = KiB; R[tool:metric:cpu] = %
# Busy CPU seconds of the whole machine so far (all cores; /proc/stat is in USER_HZ ticks).
busy_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / {print ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit}' /proc/stat
}
drop_caches() {
    sync
    [ "$DROP" = 1 ] && { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null
    return 0
}
# step TOOL METRIC CWD CMD...: times CMD (run in CWD) cold, records wall time, peak RSS, CPU%.
step() {
    local tool=$1 metric=$2 cwd=$3; shift 3
    local log=$LOGS/$tool.$metric.log tv=$LOGS/$tool.$metric.time t0 t1 b0 b1 own
    drop_caches
    b0=$(busy_seconds)
    t0=$(date +%s.%N)
    if ! (cd "$cwd" && /usr/bin/time -v -o "$tv" "$@") >"$log" 2>&1; then
        t1=$(date +%s.%N)
        echo "  $tool $metric: FAILED after $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s (log: $log)"
        tail -n 5 "$log" | sed 's/^/    | /'
        R[$tool:$metric]=FAIL
        sync
        return 1
    fi
    t1=$(date +%s.%N)
    b1=$(busy_seconds)
    R[$tool:$metric]=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
    R[$tool:$metric:rss]=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")
    R[$tool:$metric:cpu]=$(awk -F': ' '/Percent of CPU/ {gsub("%","",$2); print $2}' "$tv")
    own=$(awk -F': ' '/User time|System time/ {s += $2} END {print s + 0}' "$tv")
    # CPU that other processes used meanwhile: anything above ~0.1 core means a noisy figure.
    R[$tool:$metric:bg]=$(awk -v b0="$b0" -v b1="$b1" -v o="$own" -v a="$t0" -v b="$t1" \
        'BEGIN { x = (b1 - b0 - o) / (b - a); printf "%.2f", (x < 0 ? 0 : x) }')
    printf '  %-8s %-14s %8s s  %6s MiB peak  %4s%% CPU (100%% = one core)  others: %s cores\n' "$tool" "$metric" \
        "${R[$tool:$metric]}" "$(( ${R[$tool:$metric:rss]:-0} / 1024 ))" "${R[$tool:$metric:cpu]}" "${R[$tool:$metric:bg]}"
    sync   # write-back of restored data is not charged to the next step
}
# verify TOOL WHAT RESTORED_PATH: checks a restore against the source (not timed).
verify() {
    local tool=$1 what=$2 path=$3 got
    if [ "$what" = big ]; then
        got=$(cksum < "$path" 2>/dev/null)
        [ "$got" = "$BIG_SUM" ] && return 0
        echo "  $tool: restored large file DIFFERS from the source"; R[$tool:verify]=BAD
    else
        got=$(tree_stats "$path" 2>/dev/null)
        [ "$got" = "$SMALL_COUNT $SMALL_BYTES" ] && return 0
        echo "  $tool: restored tree differs: entries/bytes $got, source $SMALL_COUNT $SMALL_BYTES"; R[$tool:verify]=BAD
    fi
}
repo_size() { du -sb "$@" 2>/dev/null | awk '{s+=$1} END {print s+0}'; }

run_coffer() {
    local d=$RUN/coffer
    export COFFER_PASSWORD=$PW COFFER_CACHE_DIR=$d/cache
    "$COFFER" -r "$d/small" init >/dev/null && "$COFFER" -r "$d/big" init >/dev/null || { echo "  coffer init failed"; return; }
    step coffer backup_small "$RUN" "$COFFER" -r "$d/small" backup "$SMALL"
    step coffer rebackup_small "$RUN" "$COFFER" -r "$d/small" backup "$SMALL"
    step coffer backup_big "$RUN" "$COFFER" -r "$d/big" backup "$BIG"
    mkdir -p "$d/rs" "$d/rb"
    step coffer restore_big "$RUN" "$COFFER" -r "$d/big" restore latest --target "$d/rb" && verify coffer big "$d/rb$BIG"
    step coffer restore_small "$RUN" "$COFFER" -r "$d/small" restore latest --target "$d/rs" && verify coffer small "$d/rs$SMALL"
    R[coffer:size_small]=$(repo_size "$d/small"); R[coffer:size_big]=$(repo_size "$d/big")
    unset COFFER_PASSWORD COFFER_CACHE_DIR
}

run_restic() {
    local d=$RUN/restic
    export RESTIC_PASSWORD=$PW RESTIC_CACHE_DIR=$d/cache
    restic -q -r "$d/small" init >/dev/null && restic -q -r "$d/big" init >/dev/null || { echo "  restic init failed"; return; }
    step restic backup_small "$RUN" restic -r "$d/small" backup "$SMALL"
    step restic rebackup_small "$RUN" restic -r "$d/small" backup "$SMALL"
    step restic backup_big "$RUN" restic -r "$d/big" backup "$BIG"
    mkdir -p "$d/rs" "$d/rb"
    step restic restore_big "$RUN" restic -r "$d/big" restore latest --target "$d/rb" && verify restic big "$d/rb$BIG"
    step restic restore_small "$RUN" restic -r "$d/small" restore latest --target "$d/rs" && verify restic small "$d/rs$SMALL"
    R[restic:size_small]=$(repo_size "$d/small"); R[restic:size_big]=$(repo_size "$d/big")
    unset RESTIC_PASSWORD RESTIC_CACHE_DIR
}

run_borg() {
    local d=$RUN/borg
    export BORG_PASSPHRASE=$PW BORG_BASE_DIR=$d/base BORG_DISPLAY_PASSPHRASE=no
    borg init -e repokey "$d/small" >/dev/null 2>&1 && borg init -e repokey "$d/big" >/dev/null 2>&1 || { echo "  borg init failed"; return; }
    step borg backup_small "$RUN" borg create --compression zstd,3 "$d/small::s1" "$SMALL"
    step borg rebackup_small "$RUN" borg create --compression zstd,3 "$d/small::s2" "$SMALL"
    step borg backup_big "$RUN" borg create --compression zstd,3 "$d/big::b1" "$BIG"
    mkdir -p "$d/rs" "$d/rb"
    # borg extracts into the current folder, paths without the leading /
    step borg restore_big "$d/rb" borg extract "$d/big::b1" && verify borg big "$d/rb$BIG"
    step borg restore_small "$d/rs" borg extract "$d/small::s2" && verify borg small "$d/rs$SMALL"
    R[borg:size_small]=$(repo_size "$d/small"); R[borg:size_big]=$(repo_size "$d/big")
    unset BORG_PASSPHRASE BORG_BASE_DIR BORG_DISPLAY_PASSPHRASE
}

run_bupstash() {
    local d=$RUN/bupstash
    mkdir -p "$d/cache"
    "$BUPSTASH" new-key -o "$d/key" >/dev/null || { echo "  bupstash new-key failed"; return; }
    export BUPSTASH_KEY=$d/key XDG_CACHE_HOME=$d/cache
    "$BUPSTASH" init -r "$d/small" >/dev/null && "$BUPSTASH" init -r "$d/big" >/dev/null || { echo "  bupstash init failed"; return; }
    step bupstash backup_small "$RUN" "$BUPSTASH" put -q -r "$d/small" --send-log "$d/sendlog" "$SMALL"
    step bupstash rebackup_small "$RUN" "$BUPSTASH" put -q -r "$d/small" --send-log "$d/sendlog" "$SMALL"
    step bupstash backup_big "$RUN" "$BUPSTASH" put -q -r "$d/big" "$BIG"
    mkdir -p "$d/rs" "$d/rb"
    local big_id small_id
    big_id=$("$BUPSTASH" list -r "$d/big" --format=jsonl1 | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p' | tail -n 1)
    small_id=$("$BUPSTASH" list -r "$d/small" --format=jsonl1 | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p' | tail -n 1)
    step bupstash restore_big "$d/rb" sh -c "\"$BUPSTASH\" get -r \"$d/big\" id=$big_id > big.bin" && verify bupstash big "$d/rb/big.bin"
    step bupstash restore_small "$d/rs" "$BUPSTASH" restore -r "$d/small" --into "$d/rs" "id=$small_id" && verify bupstash small "$d/rs"
    R[bupstash:size_small]=$(repo_size "$d/small"); R[bupstash:size_big]=$(repo_size "$d/big")
    unset BUPSTASH_KEY XDG_CACHE_HOME
}

# ---------------------------------------------------------------- run
say "Coffer vs peers ($MODE run, $(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo "machine : $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
echo "disk    : $(df -h "$WORK" | awk 'NR==2 {print $1, $2}') (work dir $WORK)"
echo "tools   : coffer $("$COFFER" --version 2>/dev/null | awk '{print $2}') ($(cd "$ROOT" && git describe --always --dirty 2>/dev/null)) | $(restic version | awk '{print $1, $2}') | $(borg --version)${BUPSTASH:+ | $("$BUPSTASH" version 2>/dev/null | tr '-' ' ')}"
echo "data    : small = copy of $SMALL_SRC: $SMALL_COUNT entries, $SMALL_BYTES bytes ($(awk -v b="$SMALL_BYTES" 'BEGIN{printf "%.0f", b/1048576}') MiB) in regular files"
echo "          big   = $BIG_BYTES bytes ($BIG_MIB MiB) taken from a tar of /usr/lib"
echo "load    : $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at start; other processes' CPU is shown per step"
echo "caches  : $([ "$DROP" = 1 ] && echo "page cache dropped before every timed step (cold)" || echo "warm")"

echo "rounds  : $ROUNDS, tools interleaved; each figure is the median of its rounds"
STEPS="backup_small rebackup_small backup_big restore_big restore_small"
for round in $(seq "$ROUNDS"); do
    for tool in "${active[@]}"; do
        rm -rf "$RUN/$tool"; mkdir -p "$RUN/$tool"
        say "$tool (round $round of $ROUNDS)"
        "run_$tool"
        rm -rf "$RUN/$tool"   # repositories and restores are not kept
        for k in $STEPS; do
            for f in "" :rss :cpu :bg; do R[$tool:$k$f@$round]=${R[$tool:$k$f]:-}; done
        done
    done
done
median() { printf '%s\n' "$@" | grep -E '^[0-9]+(\.[0-9]+)?$' | sort -n | awk '{v[NR]=$1} END {if (NR) print (NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2)}'; }
for t in "${active[@]}"; do
    for k in $STEPS; do
        for f in "" :rss :cpu :bg; do
            vals=(); for round in $(seq "$ROUNDS"); do vals+=("${R[$t:$k$f@$round]:-}"); done
            m=$(median "${vals[@]}"); [ -n "$m" ] && R[$t:$k$f]=$m
        done
        [ "${R[$t:$k]:-}" = FAIL ] || for round in $(seq "$ROUNDS"); do [ "${R[$t:$k@$round]:-}" = FAIL ] && R[$t:$k]=FAIL; done
    done
done

# ---------------------------------------------------------------- report
for t in "${active[@]}"; do
    m=0
    for k in backup_small rebackup_small backup_big; do
        v=${R[$t:$k:rss]:-0}; [ "$v" -gt "$m" ] && m=$v
    done
    R[$t:peak_rss]=$(awk -v k="$m" 'BEGIN{printf "%.0f", k/1024}')   # MiB
    if [ -n "${R[$t:size_small]:-}" ]; then
        R[$t:size_total]=$(( ${R[$t:size_small]} + ${R[$t:size_big]} ))
    fi
done
is_num() { [[ "${1:-}" =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
ratio() { # a b [decimals]
    is_num "$1" && is_num "$2" && awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN{ if (b > 0) printf "%.*f", d, a/b; else print "-" }' || echo "-"
}
mib() { is_num "$1" && awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}' || echo "${1:--}"; }

rows="backup_small rebackup_small backup_big restore_big restore_small peak_rss size_small size_big size_total"
label() {
    case $1 in
        backup_small) echo "backup small tree (s)" ;; rebackup_small) echo "re-backup unchanged (s)" ;;
        backup_big) echo "backup large file (s)" ;; restore_big) echo "restore large file (s)" ;;
        restore_small) echo "restore small tree (s)" ;; peak_rss) echo "peak RSS of backups (MiB)" ;;
        size_small) echo "repo size small (MiB)" ;; size_big) echo "repo size large (MiB)" ;;
        size_total) echo "repo size total (MiB)" ;;
    esac
}
val() { case $2 in size_*) mib "${R[$1:$2]:-}" ;; *) echo "${R[$1:$2]:--}" ;; esac; }

say "results ($MODE)"
hdr=$(printf '%-27s' "figure"); for t in "${active[@]}"; do hdr+=$(printf ' %9s' "$t"); done
has() { [[ " ${active[*]} " == *" $1 "* ]]; }
has restic && hdr+=$(printf ' %8s' "c/restic"); has borg && hdr+=$(printf ' %8s' "c/borg"); has bupstash && hdr+=$(printf ' %8s' "c/bupst")
echo "$hdr"; echo "$hdr" | sed 's/./-/g'
for r in $rows; do
    line=$(printf '%-27s' "$(label "$r")")
    for t in "${active[@]}"; do line+=$(printf ' %9s' "$(val "$t" "$r")"); done
    for p in restic borg bupstash; do
        has "$p" && line+=$(printf ' %8s' "$(ratio "${R[coffer:$r]:-}" "${R[$p:$r]:-}")")
    done
    echo "$line"
done
cpu_line=$(printf '%-27s' "CPU % (backup small/big)")
for t in "${active[@]}"; do cpu_line+=$(printf ' %9s' "${R[$t:backup_small:cpu]:--}/${R[$t:backup_big:cpu]:--}"); done
echo "$cpu_line"
noisy=$(for k in "${!R[@]}"; do [[ $k == *:bg ]] && awk -v x="${R[$k]}" 'BEGIN{exit !(x > 0.15)}' && echo "${k%:bg}"; done | sort | tr '\n' ' ')
[ -n "$noisy" ] && echo "NOTE: other processes used > 0.15 core during: $noisy-- those figures are perturbed; rerun on a quiet machine"
for t in "${active[@]}"; do [ "${R[$t:verify]:-}" = BAD ] && echo "WARNING: $t restored data that differs from the source"; done

say "targets (issue 2, Coffer/restic unless noted)"
misses=0
check() { # label value limit
    local v=$2 verdict
    if ! is_num "$v"; then verdict="n/a "
    elif awk -v v="$v" -v l="$3" 'BEGIN{exit !(v <= l)}'; then verdict=PASS
    else verdict=MISS; misses=$((misses + 1)); fi
    printf '  %s  %-44s %6s  (target <= %s)\n' "$verdict" "$1" "$v" "$3"
}
if has coffer && has restic; then
    check "initial backup, small-file tree" "$(ratio "${R[coffer:backup_small]:-}" "${R[restic:backup_small]:-}")" 0.45
    check "initial backup, large file" "$(ratio "${R[coffer:backup_big]:-}" "${R[restic:backup_big]:-}")" 0.4
    check "re-backup of the unchanged tree" "$(ratio "${R[coffer:rebackup_small]:-}" "${R[restic:rebackup_small]:-}")" 0.2
    check "restore, large file" "$(ratio "${R[coffer:restore_big]:-}" "${R[restic:restore_big]:-}")" 0.6
    check "restore, small-file tree" "$(ratio "${R[coffer:restore_small]:-}" "${R[restic:restore_small]:-}")" 0.6
    check "peak memory of backup" "$(ratio "${R[coffer:peak_rss]:-}" "${R[restic:peak_rss]:-}")" 0.5
fi
if has coffer && has restic && has borg; then
    for s in size_small size_big size_total; do
        a=${R[restic:$s]:-}; b=${R[borg:$s]:-}
        if is_num "$a" && is_num "$b"; then m=$(( a < b ? a : b )); else m=; fi
        check "$(label "$s" | sed 's/ (MiB)//') / min(restic, borg)" "$(ratio "${R[coffer:$s]:-}" "$m" 3)" 1.0
    done
fi
if has coffer && has bupstash; then
    echo "  (aim, not a gate) beat bupstash:"
    for k in backup_small rebackup_small backup_big; do
        printf '         %-44s %6s  (aim < 1.0)\n' "$(label "$k") vs bupstash" "$(ratio "${R[coffer:$k]:-}" "${R[bupstash:$k]:-}")"
    done
fi
echo
echo "logs and /usr/bin/time -v output: $LOGS"
rm -rf "$RUN"
[ "$misses" = 0 ]
