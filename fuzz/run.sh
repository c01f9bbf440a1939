#!/usr/bin/env bash
# Runs the fuzz targets one after another, then minimises each corpus into fuzz/corpus/<target>
# (which tests/fuzz_corpus.rs replays in CI).
#   fuzz/run.sh                 # every target, 10 minutes each
#   fuzz/run.sh 60 blob tree    # these targets, 60 s each
# Needs a nightly toolchain (`rustup toolchain install nightly`) and `cargo install cargo-fuzz`.
# A crash stops that target's run; its input is in fuzz/artifacts/<target>/ (replay it with
# `cargo +nightly fuzz run -s none <target> <file>`). The script goes on with the next target
# and exits non-zero at the end.
set -uo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
keep=${COFFER_FUZZ_KEEP:-40}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(pack blob index tree snapshot keyfile config signer plan writeonlykey anchors)
fi
# Instrumentation without a sanitizer: the decoders are safe Rust; what we look for is
# panics, aborts, overflows (debug assertions are on) and unbounded allocations.
flags=(-s none -a)
cargo +nightly fuzz build "${flags[@]}" || exit 1
bin=target/x86_64-unknown-linux-gnu/release
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t: ${seconds}s"
  if ! nice -n 19 "$bin/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 "corpus/$t" 2>&1 | tail -n 25; then
    failed=1
  fi
  rm -rf "corpus-min/$t" && mkdir -p "corpus-min/$t"
  "$bin/$t" -set_cover_merge=1 "corpus-min/$t" "corpus/$t" >/dev/null 2>&1 &&
    rm -rf "corpus/$t" && mv "corpus-min/$t" "corpus/$t"
  # The committed corpus stays small: the seeds plus at most $keep others (names are content
  # hashes, so which ones is arbitrary but stable).
  ls "corpus/$t" | grep -v '^seed-' | sort | tail -n +$((keep + 1)) | sed "s|^|corpus/$t/|" | xargs -r rm -f
  echo "== $t: corpus $(ls "corpus/$t" | wc -l) files"
done
rm -rf corpus-min
exit $failed
