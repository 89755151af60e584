//! `cargo xtask fuzz [--seconds N]`: builds the cargo-fuzz targets in `fuzz/` (libFuzzer,
//! `-s none` so the stable toolchain works), seeds each corpus from the test fixtures and runs
//! every target for N seconds. A crash stops the run and leaves the input in
//! `fuzz/artifacts/<target>/`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::progress::run_step;

/// Targets and the fixtures their corpus starts from.
const TARGETS: &[(&str, &[&str])] = &[
    (
        "policies_config",
        &[
            "crates/api-types/tests/fixtures/policies.yml",
            "crates/api-types/tests/fixtures/policies-handwritten.yml",
            "crates/api-types/tests/fixtures/sources.yml",
            "demo/policies.yml",
        ],
    ),
    (
        "metadata_section",
        &[
            "crates/policy-evaluator/tests/fixtures/accept-all.wasm",
            "crates/policy-evaluator/tests/fixtures/reject-by-label.wasm",
        ],
    ),
    ("json_patch", &[]),
    ("admission_review", &[]),
];

/// Seeds of the JSON Patch target: original and mutated document, NUL-separated.
const PATCH_SEEDS: &[(&str, &str)] = &[
    (
        r#"{"metadata":{"name":"p","labels":{"a":"1"}},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
        r#"{"metadata":{"name":"p","labels":{"a":"1","kubewarden.io/mutated":"true"}},"spec":{"containers":[{"name":"c","image":"j"},{"name":"d"}]}}"#,
    ),
    (r#"[1,2,{"a/b":"~"}]"#, r#"[2,{"a/b":"~1","c~d":null}]"#),
];

/// Seeds of the AdmissionReview target: a review and a guest's answer.
const REVIEW_SEEDS: &[(&str, &str)] = &[
    (
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"default","object":{"metadata":{"name":"p","labels":{"a":"1"}}}}}"#,
        r#"{"accepted":false,"message":"label a is not allowed","code":403}"#,
    ),
    (
        r#"{"request":{"uid":"u-2","operation":"UPDATE","object":{"metadata":{"name":"p"}},"oldObject":{"metadata":{"name":"p"}}}}"#,
        r#"{"accepted":true,"mutated_object":{"metadata":{"name":"p","labels":{"m":"1"}}},"warnings":["w"]}"#,
    ),
    (
        r#"{"request":{"uid":"u-3","operation":"DELETE","object":null}}"#,
        r#"{"accepted":true,"mutated_object":{"a":1},"audit_annotations":{"k":"v"}}"#,
    ),
    (r#"{"request":{"uid":"u-4"}}"#, r#"{"accepted":true}"#),
];

pub fn run(root: &Path, seconds: u32) -> Result<()> {
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_err()
    {
        bail!("cargo-fuzz is missing: cargo install cargo-fuzz --locked");
    }
    let fuzz = root.join("fuzz");
    run_step(
        "building the fuzz targets (cargo fuzz build -s none -O)",
        Command::new("cargo")
            .current_dir(&fuzz)
            .args(["fuzz", "build", "-s", "none", "-O"]),
    )?;
    for (target, seeds) in TARGETS {
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        for seed in *seeds {
            let source = root.join(seed);
            let name = source.file_name().context("seed file name")?;
            std::fs::copy(&source, corpus.join(name))
                .with_context(|| format!("seeding from {}", source.display()))?;
        }
        let generated: Vec<String> = match *target {
            "json_patch" => PATCH_SEEDS
                .iter()
                .map(|(original, mutated)| format!("{original}\0{mutated}"))
                .collect(),
            // Flags (monitor, may mutate, custom message), AdmissionReview, NUL, guest answer.
            "admission_review" => REVIEW_SEEDS
                .iter()
                .enumerate()
                .map(|(flags, (review, answer))| {
                    format!("{}{review}\0{answer}", flags as u8 as char)
                })
                .collect(),
            _ => Vec::new(),
        };
        for (index, seed) in generated.iter().enumerate() {
            std::fs::write(corpus.join(format!("seed-{index}")), seed)?;
        }
        run_step(
            &format!("fuzzing {target} for {seconds} s"),
            Command::new("cargo")
                .current_dir(&fuzz)
                .args(["fuzz", "run", "-s", "none", "-O", target])
                .arg(&corpus)
                .args([
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-max_len=200000",
                    "-print_final_stats=1",
                ]),
        )?;
    }
    Ok(())
}
