//! Fuzz target: a request path (decode_path -> encode_key -> decode_path is stable).
//! The properties live in `edgemirror_proto::fuzz::path`, which the corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edgemirror_proto::fuzz::path(data));
