//! Differential fuzzing: an arbitrary sequence of operations on `u8` keys
//! runs against a store on a manual clock and against the sequential model
//! in `tests/model/mod.rs`; any divergence panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

fuzz_target!(|input: (model::Setup, Vec<model::Op>)| {
    let (setup, ops) = input;
    model::run_ops(setup, &ops);
});
