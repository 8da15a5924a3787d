//! Fuzzes the SQL script splitter a dump is restored through: the properties are
//! `devdb_restore_script::check_fuzzed_properties` (its seed corpus is replayed by the crate's
//! tests on every run).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| devdb_restore_script::check_fuzzed_properties(data));
