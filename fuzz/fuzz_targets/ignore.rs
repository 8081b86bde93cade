#![no_main]
//! Fuzz target: see fuzz/README.md and fuzz/src/exercise.rs.

#[path = "../src/exercise.rs"]
mod exercise;

libfuzzer_sys::fuzz_target!(|data: &[u8]| exercise::ignore(data));
