//! The JSON Patch of a mutation: for any two JSON documents (split at the first NUL byte), the
//! patch the evaluator sends applied to the original gives the mutated document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_evaluator::response::{AdmissionResponse, ValidationResponse};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(original), Ok(mutated)) = (
        serde_json::from_slice::<Value>(&data[..split]),
        serde_json::from_slice::<Value>(&data[split + 1..]),
    ) else {
        return;
    };
    if original.is_null() {
        return;
    }
    let answer = ValidationResponse {
        accepted: true,
        mutated_object: Some(mutated.clone()),
        ..Default::default()
    };
    let response = AdmissionResponse::from_validation("fuzz", &original, answer);
    let mut patched = original.clone();
    if let Some(patch) = response.decoded_patch() {
        let patch: json_patch::Patch = serde_json::from_value(patch).expect("a JSON Patch");
        json_patch::patch(&mut patched, &patch).expect("the patch applies");
    }
    assert_eq!(patched, mutated, "patch of {original} into {mutated}");
});
