//! Script checks: real child processes, output capture, timeouts and cleanup.

use std::time::Duration;

use muster_checks::{CheckDefinition, CheckKind, HealthStatus, MIN_INTERVAL};

use crate::support::{Runner, WITHIN, eventually, process_state, read_pid};

fn sh(id: &str, script: &str) -> CheckDefinition {
    let args = vec!["/bin/sh".into(), "-c".into(), script.into()];
    CheckDefinition::new(id, CheckKind::Script { args }, MIN_INTERVAL)
}

#[tokio::test]
async fn exit_codes_follow_nagios_conventions() {
    let mut runner = Runner::start();
    runner.add(sh("zero", "echo fine; exit 0")).await;
    runner.add(sh("one", "echo degraded >&2; exit 1")).await;
    let mut two = sh("two", "echo broken; exit 2");
    two.initial_status = HealthStatus::Passing;
    runner.add(two).await;

    assert_eq!(
        runner.wait_for("zero", HealthStatus::Passing).await.output,
        "fine\n"
    );
    assert_eq!(
        runner.wait_for("one", HealthStatus::Warning).await.output,
        "degraded\n"
    );
    assert_eq!(
        runner.wait_for("two", HealthStatus::Critical).await.output,
        "broken\n"
    );
}

#[tokio::test]
async fn long_output_keeps_the_tail_with_consuls_prefix() {
    let mut runner = Runner::start();
    // 1000 lines of 10 bytes, the last one recognisable.
    let mut def = sh(
        "chatty",
        "i=0; while [ $i -lt 999 ]; do echo 'line-xxxx'; i=$((i+1)); done; echo 'last-line'",
    );
    def.output_max_size = 200;
    runner.add(def).await;
    let up = runner.wait_for("chatty", HealthStatus::Passing).await;
    assert!(up.output.len() <= 200, "{} bytes", up.output.len());
    let (prefix, tail) = up.output.split_once("\n...\n").expect("a capture note");
    assert_eq!(prefix, format!("Captured {} of 10000 bytes", tail.len()));
    assert!(tail.ends_with("line-xxxx\nlast-line\n"), "{tail:?}");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let child_pid = dir.path().join("child.pid");
    let shell_pid = dir.path().join("shell.pid");
    let mut runner = Runner::start();
    let mut def = sh(
        "hang",
        &format!(
            "echo $$ > {}; echo started; sleep 60 & echo $! > {}; wait",
            shell_pid.display(),
            child_pid.display()
        ),
    );
    def.timeout = Duration::from_secs(1);
    def.initial_status = HealthStatus::Passing;
    runner.add(def).await;

    let down = runner.wait_for("hang", HealthStatus::Critical).await;
    assert_eq!(down.output, "Timed out (1s) running check\n\nstarted\n");
    let shell = read_pid(&shell_pid).await;
    let sleeper = read_pid(&child_pid).await;
    // Our child is killed and reaped (no zombie); the grandchild is killed too (it may
    // linger as a zombie until its new parent reaps it, but it no longer runs).
    eventually(WITHIN, "the shell to be reaped", || {
        process_state(shell).is_none()
    })
    .await;
    eventually(WITHIN, "the sleep to be killed", || {
        matches!(process_state(sleeper), None | Some('Z'))
    })
    .await;
}

#[tokio::test]
async fn removing_a_check_kills_its_running_script() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let mut runner = Runner::start();
    let mut def = sh(
        "long",
        &format!("echo $$ > {}; exec sleep 60", pid_file.display()),
    );
    def.timeout = Duration::from_secs(120);
    runner.add(def).await;
    let pid = read_pid(&pid_file).await;
    assert!(process_state(pid).is_some());
    assert!(runner.handle.remove("long").await.unwrap());
    eventually(WITHIN, "the script to be killed and reaped", || {
        process_state(pid).is_none()
    })
    .await;
    assert!(
        runner.updates.try_recv().is_err(),
        "no update after removal"
    );
}

#[tokio::test]
async fn shutdown_kills_running_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let runner = Runner::start();
    let mut def = sh(
        "long",
        &format!("echo $$ > {}; exec sleep 60", pid_file.display()),
    );
    def.timeout = Duration::from_secs(120);
    runner.add(def).await;
    let pid = read_pid(&pid_file).await;
    runner.shutdown.cancel();
    tokio::time::timeout(WITHIN, runner.handle.stopped())
        .await
        .expect("runner stops");
    eventually(WITHIN, "the script to be killed and reaped", || {
        process_state(pid).is_none()
    })
    .await;
}
