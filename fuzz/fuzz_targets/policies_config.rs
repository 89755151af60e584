//! policies.yml and sources.yml parsing: any text gives a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = api_types::config::PoliciesConfig::parse(text);
        let _ = api_types::config::SourcesConfig::parse(text);
    }
});
