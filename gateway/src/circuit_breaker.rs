//! A circuit breaker for the model service: after repeated failures to reach it, misses
//! fail fast (503 with `Retry-After`) instead of each waiting for a timeout; after a
//! cool-down one trial call goes through, and a success closes the circuit again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker state, shared by every request.
#[derive(Debug)]
pub struct CircuitBreaker {
    /// Consecutive failures that open the circuit.
    threshold: u32,
    /// How long the circuit stays open before a trial call.
    cool_down: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Calls go through; `failures` consecutive ones failed so far.
    Closed { failures: u32 },
    /// Calls fail fast until `until`.
    Open { until: Instant },
    /// One trial call is in flight; others fail fast until it reports.
    HalfOpen,
}

/// A call was refused because the circuit is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// When a trial call will be let through again.
    pub retry_after: Duration,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Asks to make a call: `Ok` to go ahead (then report with `succeeded`/`failed`).
    pub fn admit(&self) -> Result<(), Open> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::HalfOpen;
                    tracing::info!("model circuit half-open: letting one trial call through");
                    Ok(())
                } else {
                    Err(Open {
                        retry_after: until - now,
                    })
                }
            }
            State::HalfOpen => Err(Open {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Reports a call that reached the service.
    pub fn succeeded(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Closed { failures: 0 }) {
            if matches!(*state, State::HalfOpen | State::Open { .. }) {
                tracing::info!("model circuit closed: the model service answers again");
            }
            *state = State::Closed { failures: 0 };
        }
    }

    /// Reports a call that could not reach the service (down or timed out).
    pub fn failed(&self) {
        let mut state = self.lock();
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::HalfOpen | State::Open { .. } => self.threshold,
        };
        if failures >= self.threshold {
            tracing::warn!(
                cool_down_ms = self.cool_down.as_millis() as u64,
                "model circuit open: failing model calls fast"
            );
            *state = State::Open {
                until: Instant::now() + self.cool_down,
            };
        } else {
            *state = State::Closed { failures };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_breaker_admits_calls_and_tolerates_fewer_failures_than_the_threshold() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(60));
        breaker.failed();
        breaker.failed();
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn the_threshold_of_consecutive_failures_opens_it() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(60));
        breaker.failed();
        breaker.failed();
        let open = breaker.admit().unwrap_err();
        assert!(open.retry_after > Duration::from_secs(50));
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(60));
        breaker.failed();
        breaker.succeeded();
        breaker.failed();
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn after_the_cool_down_one_trial_goes_through_and_its_success_closes_it() {
        let breaker = CircuitBreaker::new(1, Duration::ZERO);
        breaker.failed();
        assert!(breaker.admit().is_ok(), "the trial call");
        assert!(breaker.admit().is_err(), "others wait for the trial");
        breaker.succeeded();
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn a_failed_trial_opens_it_again() {
        let breaker = CircuitBreaker::new(5, Duration::ZERO);
        for _ in 0..5 {
            breaker.failed();
        }
        assert!(breaker.admit().is_ok());
        breaker.failed();
        assert!(matches!(*breaker.lock(), State::Open { .. }));
    }
}
