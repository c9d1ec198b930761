//! What every authenticated call goes through besides its handler: the per-key rate limit (a
//! token bucket; `RateLimit-*` headers on every answer, 429 with `Retry-After` beyond it) and
//! the audit log (one entry per management call).
//!
//! Authentication happens in the `Auth` / `WriteKey` extractors, inside the handler call; the
//! middleware here hands them a [`CallSlot`] in the request's extensions and reads back who
//! called (and how much of its budget is left) once the handler has answered.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use idgraph_app::access::Principal;
use idgraph_store::{AuditEntry, Store};
use jiff::Timestamp;

use crate::{ApiError, AppState};

/// Which API a call is on: write keys live in browsers and send bursts, management keys do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Surface {
    Ingestion,
    Management,
}

/// Requests per second a key may make when it has no limit of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitDefaults {
    pub ingestion_per_sec: u32,
    pub management_per_sec: u32,
}

impl Default for RateLimitDefaults {
    fn default() -> Self {
        Self {
            ingestion_per_sec: 1000,
            management_per_sec: 100,
        }
    }
}

type Bucket = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    StateInformationMiddleware,
>;

/// The buckets of the keys seen so far, by key, surface and rate (a key's rate never changes,
/// but keeping it in the map key makes that an assumption nothing depends on).
#[derive(Debug)]
pub struct RateLimits {
    defaults: RateLimitDefaults,
    buckets: Mutex<HashMap<(String, Surface, u32), Arc<Bucket>>>,
    clock: DefaultClock,
}

/// Where a key stands after a request: what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateState {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    /// Seconds until the bucket is full again (or, when denied, until a request may pass).
    pub(crate) reset_secs: u64,
    pub(crate) denied: bool,
}

impl RateLimits {
    pub fn new(defaults: RateLimitDefaults) -> Self {
        Self {
            defaults,
            buckets: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one token from the caller's bucket. The master key is the operator's and is never
    /// limited.
    pub(crate) fn check(&self, principal: &Principal, surface: Surface) -> Option<RateState> {
        if principal.is_master {
            return None;
        }
        let per_sec = principal.rate_limit_per_sec.unwrap_or(match surface {
            Surface::Ingestion => self.defaults.ingestion_per_sec,
            Surface::Management => self.defaults.management_per_sec,
        });
        let rate = NonZeroU32::new(per_sec)?;
        let bucket = {
            let mut buckets = self
                .buckets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(
                buckets
                    .entry((principal.key_id.clone(), surface, per_sec))
                    .or_insert_with(|| {
                        Arc::new(
                            RateLimiter::direct(Quota::per_second(rate))
                                .with_middleware::<StateInformationMiddleware>(),
                        )
                    }),
            )
        };
        let seconds_for = |tokens: u32| -> u64 {
            // Whole seconds, rounded up: a client that waits this long is sure to pass.
            u64::from(tokens).div_ceil(u64::from(per_sec))
        };
        Some(match bucket.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateState {
                    limit: per_sec,
                    remaining,
                    reset_secs: seconds_for(per_sec - remaining.min(per_sec)),
                    denied: false,
                }
            }
            Err(not_until) => {
                let wait: Duration = not_until.wait_time_from(self.clock.now());
                RateState {
                    limit: per_sec,
                    remaining: 0,
                    reset_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                    denied: true,
                }
            }
        })
    }
}

/// Who called and how much of their budget is left, filled in by the extractors.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallSlot(Arc<Mutex<Option<Caller>>>);

#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) rate: Option<RateState>,
}

impl CallSlot {
    pub(crate) fn fill(&self, caller: Caller) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(caller);
    }

    fn take(&self) -> Option<Caller> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Called by the extractors once the caller is known: records it and applies its rate limit.
pub(crate) fn admit<S>(
    state: &AppState<S>,
    slot: Option<&CallSlot>,
    principal: &Principal,
    surface: Surface,
) -> Result<(), ApiError> {
    let rate = state.limits.check(principal, surface);
    if let Some(slot) = slot {
        slot.fill(Caller {
            principal: principal.clone(),
            rate,
        });
    }
    match rate {
        Some(rate) if rate.denied => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this key may make {} requests per second; retry in {} s",
                rate.limit, rate.reset_secs
            ),
        )),
        _ => Ok(()),
    }
}

fn header(value: u64) -> HeaderValue {
    HeaderValue::from(value)
}

/// The middleware: hands out the slot, then adds the rate-limit headers and the audit entry.
pub(crate) async fn around<S: Store>(
    State(state): State<AppState<S>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let slot = CallSlot::default();
    request.extensions_mut().insert(slot.clone());
    let action = format!(
        "{} {}",
        request.method(),
        request.extensions().get::<MatchedPath>().map_or_else(
            || request.uri().path().to_owned(),
            |p| p.as_str().to_owned()
        )
    );
    let object = object_of(
        request.uri().path(),
        request.extensions().get::<MatchedPath>(),
    );
    let management = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let Some(caller) = slot.take() else {
        return response;
    };
    if let Some(rate) = caller.rate {
        let headers = response.headers_mut();
        headers.insert("ratelimit-limit", header(u64::from(rate.limit)));
        headers.insert("ratelimit-remaining", header(u64::from(rate.remaining)));
        headers.insert("ratelimit-reset", header(rate.reset_secs));
        if rate.denied {
            headers.insert("retry-after", header(rate.reset_secs.max(1)));
        }
    }
    if management {
        let principal = caller.principal;
        let entry = AuditEntry {
            entry_id: state.event_ids.next(),
            tenant_id: principal.tenant_id.clone(),
            at: Timestamp::now(),
            actor: principal.key_id.clone(),
            actor_tenant: principal.key_tenant.clone(),
            on_behalf_of: principal.on_behalf_of.clone(),
            action,
            object,
            status: response.status().as_u16(),
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        };
        state.audit.record(entry).await;
    }
    response
}

/// The `{...}` segments of the matched route, read off the actual path: the object acted on.
fn object_of(path: &str, matched: Option<&MatchedPath>) -> Option<String> {
    let pattern = matched?.as_str();
    let values: Vec<&str> = pattern
        .split('/')
        .zip(path.split('/'))
        .filter(|(p, _)| p.starts_with('{'))
        .map(|(_, v)| v)
        .collect();
    (!values.is_empty()).then(|| values.join("/"))
}

#[cfg(test)]
mod tests {
    use idgraph_core::auth::Scopes;
    use idgraph_core::tenancy::TenantId;

    use super::*;

    fn principal(limit: Option<u32>) -> Principal {
        Principal {
            key_id: "k1".into(),
            key_tenant: TenantId::default_tenant(),
            tenant_id: TenantId::default_tenant(),
            on_behalf_of: None,
            scopes: Scopes::all(),
            workspace: None,
            is_master: false,
            rate_limit_per_sec: limit,
        }
    }

    #[test]
    fn a_bucket_empties_then_refuses_with_a_wait() {
        let limits = RateLimits::new(RateLimitDefaults::default());
        let key = principal(Some(3));
        let states: Vec<RateState> = (0..4)
            .map(|_| limits.check(&key, Surface::Management).expect("limited"))
            .collect();
        assert_eq!(
            states.iter().map(|s| s.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert!(!states[2].denied && states[3].denied);
        assert_eq!(states[3].reset_secs, 1);
        // Each surface has its own bucket; the master key has none.
        assert!(
            !limits
                .check(&key, Surface::Ingestion)
                .expect("limited")
                .denied
        );
        let mut master = principal(None);
        master.is_master = true;
        assert_eq!(limits.check(&master, Surface::Management), None);
    }

    #[test]
    fn defaults_apply_to_keys_without_a_limit() {
        let limits = RateLimits::new(RateLimitDefaults {
            ingestion_per_sec: 7,
            management_per_sec: 5,
        });
        let key = principal(None);
        assert_eq!(
            limits.check(&key, Surface::Ingestion).map(|s| s.limit),
            Some(7)
        );
        assert_eq!(
            limits.check(&key, Surface::Management).map(|s| s.limit),
            Some(5)
        );
    }
}
