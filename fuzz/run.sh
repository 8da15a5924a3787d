#!/usr/bin/env bash
# Fuzzes the parsers that meet hostile input first: the proxy's first-packet and backend-framing
# parsers (startup_packet) and the SQL script splitter dumps are restored through (sql_script),
# for a bounded time, split between them.
#   usage: fuzz/run.sh [SECONDS]   (default 60, in all)
# Exits non-zero, leaving the input under fuzz/artifacts/<target>/, if any input panics.
# New inputs the fuzzer discovers go to a scratch directory; the committed seeds stay as they are.
#
# The targets are built the way `cargo fuzz build --sanitizer none` builds them (libFuzzer with
# coverage instrumentation; no AddressSanitizer, which needs a nightly compiler: the parsers are
# safe Rust), with cargo itself, so nothing has to be installed first. `cargo fuzz run` works too.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"

host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing -Cdebug-assertions"
cargo build --release --locked --target "$host" --bins

targets=(startup_packet sql_script)
each=$(( seconds / ${#targets[@]} ))
(( each > 0 )) || each=1
for target in "${targets[@]}"; do
    scratch=$(mktemp -d)
    mkdir -p "artifacts/$target"
    "target/$host/release/$target" -max_total_time="$each" -artifact_prefix="artifacts/$target/" \
        "$scratch" "corpus/$target"
    rm -rf "$scratch"
done
