//! Migration bookkeeping shared by the backends: which migrations to apply, and when to refuse.
//!
//! Migrations are append-only: a released migration is never edited, so a checksum mismatch
//! means the database and this binary disagree about history and we stop rather than guess.

use sha2::{Digest, Sha256};

/// One versioned schema change, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A migration as recorded in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub name: String,
    pub checksum: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "the database has schema version {database}, written by a newer idgraph; this idgraph knows versions up to {known}: upgrade idgraph"
    )]
    NewerDatabase { database: i64, known: i64 },
    #[error(
        "migration {version} ({name}) applied to the database differs from this idgraph's copy; refusing to continue"
    )]
    Modified { version: i64, name: String },
    #[error("migration {version} is recorded in the database but unknown to this idgraph")]
    Unknown { version: i64 },
}

/// Returns the migrations still to apply, in order, or why this database must not be touched.
pub fn plan_migrations<'a>(
    known: &'a [Migration],
    applied: &[AppliedMigration],
) -> Result<Vec<&'a Migration>, MigrationError> {
    let known_max = known.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(db_max) = applied.iter().map(|m| m.version).max()
        && db_max > known_max
    {
        return Err(MigrationError::NewerDatabase {
            database: db_max,
            known: known_max,
        });
    }
    for done in applied {
        let Some(ours) = known.iter().find(|m| m.version == done.version) else {
            return Err(MigrationError::Unknown {
                version: done.version,
            });
        };
        if ours.checksum() != done.checksum {
            return Err(MigrationError::Modified {
                version: done.version,
                name: done.name.clone(),
            });
        }
    }
    let mut pending: Vec<&Migration> = known
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect();
    pending.sort_by_key(|m| m.version);
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [Migration; 2] = [
        Migration {
            version: 1,
            name: "one",
            sql: "CREATE TABLE a (x INT);",
        },
        Migration {
            version: 2,
            name: "two",
            sql: "CREATE TABLE b (x INT);",
        },
    ];

    fn applied(m: &Migration) -> AppliedMigration {
        AppliedMigration {
            version: m.version,
            name: m.name.into(),
            checksum: m.checksum(),
        }
    }

    #[test]
    fn fresh_database_gets_everything_in_order() {
        let plan = plan_migrations(&KNOWN, &[]).unwrap();
        assert_eq!(plan.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn partly_migrated_database_gets_the_rest() {
        let plan = plan_migrations(&KNOWN, &[applied(&KNOWN[0])]).unwrap();
        assert_eq!(plan.iter().map(|m| m.version).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn newer_database_is_refused_with_both_versions() {
        let newer = AppliedMigration {
            version: 3,
            name: "three".into(),
            checksum: "x".into(),
        };
        let err = plan_migrations(&KNOWN, &[applied(&KNOWN[0]), newer]).unwrap_err();
        assert_eq!(
            err,
            MigrationError::NewerDatabase {
                database: 3,
                known: 2
            }
        );
        assert!(err.to_string().contains("upgrade idgraph"));
    }

    #[test]
    fn edited_migration_is_refused() {
        let mut edited = applied(&KNOWN[0]);
        edited.checksum = "0".repeat(64);
        let err = plan_migrations(&KNOWN, &[edited]).unwrap_err();
        assert!(matches!(err, MigrationError::Modified { version: 1, .. }));
    }
}
