//! Fuzz target: a pipelined request or response stream (split, canonicalise, split again).
//! The properties live in `edgemirror_proto::fuzz::round_trip`, which the corpus replay test runs too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edgemirror_proto::fuzz::round_trip(data));
