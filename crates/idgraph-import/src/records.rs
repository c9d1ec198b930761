//! Splitting a byte stream into CSV records without ever holding more than one record (and a
//! bounded look-ahead) in memory, and splitting a record into its fields.
//!
//! Quoting follows RFC 4180 leniently: a quote opens a quoted field only at the start of a field,
//! `""` inside quotes is a quote, anything else is taken literally. Lines end with `\n`, `\r\n`
//! or a lone `\r`. Two defects are caught here because they decide where records end:
//!
//! - An **unbalanced quote** swallows the lines after it into one record. A record that spans
//!   several lines and does not have the header's number of fields (or whose quoted part grows
//!   past [`Limits::max_quoted_bytes`], or reaches the end of the file) is taken to be that: its
//!   first line becomes a defective record and splitting starts again on the next line, so only
//!   the line with the stray quote is lost.
//! - A record longer than [`Limits::max_record_bytes`] is cut to its first
//!   [`Limits::kept_bytes_of_long_record`] bytes and marked too long.

use std::borrow::Cow;

/// What is wrong with a record's bytes themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    UnbalancedQuote,
    TooLong,
}

impl Defect {
    pub fn as_str(self) -> &'static str {
        match self {
            Defect::UnbalancedQuote => "unbalanced_quote",
            Defect::TooLong => "too_long",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "unbalanced_quote" => Some(Defect::UnbalancedQuote),
            "too_long" => Some(Defect::TooLong),
            _ => None,
        }
    }

    /// The reason a row with this defect is rejected.
    pub fn reason(self, limits: &Limits) -> String {
        match self {
            Defect::UnbalancedQuote => {
                "unbalanced quote: a quoted field is not closed on this line".to_owned()
            }
            Defect::TooLong => format!(
                "the row is longer than {} bytes; only its first {} bytes are kept",
                limits.max_record_bytes, limits.kept_bytes_of_long_record
            ),
        }
    }
}

/// One record as it appeared in the file, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub bytes: Vec<u8>,
    pub defect: Option<Defect>,
}

/// Bounds that keep memory flat whatever the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A quoted field may span lines, but not more than this many bytes.
    pub max_quoted_bytes: usize,
    /// A record longer than this is cut and marked [`Defect::TooLong`].
    pub max_record_bytes: usize,
    pub kept_bytes_of_long_record: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_quoted_bytes: 1 << 20,
            max_record_bytes: 4 << 20,
            kept_bytes_of_long_record: 64 << 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the end of the field, or the first half of `""`.
    QuoteInQuoted,
}

/// Where scanning of the current record stands, kept across pushes so that a record arriving
/// in many small pieces is scanned once.
#[derive(Debug, Clone)]
struct Scan {
    /// Next byte to look at, relative to the record start.
    at: usize,
    state: State,
    fields: usize,
    /// End of the record's first line (relative), once a line break inside quotes was seen.
    first_line_end: Option<usize>,
    /// Where the quoted field currently open started (relative).
    quoted_from: usize,
}

impl Scan {
    fn new() -> Self {
        Self {
            at: 0,
            state: State::FieldStart,
            fields: 1,
            first_line_end: None,
            quoted_from: 0,
        }
    }
}

/// The outcome of scanning from a record start.
enum Found {
    /// A record of `len` bytes, followed by a line ending of `ending` bytes.
    Record {
        len: usize,
        ending: usize,
        fields: usize,
        multiline: bool,
    },
    /// The record's first line (`len` bytes, then `ending`) has a quote that never closes.
    Unbalanced { len: usize, ending: usize },
    /// More bytes are needed.
    NeedMore,
}

/// Splits a stream into records for a known delimiter. Feed it with [`Splitter::push`] and end
/// with [`Splitter::finish`].
#[derive(Debug, Clone)]
pub struct Splitter {
    delimiter: u8,
    limits: Limits,
    /// The header's field count, once known: a multi-line record with another count is an
    /// unbalanced quote.
    expected_fields: Option<usize>,
    buffer: Vec<u8>,
    /// Start of the current record in `buffer`.
    start: usize,
    scan: Scan,
    /// Skipping the rest of an over-long line until its end.
    discarding: bool,
}

impl Splitter {
    pub fn new(delimiter: u8, limits: Limits) -> Self {
        Self {
            delimiter,
            limits,
            expected_fields: None,
            buffer: Vec::new(),
            start: 0,
            scan: Scan::new(),
            discarding: false,
        }
    }

    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn expect_fields(&mut self, fields: usize) {
        self.expected_fields = Some(fields);
    }

    /// Appends bytes and moves every record they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<RawRecord>) {
        self.buffer.extend_from_slice(bytes);
        self.drain(false, out);
        self.compact();
    }

    /// The end of the input: the last record needs no line ending.
    pub fn finish(&mut self, out: &mut Vec<RawRecord>) {
        self.drain(true, out);
        self.buffer.clear();
        self.start = 0;
    }

    fn compact(&mut self) {
        if self.start > 0 && (self.start >= self.buffer.len() / 2 || self.start > 1 << 20) {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
    }

    fn drain(&mut self, at_end: bool, out: &mut Vec<RawRecord>) {
        loop {
            if self.discarding {
                match self.skip_to_line_end(at_end) {
                    Some(next) => {
                        self.start = next;
                        self.discarding = false;
                        self.scan = Scan::new();
                    }
                    None => return,
                }
            }
            let available = self.buffer.len() - self.start;
            if available == 0 {
                return;
            }
            match self.find(at_end) {
                Found::NeedMore => {
                    if self.buffer.len() - self.start > self.limits.max_record_bytes {
                        self.emit_too_long(out);
                        continue;
                    }
                    return;
                }
                Found::Record {
                    len,
                    ending,
                    fields,
                    multiline,
                } => {
                    let swallowed = multiline && self.expected_fields.is_some_and(|n| n != fields);
                    if swallowed {
                        self.emit_first_line_as_unbalanced(out);
                    } else if len > self.limits.max_record_bytes {
                        let kept = self.limits.kept_bytes_of_long_record.min(len);
                        out.push(RawRecord {
                            bytes: self.buffer[self.start..self.start + kept].to_vec(),
                            defect: Some(Defect::TooLong),
                        });
                        self.advance(len + ending);
                    } else {
                        out.push(RawRecord {
                            bytes: self.buffer[self.start..self.start + len].to_vec(),
                            defect: None,
                        });
                        self.advance(len + ending);
                    }
                }
                Found::Unbalanced { len, ending } => {
                    out.push(RawRecord {
                        bytes: self.buffer[self.start..self.start + len].to_vec(),
                        defect: Some(Defect::UnbalancedQuote),
                    });
                    self.advance(len + ending);
                }
            }
        }
    }

    fn advance(&mut self, by: usize) {
        self.start += by;
        self.scan = Scan::new();
    }

    /// The record in progress is longer than allowed and has no end in sight: keep its head
    /// and skip to the end of its line.
    fn emit_too_long(&mut self, out: &mut Vec<RawRecord>) {
        let kept = self.limits.kept_bytes_of_long_record;
        out.push(RawRecord {
            bytes: self.buffer[self.start..self.start + kept].to_vec(),
            defect: Some(Defect::TooLong),
        });
        if self.scan.first_line_end.is_some() {
            // It spans lines inside quotes: the quote is the problem, not the length. Only its
            // first line is lost; the rest is read again.
            out.pop();
            self.emit_first_line_as_unbalanced(out);
            return;
        }
        // Everything scanned so far is one line; drop it and skip to its end.
        self.start = self.buffer.len();
        self.buffer.clear();
        self.start = 0;
        self.discarding = true;
    }

    fn emit_first_line_as_unbalanced(&mut self, out: &mut Vec<RawRecord>) {
        let line = line_end(&self.buffer[self.start..], false);
        let (len, ending) = line.unwrap_or((self.buffer.len() - self.start, 0));
        out.push(RawRecord {
            bytes: self.buffer[self.start..self.start + len].to_vec(),
            defect: Some(Defect::UnbalancedQuote),
        });
        self.advance(len + ending);
    }

    /// While discarding: the index after the next line ending, if it has arrived.
    fn skip_to_line_end(&mut self, at_end: bool) -> Option<usize> {
        let rest = &self.buffer[self.start..];
        match line_end(rest, at_end) {
            Some((len, ending)) => Some(self.start + len + ending),
            None => {
                // Nothing worth keeping: forget what was skipped.
                let keep_cr = rest.last() == Some(&b'\r');
                self.buffer.clear();
                self.start = 0;
                if keep_cr {
                    self.buffer.push(b'\r');
                }
                if at_end {
                    self.buffer.clear();
                    self.discarding = false;
                }
                None
            }
        }
    }

    fn find(&mut self, at_end: bool) -> Found {
        let record = &self.buffer[self.start..];
        let delimiter = self.delimiter;
        let scan = &mut self.scan;
        let mut i = scan.at;
        while i < record.len() {
            if scan.state == State::Unquoted {
                // Inside an unquoted field only a delimiter or a line break changes anything
                // (a quote there is a character): jump to the next one.
                match memchr::memchr3(delimiter, b'\n', b'\r', &record[i..]) {
                    Some(offset) => i += offset,
                    None => {
                        i = record.len();
                        break;
                    }
                }
            }
            let byte = record[i];
            match scan.state {
                State::Quoted => {
                    // Fast path: most bytes of a quoted field are neither quotes nor newlines.
                    match record[i..].iter().position(|b| *b == b'"' || *b == b'\n') {
                        None => {
                            i = record.len();
                            break;
                        }
                        Some(offset) => {
                            i += offset;
                            if record[i] == b'"' {
                                scan.state = State::QuoteInQuoted;
                            } else if scan.first_line_end.is_none() {
                                let end = if i > 0 && record[i - 1] == b'\r' {
                                    i - 1
                                } else {
                                    i
                                };
                                scan.first_line_end = Some(end);
                            }
                            if i - scan.quoted_from > self.limits.max_quoted_bytes {
                                return self.unbalanced_first_line();
                            }
                        }
                    }
                }
                State::FieldStart | State::Unquoted | State::QuoteInQuoted => {
                    if byte == b'\n' || byte == b'\r' {
                        let ending = if byte == b'\r' {
                            match record.get(i + 1) {
                                Some(b'\n') => 2,
                                Some(_) => 1,
                                None if at_end => 1,
                                None => {
                                    scan.at = i;
                                    return Found::NeedMore;
                                }
                            }
                        } else {
                            1
                        };
                        return Found::Record {
                            len: i,
                            ending,
                            fields: scan.fields,
                            multiline: scan.first_line_end.is_some(),
                        };
                    }
                    if byte == delimiter {
                        scan.fields += 1;
                        scan.state = State::FieldStart;
                    } else if byte == b'"' {
                        scan.state = match scan.state {
                            State::FieldStart => {
                                scan.quoted_from = i;
                                State::Quoted
                            }
                            // `""` inside a quoted field.
                            State::QuoteInQuoted => State::Quoted,
                            _ => State::Unquoted,
                        };
                    } else {
                        scan.state = State::Unquoted;
                    }
                }
            }
            i += 1;
        }
        scan.at = i;
        if !at_end {
            return Found::NeedMore;
        }
        if scan.state == State::Quoted {
            return self.unbalanced_first_line();
        }
        Found::Record {
            len: record.len(),
            ending: 0,
            fields: scan.fields,
            multiline: scan.first_line_end.is_some(),
        }
    }

    fn unbalanced_first_line(&self) -> Found {
        let record = &self.buffer[self.start..];
        match line_end(record, true) {
            Some((len, ending)) => Found::Unbalanced { len, ending },
            None => Found::Unbalanced {
                len: record.len(),
                ending: 0,
            },
        }
    }
}

/// The length of the first line of `bytes` and of its ending, ignoring quotes. `None` when no
/// line ending has arrived (a trailing `\r` waits for a possible `\n` unless `at_end`).
fn line_end(bytes: &[u8], at_end: bool) -> Option<(usize, usize)> {
    let i = bytes.iter().position(|b| *b == b'\n' || *b == b'\r')?;
    if bytes[i] == b'\n' {
        return Some((i, 1));
    }
    match bytes.get(i + 1) {
        Some(b'\n') => Some((i, 2)),
        Some(_) => Some((i, 1)),
        None if at_end => Some((i, 1)),
        None => None,
    }
}

/// Splits one record into fields, unquoting quoted ones. Field contents are bytes: decoding is
/// the caller's decision.
pub fn split_fields(record: &[u8], delimiter: u8) -> Vec<Cow<'_, [u8]>> {
    split_spans(record, delimiter, 0)
        .into_iter()
        .map(|span| match span {
            Span::Range(range) => Cow::Borrowed(&record[range]),
            Span::Unquoted(bytes) => Cow::Owned(bytes),
        })
        .collect()
}

/// Where one field of a record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// These bytes of the record (inside the quotes of a quoted field).
    Range(std::ops::Range<usize>),
    /// A quoted field with a doubled quote, or text after its closing quote: its bytes unquoted.
    Unquoted(Vec<u8>),
}

/// The fields of one record as [`Span`]s, which a caller that decoded the whole record can
/// take as slices of its text. `expected`: how many fields to make room for.
pub fn split_spans(record: &[u8], delimiter: u8, expected: usize) -> Vec<Span> {
    let next = |from: usize, byte: u8| {
        memchr::memchr(byte, &record[from.min(record.len())..]).map(|offset| from + offset)
    };
    let mut fields = Vec::with_capacity(expected);
    let mut i = 0;
    loop {
        let end;
        if record.get(i) == Some(&b'"') {
            // Quoted: up to the closing quote, `""` as a quote; anything after the closing quote
            // up to the delimiter is kept literally.
            let start = i + 1;
            let mut unquoted: Option<Vec<u8>> = None;
            let mut j = start;
            let close = loop {
                match next(j, b'"') {
                    None => break record.len(),
                    Some(quote) if record.get(quote + 1) == Some(&b'"') => {
                        let value = unquoted.get_or_insert_with(Vec::new);
                        value.extend_from_slice(&record[j..=quote]);
                        j = quote + 2;
                    }
                    Some(quote) => break quote,
                }
            };
            let after = (close + 1).min(record.len());
            end = next(after, delimiter).unwrap_or(record.len());
            fields.push(match unquoted {
                None if after == end => Span::Range(start.min(close)..close),
                mut unquoted => {
                    let value = unquoted.get_or_insert_with(Vec::new);
                    value.extend_from_slice(&record[j.min(close)..close]);
                    value.extend_from_slice(&record[after..end]);
                    Span::Unquoted(unquoted.unwrap_or_default())
                }
            });
        } else {
            end = next(i, delimiter).unwrap_or(record.len());
            fields.push(Span::Range(i.min(end)..end));
        }
        if end >= record.len() {
            break;
        }
        i = end + 1;
    }
    fields
}

/// How many fields `record` has, with the same quoting rules as [`split_fields`].
pub fn count_fields(record: &[u8], delimiter: u8) -> usize {
    let mut state = State::FieldStart;
    let mut fields = 1;
    for &byte in record {
        state = match (state, byte) {
            (State::Quoted, b'"') => State::QuoteInQuoted,
            (State::Quoted, _) => State::Quoted,
            (State::QuoteInQuoted, b'"') => State::Quoted,
            (_, b) if b == delimiter => {
                fields += 1;
                State::FieldStart
            }
            (State::FieldStart, b'"') => State::Quoted,
            _ => State::Unquoted,
        };
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(input: &[u8], expected_fields: Option<usize>, piece: usize) -> Vec<RawRecord> {
        let mut splitter = Splitter::new(b',', Limits::default());
        if let Some(n) = expected_fields {
            splitter.expect_fields(n);
        }
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            splitter.push(chunk, &mut out);
        }
        splitter.finish(&mut out);
        out
    }

    fn texts(records: &[RawRecord]) -> Vec<(String, Option<Defect>)> {
        records
            .iter()
            .map(|r| (String::from_utf8_lossy(&r.bytes).into_owned(), r.defect))
            .collect()
    }

    #[test]
    fn records_end_with_any_line_ending_and_quotes_may_span_lines() {
        let input = b"a,b\r\n1,\"x\ny\"\r2,3\n\"q\"\"q\",4";
        for piece in [1, 2, 3, 7, 100] {
            assert_eq!(
                texts(&split_all(input, Some(2), piece)),
                [
                    ("a,b".to_owned(), None),
                    ("1,\"x\ny\"".to_owned(), None),
                    ("2,3".to_owned(), None),
                    ("\"q\"\"q\",4".to_owned(), None),
                ],
                "in pieces of {piece}"
            );
        }
    }

    #[test]
    fn an_unbalanced_quote_costs_only_its_line() {
        let input = b"a,b\n1,\"oops\n2,3\n4,5\n";
        for piece in [1, 5, 100] {
            assert_eq!(
                texts(&split_all(input, Some(2), piece)),
                [
                    ("a,b".to_owned(), None),
                    ("1,\"oops".to_owned(), Some(Defect::UnbalancedQuote)),
                    ("2,3".to_owned(), None),
                    ("4,5".to_owned(), None),
                ]
            );
        }
        // At the very end of the file too.
        assert_eq!(
            texts(&split_all(b"a,b\n1,\"never closed", Some(2), 3)),
            [
                ("a,b".to_owned(), None),
                ("1,\"never closed".to_owned(), Some(Defect::UnbalancedQuote)),
            ]
        );
    }

    #[test]
    fn a_stray_quote_in_the_middle_of_a_field_is_a_character() {
        let records = split_all(b"size,name\n5\" screen,tv\n", Some(2), 4);
        assert_eq!(
            texts(&records),
            [
                ("size,name".to_owned(), None),
                ("5\" screen,tv".to_owned(), None)
            ]
        );
        let fields = split_fields(&records[1].bytes, b',');
        assert_eq!(fields, [b"5\" screen".as_slice(), b"tv".as_slice()]);
    }

    #[test]
    fn an_over_long_line_is_cut_and_the_next_line_survives() {
        let limits = Limits {
            max_quoted_bytes: 100,
            max_record_bytes: 50,
            kept_bytes_of_long_record: 10,
        };
        let mut splitter = Splitter::new(b',', limits);
        let mut input = b"a,b\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 500));
        input.extend(b",1\n2,3\n");
        let mut out = Vec::new();
        for chunk in input.chunks(16) {
            splitter.push(chunk, &mut out);
        }
        splitter.finish(&mut out);
        assert_eq!(
            texts(&out),
            [
                ("a,b".to_owned(), None),
                ("xxxxxxxxxx".to_owned(), Some(Defect::TooLong)),
                ("2,3".to_owned(), None),
            ]
        );
    }

    #[test]
    fn fields_are_unquoted() {
        let fields = split_fields(b"plain,\"a,b\",\"say \"\"hi\"\"\",,\"x\"tail", b',');
        let fields: Vec<&[u8]> = fields.iter().map(|f| f.as_ref()).collect();
        assert_eq!(
            fields,
            [b"plain".as_slice(), b"a,b", b"say \"hi\"", b"", b"xtail"]
        );
        assert_eq!(
            count_fields(b"plain,\"a,b\",\"say \"\"hi\"\"\",,\"x\"tail", b','),
            5
        );
        assert_eq!(split_fields(b"", b',').len(), 1);
        assert_eq!(count_fields(b"a;b;\"c;d\"", b';'), 3);
    }

    /// The quoting rules byte by byte: the reference the splitter is checked against.
    fn reference_split(record: &[u8], delimiter: u8) -> Vec<Vec<u8>> {
        #[derive(Clone, Copy, PartialEq)]
        enum At {
            Start,
            Plain,
            Quoted,
            QuoteInQuoted,
            AfterQuotes,
        }
        let (mut fields, mut field, mut at) = (Vec::new(), Vec::new(), At::Start);
        for &byte in record {
            at = match (at, byte) {
                (At::Start, b'"') => At::Quoted,
                (At::Quoted, b'"') => At::QuoteInQuoted,
                (At::Quoted, _) => {
                    field.push(byte);
                    At::Quoted
                }
                (At::QuoteInQuoted, b'"') => {
                    field.push(b'"');
                    At::Quoted
                }
                (_, b) if b == delimiter => {
                    fields.push(std::mem::take(&mut field));
                    At::Start
                }
                (At::QuoteInQuoted | At::AfterQuotes, _) => {
                    field.push(byte);
                    At::AfterQuotes
                }
                (At::Start | At::Plain, _) => {
                    field.push(byte);
                    At::Plain
                }
            };
        }
        fields.push(field);
        fields
    }

    proptest::proptest! {
        /// Any bytes (quotes anywhere, unbalanced, doubled, text after a closing quote) split
        /// as the byte-by-byte rules say, and as many fields as `count_fields` counts.
        #[test]
        fn splitting_follows_the_quoting_rules(
            record in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b';', b'"', b' ', 0xC3, 0xA9, 0xFF]), 0..60),
        ) {
            let fields: Vec<Vec<u8>> =
                split_fields(&record, b';').into_iter().map(Cow::into_owned).collect();
            proptest::prop_assert_eq!(&fields, &reference_split(&record, b';'));
            proptest::prop_assert_eq!(fields.len(), count_fields(&record, b';'));
        }

        /// Written out with quotes, any table of fields splits back into the same records and
        /// fields, whatever pieces the bytes arrive in.
        #[test]
        fn round_trip(
            rows in proptest::collection::vec(
                proptest::collection::vec("[a-z,\"\n ]{0,6}", 3), 1..8),
            piece in 1usize..20,
        ) {
            let mut input = Vec::new();
            for row in &rows {
                let line: Vec<String> = row
                    .iter()
                    .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
                    .collect();
                input.extend(line.join(",").bytes());
                input.push(b'\n');
            }
            let records = split_all(&input, Some(3), piece);
            proptest::prop_assert_eq!(records.len(), rows.len());
            for (record, row) in records.iter().zip(&rows) {
                proptest::prop_assert_eq!(record.defect, None);
                let fields: Vec<String> = split_fields(&record.bytes, b',')
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                proptest::prop_assert_eq!(&fields, row);
            }
        }

        /// However the bytes are cut into pieces, the records are the same: nothing depends on
        /// where an HTTP body or a read() happened to split the file.
        #[test]
        fn pieces_do_not_matter(
            input in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b',', b'"', b'\n', b'\r', b' ']), 0..200),
            piece in 1usize..17,
            expected in proptest::option::of(1usize..4),
        ) {
            let whole = split_all(&input, expected, input.len().max(1));
            let pieces = split_all(&input, expected, piece);
            proptest::prop_assert_eq!(whole, pieces);
        }
    }
}
