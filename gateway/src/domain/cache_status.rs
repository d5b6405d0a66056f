//! `CacheStatus`: how the gateway's cache handled a request, as the RFC 9211
//! `Cache-Status` response header says it.

use std::fmt;

/// The cache identifier of the gateway's member of the `Cache-Status` list (RFC 9211
/// section 2: a token naming the cache).
pub const CACHE_IDENTIFIER: &str = "inference-gateway";

/// Why a request went forward to the model: the `fwd` parameter (RFC 9211 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardReason {
    /// `miss`: the store held no prediction that could be used (or could not be read).
    Miss,
    /// `request`: the request's directives (`no-cache`) did not allow a stored prediction.
    /// The gateway does not look one up first, so it is said whether or not one exists.
    Request,
    /// `stale`: a stored prediction was found but was older than `max-age` or the
    /// configured maximum age.
    Stale,
}

impl ForwardReason {
    /// The `fwd` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Miss => "miss",
            Self::Request => "request",
            Self::Stale => "stale",
        }
    }

    /// The reason of a batch's one model call from the reasons of the ids it was made for:
    /// `request` if any (it is the batch's directive), `stale` if every id had a stale
    /// prediction, `miss` otherwise; `None` when no id went forward.
    pub fn of_batch(reasons: impl IntoIterator<Item = Self>) -> Option<Self> {
        reasons
            .into_iter()
            .reduce(|batch, item| match (batch, item) {
                (Self::Request, _) | (_, Self::Request) => Self::Request,
                (Self::Stale, Self::Stale) => Self::Stale,
                _ => Self::Miss,
            })
    }
}

/// A request that went forward to the model, and what became of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Why it went forward (`fwd`).
    pub reason: ForwardReason,
    /// Whether the store acknowledged the write of the computed prediction (`stored`);
    /// false under `no-store` and when the write went to the write-behind queue.
    pub stored: bool,
    /// Whether the request waited for another request's model call (`collapsed`).
    pub collapsed: bool,
    /// Whether the store could not be read, so it was not consulted (`detail=bypass`,
    /// the body's `cache: "bypass"`).
    pub bypass: bool,
}

/// How the cache handled a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// `hit`: answered from the store without the model.
    Hit,
    /// `fwd=...`: the model computed the answer.
    Forwarded(Forward),
    /// Neither: nothing usable was stored and the request could not go forward
    /// (`only-if-cached`, `GET /v1/predictions`); said as `detail=not-cached`.
    NotCached,
}

/// The gateway's member of the `Cache-Status` header (RFC 9211 section 2), an RFC 8941
/// list member: the cache identifier (a token) with parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    /// Hit, forwarded or neither.
    pub handling: Handling,
    /// The answer's remaining freshness lifetime in seconds (`ttl`, RFC 9211 section 2.4;
    /// negative when stale), present only when a maximum age for stored predictions is
    /// configured: without one a prediction stays fresh until its model is replaced.
    pub ttl: Option<i64>,
}

impl CacheStatus {
    /// A hit with no maximum age configured: the status of most answers.
    pub const HIT: Self = Self {
        handling: Handling::Hit,
        ttl: None,
    };
}

/// [`CacheStatus::HIT`] as written, for the header value built once.
pub const HIT_CACHE_STATUS: &str = "inference-gateway; hit";

impl fmt::Display for CacheStatus {
    /// `inference-gateway; hit`, `inference-gateway; fwd=miss; stored`, ... Boolean
    /// parameters are bare when true and `?0` when false (RFC 8941 section 4.1.1.2).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CACHE_IDENTIFIER)?;
        match self.handling {
            Handling::Hit => f.write_str("; hit")?,
            Handling::Forwarded(forward) => {
                write!(f, "; fwd={}", forward.reason.as_str())?;
                f.write_str(if forward.stored {
                    "; stored"
                } else {
                    "; stored=?0"
                })?;
                if forward.collapsed {
                    f.write_str("; collapsed")?;
                }
            }
            Handling::NotCached => {}
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={ttl}")?;
        }
        match self.handling {
            Handling::Forwarded(Forward { bypass: true, .. }) => f.write_str("; detail=bypass"),
            Handling::NotCached => f.write_str("; detail=not-cached"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(reason: ForwardReason, stored: bool) -> Handling {
        Handling::Forwarded(Forward {
            reason,
            stored,
            collapsed: false,
            bypass: false,
        })
    }

    #[test]
    fn each_handling_is_written_as_rfc_9211_parameters() {
        let cases = [
            (
                "hit",
                CacheStatus {
                    handling: Handling::Hit,
                    ttl: None,
                },
                "inference-gateway; hit",
            ),
            (
                "miss, stored",
                CacheStatus {
                    handling: forwarded(ForwardReason::Miss, true),
                    ttl: None,
                },
                "inference-gateway; fwd=miss; stored",
            ),
            (
                "no-cache, not stored (no-store)",
                CacheStatus {
                    handling: forwarded(ForwardReason::Request, false),
                    ttl: None,
                },
                "inference-gateway; fwd=request; stored=?0",
            ),
            (
                "stale with a ttl",
                CacheStatus {
                    handling: forwarded(ForwardReason::Stale, true),
                    ttl: Some(60),
                },
                "inference-gateway; fwd=stale; stored; ttl=60",
            ),
            (
                "hit past its maximum age cannot happen, but a negative ttl is written as is",
                CacheStatus {
                    handling: Handling::Hit,
                    ttl: Some(-3),
                },
                "inference-gateway; hit; ttl=-3",
            ),
            (
                "collapsed bypass",
                CacheStatus {
                    handling: Handling::Forwarded(Forward {
                        reason: ForwardReason::Miss,
                        stored: true,
                        collapsed: true,
                        bypass: true,
                    }),
                    ttl: None,
                },
                "inference-gateway; fwd=miss; stored; collapsed; detail=bypass",
            ),
            (
                "not cached",
                CacheStatus {
                    handling: Handling::NotCached,
                    ttl: None,
                },
                "inference-gateway; detail=not-cached",
            ),
        ];
        for (description, status, expected) in cases {
            assert_eq!(status.to_string(), expected, "{description}");
        }
    }

    #[test]
    fn a_batch_is_forwarded_for_request_if_any_stale_if_all_else_miss() {
        use ForwardReason::{Miss, Request, Stale};
        let cases: [(&str, &[ForwardReason], Option<ForwardReason>); 6] = [
            ("nothing forwarded", &[], None),
            ("all missing", &[Miss, Miss], Some(Miss)),
            ("all stale", &[Stale, Stale], Some(Stale)),
            ("stale and missing", &[Stale, Miss], Some(Miss)),
            ("missing then stale", &[Miss, Stale], Some(Miss)),
            ("no-cache", &[Request, Request], Some(Request)),
        ];
        for (description, reasons, expected) in cases {
            assert_eq!(
                ForwardReason::of_batch(reasons.iter().copied()),
                expected,
                "{description}"
            );
        }
    }

    #[test]
    fn the_prewritten_hit_status_is_what_a_plain_hit_displays() {
        assert_eq!(CacheStatus::HIT.to_string(), HIT_CACHE_STATUS);
    }
}
