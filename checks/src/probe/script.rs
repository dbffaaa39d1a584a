//! Script probe: run `args` as a child process, Nagios-style exit codes.
//!
//! * No shell: `args[0]` is executed with `args[1..]` (Consul's `args` form).
//! * stdout and stderr share one pipe, so their lines interleave as the script wrote them;
//!   only the newest `output_max_size` bytes are kept while reading (bounded memory).
//! * The child leads its own process group. On timeout the whole group is killed (Consul's
//!   `KillCommandSubtree`), so `sh -c 'sleep 100'` does not leave `sleep` behind; when the
//!   probe future is dropped (check removed, runner shut down) the group is killed too.
//!   The child is always reaped: explicitly here, or by tokio's orphan reaper after
//!   `kill_on_drop`.
//! * When the script exits normally its background children are left alone (they are the
//!   script's business, as in Consul), and we stop reading shortly after the exit even if
//!   such a child still holds the pipe open.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout, timeout_at};

use super::ProbeResult;
use crate::gostyle;
use crate::output::TailBuffer;
use crate::status::HealthStatus;

/// How long to keep reading after the script exited, for output still in the pipe.
const DRAIN_GRACE: Duration = Duration::from_millis(250);
/// Bound on waiting for a SIGKILLed child to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// One script check run.
pub(crate) async fn probe(args: &[String], timeout_after: Duration, max: usize) -> ProbeResult {
    let deadline = Instant::now() + timeout_after;
    let Some((program, rest)) = args.split_first() else {
        return ProbeResult::critical("no command to run".to_owned());
    };
    let (mut reader, mut child) = match spawn(program, rest) {
        Ok(spawned) => spawned,
        Err(text) => return ProbeResult::critical(text),
    };
    let mut group = ProcessGroup::of(&child);
    let mut captured = TailBuffer::new(max);

    let run = wait_and_read(&mut child, &mut reader, &mut captured);
    match timeout_at(deadline, run).await {
        Ok(Ok(status)) => {
            // Exited on its own: nothing of the group is ours to kill any more.
            group.disarm();
            ProbeResult {
                status: status_for(status),
                output: captured.render(max),
            }
        }
        Ok(Err(e)) => ProbeResult::critical(format!("wait: {}", gostyle::errno_text(&e))),
        Err(_) => {
            group.kill();
            let _ = child.start_kill();
            let _ = timeout(REAP_TIMEOUT, child.wait()).await;
            drain_ready(&mut reader, &mut captured);
            let mut output = format!(
                "Timed out ({}) running check",
                gostyle::duration(timeout_after)
            );
            if !captured.is_empty() {
                output.push_str("\n\n");
                output.push_str(&captured.render(max));
            }
            ProbeResult::critical(output)
        }
    }
}

/// Starts the child with stdout and stderr on one pipe; returns the pipe's read end.
fn spawn(program: &str, args: &[String]) -> Result<(pipe::Receiver, Child), String> {
    let (writer, reader) =
        pipe::pipe().map_err(|e| format!("pipe: {}", gostyle::errno_text(&e)))?;
    let stdout = writer
        .into_blocking_fd()
        .map_err(|e| format!("pipe: {}", gostyle::errno_text(&e)))?;
    let stderr = stdout
        .try_clone()
        .map_err(|e| format!("pipe: {}", gostyle::errno_text(&e)))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().map_err(|e| spawn_error_text(program, &e))?;
    // Dropping the command closes our copies of the write end, so EOF means the script
    // (and everything it started) is done writing.
    drop(command);
    Ok((reader, child))
}

/// Go's `exec` error texts for a command that cannot start.
fn spawn_error_text(program: &str, err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::NotFound && !program.contains('/') {
        format!("exec: {program:?}: executable file not found in $PATH")
    } else {
        format!("fork/exec {program}: {}", gostyle::errno_text(err))
    }
}

/// Reads output until the child exits, then briefly drains what is left.
async fn wait_and_read(
    child: &mut Child,
    reader: &mut pipe::Receiver,
    captured: &mut TailBuffer,
) -> io::Result<ExitStatus> {
    let mut buf = vec![0u8; 8192];
    let mut eof = false;
    let status = loop {
        tokio::select! {
            read = reader.read(&mut buf), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => captured.push(&buf[..n]),
            },
            status = child.wait() => break status?,
        }
    };
    if !eof {
        // A background child may hold the pipe open forever; do not wait for it.
        let _ = timeout(DRAIN_GRACE, async {
            while let Ok(n @ 1..) = reader.read(&mut buf).await {
                captured.push(&buf[..n]);
            }
        })
        .await;
    }
    Ok(status)
}

/// Takes whatever is already buffered in the pipe without waiting.
fn drain_ready(reader: &mut pipe::Receiver, captured: &mut TailBuffer) {
    let mut buf = vec![0u8; 8192];
    // Bounded: the pipe holds at most its capacity once the writers are dead.
    for _ in 0..64 {
        match reader.try_read(&mut buf) {
            Ok(n @ 1..) => captured.push(&buf[..n]),
            _ => break,
        }
    }
}

/// Nagios convention: 0 passing, 1 warning, anything else (or a signal) critical.
fn status_for(status: ExitStatus) -> HealthStatus {
    match status.code() {
        Some(0) => HealthStatus::Passing,
        Some(1) => HealthStatus::Warning,
        _ => HealthStatus::Critical,
    }
}

/// Kills the child's process group unless disarmed; armed from spawn until the leader has
/// exited on its own, so a cancelled probe takes its whole subtree with it.
struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    fn of(child: &Child) -> Self {
        // The child called setpgid(0, 0), so its pid is the group id.
        ProcessGroup(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(Pid::from_raw),
        )
    }

    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (already gone) is fine; nothing else can usefully be done on failure.
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn exit_codes_map_to_statuses() {
        let t = Duration::from_secs(10);
        let pass = probe(&sh("echo ok"), t, 4096).await;
        assert_eq!(pass, ProbeResult::passing("ok\n".into()));
        let warn = probe(&sh("echo slow; exit 1"), t, 4096).await;
        assert_eq!(warn.status, HealthStatus::Warning);
        assert_eq!(warn.output, "slow\n");
        let crit = probe(&sh("exit 2"), t, 4096).await;
        assert_eq!(crit, ProbeResult::critical(String::new()));
        let signalled = probe(&sh("kill -9 $$"), t, 4096).await;
        assert_eq!(signalled.status, HealthStatus::Critical);
    }

    #[tokio::test]
    async fn stdout_and_stderr_interleave_in_one_output() {
        let out = probe(
            &sh("echo one; echo two >&2; echo three"),
            Duration::from_secs(10),
            4096,
        )
        .await;
        assert_eq!(out.output, "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn missing_programs_fail_with_go_texts() {
        let t = Duration::from_secs(5);
        let out = probe(&["no-such-program-muster".into()], t, 4096).await;
        assert_eq!(
            out,
            ProbeResult::critical(
                "exec: \"no-such-program-muster\": executable file not found in $PATH".into()
            )
        );
        let out = probe(&["/no/such/program".into()], t, 4096).await;
        assert_eq!(
            out.output,
            "fork/exec /no/such/program: no such file or directory"
        );
    }

    #[tokio::test]
    async fn background_children_do_not_stall_the_probe() {
        let started = std::time::Instant::now();
        let out = probe(&sh("sleep 3 & echo started"), Duration::from_secs(20), 4096).await;
        assert_eq!(out, ProbeResult::passing("started\n".into()));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
