//! Segment's HTTP Tracking API wire format: body decoding (gzip), size limits, and turning each
//! JSON message into an `ingest::Message`, with clock-skew correction as Segment does it.

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use idgraph_app::ingest::{Message, MessageKind};
use jiff::Timestamp;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::ApiError;

/// Segment's limits: a message may be 32 KB, a batch 500 KB.
pub(crate) const MAX_MESSAGE_BYTES: usize = 32 * 1024;
pub(crate) const MAX_BATCH_BYTES: usize = 500 * 1024;

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Reads the request body, gunzipping it when `Content-Encoding: gzip`, refusing more than
/// `limit` bytes before or after decompression (a small gzip body may inflate enormously).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        bad_request(
            "payload_too_large",
            format!("the body is larger than {} KB", limit / 1024),
        )
    };
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => Ok(raw.to_vec()),
        "gzip" | "x-gzip" => {
            let mut inflated = Vec::with_capacity(raw.len() * 4);
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| {
                    bad_request(
                        "invalid_body",
                        format!("the gzip body cannot be decoded: {e}"),
                    )
                })?;
            if inflated.len() > limit {
                return Err(too_large());
            }
            Ok(inflated)
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported; use gzip or none"),
        )),
    }
}

/// The envelope of `/v1/batch`: items stay raw so each is measured and parsed on its own.
#[derive(serde::Deserialize)]
pub(crate) struct BatchEnvelope<'a> {
    #[serde(borrow)]
    pub(crate) batch: Vec<&'a RawValue>,
    #[serde(default, rename = "sentAt")]
    pub(crate) sent_at: Option<Value>,
}

pub(crate) fn parse_batch(bytes: &[u8]) -> Result<BatchEnvelope<'_>, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| bad_request("invalid_json", format!("the batch is not valid: {e}")))
}

/// An item that could not become a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

fn item_error(code: &'static str, message: impl Into<String>) -> ItemError {
    ItemError {
        code,
        message: message.into(),
    }
}

fn optional_id(object: &Map<String, Value>, field: &str) -> Result<Option<String>, ItemError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(item_error(
            "invalid_field",
            format!("{field} must be a string"),
        )),
    }
}

fn optional_text(object: &Map<String, Value>, field: &str) -> Result<Option<String>, ItemError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(item_error(
            "invalid_field",
            format!("{field} must be a string"),
        )),
    }
}

fn optional_object(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Map<String, Value>, ItemError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(item_error(
            "invalid_field",
            format!("{field} must be an object"),
        )),
    }
}

fn optional_time(value: Option<&Value>, field: &str) -> Result<Option<Timestamp>, ItemError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => crate::wire::client_time(s).map(Some).ok_or_else(|| {
            item_error(
                "invalid_field",
                format!("{field} must be an RFC 3339 timestamp between the years 1900 and 9000, got {s:?}"),
            )
        }),
        Some(_) => Err(item_error(
            "invalid_field",
            format!("{field} must be an RFC 3339 timestamp"),
        )),
    }
}

/// Parses one message. `kind` is fixed by the endpoint, or read from `type` in a batch;
/// `batch_sent_at` is the envelope's `sentAt`.
pub(crate) fn parse_message(
    raw: &str,
    kind: Option<MessageKind>,
    batch_sent_at: Option<&Value>,
    received_at: Timestamp,
    fresh_message_id: impl FnOnce() -> String,
) -> Result<Message, ItemError> {
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(item_error(
            "message_too_large",
            format!("a message may be at most {} KB", MAX_MESSAGE_BYTES / 1024),
        ));
    }
    let value: Value =
        serde_json::from_str(raw).map_err(|e| item_error("invalid_json", e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(item_error(
            "invalid_message",
            "a message must be a JSON object",
        ));
    };
    let kind = match kind {
        Some(kind) => kind,
        None => match object.get("type") {
            Some(Value::String(t)) => MessageKind::parse(t)
                .ok_or_else(|| item_error("unknown_type", format!("unknown message type {t:?}")))?,
            _ => return Err(item_error("unknown_type", "a batch item needs a type")),
        },
    };
    let user_id = optional_id(&object, "userId")?;
    let anonymous_id = optional_id(&object, "anonymousId")?;
    let previous_id = optional_id(&object, "previousId")?;
    let group_id = optional_id(&object, "groupId")?;
    let name = match kind {
        MessageKind::Track => Some(
            optional_text(&object, "event")?
                .filter(|e| !e.trim().is_empty())
                .ok_or_else(|| item_error("missing_field", "a track call needs an event"))?,
        ),
        MessageKind::Page | MessageKind::Screen => optional_text(&object, "name")?,
        _ => None,
    };
    if kind == MessageKind::Alias && previous_id.is_none() {
        return Err(item_error(
            "missing_field",
            "an alias call needs a previousId",
        ));
    }
    if kind == MessageKind::Group && group_id.is_none() {
        return Err(item_error("missing_field", "a group call needs a groupId"));
    }
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(item_error(
            "missing_field",
            "a message needs a userId or an anonymousId",
        ));
    }
    let traits = optional_object(&object, "traits")?;
    let properties = Value::Object(optional_object(&object, "properties")?);
    let context = Value::Object(optional_object(&object, "context")?);
    let timestamp = match optional_time(object.get("timestamp"), "timestamp")? {
        Some(t) => Some(t),
        None => optional_time(object.get("originalTimestamp"), "originalTimestamp")?,
    };
    let sent_at = match optional_time(object.get("sentAt"), "sentAt")? {
        Some(t) => Some(t),
        None => optional_time(batch_sent_at, "sentAt")?,
    };
    let message_id = optional_text(&object, "messageId")?
        .filter(|id| !id.trim().is_empty())
        .unwrap_or_else(fresh_message_id);
    if message_id.len() > 256 {
        return Err(item_error(
            "invalid_field",
            "messageId may be at most 256 characters",
        ));
    }
    Ok(Message {
        kind,
        message_id,
        user_id,
        anonymous_id,
        previous_id,
        name,
        traits,
        properties,
        context,
        group_id,
        occurred_at: corrected_time(timestamp, sent_at, received_at),
    })
}

/// Segment's correction for a client clock that is off: the client's own offset between
/// `timestamp` and `sentAt` is applied to the server's receive time.
pub(crate) fn corrected_time(
    timestamp: Option<Timestamp>,
    sent_at: Option<Timestamp>,
    received_at: Timestamp,
) -> Timestamp {
    match (timestamp, sent_at) {
        (Some(timestamp), Some(sent_at)) => received_at
            .checked_sub(sent_at.duration_since(timestamp))
            .unwrap_or(timestamp),
        (Some(timestamp), None) => timestamp,
        (None, _) => received_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn skew_is_corrected_from_sent_at() {
        // The client clock is 1 h behind: it stamped the event 5 s before sending.
        let corrected = corrected_time(
            Some(ts("2026-01-01T09:00:00Z")),
            Some(ts("2026-01-01T09:00:05Z")),
            ts("2026-01-01T10:00:05Z"),
        );
        assert_eq!(corrected, ts("2026-01-01T10:00:00Z"));
        assert_eq!(
            corrected_time(
                Some(ts("2026-01-01T09:00:00Z")),
                None,
                ts("2026-01-02T00:00:00Z")
            ),
            ts("2026-01-01T09:00:00Z")
        );
        assert_eq!(
            corrected_time(None, None, ts("2026-01-02T00:00:00Z")),
            ts("2026-01-02T00:00:00Z")
        );
    }

    fn parse(raw: &str) -> Result<Message, ItemError> {
        parse_message(raw, None, None, ts("2026-01-01T00:00:00Z"), || {
            "generated".into()
        })
    }

    #[test]
    fn bad_items_are_named() {
        let cases = [
            (r#"{"type":"track","userId":"u"}"#, "missing_field"),
            (r#"{"type":"identify"}"#, "missing_field"),
            (r#"{"type":"teleport","userId":"u"}"#, "unknown_type"),
            (r#"{"userId":"u"}"#, "unknown_type"),
            (r#"{"type":"identify","userId":{"a":1}}"#, "invalid_field"),
            (
                r#"{"type":"identify","userId":"u","traits":[1]}"#,
                "invalid_field",
            ),
            (
                r#"{"type":"identify","userId":"u","timestamp":"yesterday"}"#,
                "invalid_field",
            ),
            (r#"{"type":"alias","userId":"u"}"#, "missing_field"),
            (r#"[1,2]"#, "invalid_message"),
        ];
        for (raw, code) in cases {
            assert_eq!(parse(raw).unwrap_err().code, code, "{raw}");
        }
    }

    #[test]
    fn null_user_id_is_absence_and_numbers_are_ids() {
        let message =
            parse(r#"{"type":"track","event":"x","userId":null,"anonymousId":42}"#).unwrap();
        assert_eq!(message.user_id, None);
        assert_eq!(message.anonymous_id.as_deref(), Some("42"));
        assert_eq!(message.message_id, "generated");
    }

    #[test]
    fn oversized_messages_are_refused() {
        let big = format!(
            r#"{{"type":"track","event":"x","userId":"u","properties":{{"p":"{}"}}}}"#,
            "x".repeat(33_000)
        );
        assert_eq!(parse(&big).unwrap_err().code, "message_too_large");
    }
}
