#!/usr/bin/env bash
# Fuzzes the proxy's first-packet and backend-framing parsers for a bounded time.
#   usage: proxy/fuzz/run.sh [SECONDS]   (default 60)
# Exits non-zero, leaving the input under proxy/fuzz/artifacts/, if any input panics.
# New inputs the fuzzer discovers go to a scratch directory; the committed seeds stay as they are.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# AddressSanitizer needs a nightly compiler; the parsers are safe Rust, so the stable compiler
# builds the coverage-instrumented target without it.
cargo fuzz run --sanitizer none startup_packet "$scratch" corpus/startup_packet \
    -- -max_total_time="$seconds"
