//! Request extractors: JSON, query and path with our error contract, and the two ways of
//! authenticating (Bearer for `/api/v1`, HTTP Basic write keys for `/v1`).

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use base64::Engine;
use idgraph_app::access::{Principal, authenticate};
use idgraph_app::{AppError, ErrorKind};
use idgraph_core::auth::Scope;
use idgraph_store::{PageRequest, Store};
use serde::Deserialize;

use crate::platform::{CallSlot, Surface, admit};
use crate::{ApiError, AppState};

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct Json<T>(pub(crate) T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct Query<T>(pub(crate) T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct Path<T>(pub(crate) T);

/// `?limit=&cursor=` of every list endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Items per page: 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl ListQuery {
    pub(crate) fn page(self) -> Result<PageRequest, ApiError> {
        page_request(self.limit, self.cursor)
    }
}

/// `limit` (default 50, at most 1000) and an opaque `cursor`, as every list endpoint takes them.
pub(crate) fn page_request(
    limit: Option<u32>,
    cursor: Option<String>,
) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(PageRequest::DEFAULT_LIMIT);
    if !(1..=PageRequest::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be between 1 and {}", PageRequest::MAX_LIMIT),
        ));
    }
    Ok(PageRequest {
        limit,
        after: cursor.filter(|c| !c.is_empty()),
    })
}

const ON_BEHALF_OF: &str = "x-idgraph-on-behalf-of";

fn unauthenticated(message: &str) -> ApiError {
    AppError::new(ErrorKind::Unauthenticated, "unauthenticated", message).into()
}

/// A caller of the management API, authenticated by `Authorization: Bearer <key>`.
#[derive(Debug)]
pub(crate) struct Auth(pub(crate) Principal);

impl<S: Store> FromRequestParts<AppState<S>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthenticated("missing Authorization: Bearer <key> header"))?;
        let header = header
            .to_str()
            .map_err(|_| unauthenticated("malformed Authorization header"))?;
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(unauthenticated("expected Authorization: Bearer <key>")),
        };
        let principal = authenticate(&state.store, token).await?;
        let principal = match parts.headers.get(ON_BEHALF_OF) {
            Some(value) => {
                let tenant = value.to_str().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_header",
                        "malformed X-Idgraph-On-Behalf-Of",
                    )
                })?;
                principal.acting_for(&state.store, tenant).await?
            }
            None => principal,
        };
        let slot = parts.extensions.get::<CallSlot>();
        admit(state, slot, &principal, Surface::Management)?;
        Ok(Auth(principal))
    }
}

/// A caller of the ingestion API: HTTP Basic with the write key as user name and an empty
/// password, exactly as Segment's client libraries send it.
#[derive(Debug)]
pub(crate) struct WriteKey(pub(crate) Principal);

/// Decodes `Basic base64(user:password)` and returns the user name.
pub(crate) fn basic_user(header: &str) -> Option<String> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let user = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    (!user.is_empty()).then(|| user.to_owned())
}

impl<S: Store> FromRequestParts<AppState<S>> for WriteKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(basic_user)
            .ok_or_else(|| {
                unauthenticated("expected HTTP Basic auth with the write key as user name")
            })?;
        let principal = authenticate(&state.store, &key).await?;
        principal.require(Scope::EventsWrite)?;
        let slot = parts.extensions.get::<CallSlot>();
        admit(state, slot, &principal, Surface::Ingestion)?;
        Ok(WriteKey(principal))
    }
}

#[cfg(test)]
mod tests {
    use super::basic_user;

    #[test]
    fn basic_auth_takes_the_user_name() {
        // "WK_bench_123:" as the Segment Python client sends it.
        assert_eq!(
            basic_user("Basic V0tfYmVuY2hfMTIzOg==").as_deref(),
            Some("WK_bench_123")
        );
        assert_eq!(
            basic_user("basic V0tfYmVuY2hfMTIz").as_deref(),
            Some("WK_bench_123")
        );
        assert_eq!(basic_user("Bearer V0tfYmVuY2hfMTIzOg=="), None);
        assert_eq!(basic_user("Basic !!!"), None);
        assert_eq!(
            basic_user("Basic Og=="),
            None,
            "an empty user name is no key"
        );
    }
}
