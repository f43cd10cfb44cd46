//! The lease deadline as locker and its watchdog both see it, and the time
//! a stop may take before it.
//!
//! The lease's local deadline (the send time of the last answered
//! keepalive plus the TTL) is never later than etcd's own expiry of the
//! lease. Everything the command started must be gone by
//! `deadline - KILL_MARGIN`; a stop therefore begins `--kill-after` earlier
//! than that (SIGTERM), and ends there (SIGKILL).

use std::time::Duration;

/// Time reserved, before the lease's deadline, for SIGKILL to land on the
/// whole tree and for the watchdog to be scheduled late.
pub(crate) const KILL_MARGIN: Duration = Duration::from_millis(250);

/// How much earlier than the watchdog locker itself begins a stop, so that
/// a live locker always acts first (and says why).
pub(crate) const LOCKER_LEAD: Duration = Duration::from_millis(100);

/// Default `--kill-after` when it fits the lease.
pub(crate) const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);

/// The longest `--kill-after` a lease of `ttl` allows: a stop must begin no
/// earlier than half the TTL before the deadline, since a keepalive is
/// answered every TTL/3 and the deadline then sits 2/3 TTL ahead or more.
pub(crate) fn max_kill_after(ttl: Duration) -> Duration {
    (ttl / 2).saturating_sub(KILL_MARGIN + LOCKER_LEAD)
}

/// A point on the system's monotonic clock (`CLOCK_MONOTONIC`), in
/// nanoseconds: the one clock both processes read the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mono(pub(crate) u64);

impl Mono {
    pub(crate) fn now() -> Mono {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the kernel to fill in;
        // CLOCK_MONOTONIC exists on every Linux.
        unsafe {
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        }
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
        Mono(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    /// `at` (a std `Instant`) on this clock, never later than `at`: the
    /// clock is read before the `Instant`, so a stall in between moves the
    /// result earlier.
    pub(crate) fn from_instant(at: std::time::Instant) -> Mono {
        let before = Mono::now();
        let left = at.saturating_duration_since(std::time::Instant::now());
        before + left
    }

    pub(crate) fn saturating_sub(self, d: Duration) -> Mono {
        Mono(self.0.saturating_sub(nanos(d)))
    }

    /// How long from `self` until `later` (zero if it passed).
    pub(crate) fn until(self, later: Mono) -> Duration {
        Duration::from_nanos(later.0.saturating_sub(self.0))
    }
}

impl std::ops::Add<Duration> for Mono {
    type Output = Mono;
    fn add(self, d: Duration) -> Mono {
        Mono(self.0.saturating_add(nanos(d)))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_fits_in_half_the_ttl() {
        assert_eq!(
            max_kill_after(Duration::from_secs(2)),
            Duration::from_millis(650)
        );
        assert_eq!(
            max_kill_after(Duration::from_secs(10)),
            Duration::from_millis(4650)
        );
        assert_eq!(max_kill_after(Duration::from_millis(500)), Duration::ZERO);
    }

    #[test]
    fn an_instant_maps_no_later_than_itself() {
        let at = std::time::Instant::now() + Duration::from_secs(3);
        let before = Mono::now();
        let m = Mono::from_instant(at);
        let after = Mono::now();
        assert!(m <= after + Duration::from_secs(3));
        assert!(m >= before + Duration::from_millis(2900));
    }
}
