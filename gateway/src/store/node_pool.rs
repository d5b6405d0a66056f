//! Which store node to ask next: round robin over live nodes, and the dead-node
//! bookkeeping (consecutive failures, growing back-off) behind it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The health of every node of one store client, indexed `0..len` in the order the
/// settings list them.
///
/// The rules are those of Elastic's official transports (elastic-transport-python
/// `NodePool`, `dead_node_backoff_factor` and `max_dead_node_backoff`; the JS and Go
/// clients do the same): a node that fails is dead until now + [`backoff`]; selection
/// skips dead nodes; when every node is dead the one whose back-off ends first is tried
/// ("resurrected"); a success makes a node live and resets its failures.
pub struct NodePool {
    health: Mutex<Vec<NodeHealth>>,
    /// Nodes with at least one failure not yet followed by a success: while 0 (the usual
    /// case), selection and success reports take no lock.
    failing: AtomicUsize,
    /// Round-robin position.
    cursor: AtomicUsize,
    len: usize,
    backoff_factor: Duration,
    max_backoff: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
struct NodeHealth {
    /// Failures since the last success.
    consecutive_failures: u32,
    /// Dead until then; `None`: never failed, or answered since.
    dead_until: Option<Instant>,
}

impl NodeHealth {
    fn is_live(&self, now: Instant) -> bool {
        self.dead_until.is_none_or(|until| until <= now)
    }
}

/// What [`NodePool::mark_dead`] did to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Death {
    /// Failures since the node's last success, this one included (1 or more).
    pub consecutive_failures: u32,
    /// How long the node is now skipped.
    pub backoff: Duration,
    /// Whether the node was live (never failed, or its back-off was over) until this
    /// failure: a node already dead, tried because every node was, is not newly dead.
    pub newly_dead: bool,
}

/// The back-off of a node after `consecutive_failures` (1 or more) failures in a row:
/// `min(max_backoff, backoff_factor * 2^(consecutive_failures - 1))`, the formula of
/// elastic-transport-python's `NodePool.mark_dead` (`dead_node_backoff_factor`,
/// `max_dead_node_backoff`). With the defaults (1 s, 30 s): 1, 2, 4, 8, 16, 30, 30, ... s.
pub fn backoff(
    backoff_factor: Duration,
    max_backoff: Duration,
    consecutive_failures: u32,
) -> Duration {
    let exponent = consecutive_failures.saturating_sub(1).min(31);
    backoff_factor
        .checked_mul(1 << exponent)
        .map_or(max_backoff, |backoff| backoff.min(max_backoff))
}

impl NodePool {
    /// A pool of `len` (1 or more) live nodes, a dead node skipped for
    /// [`backoff`]`(backoff_factor, max_backoff, its failures)`.
    pub fn new(len: usize, backoff_factor: Duration, max_backoff: Duration) -> Self {
        assert!(len > 0, "a store client has at least one node");
        Self {
            health: Mutex::new(vec![NodeHealth::default(); len]),
            failing: AtomicUsize::new(0),
            cursor: AtomicUsize::new(0),
            len,
            backoff_factor,
            max_backoff,
        }
    }

    /// The node to ask next: the next live one in round-robin order; when every node is
    /// dead, the one whose back-off ends first.
    pub fn select(&self, now: Instant) -> usize {
        self.select_other_than(None, now)
            .expect("with no node excluded there is always one")
    }

    /// The node to retry on after `failed`: as [`NodePool::select`], never `failed`;
    /// `None` when it is the only node.
    pub fn select_other(&self, failed: usize, now: Instant) -> Option<usize> {
        self.select_other_than(Some(failed), now)
    }

    fn select_other_than(&self, excluded: Option<usize>, now: Instant) -> Option<usize> {
        if self.len == 1 {
            return excluded.is_none().then_some(0);
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Acquire) == 0 {
            let node = start % self.len;
            return Some(match excluded {
                Some(excluded) if excluded == node => (node + 1) % self.len,
                _ => node,
            });
        }
        let health = self
            .health
            .lock()
            .expect("node health is never left half-updated");
        let candidates = (0..self.len)
            .map(|offset| (start + offset) % self.len)
            .filter(|&node| Some(node) != excluded);
        let live = candidates.clone().find(|&node| health[node].is_live(now));
        // Every candidate dead: the one whose back-off ends first (they all have one).
        live.or_else(|| candidates.min_by_key(|&node| health[node].dead_until))
    }

    /// Records that `node` could not be reached (or answered 502/503/504): dead until
    /// `now` + its back-off.
    pub fn mark_dead(&self, node: usize, now: Instant) -> Death {
        let mut health = self
            .health
            .lock()
            .expect("node health is never left half-updated");
        let state = &mut health[node];
        let newly_dead = state.is_live(now);
        if state.consecutive_failures == 0 {
            self.failing.fetch_add(1, Ordering::AcqRel);
        }
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let backoff = backoff(
            self.backoff_factor,
            self.max_backoff,
            state.consecutive_failures,
        );
        state.dead_until = Some(now + backoff);
        Death {
            consecutive_failures: state.consecutive_failures,
            backoff,
            newly_dead,
        }
    }

    /// Records that `node` answered: live, failures reset. Whether it had failed before
    /// (so the caller can say it is alive again).
    pub fn mark_alive(&self, node: usize) -> bool {
        if self.failing.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut health = self
            .health
            .lock()
            .expect("node health is never left half-updated");
        let state = &mut health[node];
        if state.consecutive_failures == 0 {
            return false;
        }
        *state = NodeHealth::default();
        self.failing.fetch_sub(1, Ordering::AcqRel);
        true
    }

    /// How many nodes the pool holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a pool holds at least one node (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn pool(len: usize) -> NodePool {
        NodePool::new(len, SECOND, 30 * SECOND)
    }

    /// Marks node `index` dead `times` times at `at`.
    fn fail(pool: &NodePool, index: usize, times: usize, at: Instant) {
        for _ in 0..times {
            pool.mark_dead(index, at);
        }
    }

    #[test]
    fn backoff_doubles_from_the_factor_and_stops_at_the_maximum() {
        let got: Vec<u64> = (1..=8)
            .map(|failures| backoff(SECOND, 30 * SECOND, failures).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(
            backoff(SECOND, 30 * SECOND, u32::MAX),
            30 * SECOND,
            "no overflow"
        );
    }

    #[test]
    fn consecutive_failures_grow_the_backoff_of_a_node() {
        let pool = pool(2);
        let now = Instant::now();

        let deaths: Vec<Death> = (0..3).map(|_| pool.mark_dead(0, now)).collect();

        let backoffs: Vec<Duration> = deaths.iter().map(|death| death.backoff).collect();
        assert_eq!(backoffs, [SECOND, 2 * SECOND, 4 * SECOND]);
        assert_eq!(deaths[2].consecutive_failures, 3);
        assert!(deaths[0].newly_dead && !deaths[1].newly_dead);
    }

    #[test]
    fn round_robin_goes_over_every_node_and_skips_dead_ones() {
        let pool = pool(3);
        let now = Instant::now();
        let picks: Vec<usize> = (0..6).map(|_| pool.select(now)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);

        pool.mark_dead(1, now);

        let picks: Vec<usize> = (0..6).map(|_| pool.select(now)).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn a_dead_node_is_asked_again_once_its_backoff_is_over() {
        let pool = pool(2);
        let now = Instant::now();
        pool.mark_dead(0, now);

        let during: Vec<usize> = (0..4).map(|_| pool.select(now + SECOND / 2)).collect();
        let after: Vec<usize> = (0..4).map(|_| pool.select(now + SECOND)).collect();

        assert_eq!(during, [1, 1, 1, 1]);
        assert!(after.contains(&0), "{after:?}");
    }

    #[test]
    fn when_every_node_is_dead_the_one_whose_backoff_ends_first_is_tried() {
        let pool = pool(3);
        let now = Instant::now();
        // Node 0: 2 failures (2 s); node 1: 1 failure (1 s), marked later; node 2: 3 failures (4 s).
        fail(&pool, 0, 2, now);
        pool.mark_dead(1, now + SECOND / 2);
        fail(&pool, 2, 3, now);

        let picks: Vec<usize> = (0..3).map(|_| pool.select(now + SECOND)).collect();

        assert_eq!(picks, [1, 1, 1]);
    }

    #[test]
    fn a_success_makes_a_node_live_and_resets_its_failures() {
        let pool = pool(2);
        let now = Instant::now();
        fail(&pool, 0, 2, now);

        assert!(pool.mark_alive(0), "it had failed");
        assert!(!pool.mark_alive(0), "already live");

        let picks: Vec<usize> = (0..2).map(|_| pool.select(now)).collect();
        assert!(picks.contains(&0), "{picks:?}");
        assert_eq!(
            pool.mark_dead(0, now).backoff,
            SECOND,
            "back to the first back-off"
        );
    }

    #[test]
    fn a_retry_never_goes_to_the_node_that_failed() {
        let cases = [
            (pool(1), "the only node"),
            (pool(2), "two live nodes"),
            (pool(3), "three live nodes"),
        ];
        let now = Instant::now();
        for (pool, description) in cases {
            for failed in 0..pool.len() {
                for _ in 0..pool.len() {
                    let other = pool.select_other(failed, now);
                    assert_ne!(other, Some(failed), "{description}");
                    assert_eq!(other.is_none(), pool.len() == 1, "{description}");
                }
            }
        }
        let both_dead = pool(2);
        both_dead.mark_dead(0, now);
        both_dead.mark_dead(1, now);
        assert_eq!(
            both_dead.select_other(0, now),
            Some(1),
            "every other node dead"
        );
    }
}
