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
