//! `cargo xtask policies`: builds the test policies in `policies/` (Rust waPC guests, Go WASI
//! commands and a Go waPC reactor, JavaScript on QuickJS as a WASI command, and Rego for the
//! OPA and Gatekeeper modes) and writes them, annotated with their metadata section, to
//! `crates/policy-evaluator/tests/fixtures/`.
//!
//! The JavaScript guest is compiled with zig (PyPI's `ziglang`) from QuickJS's C sources
//! (quickjs-ng, from the PyPI sdist of its Python binding, checked by SHA-256): Javy itself
//! cannot be built here.
//!
//! Rego is compiled by `opa build -t wasm`, with opa built from its Go module (once).
//!
//! rustup cannot add wasm targets on our machines, so the guests are built with Debian's rustc
//! (`apt-get install rustc cargo libstd-rust-dev-wasm32 lld-14`). Debian's cargo cannot read
//! the crates.io index here, so dependencies are vendored first with the rustup cargo.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use api_types::metadata::{Metadata, annotate};

use crate::paths::cache_root;
use crate::progress::run_step;

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const TARGET: &str = "wasm32-unknown-unknown";
/// Rust guest crates (waPC), by directory; each becomes `<name>.wasm`.
const RUST_POLICIES: &[&str] = &[
    "accept-all",
    "safe-labels",
    "reject-by-label",
    "mutate-add-label",
    "hostile",
    "namespace-label",
    "dns-lookup",
    "host-call",
];
/// A Go guest (`GOOS=wasip1`), by directory: a WASI command (the WASI execution mode), or a
/// WASI reactor (`-buildmode=c-shared`) exporting waPC's `__guest_call` with `go:wasmexport`.
struct GoPolicy {
    directory: &'static str,
    reactor: bool,
}

const GO_POLICIES: &[GoPolicy] = &[
    GoPolicy {
        directory: "wasi-go",
        reactor: false,
    },
    GoPolicy {
        directory: "go-wapc-pod-privileged",
        reactor: true,
    },
];
/// A Rego fixture: the module `opa build` makes of a directory with one entrypoint (it becomes
/// id 0).
struct RegoPolicy {
    fixture: &'static str,
    directory: &'static str,
    entrypoint: &'static str,
}

const fn rego(
    fixture: &'static str,
    directory: &'static str,
    entrypoint: &'static str,
) -> RegoPolicy {
    RegoPolicy {
        fixture,
        directory,
        entrypoint,
    }
}

const REGO_POLICIES: &[RegoPolicy] = &[
    rego("opa-reject-by-label", "opa-reject-by-label", "policy/main"),
    rego(
        "gatekeeper-reject-by-label",
        "gatekeeper-reject-by-label",
        "k8sdeniedlabels/violation",
    ),
    rego("opa-namespace-label", "opa-namespace-label", "policy/main"),
    rego(
        "gatekeeper-namespace-label",
        "gatekeeper-namespace-label",
        "k8snamespacelabel/violation",
    ),
    rego(
        "gatekeeper-required-labels",
        "gatekeeper-required-labels",
        "k8srequiredlabels/violation",
    ),
    rego(
        "gatekeeper-pod-security",
        "gatekeeper-pod-security",
        "k8spodsecurity/violation",
    ),
    // The package as entrypoint: its result is an object holding the violations, which
    // upstream's Gatekeeper runtime reads as none.
    rego(
        "gatekeeper-required-labels-package",
        "gatekeeper-required-labels",
        "k8srequiredlabels",
    ),
];

/// The JavaScript guest, by directory: `main.c` (the WASI command) and `policy.js`.
const JS_POLICY: &str = "js-quickjs";
const ZIG: &str = "ziglang==0.14.1";
const QUICKJS: &str = "quickjs-ng==0.17.0.2";
const QUICKJS_SDIST: &str = "quickjs_ng-0.17.0.2";
const QUICKJS_SDIST_SHA256: &str =
    "43d2e48272208721a7aaea8e3f02d4b9318f12ef20cc4f5421b59d9a470706ef";
/// QuickJS's own sources, in the sdist's `upstream-quickjs/`.
const QUICKJS_SOURCES: [&str; 4] = ["quickjs.c", "libregexp.c", "libunicode.c", "dtoa.c"];

/// Compiles `policies/js-quickjs` to a WASI command: QuickJS and `main.c`, with `policy.js`
/// embedded as a C array.
fn build_js_policy(workspace: &Path, target_dir: &Path) -> Result<PathBuf> {
    let tools = cache_root().join("tools");
    let zig_dir = tools.join(ZIG.replace("==", "-"));
    let zig = zig_dir.join("ziglang").join("zig");
    if !zig.is_file() {
        run_step(
            &format!("installing zig from PyPI ({ZIG})"),
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
                .arg(&zig_dir)
                .arg(ZIG),
        )?;
    }
    let sources = tools.join(QUICKJS_SDIST);
    let tarball = sources.join(format!("{QUICKJS_SDIST}.tar.gz"));
    if !tarball.is_file() {
        run_step(
            &format!("downloading QuickJS's C sources (the {QUICKJS} sdist from PyPI)"),
            Command::new("python3")
                .args(["-m", "pip", "download", "--quiet", "--no-deps"])
                .args(["--no-binary", ":all:", "-d"])
                .arg(&sources)
                .arg(QUICKJS),
        )?;
    }
    let digest = Command::new("sha256sum")
        .arg(&tarball)
        .output()
        .context("running sha256sum")?;
    let digest = String::from_utf8_lossy(&digest.stdout);
    if digest.split_whitespace().next() != Some(QUICKJS_SDIST_SHA256) {
        bail!(
            "{} has SHA-256 {digest}, not {QUICKJS_SDIST_SHA256}: remove it to download it again",
            tarball.display()
        );
    }
    run_step(
        "extracting QuickJS",
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&sources),
    )?;
    let quickjs = sources.join(QUICKJS_SDIST).join("upstream-quickjs");
    let out_dir = target_dir.join(JS_POLICY);
    fs::create_dir_all(&out_dir)?;
    let script_path = workspace.join(JS_POLICY).join("policy.js");
    let script =
        fs::read(&script_path).with_context(|| format!("reading {}", script_path.display()))?;
    let bytes: Vec<String> = script.iter().map(u8::to_string).collect();
    fs::write(
        out_dir.join("policy_js.h"),
        format!(
            "static const unsigned char policy_js[] = {{{}}};\nstatic const unsigned int policy_js_len = {};\n",
            bytes.join(","),
            script.len()
        ),
    )?;
    let wasm = out_dir.join(format!("{JS_POLICY}.wasm"));
    run_step(
        &format!("compiling {JS_POLICY} with zig cc (QuickJS, wasm32-wasi)"),
        Command::new(&zig)
            .args([
                "cc",
                "-target",
                "wasm32-wasi",
                "-O2",
                "-g0",
                "-Wl,--strip-all",
            ])
            .args(["-DNDEBUG", "-D_GNU_SOURCE"])
            .arg(format!("-I{}", quickjs.display()))
            .arg(format!("-I{}", out_dir.display()))
            .arg(workspace.join(JS_POLICY).join("main.c"))
            .args(QUICKJS_SOURCES.map(|source| quickjs.join(source)))
            .arg("-lm")
            .arg("-o")
            .arg(&wasm),
    )?;
    Ok(wasm)
}

pub fn run(root: &Path) -> Result<()> {
    for tool in [DEBIAN_RUSTC, DEBIAN_CARGO] {
        if !Path::new(tool).is_file() {
            bail!(
                "{tool} is missing: install Debian's Rust with the wasm32 standard library: apt-get install rustc cargo libstd-rust-dev-wasm32 lld-14"
            );
        }
    }
    let workspace = root.join("policies");
    let vendor = cache_root().join("policies-vendor");
    let target_dir = cache_root().join("policies-target");
    run_step(
        "vendoring the policies' dependencies",
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&workspace)
            .args(["vendor", "--locked", "--quiet"])
            .arg(&vendor)
            .stdout(std::process::Stdio::null()),
    )?;
    run_step(
        "building the test policies with Debian's rustc",
        Command::new(DEBIAN_CARGO)
            .current_dir(&workspace)
            .env("RUSTC", DEBIAN_RUSTC)
            .args([
                "build",
                "--offline",
                "--release",
                "--target",
                TARGET,
                "--target-dir",
            ])
            .arg(&target_dir)
            .args([
                "--config",
                "source.crates-io.replace-with=\"vendored-sources\"",
                "--config",
            ])
            .arg(format!(
                "source.vendored-sources.directory=\"{}\"",
                vendor.display()
            )),
    )?;
    let mut built = Vec::new();
    for policy in RUST_POLICIES {
        let wasm = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", policy.replace('-', "_")));
        built.push((*policy, *policy, wasm));
    }
    for policy in GO_POLICIES {
        let name = policy.directory;
        let wasm = target_dir.join(format!("{name}.wasm"));
        let build_mode = if policy.reactor {
            "-buildmode=c-shared"
        } else {
            "-buildmode=default"
        };
        run_step(
            &format!("building {name} with Go (GOOS=wasip1 {build_mode})"),
            Command::new("go")
                .current_dir(workspace.join(name))
                .env("GOOS", "wasip1")
                .env("GOARCH", "wasm")
                .env("CGO_ENABLED", "0")
                .args([
                    "build",
                    build_mode,
                    "-trimpath",
                    "-ldflags",
                    "-s -w -buildid=",
                    "-o",
                ])
                .arg(&wasm)
                .arg("."),
        )?;
        built.push((name, name, wasm));
    }
    built.push((
        JS_POLICY,
        JS_POLICY,
        build_js_policy(&workspace, &target_dir)?,
    ));
    let opa = crate::go_tool::OPA.ensure()?;
    for policy in REGO_POLICIES {
        let out_dir = target_dir.join("rego").join(policy.fixture);
        fs::create_dir_all(&out_dir)?;
        let bundle = out_dir.join("bundle.tar.gz");
        run_step(
            &format!(
                "compiling {} with opa build -t wasm -e {}",
                policy.directory, policy.entrypoint
            ),
            Command::new(&opa)
                .args(["build", "-t", "wasm", "-e", policy.entrypoint, "-o"])
                .arg(&bundle)
                .arg(workspace.join(policy.directory)),
        )?;
        run_step(
            &format!("extracting {}'s policy.wasm", policy.fixture),
            Command::new("tar")
                .arg("-xzf")
                .arg(&bundle)
                .arg("-C")
                .arg(&out_dir)
                .arg("/policy.wasm"),
        )?;
        built.push((
            policy.fixture,
            policy.directory,
            out_dir.join("policy.wasm"),
        ));
    }
    let fixtures = root.join("crates/policy-evaluator/tests/fixtures");
    fs::create_dir_all(&fixtures)?;
    for (fixture, directory, built) in built {
        let metadata_path = workspace.join(directory).join("metadata.json");
        let metadata: Metadata = serde_json::from_str(
            &fs::read_to_string(&metadata_path)
                .with_context(|| format!("reading {}", metadata_path.display()))?,
        )
        .with_context(|| format!("parsing {}", metadata_path.display()))?;
        metadata
            .validate()
            .with_context(|| format!("{}", metadata_path.display()))?;
        let wasm = fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
        let annotated = annotate(&wasm, &metadata)?;
        let out = fixtures.join(format!("{fixture}.wasm"));
        fs::write(&out, &annotated).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {} ({} bytes)", out.display(), annotated.len());
    }
    Ok(())
}
