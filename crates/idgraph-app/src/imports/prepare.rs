//! PARSE for one job: a landed row becomes a signal (universe, enrichment), suppression
//! entries (suppression), or a rejection. Runs on blocking threads; no IO.

use idgraph_core::compliance::{SuppressionAction, SuppressionReason, SuppressionScope};
use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings};
use idgraph_core::traits::{Provenance, SourceClass};
use idgraph_import::{Defect, Limits, Plan, parse_row};
use idgraph_store::{
    EventRow, ImportJob, ImportMode, LandedRow, SignalRecord, SuppressionRow, TraitObservation,
};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use sha2::{Digest, Sha256};

use super::RowIds;
use crate::EventIds;

/// Everything PARSE needs to know about a job, fixed for one processing run.
#[derive(Debug, Clone)]
pub(crate) struct JobContext {
    pub(crate) job: ImportJob,
    pub(crate) plan: Plan,
    /// The tenant's identity settings, with the mapping's preset applied.
    pub(crate) settings: IdentitySettings,
    pub(crate) default_reason: SuppressionReason,
    pub(crate) limits: Limits,
    row_ids: RowIds,
    /// SHA-256 with the job's header already fed in; a row's digest continues from it.
    row_hasher: Sha256,
    /// The start of the header's digest, which every row id of the job begins with: a job's
    /// ids then sort together, in row order, and its inserts stay on the few index pages at
    /// the end of that run rather than on a random page each (a random id made imports slower).
    header_key: String,
}

/// A row's name in the ids of what it becomes: `key`, the row number, and (row ids) a digest
/// of the header, the row number and the row's bytes.
struct RowName<'a> {
    /// The file's SHA-256 (file ids) or the header's key (row ids).
    key: &'a str,
    row: u64,
    digest: Option<String>,
}

impl JobContext {
    pub(crate) fn new(
        job: ImportJob,
        plan: Plan,
        settings: IdentitySettings,
        default_reason: SuppressionReason,
        row_ids: RowIds,
    ) -> Self {
        let mut row_hasher = Sha256::new();
        row_hasher.update(b"idgraph import row v1\0");
        row_hasher.update((job.header.len() as u64).to_be_bytes());
        row_hasher.update(&job.header);
        row_hasher.update([job.delimiter]);
        let header_key = hex(&row_hasher.clone().finalize()[..6]);
        Self {
            job,
            plan,
            settings,
            default_reason,
            limits: Limits::default(),
            row_ids,
            row_hasher,
            header_key,
        }
    }

    pub(crate) fn source(&self) -> String {
        format!("import:{}", self.job.job_id)
    }

    fn name(&self, row: u64, bytes: &[u8]) -> RowName<'_> {
        match self.row_ids {
            RowIds::File => RowName {
                key: self.job.file_sha256.as_deref().unwrap_or("unknown"),
                row,
                digest: None,
            },
            RowIds::Row => {
                let mut hasher = self.row_hasher.clone();
                hasher.update(row.to_be_bytes());
                hasher.update(bytes);
                // Only rows with the same header and number can collide: 64 bits are plenty.
                RowName {
                    key: &self.header_key,
                    row,
                    digest: Some(hex(&hasher.finalize()[..8])),
                }
            }
        }
    }

    /// A reprocess with another mapping adds the mapping's digest to the ids, so its signals
    /// are new ones.
    fn mapping_suffix(&self, len: usize) -> Option<&str> {
        let digest = &self.job.mapping.digest;
        (self.job.mapping.version > 1).then(|| &digest[..digest.len().min(len)])
    }

    /// The message id of a row's signal: importing the same file again (as any job, into the
    /// same workspace) makes it a duplicate.
    fn message_id(&self, name: &RowName<'_>) -> String {
        let row = name.row.to_string();
        let parts: Vec<&str> = ["import", name.key, &row]
            .into_iter()
            .chain(name.digest.as_deref())
            .chain(self.mapping_suffix(16))
            .collect();
        parts.join(":")
    }

    /// Suppression entry ids follow the same rule as message ids.
    fn entry_id(&self, name: &RowName<'_>, index: usize) -> String {
        let (row, index) = (name.row.to_string(), index.to_string());
        let key = &name.key[..name.key.len().min(24)];
        let parts: Vec<&str> = ["import", key, &row]
            .into_iter()
            .chain(name.digest.as_deref())
            .chain([index.as_str()])
            .chain(self.mapping_suffix(12))
            .collect();
        parts.join("-")
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A row after PARSE.
#[derive(Debug)]
pub(crate) enum Prepared {
    Rejected {
        row: u64,
        reason: String,
    },
    Signal {
        row: u64,
        signal: Box<SignalRecord>,
        /// Identifiers of the row left out, and why; the row goes on without them.
        notes: Vec<String>,
    },
    Suppression {
        row: u64,
        entries: Vec<SuppressionRow>,
        notes: Vec<String>,
    },
}

impl Prepared {
    pub(crate) fn row(&self) -> u64 {
        match self {
            Prepared::Rejected { row, .. }
            | Prepared::Signal { row, .. }
            | Prepared::Suppression { row, .. } => *row,
        }
    }
}

/// The row's identifiers normalized, without invalid or blocked values (noted) and without
/// duplicates.
fn normalized(
    settings: &IdentitySettings,
    raw: Vec<(String, String)>,
) -> (Vec<Identifier>, Vec<String>) {
    let mut identifiers: Vec<Identifier> = Vec::new();
    let mut notes = Vec::new();
    for (kind, value) in raw {
        match settings.normalize(&kind, &value) {
            Ok(identifier) if !identifiers.contains(&identifier) => identifiers.push(identifier),
            Ok(_) => {}
            Err(rejection) => notes.push(rejection.to_string()),
        }
    }
    (identifiers, notes)
}

/// PARSE of one landed row.
pub(crate) fn prepare(
    context: &JobContext,
    event_ids: &EventIds,
    landed: LandedRow,
    ingested_at: Timestamp,
) -> Prepared {
    let row = landed.row;
    let name = context.name(row, &landed.bytes);
    let defect = landed.defect.as_deref().and_then(Defect::parse);
    let extraction = match parse_row(&context.plan, &landed.bytes, defect, &context.limits) {
        Ok(extraction) => extraction,
        Err(rejection) => {
            return Prepared::Rejected {
                row,
                reason: rejection.0,
            };
        }
    };
    let job = &context.job;
    if job.mode == ImportMode::Suppression {
        let addresses: Vec<(String, String)> = extraction
            .identifiers
            .into_iter()
            .filter(|(kind, _)| kind == IdentifierKind::PHONE || kind == IdentifierKind::EMAIL)
            .collect();
        let (identifiers, notes) = normalized(&context.settings, addresses);
        if identifiers.is_empty() {
            return Prepared::Rejected {
                row,
                reason: rejection_reason("no usable phone or email", &notes),
            };
        }
        let reason = match extraction.suppression_reason.as_deref() {
            None => context.default_reason,
            Some(raw) => match raw.trim().to_lowercase().replace([' ', '-'], "_").parse() {
                Ok(reason) => reason,
                Err(e) => {
                    return Prepared::Rejected {
                        row,
                        reason: format!("{e}"),
                    };
                }
            },
        };
        let entries = identifiers
            .into_iter()
            .enumerate()
            .map(|(index, identifier)| SuppressionRow {
                entry_id: context.entry_id(&name, index),
                scope: SuppressionScope::Tenant,
                identifier,
                reason,
                action: SuppressionAction::Add,
                note: Some(format!("import {} row {row}", job.job_id)),
                actor: context.source(),
                at: ingested_at,
                recorded: 0,
            })
            .collect();
        return Prepared::Suppression {
            row,
            entries,
            notes,
        };
    }
    let (identifiers, notes) = normalized(&context.settings, extraction.identifiers);
    if identifiers.is_empty() {
        return Prepared::Rejected {
            row,
            reason: rejection_reason("no usable identifier", &notes),
        };
    }
    let observed = Provenance {
        class: SourceClass::Import,
        confidence: 1.0,
        observed_at: job.created_at,
    };
    let traits = extraction
        .traits
        .into_iter()
        .map(|(name, value)| TraitObservation {
            name,
            value: Value::String(value).to_string(),
            provenance: observed.clone(),
            set_once: false,
        })
        .collect();
    let promoted: Map<String, Value> = extraction
        .promoted
        .into_iter()
        .map(|(field, value)| (field, Value::String(value)))
        .collect();
    let properties = json!({
        "import": job.job_id,
        "row": row,
        "mapping_version": job.mapping.version,
        "fields": promoted,
    });
    // A job with row ids runs before its file's SHA-256 is known; the job has it.
    let context_json = match context.row_ids {
        RowIds::File => json!({
            "idgraph": {"import": {"job": job.job_id, "file_sha256": name.key, "row": row}}
        }),
        RowIds::Row => json!({"idgraph": {"import": {"job": job.job_id, "row": row}}}),
    };
    let event = EventRow {
        event_id: event_ids.next(),
        workspace: job.workspace.clone(),
        kind: "import_row".to_owned(),
        name: None,
        occurred_at: job.created_at,
        ingested_at,
        schema_version: 1,
        message_id: context.message_id(&name),
        properties: properties.to_string(),
        context: context_json.to_string(),
    };
    Prepared::Signal {
        row,
        signal: Box::new(SignalRecord {
            event,
            identifiers,
            traits,
            source: context.source(),
        }),
        notes,
    }
}

fn rejection_reason(what: &str, notes: &[String]) -> String {
    if notes.is_empty() {
        format!("{what}: no identifier column has a value")
    } else {
        format!("{what}: {}", notes.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use idgraph_core::tenancy::WorkspaceName;
    use idgraph_import::{Header, Mapping};
    use idgraph_store::{ImportCounts, ImportStatus, JobMapping};

    use super::*;

    fn context(header: &[u8], sha: Option<&str>, version: u32, row_ids: RowIds) -> JobContext {
        let mapping = Mapping::built_in("auto").expect("auto");
        let plan = mapping.plan(&Header::parse(header, b',').expect("header"));
        let job = ImportJob {
            job_id: "job-1".into(),
            workspace: WorkspaceName::default_workspace(),
            mode: ImportMode::Universe,
            status: ImportStatus::Processing,
            mapping: JobMapping {
                name: "auto".into(),
                version,
                document: mapping.canonical_json(),
                digest: "0123456789abcdef0123456789abcdef".into(),
            },
            options: String::new(),
            header: header.to_vec(),
            delimiter: b',',
            file_sha256: sha.map(str::to_owned),
            file_bytes: 0,
            landed: 2,
            processed: 0,
            counts: ImportCounts::default(),
            warnings: Vec::new(),
            error: None,
            runner: None,
            heartbeat: None,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
            finished_at: None,
        };
        JobContext::new(
            job,
            plan,
            IdentitySettings::default(),
            SuppressionReason::Dnc,
            row_ids,
        )
    }

    fn message_id(context: &JobContext, row: u64, bytes: &[u8]) -> String {
        let landed = LandedRow {
            row,
            bytes: bytes.to_vec(),
            defect: None,
        };
        match prepare(context, &EventIds::default(), landed, Timestamp::UNIX_EPOCH) {
            Prepared::Signal { signal, .. } => signal.event.message_id,
            other => panic!("not a signal: {other:?}"),
        }
    }

    #[test]
    fn a_row_is_named_by_its_header_number_and_bytes() {
        let header = b"email,name";
        let job = context(header, None, 1, RowIds::Row);
        let id = message_id(&job, 7, b"a@example.com,Ann");
        let parts: Vec<&str> = id.split(':').collect();
        assert_eq!(parts.len(), 4, "{id}");
        assert_eq!(parts[0], "import");
        assert_eq!(parts[2], "7");
        // The same row of the same file in another job: the same name, so a duplicate.
        assert_eq!(
            message_id(
                &context(header, Some("f00d"), 1, RowIds::Row),
                7,
                b"a@example.com,Ann"
            ),
            id
        );
        // Another row, another number, another header: other names. A file's rows share
        // the header's key, so they sort together.
        let other_bytes = message_id(&job, 7, b"b@example.com,Ann");
        assert_ne!(other_bytes, id);
        assert_eq!(other_bytes.split(':').nth(1), Some(parts[1]));
        assert_ne!(message_id(&job, 8, b"a@example.com,Ann"), id);
        let other_header = message_id(
            &context(b"email,nom", None, 1, RowIds::Row),
            7,
            b"a@example.com,Ann",
        );
        assert_ne!(other_header.split(':').nth(1), Some(parts[1]));
        // A reprocess with another mapping version names new signals.
        let reprocessed = message_id(
            &context(header, None, 2, RowIds::Row),
            7,
            b"a@example.com,Ann",
        );
        assert_eq!(reprocessed, format!("{id}:0123456789abcdef"));
        let named = job.name(7, b"a@example.com,Ann");
        assert_eq!(
            job.entry_id(&named, 2),
            format!("import-{}-7-{}-2", parts[1], parts[3])
        );
    }

    #[test]
    fn jobs_named_by_the_file_keep_their_names() {
        let job = context(b"email,name", Some("f00d"), 1, RowIds::File);
        assert_eq!(message_id(&job, 7, b"a@example.com,Ann"), "import:f00d:7");
        let job = context(b"email,name", Some("f00d"), 2, RowIds::File);
        assert_eq!(
            message_id(&job, 7, b"a@example.com,Ann"),
            "import:f00d:7:0123456789abcdef"
        );
        assert_eq!(
            job.entry_id(&job.name(7, b"a@example.com,Ann"), 1),
            "import-f00d-7-1-0123456789ab"
        );
        // A stored job without the option is one of those.
        assert_eq!(super::super::options_of("{}").row_ids, RowIds::File);
        assert_eq!(
            super::super::options_of(r#"{"row_ids":"row"}"#).row_ids,
            RowIds::Row
        );
    }
}
