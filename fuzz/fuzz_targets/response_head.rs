//! Fuzz target: a response head (parse, spans, framing, encode -> parse).
//! The properties live in `edgemirror_proto::fuzz::response_head`, which the corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edgemirror_proto::fuzz::response_head(data));
