//! Consecutive-result thresholds: Consul's `StatusHandler` (1.7+), as a pure state machine.
//!
//! Rules, exactly as `agent/checks/check.go` applies them:
//! * passing and warning results are successes: they increment the success counter and reset
//!   the failure counter; the result is reported (with its own status) once the success
//!   counter reaches `success_before_passing`;
//! * critical results increment the failure counter and reset the success counter; critical
//!   is reported once failures reach `failures_before_critical`, otherwise **warning** is
//!   reported once failures reach `failures_before_warning`;
//! * anything below its threshold reports nothing: the previously reported status stands.
//!
//! Both counters start *at* their thresholds, so the very first result is reported at once;
//! the thresholds only damp changes after that.

use crate::status::HealthStatus;

/// Per-check counters deciding whether a probe result is reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatusThresholds {
    success_before_passing: u32,
    failures_before_warning: u32,
    failures_before_critical: u32,
    successes: u32,
    failures: u32,
}

impl StatusThresholds {
    /// Counters primed so that the first result is reported whatever it is.
    pub(crate) fn new(
        success_before_passing: u32,
        failures_before_warning: u32,
        failures_before_critical: u32,
    ) -> Self {
        StatusThresholds {
            success_before_passing,
            failures_before_warning,
            failures_before_critical,
            successes: success_before_passing,
            failures: failures_before_critical,
        }
    }

    /// Feeds one probe result; returns the status to report, or `None` to keep the
    /// currently reported one.
    pub(crate) fn observe(&mut self, status: HealthStatus) -> Option<HealthStatus> {
        if status.is_success() {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (self.successes >= self.success_before_passing).then_some(status)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= self.failures_before_critical {
                Some(HealthStatus::Critical)
            } else if self.failures >= self.failures_before_warning {
                Some(HealthStatus::Warning)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HealthStatus::{Critical, Passing, Warning};
    use super::*;

    fn feed(t: &mut StatusThresholds, results: &[HealthStatus]) -> Vec<Option<HealthStatus>> {
        results.iter().map(|&s| t.observe(s)).collect()
    }

    #[test]
    fn without_thresholds_every_result_is_reported() {
        let mut t = StatusThresholds::new(0, 0, 0);
        assert_eq!(
            feed(&mut t, &[Passing, Critical, Warning, Critical, Passing]),
            vec![
                Some(Passing),
                Some(Critical),
                Some(Warning),
                Some(Critical),
                Some(Passing)
            ]
        );
    }

    #[test]
    fn first_result_is_reported_at_once_whatever_the_thresholds() {
        assert_eq!(
            StatusThresholds::new(3, 3, 3).observe(Passing),
            Some(Passing)
        );
        assert_eq!(
            StatusThresholds::new(3, 3, 3).observe(Critical),
            Some(Critical)
        );
        assert_eq!(
            StatusThresholds::new(3, 3, 3).observe(Warning),
            Some(Warning)
        );
    }

    #[test]
    fn success_before_passing_holds_recovery_until_reached() {
        let mut t = StatusThresholds::new(3, 0, 0);
        assert_eq!(t.observe(Critical), Some(Critical));
        assert_eq!(
            feed(&mut t, &[Passing, Passing, Passing, Passing]),
            vec![None, None, Some(Passing), Some(Passing)]
        );
    }

    #[test]
    fn a_failure_resets_the_success_count() {
        let mut t = StatusThresholds::new(2, 0, 0);
        assert_eq!(t.observe(Critical), Some(Critical));
        assert_eq!(
            feed(&mut t, &[Passing, Critical, Passing, Passing]),
            vec![None, Some(Critical), None, Some(Passing)]
        );
    }

    #[test]
    fn warning_counts_as_success_and_is_reported_as_warning() {
        let mut t = StatusThresholds::new(2, 0, 0);
        assert_eq!(t.observe(Critical), Some(Critical));
        assert_eq!(feed(&mut t, &[Warning, Warning]), vec![None, Some(Warning)]);
        // A warning also resets the failure counter.
        let mut t = StatusThresholds::new(0, 2, 2);
        assert_eq!(t.observe(Passing), Some(Passing));
        assert_eq!(
            feed(&mut t, &[Critical, Warning, Critical, Critical]),
            vec![None, Some(Warning), None, Some(Critical)]
        );
    }

    #[test]
    fn failures_before_critical_holds_failure_until_reached() {
        let mut t = StatusThresholds::new(0, 3, 3);
        assert_eq!(t.observe(Passing), Some(Passing));
        assert_eq!(
            feed(&mut t, &[Critical, Critical, Critical, Critical]),
            vec![None, None, Some(Critical), Some(Critical)]
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut t = StatusThresholds::new(0, 2, 2);
        assert_eq!(t.observe(Passing), Some(Passing));
        assert_eq!(
            feed(&mut t, &[Critical, Passing, Critical, Critical]),
            vec![None, Some(Passing), None, Some(Critical)]
        );
    }

    #[test]
    fn failures_before_warning_reports_warning_before_critical() {
        let mut t = StatusThresholds::new(0, 1, 3);
        assert_eq!(t.observe(Passing), Some(Passing));
        assert_eq!(
            feed(&mut t, &[Critical, Critical, Critical, Critical]),
            vec![Some(Warning), Some(Warning), Some(Critical), Some(Critical)]
        );
    }

    #[test]
    fn warning_threshold_above_critical_never_reports_warning() {
        let mut t = StatusThresholds::new(0, 5, 2);
        assert_eq!(t.observe(Passing), Some(Passing));
        assert_eq!(
            feed(&mut t, &[Critical, Critical]),
            vec![None, Some(Critical)]
        );
    }

    #[test]
    fn thresholds_of_one_behave_like_zero() {
        let mut one = StatusThresholds::new(1, 1, 1);
        let mut zero = StatusThresholds::new(0, 0, 0);
        let seq = [Passing, Critical, Passing, Warning, Critical, Critical];
        assert_eq!(feed(&mut one, &seq), feed(&mut zero, &seq));
    }

    #[test]
    fn counters_saturate_instead_of_overflowing() {
        let mut t = StatusThresholds::new(u32::MAX, 0, 0);
        assert_eq!(t.observe(Passing), Some(Passing));
        assert_eq!(t.observe(Passing), Some(Passing));
    }
}
