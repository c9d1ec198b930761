//! Fresh identifiers and secrets.

/// A new lower-case ULID: time-ordered, so index inserts stay at the right edge of the B-tree.
pub fn new_id() -> String {
    ulid::Ulid::generate().to_string().to_ascii_lowercase()
}

/// 32 bytes from the operating system's CSPRNG.
pub(crate) fn secret_bytes() -> Result<[u8; 32], crate::AppError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| crate::AppError::internal(format!("no randomness available: {e}")))?;
    Ok(bytes)
}

/// Monotonic ULIDs for events: ids made in the same millisecond still sort in creation order,
/// which is the ingest order the timeline and trait precedence rely on.
#[derive(Debug, Default)]
pub struct EventIds(std::sync::Mutex<ulid::Generator>);

impl EventIds {
    pub fn next(&self) -> String {
        let mut generator = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // On the (2^80 per millisecond) overflow, fall back to a fresh random id.
        generator
            .generate()
            .unwrap_or_else(|_| ulid::Ulid::generate())
            .to_string()
            .to_ascii_lowercase()
    }
}
