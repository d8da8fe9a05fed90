//! Fuzz target: a chunked body (one go vs two pieces vs byte by byte, re-chunking).
//! The properties live in `edgemirror_proto::fuzz::chunked`, which the corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edgemirror_proto::fuzz::chunked(data));
