#!/usr/bin/env bash
# Fuzzes the parsers that meet hostile input first: the proxy's first-packet and backend-framing
# parsers (startup_packet) and the SQL script splitter dumps are restored through (sql_script),
# for a bounded time, split between them.
#   usage: fuzz/run.sh [SECONDS]   (default 60, in all)
# Exits non-zero, leaving the input under fuzz/artifacts/, if any input panics.
# New inputs the fuzzer discovers go to a scratch directory; the committed seeds stay as they are.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

targets=(startup_packet sql_script)
each=$(( seconds / ${#targets[@]} ))
(( each > 0 )) || each=1
for target in "${targets[@]}"; do
    scratch=$(mktemp -d)
    # AddressSanitizer needs a nightly compiler; the parsers are safe Rust, so the stable
    # compiler builds the coverage-instrumented target without it.
    cargo fuzz run --sanitizer none "$target" "$scratch" "corpus/$target" -- -max_total_time="$each"
    rm -rf "$scratch"
done
