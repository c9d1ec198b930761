//! The baseline for ingestion: a trivial `/v1/batch` handler on the same HTTP stack as idgraph
//! (axum 0.8 on tokio), run in-process on its own small runtime. Driven with the same requests,
//! it shows what HTTP, JSON parsing and the load generator cost before idgraph does any work.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tokio::sync::oneshot;

/// Like a small server process: two workers, whatever the machine has.
const WORKER_THREADS: usize = 2;

/// The running trivial server; dropping it stops it.
#[derive(Debug)]
pub(crate) struct TrivialServer {
    runtime: Option<tokio::runtime::Runtime>,
    address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TrivialServer {
    pub(crate) fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .context("cannot bind the baseline server to a loopback port")?;
        listener
            .set_nonblocking(true)
            .context("cannot make the baseline listener non-blocking")?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("baseline-http")
            .enable_all()
            .build()
            .context("cannot start the baseline runtime")?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        // Registering the listener with tokio has to happen inside the runtime that serves it.
        let listener = {
            let _inside = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .context("cannot hand the baseline listener to tokio")?
        };
        let app = Router::new().route("/v1/batch", post(batch));
        runtime.spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serving.await {
                crate::progress(&format!("the baseline server stopped: {e}"));
            }
        });
        Ok(Self {
            runtime: Some(runtime),
            address,
            shutdown: Some(shutdown),
        })
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for TrivialServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // Dropping a runtime blocks, which is not allowed inside the caller's runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Reads the body, parses it and answers as idgraph does.
async fn batch(body: Bytes) -> Response {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) => axum::Json(json!({"success": true})).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"code": "invalid_json", "message": e.to_string()}})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_like_idgraph() {
        let server = TrivialServer::start().unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("{}/v1/batch", server.base_url());
        let ok = client
            .post(&url)
            .body(r#"{"batch":[{"type":"track"}],"sentAt":"2026-01-01T00:00:00Z"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(
            ok.json::<serde_json::Value>().await.unwrap(),
            json!({"success": true})
        );
        let bad = client.post(&url).body("{").send().await.unwrap();
        assert_eq!(bad.status(), 400);
        drop(server);
        assert!(client.post(&url).body("{}").send().await.is_err());
    }
}
