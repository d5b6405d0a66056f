//! A circuit breaker for the model service: misses fail fast while it keeps failing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Breaker state, shared by every request.
///
/// A circuit breaker for the model service: after repeated failures to reach it, misses
/// fail fast (503 with `Retry-After`) instead of each waiting for a timeout; after a
/// cool-down one trial call goes through, and a success closes the circuit again.
///
/// The right to call is a [`Permit`]: whatever happens to the call (answered, failed,
/// or its future dropped by a client hang-up or a deadline), the permit reports an
/// outcome when it goes away, so the half-open state can never wait for a report that
/// cannot come.
#[derive(Debug)]
pub struct CircuitBreaker {
    /// Consecutive failures that open the circuit.
    threshold: u32,
    /// How long the circuit stays open before a trial call.
    cool_down: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls go through; `failures` consecutive ones failed so far.
    Closed { failures: u32 },
    /// Calls fail fast until `until`.
    Open { until: Instant },
    /// One trial call is in flight; others fail fast until its permit reports.
    HalfOpen,
}

/// A call was refused because the circuit is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// When a trial call will be let through again.
    pub retry_after: Duration,
}

/// What a permitted call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The service answered (whatever it answered).
    Reached,
    /// The service could not be reached or did not answer in time.
    Unreachable,
}

/// The right to make one call. Report with [`Permit::report`]; dropped without a report
/// (the call's future was cancelled), it counts as a call that learned nothing: a trial
/// call gives its turn back at once, so the next caller becomes the trial.
#[derive(Debug)]
#[must_use = "a permit reports the call's outcome; dropping it unreported gives the turn back"]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    trial: bool,
    reported: bool,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Arc<Self> {
        Arc::new(Self {
            threshold: threshold.max(1),
            cool_down,
            state: Mutex::new(State::Closed { failures: 0 }),
        })
    }

    /// Asks to make a call: a [`Permit`] to go ahead, or how long the circuit stays open.
    pub fn admit(self: &Arc<Self>) -> Result<Permit, Open> {
        let mut state = self.lock();
        let trial = match *state {
            State::Closed { .. } => false,
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(Open {
                        retry_after: until - now,
                    });
                }
                *state = State::HalfOpen;
                tracing::info!("model circuit half-open: letting one trial call through");
                true
            }
            // The trial's permit reports (or is dropped) soon: retry in a second.
            State::HalfOpen => {
                return Err(Open {
                    retry_after: Duration::from_secs(1),
                });
            }
        };
        Ok(Permit {
            breaker: Arc::clone(self),
            trial,
            reported: false,
        })
    }

    fn succeeded(&self) {
        let mut state = self.lock();
        if matches!(*state, State::HalfOpen | State::Open { .. }) {
            tracing::info!("model circuit closed: the model service answers again");
        }
        *state = State::Closed { failures: 0 };
    }

    fn failed(&self) {
        let mut state = self.lock();
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::HalfOpen | State::Open { .. } => self.threshold,
        };
        if failures >= self.threshold {
            if !matches!(*state, State::Open { .. }) {
                tracing::warn!(
                    cool_down_ms = self.cool_down.as_millis() as u64,
                    "model circuit open: failing model calls fast"
                );
            }
            *state = State::Open {
                until: Instant::now() + self.cool_down,
            };
        } else {
            *state = State::Closed { failures };
        }
    }

    /// A trial whose call was cancelled: the circuit stays open but due, so the next
    /// caller makes the trial at once.
    fn trial_abandoned(&self) {
        let mut state = self.lock();
        if *state == State::HalfOpen {
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Permit {
    /// Reports what the call came to; consumes the permit.
    pub fn report(mut self, outcome: CallOutcome) {
        self.reported = true;
        match outcome {
            CallOutcome::Reached => self.breaker.succeeded(),
            CallOutcome::Unreachable => self.breaker.failed(),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported && self.trial {
            self.breaker.trial_abandoned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(breaker: &Arc<CircuitBreaker>) {
        breaker
            .admit()
            .expect("admitted")
            .report(CallOutcome::Unreachable);
    }

    /// A breaker opened by one failure, with no cool-down: the next call is the trial.
    fn due_for_a_trial() -> Arc<CircuitBreaker> {
        let breaker = CircuitBreaker::new(1, Duration::ZERO);
        fail(&breaker);
        breaker
    }

    #[test]
    fn a_closed_breaker_admits_calls_and_tolerates_fewer_failures_than_the_threshold() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(60));
        fail(&breaker);
        fail(&breaker);
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn the_threshold_of_consecutive_failures_opens_it() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(60));
        fail(&breaker);
        fail(&breaker);
        let open = breaker.admit().unwrap_err();
        assert!(open.retry_after > Duration::from_secs(50));
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(60));
        fail(&breaker);
        breaker.admit().unwrap().report(CallOutcome::Reached);
        fail(&breaker);
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn after_the_cool_down_one_trial_goes_through_and_its_success_closes_it() {
        let breaker = due_for_a_trial();
        let trial = breaker.admit().expect("the trial call");
        assert!(breaker.admit().is_err(), "others wait for the trial");
        trial.report(CallOutcome::Reached);
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn a_failed_trial_opens_it_again() {
        let breaker = CircuitBreaker::new(5, Duration::from_secs(60));
        for _ in 0..5 {
            fail(&breaker);
        }
        *breaker.lock() = State::Open {
            until: Instant::now(),
        };
        fail(&breaker);
        assert!(matches!(*breaker.lock(), State::Open { .. }));
        assert!(breaker.admit().is_err());
    }

    #[test]
    fn a_dropped_trial_permit_lets_the_next_caller_make_the_trial() {
        let breaker = due_for_a_trial();
        let trial = breaker.admit().expect("the trial call");
        drop(trial);
        let next = breaker.admit().expect("the next caller is the new trial");
        next.report(CallOutcome::Reached);
        assert_eq!(*breaker.lock(), State::Closed { failures: 0 });
    }

    #[test]
    fn a_trial_future_cancelled_by_a_deadline_never_wedges_the_circuit() {
        let breaker = due_for_a_trial();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let trial_call = {
            let breaker = Arc::clone(&breaker);
            async move {
                let permit = breaker.admit().expect("the trial call");
                std::future::pending::<()>().await;
                permit.report(CallOutcome::Reached);
            }
        };
        let cancelled = runtime
            .block_on(async { tokio::time::timeout(Duration::from_millis(10), trial_call).await });
        assert!(cancelled.is_err(), "the trial call was cut off");
        assert!(
            breaker.admit().is_ok(),
            "the circuit lets a new trial through"
        );
    }

    #[test]
    fn permits_of_a_closed_circuit_dropped_unreported_change_nothing() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(60));
        drop(breaker.admit().unwrap());
        assert_eq!(*breaker.lock(), State::Closed { failures: 0 });
    }
}
