//! idgraph's use cases, generic over the store. HTTP handlers and CLI commands call these and
//! only map their results; rules about who may do what live here, not in the handlers.

pub mod access;
pub mod audit;
pub mod bootstrap;
pub mod compliance;
pub mod data_key;
mod error;
mod ids;
pub mod imports;
pub mod ingest;
pub mod keyring;
pub mod keys;
pub mod persons;
pub mod preview;
pub mod privacy;
pub mod settings;
pub mod tenants;
pub mod webhooks;

pub use error::{AppError, ErrorKind};
pub use ids::{EventIds, new_id};
