//! Fuzz target: a request head (parse, spans, prefixes, encode -> parse).
//! The properties live in `edgemirror_proto::fuzz::request_head`, which the corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edgemirror_proto::fuzz::request_head(data));
