//! Part of `cargo xtask bench`: how long a policy edit takes to reach the verdicts with 20
//! policies loaded, restarting the policy-server (what every pod of a rollout goes through,
//! without the scheduling, image, kubelet and readiness-probe delays a cluster adds) against
//! reloading in place (`--reload-policies`), and the memory the in-place switch takes.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::demo::pod_review;
use crate::local_server::{LocalPolicyServer, post_insecure};

/// Edits measured in each mode; the report gives their median.
const EDITS: usize = 5;
/// How long one edit may take to reach the verdicts.
const EDIT_DEADLINE: Duration = Duration::from_secs(60);

/// What the measurement found.
#[derive(Debug)]
pub struct ReloadNumbers {
    pub restart: Vec<Duration>,
    pub in_place: Vec<Duration>,
    /// Resident memory of the reloading server before the edits, in KiB.
    pub rss_before_kib: u64,
    /// The highest resident memory during an in-place switch, in KiB.
    pub peak_during_switch_kib: u64,
    /// Resident memory after the last switch, in KiB.
    pub rss_after_kib: u64,
}

/// A policies.yml with 19 distinct accept-all modules (`variants`, from the start-up
/// benchmark) and `edited`, a reject-by-label policy refusing `label`.
fn policies_text(variants: &[String], fixtures: &Path, label: &str) -> Result<String> {
    let mut yaml = String::new();
    for (i, module) in variants.iter().take(19).enumerate() {
        writeln!(yaml, "p{i}:\n  module: file://{module}")?;
    }
    writeln!(
        yaml,
        "edited:\n  module: file://{}/reject-by-label.wasm\n  settings: {{denied_labels: [{label}]}}",
        fixtures.display()
    )?;
    Ok(yaml)
}

/// Whether the server on `port` refuses a pod labelled `label` through `edited`.
fn refuses(port: u16, label: &str) -> Result<bool> {
    let body = pod_review("bench", &format!(r#"{{"{label}":"x"}}"#));
    let answer = post_insecure(port, "/validate/edited", &body)?;
    Ok(answer["response"]["allowed"] == false)
}

/// Polls until the server refuses `label`; the time since `since`.
fn until_refused(port: u16, label: &str, since: Instant) -> Result<Duration> {
    loop {
        if refuses(port, label)? {
            return Ok(since.elapsed());
        }
        if since.elapsed() > EDIT_DEADLINE {
            bail!("the edit refusing {label} was not served within {EDIT_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `text` over `path` whole (beside it, then renamed), as the kubelet swaps a mounted
/// ConfigMap's files.
fn replace(path: &Path, text: &str) -> Result<()> {
    let next = path.with_extension("next");
    std::fs::write(&next, text)?;
    std::fs::rename(&next, path).with_context(|| format!("replacing {}", path.display()))
}

/// Resets the peak resident memory the kernel records for `pid` (`VmHWM`).
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting VmHWM")
}

pub fn measure(
    binary: &Path,
    dir: &Path,
    fixtures: &Path,
    variants: &[String],
) -> Result<ReloadNumbers> {
    let policies = dir.join("reload.yml");
    replace(&policies, &policies_text(variants, fixtures, "edit-0")?)?;
    // Warm the compile cache, as a rollout's new pods on a node that ran the old ones would
    // find it (an emptyDir does not survive the pod: this favours the restart).
    drop(LocalPolicyServer::start(binary, dir, &policies, &[])?);

    let mut restart = Vec::new();
    let mut server = LocalPolicyServer::start(binary, dir, &policies, &[])?;
    for edit in 1..=EDITS {
        let label = format!("edit-{edit}");
        replace(&policies, &policies_text(variants, fixtures, &label)?)?;
        let started = Instant::now();
        drop(server);
        server = LocalPolicyServer::start(binary, dir, &policies, &[])?;
        restart.push(until_refused(server.port, &label, started)?);
    }
    drop(server);

    let server = LocalPolicyServer::start(binary, dir, &policies, &["--reload-policies"])?;
    let pid = server.child.id();
    let rss_before_kib = server.memory_kib().1;
    let mut in_place = Vec::new();
    let mut peak_during_switch_kib = 0;
    for edit in EDITS + 1..=2 * EDITS {
        let label = format!("edit-{edit}");
        reset_peak(pid)?;
        let started = Instant::now();
        replace(&policies, &policies_text(variants, fixtures, &label)?)?;
        in_place.push(until_refused(server.port, &label, started)?);
        peak_during_switch_kib = peak_during_switch_kib.max(server.memory_kib().0);
    }
    let rss_after_kib = server.memory_kib().1;
    Ok(ReloadNumbers {
        restart,
        in_place,
        rss_before_kib,
        peak_during_switch_kib,
        rss_after_kib,
    })
}

fn median_ms(values: &[Duration]) -> f64 {
    let ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    crate::bench::median(&ms)
}

/// The report's lines.
pub fn summary(numbers: &ReloadNumbers) -> String {
    let each = |values: &[Duration]| {
        values
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "- a policy edit with 20 policies loaded, from the new policies file to the first new verdict (median of {EDITS}): restarting the policy-server (compile cache warm; a rollout adds scheduling, the kubelet and the readiness probe's period per pod) {:.0} ms (each: {} ms); in place (`--reload-policies`, 250 ms file check) {:.0} ms (each: {} ms)\n- memory of the reloading server: {} MiB resident before the edits, {} MiB at most during a switch, {} MiB after\n",
        median_ms(&numbers.restart),
        each(&numbers.restart),
        median_ms(&numbers.in_place),
        each(&numbers.in_place),
        numbers.rss_before_kib / 1024,
        numbers.peak_during_switch_kib / 1024,
        numbers.rss_after_kib / 1024,
    )
}
