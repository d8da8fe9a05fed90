//! Fuzz target: a Range header value (resolved ranges in bounds, canonical form resolves the same).
//! The properties live in `edgemirror_proto::fuzz::range`, which the corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edgemirror_proto::fuzz::range(data));
