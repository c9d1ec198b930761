//! Import jobs as the store keeps them: the job and its progress per stage, the rows landed
//! verbatim, and the outcome of each row.
//!
//! Progress moves by compare-and-set: landing a batch names the row it starts at, and recording
//! a chunk names how far the job had got and which runner holds it. A batch or chunk that is
//! repeated (a retry, a resumed job, a second process) therefore changes nothing twice.

use idgraph_core::tenancy::WorkspaceName;
use jiff::Timestamp;

/// What an import does with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportMode {
    /// Rows may create persons.
    Universe,
    /// Rows only augment persons that already exist.
    Enrichment,
    /// Rows become suppression entries.
    Suppression,
}

impl ImportMode {
    pub const ALL: [ImportMode; 3] = [
        ImportMode::Universe,
        ImportMode::Enrichment,
        ImportMode::Suppression,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::Universe => "universe",
            ImportMode::Enrichment => "enrichment",
            ImportMode::Suppression => "suppression",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportStatus {
    /// The file is arriving; its rows are being stored.
    Landing,
    /// Every row is stored; PARSE..RECORD are running (or will resume).
    Processing,
    Completed,
    /// The file was unusable, or the upload broke off; `error` says which.
    Failed,
}

impl ImportStatus {
    pub const ALL: [ImportStatus; 4] = [
        ImportStatus::Landing,
        ImportStatus::Processing,
        ImportStatus::Completed,
        ImportStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Landing => "landing",
            ImportStatus::Processing => "processing",
            ImportStatus::Completed => "completed",
            ImportStatus::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// Totals of a job's processing, for the current mapping version. Also the increments a
/// recorded chunk adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub rejected: u64,
    pub persons_created: u64,
    pub persons_merged: u64,
    pub identifiers_attached: u64,
    pub conflicts: u64,
    pub skipped: u64,
    pub duplicates: u64,
    pub suppressed: u64,
}

impl ImportCounts {
    pub fn add(&mut self, other: &ImportCounts) {
        self.rejected += other.rejected;
        self.persons_created += other.persons_created;
        self.persons_merged += other.persons_merged;
        self.identifiers_attached += other.identifiers_attached;
        self.conflicts += other.conflicts;
        self.skipped += other.skipped;
        self.duplicates += other.duplicates;
        self.suppressed += other.suppressed;
    }
}

/// The mapping a job processes with, frozen in the job so a resumed job reads rows exactly as
/// before even if the named mapping has changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMapping {
    pub name: String,
    /// 1 for the upload, +1 per reprocess.
    pub version: u32,
    /// The mapping document as canonical JSON.
    pub document: String,
    pub digest: String,
}

/// An import job.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportJob {
    pub job_id: String,
    pub workspace: WorkspaceName,
    pub mode: ImportMode,
    pub status: ImportStatus,
    pub mapping: JobMapping,
    /// JSON text: the job's other parameters (e.g. the default suppression reason).
    pub options: String,
    /// The header line, verbatim.
    pub header: Vec<u8>,
    pub delimiter: u8,
    /// SHA-256 of the whole file in hex, known once landing is over.
    pub file_sha256: Option<String>,
    pub file_bytes: u64,
    /// LAND's progress: rows stored so far (they are numbered from 1).
    pub landed: u64,
    /// PARSE..RECORD's progress for the current mapping version: rows 1..=processed have an
    /// outcome.
    pub processed: u64,
    pub counts: ImportCounts,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    /// The process holding the job while it is processed, and when it last showed it is alive.
    pub runner: Option<String>,
    pub heartbeat: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// A row as landed: its bytes as they were in the file, and a defect found while splitting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandedRow {
    /// From 1: the first data row after the header.
    pub row: u64,
    pub bytes: Vec<u8>,
    /// `unbalanced_quote` or `too_long`.
    pub defect: Option<String>,
}

/// What became of one row, for the current mapping version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOutcome {
    pub row: u64,
    /// `created`, `merged`, `attached`, `matched`, `duplicate`, `skipped`, `suppressed` or
    /// `rejected`.
    pub outcome: String,
    /// The person the row belongs to. Recorded as resolution found it; read back as the person
    /// it belongs to now (the survivor, when that person was merged into another since).
    pub person_id: Option<String>,
    pub reason: Option<String>,
}

/// A chunk of processed rows to record, with the job's progress moving from `from` (the
/// `processed` the runner read) to the last row of `outcomes`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedChunk {
    pub runner: String,
    pub mapping_version: u32,
    pub from: u64,
    pub to: u64,
    pub outcomes: Vec<RowOutcome>,
    pub counts: ImportCounts,
    pub at: Timestamp,
    /// Rows refused for carrying a deleted person's identifier: their landed bytes are emptied
    /// in the same transaction, so the file does not keep what the deletion removed.
    pub erase_landed: Vec<u64>,
}

/// What a stored signal did, read back from the graph by its message id: how a row that was
/// resolved before an interruption learns its outcome again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalEffects {
    pub event_id: String,
    /// The person the signal was recorded for.
    pub person_id: String,
    /// The signal's source (`import:<job id>` for an import row).
    pub source: String,
    pub created: bool,
    pub merges: u64,
    pub conflicts: u64,
    /// Identity nodes the signal attached.
    pub attached: u64,
}

/// How a job's warnings are stored: one per line (line breaks inside a warning become spaces).
pub fn encode_warnings(warnings: &[String]) -> String {
    warnings
        .iter()
        .map(|w| w.replace(['\n', '\r'], " "))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn decode_warnings(stored: &str) -> Vec<String> {
    stored
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The range of merge or conflict ids a signal derived (see [`crate::derived_id`]): from
/// `<signal id><what>` up to, not including, the next letter.
pub fn derived_id_range(signal_id: &str, what: char) -> (String, String) {
    let next = char::from_u32(what as u32 + 1).unwrap_or(what);
    (format!("{signal_id}{what}"), format!("{signal_id}{next}"))
}
