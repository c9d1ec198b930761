//! The front of a CSV file: byte-order mark, delimiter detection and the header, then records.
//!
//! [`CsvStream`] takes bytes in pieces of any size (an HTTP body, a file read in blocks), looks
//! at the first lines to decide how the file is written, and from then on hands out records as
//! they complete. [`CsvReader`] does the same over any `std::io::Read`.

use std::io::Read;

use crate::records::{Limits, RawRecord, Splitter, count_fields, split_fields};

/// Why a file cannot be imported at all. Row-level problems never end up here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty")]
    Empty,
    #[error(
        "the file is UTF-16 encoded (it starts with a UTF-16 byte-order mark); save it as UTF-8 CSV"
    )]
    Utf16,
    #[error("the header (the first line) is not valid UTF-8")]
    HeaderNotUtf8,
    #[error("the first line does not look like a header: {0}")]
    NoHeader(String),
    #[error("reading the file failed: {0}")]
    Io(String),
}

impl FileError {
    /// A stable snake_case code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            FileError::Empty => "empty_file",
            FileError::Utf16 => "unsupported_encoding",
            FileError::HeaderNotUtf8 => "unsupported_encoding",
            FileError::NoHeader(_) => "no_header",
            FileError::Io(_) => "io_error",
        }
    }
}

/// The delimiters detected, in the order ties are broken.
pub const DELIMITERS: [u8; 4] = [b',', b'\t', b';', b'|'];

/// How much of the file is looked at before deciding how it is written.
const SNIFF_BYTES: usize = 64 << 10;
const SNIFF_LINES: usize = 20;

/// The header: column names as written, made unique and non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The first line's bytes, verbatim.
    pub raw: Vec<u8>,
    pub delimiter: u8,
    /// One name per column: trimmed; empty ones are `column_<n>`; a repeated name gets `_2`,
    /// `_3`... so every column can be addressed.
    pub names: Vec<String>,
    /// What was changed to get there, for the job's warnings.
    pub warnings: Vec<String>,
}

impl Header {
    /// Reads a header line. Fails when it is not UTF-8 or looks like a row of data.
    pub fn parse(raw: &[u8], delimiter: u8) -> Result<Self, FileError> {
        let mut names = Vec::new();
        let mut warnings = Vec::new();
        for (index, field) in split_fields(raw, delimiter).iter().enumerate() {
            let text = std::str::from_utf8(field).map_err(|_| FileError::HeaderNotUtf8)?;
            let name = text.trim();
            if let Some(why) = looks_like_data(name) {
                return Err(FileError::NoHeader(format!(
                    "column {} is {name:?}, which looks like {why}; the first line must name the columns",
                    index + 1
                )));
            }
            if name.is_empty() {
                let named = format!("column_{}", index + 1);
                warnings.push(format!(
                    "column {} has no name; called it {named}",
                    index + 1
                ));
                names.push(named);
            } else {
                names.push(name.to_owned());
            }
        }
        // Repeated names get a suffix; compared as the mapping compares them, so "Email" and
        // "email" are a repeat too.
        let mut seen = std::collections::HashMap::<String, usize>::new();
        for (index, name) in names.iter_mut().enumerate() {
            let count = seen.entry(crate::mapping::header_key(name)).or_insert(0);
            *count += 1;
            if *count > 1 {
                let renamed = format!("{name}_{count}");
                warnings.push(format!(
                    "column {} repeats the name {name:?}; called it {renamed}",
                    index + 1
                ));
                *name = renamed;
            }
        }
        Ok(Self {
            raw: raw.to_vec(),
            delimiter,
            names,
            warnings,
        })
    }
}

/// Why a header cell is data rather than a name, if it is.
fn looks_like_data(cell: &str) -> Option<&'static str> {
    if cell.contains('@') && cell.contains('.') && !cell.contains(' ') {
        return Some("an email address");
    }
    let digits = cell.bytes().filter(u8::is_ascii_digit).count();
    if digits >= 7
        && cell
            .bytes()
            .all(|b| b.is_ascii_digit() || b" +-.()/".contains(&b))
    {
        return Some("a number");
    }
    None
}

/// Picks the delimiter under which the first lines agree best: the most lines with the
/// header's field count, then the most fields. A file whose header has one field under every
/// candidate has one column (comma).
pub fn detect_delimiter(first_lines: &[&[u8]]) -> u8 {
    let Some((header, rest)) = first_lines.split_first() else {
        return b',';
    };
    let mut best = (b',', 0usize, 1usize);
    for delimiter in DELIMITERS {
        let fields = count_fields(header, delimiter);
        if fields < 2 {
            continue;
        }
        let agreeing = rest
            .iter()
            .filter(|line| count_fields(line, delimiter) == fields)
            .count();
        if (agreeing, fields) > (best.1, best.2) {
            best = (delimiter, agreeing, fields);
        }
    }
    best.0
}

#[derive(Debug)]
enum Phase {
    Sniffing(Vec<u8>),
    Streaming(Splitter),
}

/// A CSV file arriving in pieces: first its header, then its records.
#[derive(Debug)]
pub struct CsvStream {
    limits: Limits,
    phase: Phase,
    header: Option<Header>,
    saw_bytes: bool,
}

impl CsvStream {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            phase: Phase::Sniffing(Vec::new()),
            header: None,
            saw_bytes: false,
        }
    }

    /// The header, once enough of the file has arrived to know it.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes the next piece of the file; records it completes are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<RawRecord>) -> Result<(), FileError> {
        self.saw_bytes |= !bytes.is_empty();
        match &mut self.phase {
            Phase::Streaming(splitter) => {
                splitter.push(bytes, out);
                Ok(())
            }
            Phase::Sniffing(buffer) => {
                buffer.extend_from_slice(bytes);
                let lines = buffer.iter().filter(|b| **b == b'\n').count();
                if buffer.len() >= SNIFF_BYTES || lines > SNIFF_LINES {
                    self.start_streaming(out, false)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The end of the file.
    pub fn finish(&mut self, out: &mut Vec<RawRecord>) -> Result<(), FileError> {
        if let Phase::Sniffing(_) = self.phase {
            self.start_streaming(out, true)?;
        }
        if let Phase::Streaming(splitter) = &mut self.phase {
            splitter.finish(out);
        }
        Ok(())
    }

    fn start_streaming(&mut self, out: &mut Vec<RawRecord>, at_end: bool) -> Result<(), FileError> {
        let Phase::Sniffing(buffer) =
            std::mem::replace(&mut self.phase, Phase::Sniffing(Vec::new()))
        else {
            return Ok(());
        };
        if buffer.starts_with(&[0xFF, 0xFE]) || buffer.starts_with(&[0xFE, 0xFF]) {
            return Err(FileError::Utf16);
        }
        let body = buffer.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(&buffer);
        // Blank lines before the header are not a header.
        let leading = body
            .iter()
            .take_while(|b| matches!(b, b'\n' | b'\r' | b' ' | b'\t'))
            .count();
        let body = &body[leading..];
        if body.is_empty() {
            return if at_end || !self.saw_bytes {
                Err(FileError::Empty)
            } else {
                // Only blank lines so far: wait for more.
                self.phase = Phase::Sniffing(buffer);
                Ok(())
            };
        }
        // Sniff on whole lines (a quoted line break in the sample only blurs the vote).
        let sample: Vec<&[u8]> = body
            .split(|b| *b == b'\n')
            .take(SNIFF_LINES + 1)
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty())
            .collect();
        let complete = if at_end || sample.len() <= 1 {
            sample.as_slice()
        } else {
            // The last line of the sample may be cut short.
            &sample[..sample.len() - 1]
        };
        let delimiter = detect_delimiter(complete);
        // The header first, alone: the splitter must know its field count before it reads the
        // rows, or it cannot tell a stray quote from a quoted line break.
        let mut probe = Splitter::new(delimiter, self.limits.clone());
        let mut first = Vec::new();
        probe.push(body, &mut first);
        if at_end {
            probe.finish(&mut first);
        }
        let Some(first) = first.into_iter().next() else {
            if at_end {
                return Err(FileError::Empty);
            }
            return self.header_pending();
        };
        if first.defect.is_some() {
            return Err(FileError::NoHeader(
                "it has a quote that is never closed".to_owned(),
            ));
        }
        let header = Header::parse(&first.bytes, delimiter)?;
        let ending = match body.get(first.bytes.len()..) {
            Some([b'\r', b'\n', ..]) => 2,
            Some([b'\r' | b'\n', ..]) => 1,
            _ => 0,
        };
        let mut splitter = Splitter::new(delimiter, self.limits.clone());
        splitter.expect_fields(header.names.len());
        splitter.push(&body[first.bytes.len() + ending..], out);
        if at_end {
            splitter.finish(out);
        }
        self.header = Some(header);
        self.phase = Phase::Streaming(splitter);
        Ok(())
    }

    fn header_pending(&mut self) -> Result<(), FileError> {
        // A header longer than the sniffing window: treated as a malformed first line.
        Err(FileError::NoHeader(format!(
            "its first line is longer than {SNIFF_BYTES} bytes"
        )))
    }
}

/// A CSV file over any reader: the header, then records one at a time, in bounded memory.
#[derive(Debug)]
pub struct CsvReader<R> {
    reader: R,
    stream: CsvStream,
    ready: std::collections::VecDeque<RawRecord>,
    done: bool,
    block: Vec<u8>,
}

impl<R: Read> CsvReader<R> {
    /// Reads until the header is known.
    pub fn new(reader: R, limits: Limits) -> Result<Self, FileError> {
        let mut this = Self {
            reader,
            stream: CsvStream::new(limits),
            ready: std::collections::VecDeque::new(),
            done: false,
            block: vec![0; 64 << 10],
        };
        while this.stream.header().is_none() && !this.done {
            this.fill()?;
        }
        if this.stream.header().is_none() {
            return Err(FileError::Empty);
        }
        Ok(this)
    }

    pub fn header(&self) -> &Header {
        // `new` only returns once there is a header.
        self.stream
            .header()
            .unwrap_or_else(|| unreachable!("CsvReader is built only with a header"))
    }

    fn fill(&mut self) -> Result<(), FileError> {
        let mut out = Vec::new();
        let read = loop {
            match self.reader.read(&mut self.block) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FileError::Io(e.to_string())),
            }
        };
        if read == 0 {
            self.stream.finish(&mut out)?;
            self.done = true;
        } else {
            self.stream.push(&self.block[..read], &mut out)?;
        }
        self.ready.extend(out);
        Ok(())
    }

    /// The next record, `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<RawRecord>, FileError> {
        loop {
            if let Some(record) = self.ready.pop_front() {
                return Ok(Some(record));
            }
            if self.done {
                return Ok(None);
            }
            self.fill()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Defect;

    fn read_all(input: &[u8]) -> Result<(Header, Vec<RawRecord>), FileError> {
        let mut reader = CsvReader::new(input, Limits::default())?;
        let header = reader.header().clone();
        let mut records = Vec::new();
        while let Some(record) = reader.next_record()? {
            records.push(record);
        }
        Ok((header, records))
    }

    #[test]
    fn delimiters_are_detected() {
        for (input, delimiter) in [
            (&b"a,b,c\n1,2,3\n"[..], b','),
            (b"a\tb\tc\n1\t2\t3\n", b'\t'),
            (b"a;b;c\n1;2,5;3\n", b';'),
            (b"a|b|c\n1|2|3\n", b'|'),
            (b"name, with comma;b\nx;y\n", b';'),
            (b"only\n1\n", b','),
        ] {
            let (header, _) = read_all(input).unwrap();
            assert_eq!(
                header.delimiter,
                delimiter,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_bom_is_skipped_and_utf16_refused() {
        let (header, records) = read_all(b"\xEF\xBB\xBFemail,name\na@x.com,Ann\n").unwrap();
        assert_eq!(header.names, ["email", "name"]);
        assert_eq!(records.len(), 1);
        assert_eq!(read_all(b"\xFF\xFEe\x00").unwrap_err(), FileError::Utf16);
    }

    #[test]
    fn unusable_files_say_why() {
        assert_eq!(read_all(b"").unwrap_err(), FileError::Empty);
        assert_eq!(
            read_all(b"\xEF\xBB\xBF\n\r\n").unwrap_err(),
            FileError::Empty
        );
        let err = read_all(b"ann@example.com,Ann\nbob@example.com,Bob\n").unwrap_err();
        assert!(
            matches!(&err, FileError::NoHeader(m) if m.contains("email address")),
            "{err}"
        );
        let err = read_all(b"Ann,(415) 555-2671\n").unwrap_err();
        assert!(
            matches!(&err, FileError::NoHeader(m) if m.contains("number")),
            "{err}"
        );
        assert_eq!(
            read_all(b"na\xFFme,x\n1,2\n").unwrap_err(),
            FileError::HeaderNotUtf8
        );
    }

    #[test]
    fn header_names_are_unique_and_never_empty() {
        let (header, _) = read_all(b"Email, email ,,Name\n").unwrap();
        assert_eq!(header.names, ["Email", "email_2", "column_3", "Name"]);
        assert_eq!(header.warnings.len(), 2, "{:?}", header.warnings);
    }

    #[test]
    fn a_stray_quote_in_the_first_lines_costs_only_its_line() {
        let input = b"email;name;email\n\"stray@x.com;Di;\ngood@x.com;\"Ed\nEdwards\";ed@x.com\nlast@x.com;Al;\n";
        let (_, records) = read_all(input).unwrap();
        let defects: Vec<Option<Defect>> = records.iter().map(|r| r.defect).collect();
        assert_eq!(defects, [Some(Defect::UnbalancedQuote), None, None]);
        assert_eq!(records[1].bytes, b"good@x.com;\"Ed\nEdwards\";ed@x.com");
    }

    #[test]
    fn a_header_only_file_has_no_records() {
        let (header, records) = read_all(b"email,name").unwrap();
        assert_eq!(header.names.len(), 2);
        assert!(records.is_empty());
    }

    #[test]
    fn records_flow_past_the_sniffing_window() {
        let mut input = b"id,value\n".to_vec();
        for i in 0..10_000 {
            input.extend(format!("{i},\"v {i}\"\n").bytes());
        }
        let (_, records) = read_all(&input).unwrap();
        assert_eq!(records.len(), 10_000);
        assert_eq!(records[9_999].bytes, b"9999,\"v 9999\"");
    }
}
