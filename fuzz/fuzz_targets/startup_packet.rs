//! Fuzzes the parser of a client's first packet and of backend message framing: the properties
//! are `devdb_proxy_protocol::check_fuzzed_properties` (its seed corpus is replayed by the crate's
//! tests on every run).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| devdb_proxy_protocol::check_fuzzed_properties(data));
