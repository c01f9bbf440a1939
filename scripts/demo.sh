#!/usr/bin/env bash
# A real backup on this machine, start to finish, in a throwaway folder:
# init a repository, back up a folder twice (the second run reads nothing unchanged),
# list, restore, compare with the original, check, stats.
#   cargo build --release && scripts/demo.sh [FOLDER]      (default: /usr/share/doc)
# KEEP=1 keeps the repository and the restored copy; COFFER=path/to/coffer picks the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC="$(realpath "${1:-/usr/share/doc}")"
COFFER="${COFFER:-$PWD/target/release/coffer}"
[ -x "$COFFER" ] || { echo "no binary at $COFFER: run 'cargo build --release' first" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/coffer-demo.XXXXXX")"
MNT="$WORK/mnt"
cleanup() {
  if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"; fi
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

export COFFER_REPOSITORY="$WORK/repo"
export COFFER_CACHE_DIR="$WORK/cache"
# A demo password in a 0600 file (never on the command line).
install -m 600 /dev/null "$WORK/password"
echo "demo-password-$(date +%s)" > "$WORK/password"
export COFFER_PASSWORD_FILE="$WORK/password"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "coffer $*"; "$COFFER" "$@"; }

run init
step "time coffer backup $SRC"
time "$COFFER" backup "$SRC"
step "time coffer backup $SRC   # again: unchanged files are not read"
time "$COFFER" backup "$SRC"
run snapshots
step "coffer ls latest | head"
"$COFFER" ls latest | head -n 15 || true
step "time coffer restore latest --target $WORK/restore"
time "$COFFER" restore latest --target "$WORK/restore"
step "diff -r $SRC $WORK/restore$SRC"
if diff -r --no-dereference "$SRC" "$WORK/restore$SRC"; then
  echo "restored copy is identical to $SRC"
else
  echo "restored copy DIFFERS from $SRC" >&2
  exit 1
fi
run check --read-data
run stats

# Browse the backups as a folder: mount, copy a file out, compare, unmount.
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null; then
  mkdir -p "$MNT"
  step "coffer mount $MNT &   # every snapshot as a read-only folder"
  "$COFFER" mount "$MNT" &
  MOUNT_PID=$!
  for _ in $(seq 50); do [ -L "$MNT/latest" ] && break; sleep 0.1; done
  step "ls $MNT $MNT/snapshots"
  ls "$MNT" "$MNT/snapshots"
  step "diff -r $SRC $MNT/latest$SRC"
  if diff -r --no-dereference "$SRC" "$MNT/latest$SRC" >/dev/null; then
    echo "the mounted snapshot is identical to $SRC"
  else
    echo "the mounted snapshot DIFFERS from $SRC" >&2
    exit 1
  fi
  step "fusermount3 -u $MNT"
  fusermount3 -u "$MNT"
  wait $MOUNT_PID
else
  echo "(no /dev/fuse or fusermount3: skipping the mount; apt-get install fuse3)"
fi
FIRST="$("$COFFER" snapshots --json | grep -oE '"short_id" *: *"[0-9a-f]+"' | head -n 1 | grep -oE '[0-9a-f]{8}"$' | tr -d '"')"
run diff "$FIRST" latest

echo
echo "repository: $COFFER_REPOSITORY   ($(du -sh "$COFFER_REPOSITORY" | cut -f1) for $(du -sh "$SRC" | cut -f1) of source)"
[ "${KEEP:-0}" = 1 ] && echo "kept in $WORK" || echo "(KEEP=1 keeps $WORK)"
