//! A small reader over span-preserving TOML that reports every problem as `FILE:LINE:COL: message`.
//!
//! Catalogs, grant files and gateway configs all go through it, so every file fedgate reads
//! reports errors the same way: pointing at the offending key or value, collecting all of them
//! rather than stopping at the first, with a "did you mean" for misspelt keys.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use thiserror::Error;
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

/// One problem in one file, located by line and column (both 1-based, columns in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What is wrong, in one line.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
    }
}

/// Every problem found in one or more files; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The file being read and the problems found so far.
pub struct Source<'s> {
    file: &'s str,
    text: &'s str,
    diags: Vec<Diagnostic>,
    lines: LineIndex,
}

/// Byte offsets where lines start, so positions are found in O(log n) rather than by rescanning
/// the text (a file with 10,000 grants would otherwise take quadratic time to locate them).
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `text`.
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// 1-based (line, column in characters) of byte offset `at` in `text` (the indexed text).
    pub fn line_col(&self, text: &str, at: usize) -> (usize, usize) {
        let mut at = at.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= at);
        let start = self.starts[line - 1];
        (line, text[start..at].chars().count() + 1)
    }
}

/// A byte range in the source.
pub type Span = Range<usize>;

impl<'s> Source<'s> {
    /// Starts reading `text`, which came from `file` (used only in messages).
    pub fn new(file: &'s str, text: &'s str) -> Self {
        Source { file, text, diags: Vec::new(), lines: LineIndex::new(text) }
    }

    /// Parses the document; syntax errors are recorded and `None` returned.
    pub fn parse(&mut self) -> Option<Spanned<DeTable<'s>>> {
        match DeTable::parse(self.text) {
            Ok(t) => Some(t),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let msg = e.message().trim().replace('\n', " ");
                self.error(span, format!("TOML syntax: {msg}"));
                None
            }
        }
    }

    /// `FILE:LINE:COL` of byte offset `at`.
    pub fn position(&self, at: usize) -> String {
        let (line, col) = self.lines.line_col(self.text, at);
        format!("{}:{line}:{col}", self.file)
    }

    /// Records a problem at `span`.
    pub fn error(&mut self, span: Span, message: impl Into<String>) {
        let (line, col) = self.lines.line_col(self.text, span.start);
        self.diags.push(Diagnostic { file: self.file.to_owned(), line, col, message: message.into() });
    }

    /// True if and only if no problem has been recorded.
    pub fn is_clean(&self) -> bool {
        self.diags.is_empty()
    }

    /// The problems found, or `Ok(value)` if there were none.
    pub fn finish<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.diags.is_empty() {
            Ok(value)
        } else {
            Err(Diagnostics(self.diags))
        }
    }

    /// The problems found so far, consuming the reader.
    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diags
    }
}

/// 1-based (line, column in characters) of byte offset `at`, clamped to the text. For many
/// lookups in one text, use a [`LineIndex`].
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    LineIndex::new(text).line_col(text, at)
}

/// A view of one TOML table with typed, error-recording getters.
#[derive(Clone)]
pub struct Table<'t, 'i> {
    inner: &'t DeTable<'i>,
    span: Span,
    /// Dotted path of this table, for messages (`dataset.fields`).
    pub path: &'t str,
}

impl<'t, 'i> Table<'t, 'i> {
    /// Wraps the document's root table.
    pub fn root(doc: &'t Spanned<DeTable<'i>>) -> Self {
        Table { inner: doc.get_ref(), span: doc.span(), path: "" }
    }

    /// Where the table starts (its header, or the document start).
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// Records an "unknown key" error for every key not in `allowed`, with a suggestion.
    pub fn deny_unknown(&self, src: &mut Source<'_>, allowed: &[&str]) {
        for (k, _) in self.inner.iter() {
            let key = k.get_ref().as_ref();
            if allowed.contains(&key) {
                continue;
            }
            let mut msg = format!("unknown key `{}`", self.qualify(key));
            if let Some(best) = closest(key, allowed) {
                msg.push_str(&format!(", did you mean `{best}`?"));
            } else {
                msg.push_str(&format!(" (expected one of: {})", allowed.join(", ")));
            }
            src.error(k.span(), msg);
        }
    }

    fn qualify(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw value at `key`.
    pub fn get(&self, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.inner.get(key)
    }

    /// The key's span (for errors about the key itself), falling back to the table's.
    pub fn key_span(&self, key: &str) -> Span {
        self.inner
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, _)| k.span())
            .unwrap_or_else(|| self.span())
    }

    fn missing(&self, src: &mut Source<'_>, key: &str) {
        let msg = if self.path.is_empty() {
            format!("missing required key `{key}`")
        } else {
            format!("missing required key `{key}` in `{}`", self.path)
        };
        src.error(self.span(), msg);
    }

    fn wrong_type(&self, src: &mut Source<'_>, key: &str, v: &Spanned<DeValue<'_>>, want: &str) {
        let msg = format!("`{}` must be {want}, found {}", self.qualify(key), v.get_ref().type_str());
        src.error(v.span(), msg);
    }

    /// An optional string; a non-string is an error.
    pub fn opt_str(&self, src: &mut Source<'_>, key: &str) -> Option<(&'t str, Span)> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some((s.as_ref(), v.span())),
            _ => {
                self.wrong_type(src, key, v, "a string");
                None
            }
        }
    }

    /// A required string.
    pub fn str(&self, src: &mut Source<'_>, key: &str) -> Option<(&'t str, Span)> {
        if self.get(key).is_none() {
            self.missing(src, key);
            return None;
        }
        self.opt_str(src, key)
    }

    /// An optional string parsed with `FromStr`; a parse error is reported at the value.
    pub fn opt_parse<T>(&self, src: &mut Source<'_>, key: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let (s, span) = self.opt_str(src, key)?;
        match s.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                src.error(span, format!("`{}`: {e}", self.qualify(key)));
                None
            }
        }
    }

    /// A required string parsed with `FromStr`.
    pub fn parse<T>(&self, src: &mut Source<'_>, key: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        if self.get(key).is_none() {
            self.missing(src, key);
            return None;
        }
        self.opt_parse(src, key)
    }

    /// An optional integer with its span.
    pub fn opt_int(&self, src: &mut Source<'_>, key: &str) -> Option<(i64, Span)> {
        let v = self.get(key)?;
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.wrong_type(src, key, v, "an integer");
        }
        parsed.map(|n| (n, v.span()))
    }

    /// An optional boolean.
    pub fn opt_bool(&self, src: &mut Source<'_>, key: &str) -> Option<bool> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(src, key, v, "true or false");
                None
            }
        }
    }

    /// An optional array of strings, each with its span; absent means empty.
    pub fn str_list(&self, src: &mut Source<'_>, key: &str) -> Vec<(&'t str, Span)> {
        let Some(v) = self.get(key) else { return Vec::new() };
        let Some(arr) = v.get_ref().as_array() else {
            self.wrong_type(src, key, v, "an array of strings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in arr.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push((s.as_ref(), item.span())),
                _ => self.wrong_type(src, key, item, "an array of strings"),
            }
        }
        out
    }

    /// An optional sub-table.
    pub fn opt_table(&self, src: &mut Source<'_>, key: &'t str) -> Option<Table<'t, 'i>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Table { inner: t, span: v.span(), path: key }),
            _ => {
                self.wrong_type(src, key, v, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[key]]`); absent means empty.
    pub fn tables(&self, src: &mut Source<'_>, key: &'t str) -> Vec<Table<'t, 'i>> {
        let Some(v) = self.get(key) else { return Vec::new() };
        let Some(arr) = v.get_ref().as_array() else {
            self.wrong_type(src, key, v, "an array of tables ([[...]])");
            return Vec::new();
        };
        tables_of(self, src, key, arr)
    }

    /// Iterates `(key, key span, value)` in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&'t str, Span, &'t Spanned<DeValue<'i>>)> {
        self.inner.iter().map(|(k, v)| (k.get_ref().as_ref(), k.span(), v))
    }
}

fn tables_of<'t, 'i>(
    parent: &Table<'t, 'i>,
    src: &mut Source<'_>,
    key: &'t str,
    arr: &'t DeArray<'i>,
) -> Vec<Table<'t, 'i>> {
    let mut out = Vec::new();
    for item in arr.iter() {
        match item.get_ref() {
            DeValue::Table(t) => out.push(Table { inner: t, span: item.span(), path: key }),
            _ => parent.wrong_type(src, key, item, "an array of tables ([[...]])"),
        }
    }
    out
}

/// The candidate closest to `word` by edit distance, if close enough to be a plausible typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over characters, counting an adjacent transposition as one edit (the
/// commonest typo: `grdae` for `grade`).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best =
                    (d[(i - 1) * w + j] + 1).min(d[i * w + j - 1] + 1).min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * w + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let t = "a = 1\n名字 = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 6 + "名字".len() + 1), (2, 4));
        assert_eq!(line_col(t, 10_000), (3, 1));
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("grdae", &["grade", "title"]), Some("grade"));
        assert_eq!(closest("zzzzzz", &["grade", "title"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn unknown_keys_are_located() {
        let text = "node = \"a\"\nlisen = \"x\"\n";
        let mut src = Source::new("g.toml", text);
        let doc = src.parse().unwrap();
        let t = Table::root(&doc);
        t.deny_unknown(&mut src, &["node", "listen"]);
        let d = src.into_diagnostics();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].to_string(), "g.toml:2:1: unknown key `lisen`, did you mean `listen`?");
    }
}
