//! The few management calls the workloads make around the measured parts: creating a write key,
//! checking the store is fresh, looking persons up and reading timelines.

use anyhow::{Context, bail};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::json;

/// idgraph's management API (`/api/v1`), authenticated with the master key.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    client: reqwest::Client,
    base: Url,
    master_key: String,
}

#[derive(Debug, Deserialize)]
struct CreatedKey {
    id: String,
    key: String,
}

#[derive(Debug, Deserialize)]
struct KeyList {
    keys: Vec<KeyItem>,
}

#[derive(Debug, Deserialize)]
struct KeyItem {
    id: String,
}

/// The part of a person the workloads use.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Person {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) merged_from: Vec<String>,
}

/// One page of a timeline; the events are only counted.
#[derive(Debug, Deserialize)]
pub(crate) struct TimelinePage {
    pub(crate) events: Vec<serde::de::IgnoredAny>,
    pub(crate) next_cursor: Option<String>,
}

/// The key id idgraph gives the master key's row.
const MASTER_KEY_ID: &str = "master";

impl Api {
    pub(crate) fn new(
        client: reqwest::Client,
        base_url: &str,
        master_key: &str,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client,
            base: Url::parse(base_url).with_context(|| format!("bad server URL {base_url}"))?,
            master_key: master_key.to_owned(),
        })
    }

    pub(crate) fn url(&self, path: &str) -> anyhow::Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("bad path {path}"))
    }

    /// Creates an `events:write` key and checks that it is the only key besides the master key:
    /// an earlier run's data (possible with a reused PostgreSQL database) would turn this run's
    /// messages into duplicates and its persons into someone else's.
    pub(crate) async fn create_write_key_on_fresh_store(&self) -> anyhow::Result<String> {
        let response = self
            .client
            .post(self.url("/api/v1/keys")?)
            .bearer_auth(&self.master_key)
            .json(&json!({"name": "bench", "scopes": ["events:write"]}))
            .send()
            .await
            .context("POST /api/v1/keys failed")?;
        let created: CreatedKey = expect_json(response, StatusCode::CREATED, "POST /api/v1/keys")
            .await
            .context("cannot create a write key")?;

        let mut url = self.url("/api/v1/keys")?;
        url.query_pairs_mut().append_pair("limit", "1000");
        let response = self
            .client
            .get(url)
            .bearer_auth(&self.master_key)
            .send()
            .await
            .context("GET /api/v1/keys failed")?;
        let keys: KeyList = expect_json(response, StatusCode::OK, "GET /api/v1/keys").await?;
        let others = keys
            .keys
            .iter()
            .filter(|k| k.id != created.id && k.id != MASTER_KEY_ID)
            .count();
        if others > 0 {
            bail!(
                "the store is not empty ({others} API key(s) besides the master key and ours): \
                 give a fresh database so earlier data cannot skew the figures"
            );
        }
        Ok(created.key)
    }

    /// The person holding an identifier, or `None` if nobody does.
    pub(crate) async fn lookup(&self, kind: &str, value: &str) -> anyhow::Result<Option<Person>> {
        let mut url = self.url("/api/v1/persons/lookup")?;
        url.query_pairs_mut()
            .append_pair("kind", kind)
            .append_pair("value", value);
        let response = self
            .client
            .get(url)
            .bearer_auth(&self.master_key)
            .send()
            .await
            .with_context(|| format!("looking up {kind} {value} failed"))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let what = format!("GET /api/v1/persons/lookup?kind={kind}&value={value}");
        expect_json(response, StatusCode::OK, &what).await.map(Some)
    }

    /// The request for one timeline page, to be sent and timed by the caller.
    pub(crate) fn timeline_request(
        &self,
        person_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let mut url = self.url(&format!("/api/v1/persons/{person_id}/timeline"))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &limit.to_string());
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        Ok(self.client.get(url).bearer_auth(&self.master_key))
    }

    /// A POST to the management API with the master key, to be sent by the caller.
    pub(crate) fn post(&self, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        Ok(self
            .client
            .post(self.url(path)?)
            .bearer_auth(&self.master_key))
    }

    /// `POST /api/v1/compliance/check-batch`: the answers, in the order of `checks`.
    pub(crate) async fn check_batch(
        &self,
        checks: &[serde_json::Value],
    ) -> anyhow::Result<Vec<CheckResult>> {
        let what = "POST /api/v1/compliance/check-batch";
        let response = self
            .post("/api/v1/compliance/check-batch")?
            .json(&json!({ "checks": checks }))
            .send()
            .await
            .with_context(|| format!("{what} failed"))?;
        let answer: CheckBatch = expect_json(response, StatusCode::OK, what).await?;
        if answer.results.len() != checks.len() {
            bail!(
                "{what} answered {} results for {} checks",
                answer.results.len(),
                checks.len()
            );
        }
        Ok(answer.results)
    }

    /// Uploads a CSV file as an import job and waits until it has finished; returns the job's
    /// final state.
    pub(crate) async fn import_and_wait(
        &self,
        query: &str,
        csv: Vec<u8>,
    ) -> anyhow::Result<serde_json::Value> {
        let what = format!("POST /api/v1/imports?{query}");
        let response = self
            .post(&format!("/api/v1/imports?{query}"))?
            .header(reqwest::header::CONTENT_TYPE, "text/csv")
            .body(csv)
            .send()
            .await
            .with_context(|| format!("{what} failed"))?;
        let job: serde_json::Value = expect_json(response, StatusCode::ACCEPTED, &what).await?;
        let id = job["id"]
            .as_str()
            .with_context(|| format!("{what}: no job id in {job}"))?
            .to_owned();
        loop {
            let what = format!("GET /api/v1/imports/{id}");
            let response = self
                .client
                .get(self.url(&format!("/api/v1/imports/{id}"))?)
                .bearer_auth(&self.master_key)
                .send()
                .await
                .with_context(|| format!("{what} failed"))?;
            let job: serde_json::Value = expect_json(response, StatusCode::OK, &what).await?;
            match job["status"].as_str() {
                Some("completed") => return Ok(job),
                Some("failed") => bail!("import job {id} failed: {job}"),
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }
}

/// One answer of a compliance check.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CheckResult {
    pub(crate) allowed: bool,
    #[serde(default)]
    pub(crate) person_id: Option<String>,
    #[serde(default)]
    pub(crate) reasons: Vec<CheckReason>,
}

impl CheckResult {
    pub(crate) fn has_reason(&self, code: &str) -> bool {
        self.reasons.iter().any(|r| r.code == code)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CheckReason {
    pub(crate) code: String,
}

#[derive(Debug, Deserialize)]
struct CheckBatch {
    results: Vec<CheckResult>,
}

async fn expect_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    expected: StatusCode,
    what: &str,
) -> anyhow::Result<T> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("{what}: cannot read the answer"))?;
    if status != expected {
        bail!(
            "{what} answered {status} (expected {expected}): {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).with_context(|| {
        format!(
            "{what}: unexpected answer {}",
            String::from_utf8_lossy(&body)
        )
    })
}

/// Reads a whole answer and checks its status; the body is returned for parsing after timing.
pub(crate) async fn read_answer(
    response: reqwest::Result<reqwest::Response>,
    what: &str,
) -> anyhow::Result<Vec<u8>> {
    let response = response.with_context(|| format!("{what} failed"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("{what}: cannot read the answer"))?;
    if status != StatusCode::OK {
        bail!(
            "{what} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body.to_vec())
}
