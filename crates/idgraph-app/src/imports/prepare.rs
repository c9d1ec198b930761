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
}

impl JobContext {
    pub(crate) fn source(&self) -> String {
        format!("import:{}", self.job.job_id)
    }

    fn sha(&self) -> &str {
        self.job.file_sha256.as_deref().unwrap_or("unknown")
    }

    /// The message id of a row's signal: the file and row, so importing the same file again
    /// (as any job, into the same workspace) is a duplicate; a reprocess with another mapping
    /// adds the mapping's digest, so its signals are new ones.
    pub(crate) fn message_id(&self, row: u64) -> String {
        if self.job.mapping.version <= 1 {
            format!("import:{}:{row}", self.sha())
        } else {
            let digest = &self.job.mapping.digest;
            format!(
                "import:{}:{row}:{}",
                self.sha(),
                &digest[..digest.len().min(16)]
            )
        }
    }

    /// Suppression entry ids follow the same rule as message ids.
    fn entry_id(&self, row: u64, index: usize) -> String {
        let sha = self.sha();
        let short = &sha[..sha.len().min(24)];
        if self.job.mapping.version <= 1 {
            format!("import-{short}-{row}-{index}")
        } else {
            let digest = &self.job.mapping.digest;
            format!(
                "import-{short}-{row}-{index}-{}",
                &digest[..digest.len().min(12)]
            )
        }
    }
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
                entry_id: context.entry_id(row, index),
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
    let context_json = json!({
        "idgraph": {"import": {"job": job.job_id, "file_sha256": job.file_sha256, "row": row}}
    });
    let event = EventRow {
        event_id: event_ids.next(),
        workspace: job.workspace.clone(),
        kind: "import_row".to_owned(),
        name: None,
        occurred_at: job.created_at,
        ingested_at,
        schema_version: 1,
        message_id: context.message_id(row),
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
