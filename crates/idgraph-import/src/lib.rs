//! The pure half of idgraph's import pipeline: everything between the bytes of a file and the
//! signals a row becomes, with no IO beyond `std::io::Read`, no async and no SQL.
//!
//! - [`records`]: splitting a stream into records in bounded memory, with the defects that decide
//!   where records end (unbalanced quotes, over-long lines).
//! - [`stream`]: byte-order mark, delimiter detection (comma, tab, semicolon, pipe) and the header;
//!   [`CsvStream`] for bytes arriving in pieces, [`CsvReader`] over a reader.
//! - [`mapping`]: the `auto` and `leads` mappings, user mappings in TOML or JSON, and the [`Plan`]
//!   a mapping becomes for one header.
//! - [`extract`]: PARSE, a row into an [`Extraction`] or a rejection with its reason.
//! - [`identity_hash`]: the normalized name + address identifier.

pub mod extract;
pub mod identity_hash;
pub mod mapping;
pub mod records;
pub mod stream;

pub use extract::{Extraction, PARSER_VERSION, RowRejection, parse_row};
pub use mapping::{Family, Mapping, MappingDoc, MappingError, Plan, Preset, Target};
pub use records::{Defect, Limits, RawRecord, Span, Splitter, split_fields, split_spans};
pub use stream::{CsvReader, CsvStream, FileError, Header};
