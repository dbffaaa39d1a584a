//! The check runner: one scheduler task that owns every check.
//!
//! Shape (the house pattern: one task owns the state, bounded channels feed it):
//! * [`CheckRunnerHandle`] sends commands (add, remove, TTL update, state query) over a
//!   bounded channel and awaits a oneshot reply.
//! * The scheduler task holds all checks in a map and all their timers in one
//!   [`DelayQueue`]. There is no task per check: when a probe is due, the scheduler starts a
//!   short-lived task for that one run, which first takes a permit from a global semaphore
//!   (the bound on concurrent probes) and returns its result through a [`JoinSet`].
//! * The next run is scheduled `interval` after a run *finishes* (Consul's loop does the
//!   same), so one check never has two probes in flight and an overrunning probe delays
//!   its next run instead of piling up. The first run is at a random offset in
//!   `[0, interval)` so checks added together do not probe in lock-step.
//! * Results go through the check's thresholds; a [`CheckUpdate`] is emitted only when the
//!   reported (status, output) changes. Updates are coalesced per check while the consumer
//!   is slow: the scheduler never blocks on the updates channel, and the consumer always
//!   receives each check's latest state.
//! * Replacing or removing a check aborts its in-flight probe; a generation number on every
//!   timer and result makes late arrivals from the old definition harmless.
//! * Cancelling the shutdown token (or dropping every handle) stops the loop, aborts every
//!   probe (scripts' process groups are killed) and waits for them, which is bounded
//!   because aborted tasks finish at their next poll.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::{Expired, Key};

use crate::definition::{CheckDefinition, CheckKind};
use crate::error::CheckError;
use crate::output::{cap, cap_ttl_output};
use crate::probe::{NetworkExecutor, ProbeExecutor, ProbeResult, ProbeSpec, ProbeTarget};
use crate::status::HealthStatus;
use crate::thresholds::StatusThresholds;

/// Commands waiting for the scheduler; senders wait when it is full.
const COMMAND_QUEUE: usize = 256;
/// Default bound on probes running at the same time.
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 64;

/// Settings for [`CheckRunner::spawn_with`].
#[derive(Clone, Debug)]
pub struct CheckRunnerConfig {
    /// Probes allowed to run at the same time, across all checks (at least 1). Due probes
    /// beyond it wait for a permit; their timeout starts once they run.
    pub max_concurrent_probes: usize,
    /// DER-encoded CA certificates trusted by HTTPS checks in addition to the system's
    /// (the agent's `ca_file` when it enables agent TLS for checks).
    pub extra_root_certificates: Vec<Vec<u8>>,
}

impl Default for CheckRunnerConfig {
    fn default() -> Self {
        CheckRunnerConfig {
            max_concurrent_probes: DEFAULT_MAX_CONCURRENT_PROBES,
            extra_root_certificates: Vec::new(),
        }
    }
}

/// A change in a check's reported state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckUpdate {
    /// The check's ID.
    pub id: String,
    /// The status now reported.
    pub status: HealthStatus,
    /// The output now reported (at most the check's `output_max_size` bytes).
    pub output: String,
}

/// A TTL check's state, as returned by [`CheckRunnerHandle::ttl_update`] and accepted by
/// [`CheckRunnerHandle::restore_ttl`]: what the agent persists so a restart does not
/// reset a healthy TTL check to critical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlState {
    /// Reported status.
    pub status: HealthStatus,
    /// Reported output (already capped).
    pub output: String,
    /// Time left before the TTL expires.
    pub remaining: Duration,
}

/// The current reported state of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckState {
    /// Reported status.
    pub status: HealthStatus,
    /// Reported output.
    pub output: String,
    /// For TTL checks, the time left before expiry (zero once expired); `None` otherwise.
    pub ttl_remaining: Option<Duration>,
}

/// Starts the scheduler task; see the module docs for how it works.
#[derive(Debug)]
pub struct CheckRunner {
    _private: (),
}

impl CheckRunner {
    /// Spawns the runner with [`CheckRunnerConfig::default`]. Status changes are sent on
    /// `updates`; cancelling `shutdown` stops every check. Must be called within a tokio
    /// runtime.
    pub fn spawn(
        updates: mpsc::Sender<CheckUpdate>,
        shutdown: CancellationToken,
    ) -> CheckRunnerHandle {
        CheckRunner::spawn_with(CheckRunnerConfig::default(), updates, shutdown)
    }

    /// Spawns the runner with explicit settings.
    pub fn spawn_with(
        config: CheckRunnerConfig,
        updates: mpsc::Sender<CheckUpdate>,
        shutdown: CancellationToken,
    ) -> CheckRunnerHandle {
        let executor = NetworkExecutor::new(config.extra_root_certificates);
        spawn_scheduler(executor, config.max_concurrent_probes, updates, shutdown)
    }
}

/// Talks to a running [`CheckRunner`]; cheap to clone. The runner stops when the shutdown
/// token is cancelled or every handle is dropped.
#[derive(Clone)]
pub struct CheckRunnerHandle {
    commands: mpsc::Sender<Command>,
}

impl fmt::Debug for CheckRunnerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckRunnerHandle")
            .field("stopped", &self.commands.is_closed())
            .finish()
    }
}

impl CheckRunnerHandle {
    /// Adds a check, replacing (and cancelling) any check with the same ID. The check
    /// reports `initial_status`/`initial_output` until its first result; no update is
    /// emitted for that initial state. To keep a check's state across a config reload,
    /// pass its current state as the initial one.
    pub async fn add(&self, definition: CheckDefinition) -> Result<(), CheckError> {
        let definition = definition.normalized()?;
        self.request(|reply| Command::Add {
            definition: Box::new(definition),
            restore: None,
            reply,
        })
        .await
    }

    /// Adds a TTL check with state persisted before an agent restart. If `state.remaining`
    /// is zero the state had expired and is not restored (Consul's rule): the check starts
    /// from its initial status with a full TTL. Otherwise it reports `state` and expires
    /// after `remaining` (at most the TTL).
    pub async fn restore_ttl(
        &self,
        definition: CheckDefinition,
        state: TtlState,
    ) -> Result<(), CheckError> {
        let definition = definition.normalized()?;
        if !definition.kind.is_ttl() {
            return Err(CheckError::NotTtl(definition.id));
        }
        self.request(|reply| Command::Add {
            definition: Box::new(definition),
            restore: Some(state),
            reply,
        })
        .await
    }

    /// Removes a check and cancels its probe (killing a running script). Returns whether
    /// the check existed.
    pub async fn remove(&self, id: &str) -> Result<bool, CheckError> {
        let id = id.to_owned();
        self.request(|reply| Command::Remove { id, reply }).await
    }

    /// Sets a TTL check's status and output and restarts its TTL (Consul's
    /// `/v1/agent/check/{pass,warn,fail,update}`). The output is capped with Consul's
    /// `... (captured <n> of <m> bytes)` note. Returns the new state, to persist.
    ///
    /// Errors: [`CheckError::is_unknown_check`], [`CheckError::is_not_ttl`].
    pub async fn ttl_update(
        &self,
        id: &str,
        status: HealthStatus,
        output: impl Into<String>,
    ) -> Result<TtlState, CheckError> {
        let (id, output) = (id.to_owned(), output.into());
        self.request(|reply| Command::TtlUpdate {
            id,
            status,
            output,
            reply,
        })
        .await?
    }

    /// The current reported state of a check, or `None` if it is not registered.
    pub async fn state(&self, id: &str) -> Result<Option<CheckState>, CheckError> {
        let id = id.to_owned();
        self.request(|reply| Command::State { id, reply }).await
    }

    /// Resolves once the runner has stopped and every probe has been cancelled.
    pub async fn stopped(&self) {
        self.commands.closed().await;
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CheckError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| CheckError::Stopped)?;
        response.await.map_err(|_| CheckError::Stopped)
    }
}

/// Requests from handles to the scheduler task.
enum Command {
    Add {
        // Boxed: a definition is far larger than the other commands.
        definition: Box<CheckDefinition>,
        restore: Option<TtlState>,
        reply: oneshot::Sender<()>,
    },
    Remove {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    TtlUpdate {
        id: String,
        status: HealthStatus,
        output: String,
        reply: oneshot::Sender<Result<TtlState, CheckError>>,
    },
    State {
        id: String,
        reply: oneshot::Sender<Option<CheckState>>,
    },
}

/// Starts a scheduler over any executor; tests use a scripted one.
pub(crate) fn spawn_scheduler<E: ProbeExecutor>(
    executor: E,
    max_concurrent_probes: usize,
    updates: mpsc::Sender<CheckUpdate>,
    shutdown: CancellationToken,
) -> CheckRunnerHandle {
    let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
    let scheduler = Scheduler {
        executor,
        checks: HashMap::new(),
        timers: DelayQueue::new(),
        probes: JoinSet::new(),
        permits: Arc::new(Semaphore::new(max_concurrent_probes.max(1))),
        next_generation: 0,
        pending: VecDeque::new(),
        updates_open: true,
    };
    tokio::spawn(scheduler.run(inbox, updates, shutdown));
    CheckRunnerHandle { commands }
}

/// What a timer in the queue is for: the next probe of a check, or its TTL expiry.
struct TimerTag {
    id: Arc<str>,
    generation: u64,
}

/// A finished probe run.
struct ProbeDone {
    id: Arc<str>,
    generation: u64,
    result: ProbeResult,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Report {
    status: HealthStatus,
    output: String,
}

struct Entry {
    id: Arc<str>,
    /// Distinguishes this definition from earlier ones with the same ID.
    generation: u64,
    /// Invariant: `Some` exactly while this entry's timer is in the queue (a stale key
    /// could name another entry's slot, so it is cleared the moment the timer fires).
    timer: Option<Key>,
    reported: Report,
    /// The last state sent on the updates channel (initially the initial state).
    delivered: Report,
    /// True while the ID sits in the pending-delivery queue.
    queued: bool,
    output_max_size: usize,
    mode: Mode,
}

enum Mode {
    Probe {
        spec: Arc<ProbeSpec>,
        interval: Duration,
        thresholds: StatusThresholds,
        in_flight: Option<AbortHandle>,
    },
    Ttl {
        ttl: Duration,
        /// Output of the last update, quoted when the TTL expires.
        last_output: String,
    },
}

enum Event<'a> {
    Stop,
    Command(Command),
    Timer(Expired<TimerTag>),
    ProbeDone(Result<ProbeDone, JoinError>),
    Deliver(Result<mpsc::Permit<'a, CheckUpdate>, mpsc::error::SendError<()>>),
}

struct Scheduler<E> {
    executor: E,
    checks: HashMap<Arc<str>, Entry>,
    timers: DelayQueue<TimerTag>,
    probes: JoinSet<ProbeDone>,
    permits: Arc<Semaphore>,
    next_generation: u64,
    /// Check IDs whose reported state has not been delivered yet, oldest first.
    pending: VecDeque<Arc<str>>,
    updates_open: bool,
}

impl<E: ProbeExecutor> Scheduler<E> {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        updates: mpsc::Sender<CheckUpdate>,
        shutdown: CancellationToken,
    ) {
        loop {
            // Shutdown first; then commands, so the agent is never starved; then deliveries,
            // which only exist while the consumer has room; then probe results and timers.
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Event::Stop,
                command = inbox.recv() => command.map_or(Event::Stop, Event::Command),
                permit = updates.reserve(), if self.updates_open && !self.pending.is_empty() => {
                    Event::Deliver(permit)
                }
                Some(done) = self.probes.join_next(), if !self.probes.is_empty() => {
                    Event::ProbeDone(done)
                }
                Some(expired) = self.timers.next(), if !self.timers.is_empty() => {
                    Event::Timer(expired)
                }
            };
            match event {
                Event::Stop => break,
                Event::Command(command) => self.on_command(command),
                Event::Timer(expired) => self.on_timer(expired),
                Event::ProbeDone(done) => self.on_probe_done(done),
                Event::Deliver(Ok(permit)) => self.deliver(permit),
                Event::Deliver(Err(_)) => {
                    // Nobody listens any more; keep running the checks for the handle's
                    // state queries, but stop queueing deliveries.
                    self.updates_open = false;
                    self.pending.clear();
                }
            }
        }
        // Aborting drops each probe future: sockets close, scripts' groups are killed.
        self.probes.shutdown().await;
        tracing::debug!(checks = self.checks.len(), "check runner stopped");
    }

    fn on_command(&mut self, command: Command) {
        // A dropped reply receiver only means the caller stopped waiting.
        match command {
            Command::Add {
                definition,
                restore,
                reply,
            } => {
                self.add(*definition, restore);
                let _ = reply.send(());
            }
            Command::Remove { id, reply } => {
                let _ = reply.send(self.remove(&id));
            }
            Command::TtlUpdate {
                id,
                status,
                output,
                reply,
            } => {
                let _ = reply.send(self.ttl_update(&id, status, output));
            }
            Command::State { id, reply } => {
                let _ = reply.send(self.state(&id));
            }
        }
    }

    fn add(&mut self, def: CheckDefinition, restore: Option<TtlState>) {
        self.remove(&def.id);
        let id: Arc<str> = Arc::from(def.id.as_str());
        let generation = self.next_generation;
        self.next_generation += 1;
        let max = def.output_max_size;
        let mut reported = Report {
            status: def.initial_status,
            output: cap(def.initial_output, max),
        };
        let target = match def.kind {
            CheckKind::Tcp { address } => ProbeTarget::Tcp { address },
            CheckKind::Http(http) => ProbeTarget::Http(Arc::new(http)),
            CheckKind::Script { args } => ProbeTarget::Script { args },
            CheckKind::Ttl { ttl } => {
                let mut first_expiry = ttl;
                let mut last_output = String::new();
                // Consul does not restore a state whose TTL had already run out.
                if let Some(state) = restore.filter(|s| !s.remaining.is_zero()) {
                    let output = cap_ttl_output(&state.output, max);
                    reported = Report {
                        status: state.status,
                        output: output.clone(),
                    };
                    last_output = output;
                    first_expiry = state.remaining.min(ttl);
                }
                let mode = Mode::Ttl { ttl, last_output };
                self.insert(id, generation, reported, max, mode, first_expiry);
                return;
            }
        };
        let spec = Arc::new(ProbeSpec {
            target,
            timeout: def.timeout,
            output_max_size: max,
        });
        let mode = Mode::Probe {
            spec,
            interval: def.interval,
            thresholds: StatusThresholds::new(
                def.success_before_passing,
                def.failures_before_warning
                    .unwrap_or(def.failures_before_critical),
                def.failures_before_critical,
            ),
            in_flight: None,
        };
        self.insert(id, generation, reported, max, mode, stagger(def.interval));
    }

    fn insert(
        &mut self,
        id: Arc<str>,
        generation: u64,
        reported: Report,
        output_max_size: usize,
        mode: Mode,
        first_timer: Duration,
    ) {
        let tag = TimerTag {
            id: Arc::clone(&id),
            generation,
        };
        let timer = Some(self.timers.insert(tag, first_timer));
        let entry = Entry {
            id: Arc::clone(&id),
            generation,
            timer,
            delivered: reported.clone(),
            reported,
            queued: false,
            output_max_size,
            mode,
        };
        self.checks.insert(id, entry);
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some(entry) = self.checks.remove(id) else {
            return false;
        };
        if let Some(key) = entry.timer {
            self.timers.remove(&key);
        }
        if let Mode::Probe {
            in_flight: Some(probe),
            ..
        } = entry.mode
        {
            probe.abort();
        }
        true
    }

    fn on_timer(&mut self, expired: Expired<TimerTag>) {
        let key = expired.key();
        let tag = expired.into_inner();
        let Some(entry) = self.checks.get_mut(&tag.id) else {
            return;
        };
        if entry.generation != tag.generation || entry.timer != Some(key) {
            return;
        }
        entry.timer = None;
        match &mut entry.mode {
            Mode::Probe {
                spec,
                interval,
                in_flight,
                ..
            } => {
                if in_flight.is_some() {
                    // Cannot happen while runs are chained on completion; if it ever
                    // does, skip this run rather than start a second probe.
                    entry.timer = Some(self.timers.insert(tag, *interval));
                    return;
                }
                let probe = self.executor.start(spec);
                let permits = Arc::clone(&self.permits);
                let run = async move {
                    // The semaphore is never closed; without a permit we would still run.
                    let _permit = permits.acquire_owned().await.ok();
                    let result = AssertUnwindSafe(probe).catch_unwind().await;
                    ProbeDone {
                        id: tag.id,
                        generation: tag.generation,
                        result: result.unwrap_or_else(|_| {
                            ProbeResult::critical("check probe panicked".to_owned())
                        }),
                    }
                };
                *in_flight = Some(self.probes.spawn(run));
            }
            Mode::Ttl { last_output, .. } => {
                tracing::warn!(check = %tag.id, "check missed its TTL, now critical");
                let output = if last_output.is_empty() {
                    "TTL expired".to_owned()
                } else {
                    format!("TTL expired (last output before timeout follows): {last_output}")
                };
                entry.reported = Report {
                    status: HealthStatus::Critical,
                    output: cap(output, entry.output_max_size),
                };
                mark_changed(&mut self.pending, self.updates_open, entry);
            }
        }
    }

    fn on_probe_done(&mut self, done: Result<ProbeDone, JoinError>) {
        // An error is a probe aborted because its check was removed or replaced (panics
        // are caught inside the task).
        let Ok(done) = done else {
            return;
        };
        let Some(entry) = self.checks.get_mut(&done.id) else {
            return;
        };
        if entry.generation != done.generation {
            return;
        }
        let Mode::Probe {
            interval,
            thresholds,
            in_flight,
            ..
        } = &mut entry.mode
        else {
            return;
        };
        *in_flight = None;
        if let Some(status) = thresholds.observe(done.result.status) {
            entry.reported = Report {
                status,
                output: done.result.output,
            };
        }
        let tag = TimerTag {
            id: done.id,
            generation: done.generation,
        };
        entry.timer = Some(self.timers.insert(tag, *interval));
        mark_changed(&mut self.pending, self.updates_open, entry);
    }

    fn ttl_update(
        &mut self,
        id: &str,
        status: HealthStatus,
        output: String,
    ) -> Result<TtlState, CheckError> {
        let entry = self
            .checks
            .get_mut(id)
            .ok_or_else(|| CheckError::UnknownCheck(id.to_owned()))?;
        let Mode::Ttl { ttl, last_output } = &mut entry.mode else {
            return Err(CheckError::NotTtl(id.to_owned()));
        };
        let ttl = *ttl;
        let output = cap_ttl_output(&output, entry.output_max_size);
        last_output.clone_from(&output);
        entry.reported = Report {
            status,
            output: output.clone(),
        };
        match entry.timer {
            Some(key) => self.timers.reset(&key, ttl),
            None => {
                let tag = TimerTag {
                    id: Arc::clone(&entry.id),
                    generation: entry.generation,
                };
                entry.timer = Some(self.timers.insert(tag, ttl));
            }
        }
        mark_changed(&mut self.pending, self.updates_open, entry);
        Ok(TtlState {
            status,
            output,
            remaining: ttl,
        })
    }

    fn state(&self, id: &str) -> Option<CheckState> {
        let entry = self.checks.get(id)?;
        let ttl_remaining = match entry.mode {
            Mode::Probe { .. } => None,
            Mode::Ttl { .. } => Some(entry.timer.map_or(Duration::ZERO, |key| {
                self.timers
                    .deadline(&key)
                    .saturating_duration_since(Instant::now())
            })),
        };
        Some(CheckState {
            status: entry.reported.status,
            output: entry.reported.output.clone(),
            ttl_remaining,
        })
    }

    /// Sends the oldest undelivered change, skipping IDs that were removed or whose state
    /// went back to what was last delivered.
    fn deliver(&mut self, permit: mpsc::Permit<'_, CheckUpdate>) {
        while let Some(id) = self.pending.pop_front() {
            let Some(entry) = self.checks.get_mut(&id) else {
                continue;
            };
            entry.queued = false;
            if entry.reported == entry.delivered {
                continue;
            }
            entry.delivered = entry.reported.clone();
            tracing::debug!(check = %id, status = %entry.reported.status, "check status changed");
            permit.send(CheckUpdate {
                id: id.to_string(),
                status: entry.reported.status,
                output: entry.reported.output.clone(),
            });
            return;
        }
    }
}

/// Queues a check for delivery if its reported state differs from the delivered one.
fn mark_changed(pending: &mut VecDeque<Arc<str>>, updates_open: bool, entry: &mut Entry) {
    if updates_open && !entry.queued && entry.reported != entry.delivered {
        entry.queued = true;
        pending.push_back(Arc::clone(&entry.id));
    }
}

/// A uniformly random offset in `[0, interval)` for a check's first run, in whole
/// milliseconds: the timer queue rounds deadlines up to the next millisecond, so a finer
/// offset just under the interval would fire at the interval itself.
fn stagger(interval: Duration) -> Duration {
    let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..millis))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::future::BoxFuture;
    use tokio::time::{sleep, timeout};

    use super::*;
    use crate::definition::MIN_INTERVAL;

    /// One scripted probe outcome: the status to return and how long the probe takes.
    #[derive(Clone)]
    struct Step {
        status: HealthStatus,
        output: &'static str,
        takes: Duration,
    }

    fn step(status: HealthStatus, output: &'static str) -> Step {
        Step {
            status,
            output,
            takes: Duration::ZERO,
        }
    }

    #[derive(Default)]
    struct Record {
        /// (probe name, start instant) of every run, in start order.
        starts: Vec<(String, Instant)>,
        running: HashMap<String, usize>,
        max_running: HashMap<String, usize>,
        /// Probes running right now, and the most ever seen at once, across all names.
        running_total: usize,
        max_running_total: usize,
        dropped_unfinished: usize,
    }

    /// A probe executor driven by a script per probe name (the TCP address field), so
    /// scheduler logic can be tested under paused time without sockets.
    #[derive(Clone, Default)]
    struct Scripted {
        steps: Arc<Mutex<HashMap<String, VecDeque<Step>>>>,
        /// Used when a name's script is exhausted.
        default: Arc<Mutex<HashMap<String, Step>>>,
        record: Arc<Mutex<Record>>,
    }

    impl Scripted {
        fn script(&self, name: &str, steps: Vec<Step>, then: Step) {
            self.steps
                .lock()
                .unwrap()
                .insert(name.to_owned(), steps.into());
            self.default.lock().unwrap().insert(name.to_owned(), then);
        }

        fn starts_of(&self, name: &str) -> Vec<Instant> {
            let record = self.record.lock().unwrap();
            record
                .starts
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, at)| *at)
                .collect()
        }

        fn max_running(&self, name: &str) -> usize {
            let record = self.record.lock().unwrap();
            record.max_running.get(name).copied().unwrap_or(0)
        }

        fn dropped_unfinished(&self) -> usize {
            self.record.lock().unwrap().dropped_unfinished
        }
    }

    /// Marks a probe that was dropped before it finished (cancelled).
    struct Running {
        name: String,
        record: Arc<Mutex<Record>>,
        finished: AtomicBool,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            let mut record = self.record.lock().unwrap();
            *record.running.get_mut(&self.name).unwrap() -= 1;
            record.running_total -= 1;
            if !self.finished.load(Ordering::SeqCst) {
                record.dropped_unfinished += 1;
            }
        }
    }

    impl ProbeExecutor for Scripted {
        fn start(&mut self, spec: &Arc<ProbeSpec>) -> BoxFuture<'static, ProbeResult> {
            let ProbeTarget::Tcp { address: name } = &spec.target else {
                panic!("scripted probes are named by a TCP address");
            };
            let name = name.clone();
            let next = self
                .steps
                .lock()
                .unwrap()
                .get_mut(&name)
                .and_then(VecDeque::pop_front);
            let step = next.unwrap_or_else(|| self.default.lock().unwrap()[&name].clone());
            let record = Arc::clone(&self.record);
            Box::pin(async move {
                let guard = {
                    let mut r = record.lock().unwrap();
                    r.starts.push((name.clone(), Instant::now()));
                    let running = r.running.entry(name.clone()).or_default();
                    *running += 1;
                    let now = *running;
                    let max = r.max_running.entry(name.clone()).or_default();
                    *max = (*max).max(now);
                    r.running_total += 1;
                    r.max_running_total = r.max_running_total.max(r.running_total);
                    Running {
                        name,
                        record: Arc::clone(&record),
                        finished: AtomicBool::new(false),
                    }
                };
                sleep(step.takes).await;
                guard.finished.store(true, Ordering::SeqCst);
                ProbeResult {
                    status: step.status,
                    output: step.output.to_owned(),
                }
            })
        }
    }

    fn probe_def(id: &str, name: &str, interval: Duration) -> CheckDefinition {
        CheckDefinition::new(
            id,
            CheckKind::Tcp {
                address: name.to_owned(),
            },
            interval,
        )
    }

    struct Harness {
        handle: CheckRunnerHandle,
        updates: mpsc::Receiver<CheckUpdate>,
        scripted: Scripted,
        shutdown: CancellationToken,
    }

    fn harness(capacity: usize) -> Harness {
        harness_with_permits(capacity, 8)
    }

    fn harness_with_permits(capacity: usize, permits: usize) -> Harness {
        let scripted = Scripted::default();
        let (tx, updates) = mpsc::channel(capacity);
        let shutdown = CancellationToken::new();
        let handle = spawn_scheduler(scripted.clone(), permits, tx, shutdown.clone());
        Harness {
            handle,
            updates,
            scripted,
            shutdown,
        }
    }

    impl Harness {
        /// The next update, failing the test if none comes within `within` (paused time
        /// advances automatically while the runtime is idle).
        async fn next_update(&mut self, within: Duration) -> CheckUpdate {
            timeout(within, self.updates.recv())
                .await
                .expect("an update in time")
                .expect("runner alive")
        }

        async fn no_update_for(&mut self, quiet: Duration) {
            if let Ok(update) = timeout(quiet, self.updates.recv()).await {
                panic!("unexpected update {update:?}");
            }
        }
    }

    fn update(id: &str, status: HealthStatus, output: &str) -> CheckUpdate {
        CheckUpdate {
            id: id.to_owned(),
            status,
            output: output.to_owned(),
        }
    }

    use HealthStatus::{Critical, Passing, Warning};

    #[tokio::test(start_paused = true)]
    async fn first_runs_are_staggered_within_the_interval_then_periodic() {
        let h = harness(64);
        let interval = Duration::from_secs(10);
        let added = Instant::now();
        for i in 0..20 {
            let name = format!("p{i}");
            h.scripted.script(&name, vec![], step(Passing, "ok"));
            h.handle
                .add(probe_def(&format!("c{i}"), &name, interval))
                .await
                .unwrap();
        }
        sleep(Duration::from_secs(35)).await;
        let mut firsts = Vec::new();
        for i in 0..20 {
            let starts = h.scripted.starts_of(&format!("p{i}"));
            let first = starts[0] - added;
            assert!(first < interval, "first run after {first:?}");
            firsts.push(first);
            // Zero-length probes: every later run is exactly one interval after the last.
            for pair in starts.windows(2) {
                assert_eq!(pair[1] - pair[0], interval);
            }
            assert!(starts.len() >= 3, "{} runs", starts.len());
        }
        firsts.sort();
        firsts.dedup();
        assert!(firsts.len() > 10, "first runs are spread out: {firsts:?}");
        drop(h.updates);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrunning_probe_is_never_overlapped() {
        let h = harness(64);
        let slow = Step {
            takes: Duration::from_millis(2500),
            ..step(Passing, "ok")
        };
        h.scripted.script("slow", vec![], slow);
        h.handle
            .add(probe_def("slow", "slow", MIN_INTERVAL))
            .await
            .unwrap();
        sleep(Duration::from_secs(30)).await;
        let starts = h.scripted.starts_of("slow");
        assert!(starts.len() >= 6, "{} runs", starts.len());
        assert_eq!(h.scripted.max_running("slow"), 1);
        for pair in starts.windows(2) {
            // The next run starts one interval after the previous one finished.
            assert_eq!(pair[1] - pair[0], Duration::from_millis(3500));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_probes_are_bounded_by_the_permits() {
        let h = harness_with_permits(64, 3);
        for i in 0..12 {
            let name = format!("p{i}");
            let slow = Step {
                takes: Duration::from_secs(2),
                ..step(Passing, "ok")
            };
            h.scripted.script(&name, vec![], slow);
            h.handle
                .add(probe_def(&format!("c{i}"), &name, MIN_INTERVAL))
                .await
                .unwrap();
        }
        sleep(Duration::from_secs(30)).await;
        let record = h.scripted.record.lock().unwrap();
        assert_eq!(record.max_running_total, 3);
        // Waiting for a permit delays runs but every check still gets its turn.
        for i in 0..12 {
            assert!(record.starts.iter().any(|(n, _)| *n == format!("p{i}")));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn updates_are_emitted_only_when_status_or_output_changes() {
        let mut h = harness(64);
        h.scripted.script(
            "p",
            vec![
                step(Passing, "ok"),
                step(Passing, "ok"),
                step(Passing, "ok 2"),
                step(Critical, "down"),
                step(Critical, "down"),
            ],
            step(Passing, "ok 2"),
        );
        h.handle
            .add(probe_def("web", "p", MIN_INTERVAL))
            .await
            .unwrap();
        let within = Duration::from_secs(5);
        assert_eq!(h.next_update(within).await, update("web", Passing, "ok"));
        assert_eq!(h.next_update(within).await, update("web", Passing, "ok 2"));
        assert_eq!(h.next_update(within).await, update("web", Critical, "down"));
        assert_eq!(h.next_update(within).await, update("web", Passing, "ok 2"));
        h.no_update_for(Duration::from_secs(20)).await;
        let state = h.handle.state("web").await.unwrap().unwrap();
        assert_eq!(state.status, Passing);
        assert_eq!(state.ttl_remaining, None);
    }

    #[tokio::test(start_paused = true)]
    async fn no_update_when_the_first_result_matches_the_initial_state() {
        let mut h = harness(64);
        h.scripted.script("p", vec![], step(Critical, ""));
        h.handle
            .add(probe_def("db", "p", MIN_INTERVAL))
            .await
            .unwrap();
        h.no_update_for(Duration::from_secs(10)).await;
        assert!(!h.scripted.starts_of("p").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_damp_flapping() {
        let mut h = harness(64);
        h.scripted.script(
            "p",
            vec![
                step(Passing, "up"),
                step(Critical, "blip"),
                step(Passing, "up"),
                step(Critical, "down 1"),
                step(Critical, "down 2"),
                step(Critical, "down 3"),
                step(Passing, "back 1"),
            ],
            step(Passing, "back 2"),
        );
        let mut def = probe_def("db", "p", MIN_INTERVAL);
        def.success_before_passing = 2;
        def.failures_before_warning = Some(2);
        def.failures_before_critical = 3;
        h.handle.add(def).await.unwrap();
        let within = Duration::from_secs(5);
        // First result is reported at once; the single blip is absorbed.
        assert_eq!(h.next_update(within).await, update("db", Passing, "up"));
        assert_eq!(h.next_update(within).await, update("db", Warning, "down 2"));
        assert_eq!(
            h.next_update(within).await,
            update("db", Critical, "down 3")
        );
        // One success is not enough to recover; the second one is.
        assert_eq!(h.next_update(within).await, update("db", Passing, "back 2"));
    }

    #[tokio::test(start_paused = true)]
    async fn remove_cancels_the_probe_in_flight_and_stops_the_schedule() {
        let h = harness(64);
        let slow = Step {
            takes: Duration::from_secs(60),
            ..step(Passing, "ok")
        };
        h.scripted.script("p", vec![], slow);
        h.handle
            .add(probe_def("x", "p", MIN_INTERVAL))
            .await
            .unwrap();
        sleep(Duration::from_secs(2)).await;
        assert_eq!(h.scripted.starts_of("p").len(), 1);
        assert!(h.handle.remove("x").await.unwrap());
        assert!(!h.handle.remove("x").await.unwrap());
        sleep(Duration::from_secs(1)).await;
        assert_eq!(h.scripted.dropped_unfinished(), 1);
        sleep(Duration::from_secs(120)).await;
        assert_eq!(h.scripted.starts_of("p").len(), 1);
        assert_eq!(h.handle.state("x").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn replace_switches_definition_and_drops_late_results() {
        let mut h = harness(64);
        let slow_old = Step {
            takes: Duration::from_secs(30),
            ..step(Critical, "old")
        };
        h.scripted.script("old", vec![], slow_old);
        h.scripted.script("new", vec![], step(Passing, "new"));
        let mut first = probe_def("x", "old", MIN_INTERVAL);
        first.initial_status = Passing;
        h.handle.add(first).await.unwrap();
        sleep(Duration::from_secs(2)).await;
        assert_eq!(h.scripted.starts_of("old").len(), 1);
        h.handle
            .add(probe_def("x", "new", MIN_INTERVAL))
            .await
            .unwrap();
        // The replacement starts from its own initial state (critical) and reports passing.
        assert_eq!(
            h.next_update(Duration::from_secs(5)).await,
            update("x", Passing, "new")
        );
        h.no_update_for(Duration::from_secs(60)).await;
        assert_eq!(h.scripted.starts_of("old").len(), 1);
        assert_eq!(h.scripted.dropped_unfinished(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_check_updates_reset_the_timer_and_expiry_goes_critical() {
        let mut h = harness(64);
        let ttl = Duration::from_secs(30);
        h.handle
            .add(CheckDefinition::ttl("app", ttl))
            .await
            .unwrap();
        let state = h.handle.state("app").await.unwrap().unwrap();
        assert_eq!(state.status, Critical);
        assert_eq!(state.ttl_remaining, Some(ttl));

        let set = h
            .handle
            .ttl_update("app", Passing, "all good")
            .await
            .unwrap();
        assert_eq!(
            set,
            TtlState {
                status: Passing,
                output: "all good".into(),
                remaining: ttl
            }
        );
        assert_eq!(
            h.next_update(Duration::from_secs(1)).await,
            update("app", Passing, "all good")
        );
        // Refreshing before expiry keeps it passing past the original deadline.
        sleep(Duration::from_secs(20)).await;
        h.handle
            .ttl_update("app", Passing, "all good")
            .await
            .unwrap();
        sleep(Duration::from_secs(20)).await;
        let state = h.handle.state("app").await.unwrap().unwrap();
        assert_eq!(state.status, Passing);
        assert_eq!(state.ttl_remaining, Some(Duration::from_secs(10)));
        h.no_update_for(Duration::from_secs(5)).await;
        assert_eq!(
            h.next_update(Duration::from_secs(10)).await,
            update(
                "app",
                Critical,
                "TTL expired (last output before timeout follows): all good"
            )
        );
        let state = h.handle.state("app").await.unwrap().unwrap();
        assert_eq!(state.ttl_remaining, Some(Duration::ZERO));
        // An update after expiry re-arms the TTL.
        h.handle.ttl_update("app", Warning, "").await.unwrap();
        assert_eq!(
            h.next_update(Duration::from_secs(1)).await,
            update("app", Warning, "")
        );
        assert_eq!(
            h.next_update(Duration::from_secs(31)).await,
            update("app", Critical, "TTL expired")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_expiry_without_any_update_says_ttl_expired() {
        let mut h = harness(64);
        let mut def = CheckDefinition::ttl("app", Duration::from_secs(5));
        def.initial_status = Passing;
        def.initial_output = "registered".into();
        h.handle.add(def).await.unwrap();
        assert_eq!(
            h.next_update(Duration::from_secs(6)).await,
            update("app", Critical, "TTL expired")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_update_errors_name_the_problem() {
        let h = harness(64);
        h.scripted.script("p", vec![], step(Passing, "ok"));
        h.handle
            .add(probe_def("tcp", "p", MIN_INTERVAL))
            .await
            .unwrap();
        let err = h.handle.ttl_update("nope", Passing, "").await.unwrap_err();
        assert!(err.is_unknown_check(), "{err}");
        let err = h.handle.ttl_update("tcp", Passing, "").await.unwrap_err();
        assert!(err.is_not_ttl(), "{err}");
        assert_eq!(
            err.to_string(),
            "CheckID \"tcp\" does not have associated TTL"
        );
        let err = h
            .handle
            .restore_ttl(
                probe_def("tcp2", "p", MIN_INTERVAL),
                TtlState {
                    status: Passing,
                    output: String::new(),
                    remaining: Duration::from_secs(1),
                },
            )
            .await
            .unwrap_err();
        assert!(err.is_not_ttl());
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_output_is_capped_with_consuls_note() {
        let h = harness(64);
        let mut def = CheckDefinition::ttl("app", Duration::from_secs(30));
        def.output_max_size = 64;
        h.handle.add(def).await.unwrap();
        let state = h
            .handle
            .ttl_update("app", Passing, "x".repeat(1000))
            .await
            .unwrap();
        assert!(state.output.len() <= 64);
        assert!(state.output.ends_with("of 1000 bytes)"), "{}", state.output);
    }

    #[tokio::test(start_paused = true)]
    async fn restored_ttl_state_resumes_with_the_remaining_time() {
        let mut h = harness(64);
        let def = CheckDefinition::ttl("app", Duration::from_secs(60));
        let saved = TtlState {
            status: Passing,
            output: "before restart".into(),
            remaining: Duration::from_secs(10),
        };
        h.handle.restore_ttl(def.clone(), saved).await.unwrap();
        let state = h.handle.state("app").await.unwrap().unwrap();
        assert_eq!(
            (state.status, state.output.as_str()),
            (Passing, "before restart")
        );
        h.no_update_for(Duration::from_secs(9)).await;
        assert_eq!(
            h.next_update(Duration::from_secs(2)).await,
            update(
                "app",
                Critical,
                "TTL expired (last output before timeout follows): before restart"
            )
        );

        // An expired saved state is not restored: initial status, full TTL.
        let expired = TtlState {
            status: Passing,
            output: "stale".into(),
            remaining: Duration::ZERO,
        };
        h.handle.restore_ttl(def, expired).await.unwrap();
        let state = h.handle.state("app").await.unwrap().unwrap();
        assert_eq!(state.status, Critical);
        assert_eq!(state.output, "");
        assert_eq!(state.ttl_remaining, Some(Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_gets_the_latest_state_and_never_blocks_commands() {
        let mut h = harness(1);
        for i in 0..5 {
            h.handle
                .add(CheckDefinition::ttl(
                    format!("t{i}"),
                    Duration::from_secs(600),
                ))
                .await
                .unwrap();
        }
        // Many changes while nobody reads: the channel holds one, the rest coalesce.
        for round in 0..3 {
            for i in 0..5 {
                let status = if round % 2 == 0 { Passing } else { Warning };
                h.handle
                    .ttl_update(&format!("t{i}"), status, format!("round {round}"))
                    .await
                    .unwrap();
            }
        }
        let mut latest = HashMap::new();
        while let Ok(Some(u)) = timeout(Duration::from_secs(1), h.updates.recv()).await {
            latest.insert(u.id.clone(), (u.status, u.output));
        }
        for i in 0..5 {
            assert_eq!(
                latest.get(&format!("t{i}")),
                Some(&(Passing, "round 2".to_owned())),
                "t{i}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cancels_probes_and_stops_the_handle() {
        let h = harness(64);
        let slow = Step {
            takes: Duration::from_secs(600),
            ..step(Passing, "ok")
        };
        h.scripted.script("p", vec![], slow);
        h.handle
            .add(probe_def("x", "p", MIN_INTERVAL))
            .await
            .unwrap();
        sleep(Duration::from_secs(2)).await;
        assert_eq!(h.scripted.starts_of("p").len(), 1);
        h.shutdown.cancel();
        timeout(Duration::from_secs(5), h.handle.stopped())
            .await
            .expect("runner stops promptly");
        assert_eq!(h.scripted.dropped_unfinished(), 1);
        let err = h.handle.state("x").await.unwrap_err();
        assert!(err.is_stopped());
        assert!(
            h.handle
                .add(probe_def("y", "p", MIN_INTERVAL))
                .await
                .unwrap_err()
                .is_stopped()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_definitions_are_rejected_before_reaching_the_scheduler() {
        let h = harness(64);
        let err = h
            .handle
            .add(CheckDefinition::new(
                "s",
                CheckKind::Script { args: vec![] },
                MIN_INTERVAL,
            ))
            .await
            .unwrap_err();
        assert!(err.is_invalid_definition());
        assert_eq!(h.handle.state("s").await.unwrap(), None);
    }

    #[test]
    fn stagger_stays_within_the_interval() {
        for _ in 0..1000 {
            let s = stagger(Duration::from_secs(1));
            assert!(s < Duration::from_secs(1), "{s:?}");
            assert_eq!(s.subsec_nanos() % 1_000_000, 0, "whole milliseconds: {s:?}");
        }
        // The largest offset of a 10 s interval still fires before 10 s.
        for _ in 0..1000 {
            assert!(stagger(Duration::from_secs(10)) <= Duration::from_millis(9_999));
        }
        assert_eq!(stagger(Duration::ZERO), Duration::ZERO);
        assert_eq!(stagger(Duration::from_micros(900)), Duration::ZERO);
    }
}
