//! Reading the `io.kubewarden.metadata` section of arbitrary bytes: a metadata value or an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(metadata) = policy_evaluator::metadata::Metadata::required_from_module(data) {
        let _ = metadata.validate();
    }
});
