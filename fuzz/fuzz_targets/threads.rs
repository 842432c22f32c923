//! A fuzz-chosen script run by 2-3 threads against one store; the harness in
//! `tests/model/threads.rs` checks one execution per key per lease, that
//! each key's tokens grow, and that every waiter is answered within its
//! deadline.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

fuzz_target!(|script: model::threads::Script| {
    model::threads::run_script(&script);
});
