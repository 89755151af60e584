//! What a person watching a long task sees: each step says what it does, a step that takes
//! longer than [`HEARTBEAT`] says every so often that it is still going and for how long, and
//! says how long it took when it ends.

use std::io::IsTerminal;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How often a step that is still running says so.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// `95 s` → `1m35s`; under a minute, `42 s`.
pub fn elapsed(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 60 {
        format!("{seconds} s")
    } else {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    }
}

/// Prints one line of progress. When cargo may be drawing its progress bar on the same
/// terminal (a build running beside this one), the bar's partial line is cleared first.
pub fn say(line: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    println!("{line}");
}

/// Says how long `description` took, if it took longer than a heartbeat.
pub fn report_if_long(description: &str, started: Instant) {
    let took = started.elapsed();
    if took >= HEARTBEAT {
        say(&format!("    {description}: done in {}", elapsed(took)));
    }
}

/// Runs `command` to completion with its output captured, saying `prefix description` when it
/// starts, every [`HEARTBEAT`] while it runs, and how long it took. A failure carries the last
/// lines of its error output.
pub fn run_captured(prefix: &str, description: &str, command: &mut Command) -> Result<String> {
    say(&format!("{prefix}{description}"));
    let started = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "{description}: cannot start {:?}; is it installed and on PATH?",
                command.get_program()
            )
        })?;
    let (done, finished) = mpsc::channel::<std::io::Result<Output>>();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = loop {
        match finished.recv_timeout(HEARTBEAT) {
            Ok(output) => break output.with_context(|| format!("{description}: waiting"))?,
            Err(mpsc::RecvTimeoutError::Timeout) => say(&format!(
                "{prefix}… still {description} ({})",
                elapsed(started.elapsed())
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("{description}: lost the process"),
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(15).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        bail!(
            "{description} failed ({}):\n{}",
            output.status,
            last.join("\n")
        );
    }
    if started.elapsed() >= HEARTBEAT {
        say(&format!(
            "{prefix}{description}: done in {}",
            elapsed(started.elapsed())
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command, echoing it first, and fails with its exit status.
pub fn run_step(description: &str, command: &mut Command) -> Result<()> {
    println!("==> {description}");
    let status = command
        .status()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_reads_as_minutes_and_seconds() {
        assert_eq!(elapsed(Duration::from_millis(42_900)), "42 s");
        assert_eq!(elapsed(Duration::from_secs(95)), "1m35s");
        assert_eq!(elapsed(Duration::from_secs(860)), "14m20s");
    }

    #[test]
    fn captured_command_output_and_failure() {
        let out = run_captured("", "echoing", Command::new("sh").args(["-c", "echo hi"]))
            .expect("sh runs");
        assert_eq!(out, "hi\n");
        let err = run_captured(
            "",
            "failing",
            Command::new("sh").args(["-c", "echo why >&2; exit 3"]),
        )
        .expect_err("exit 3 fails");
        let text = format!("{err:#}");
        assert!(text.contains("failing failed"), "{text}");
        assert!(text.contains("why"), "{text}");
    }

    #[test]
    fn missing_program_is_named() {
        let err = run_captured("", "running it", &mut Command::new("no-such-program-here"))
            .expect_err("missing");
        assert!(
            format!("{err:#}").contains("no-such-program-here"),
            "{err:#}"
        );
    }
}
