//! A full-text index (tantivy) over posts' texts, that narrows a text search to candidate rows
//! before DuckDB checks them with the search's exact semantics (see [`crate::search`]): the
//! index may return posts that do not match, never miss one that does.
//!
//! Each post's text is folded to lower case the way DuckDB's `lower()` and `ILIKE` fold it
//! ([`fold`]), then cut into terms: its words ([`crate::search::words`]: runs of letters,
//! digits and marks, each Han, Hiragana or Katakana character a word of its own), the pieces
//! of those words between the characters DuckDB's regexes do not call letters ([`glue`]), and
//! every other character that is not white space (emoji, punctuation), one term each. Only
//! which posts hold a term is kept (no frequencies, positions or stored text), with each post's
//! row number and `created_at` as fast fields.
//!
//! Every text search is checked by DuckDB against a case-insensitive literal the text must
//! contain (`ILIKE`; see [`crate::search::Compiled::literals`]). A post contains a folded
//! literal only if it holds, for each word of the literal, a term that the word can be part of:
//! the same term when the word is bounded inside the literal on both sides, else a term that
//! ends with it (the literal's first word), starts with it (its last) or contains it (a literal
//! that is one word); and each other character of the literal as a term. A word, phrase or
//! prefix search matches whole words (a prefix, a word's start), which its exact check bounds
//! by what its regexes call non-word characters: every such word of a matching text is a term
//! of the index (a prefix, the start of one), found by a term lookup instead of a look inside
//! every term ([`Format::Pieces`]). The candidates are the posts that hold all of them.
//!
//! Each `posts` data file that compaction or `skyglass generate` writes gets its index beside it
//! ([`dir_for`], [`build_for_file`]), its rows the file's row numbers; `skyglass lake reindex`
//! builds the missing ones. The engine narrows a statement's text searches with them, within
//! the statement's `created_at` range (`Engine::narrowed_posts`), and cuts a page of a
//! common term at its newest candidates, which each post's `created_at` here gives
//! ([`TextIndex::first_candidates`], `Engine::posts`).
//!
//! A word looked for inside terms (or at their start or end) is found in a list of every term
//! of the index, kept in memory from the first such search ([`TextIndex::terms_holding`]):
//! `memmem` reads it at gigabytes a second, where walking the term dictionary with a regex
//! took about 11 ms for a file of 500,000 posts.

use std::collections::HashSet;
use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memchr::memmem;

use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::query::{
    BooleanQuery, EmptyQuery, EnableScoring, Occur, Query, RangeQuery, RegexQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::{Index, IndexWriter, Order, ReloadPolicy, Searcher, TantivyDocument, Term};

use crate::error::{Error, Result};
use crate::search::{self, TextMode, TextQuery};

/// The memory an index build may take.
const BUILD_MEMORY: usize = 64 << 20;

/// One character folded as DuckDB's `lower()` folds it. DuckDB maps each character to one
/// (the simple lower-case mapping) by the tables of its own Unicode version, which is older than
/// Rust's: the characters Rust lower-cases are asked of the linked DuckDB once, so the two never
/// disagree (`folding_is_duckdbs_lower_for_every_character` checks every character).
pub fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    fold_table().get(&c).copied().unwrap_or(c)
}

/// DuckDB's `lower()` of every non-ASCII character that has a lower case in Rust's tables (a
/// character without one has none in DuckDB's older tables either), where it changes it.
fn fold_table() -> &'static std::collections::HashMap<char, char> {
    static TABLE: OnceLock<std::collections::HashMap<char, char>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let cased: Vec<String> = (0x80..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|c| c.to_lowercase().ne(std::iter::once(*c)))
            .map(String::from)
            .collect();
        let lowered = duckdb_lower(&cased).unwrap_or_else(|error| {
            // Without DuckDB's answer, Rust's single-character mappings: close, not exact.
            tracing::warn!(%error, "could not ask DuckDB how it folds case; using Rust's tables");
            cased.iter().map(|c| c.to_lowercase()).collect()
        });
        cased
            .iter()
            .zip(lowered)
            .filter_map(|(c, lower)| {
                let c = c.chars().next()?;
                let mut chars = lower.chars();
                match (chars.next(), chars.next()) {
                    (Some(one), None) if one != c => Some((c, one)),
                    _ => None,
                }
            })
            .collect()
    })
}

/// DuckDB's `lower()` of each of `texts`, in order.
fn duckdb_lower(texts: &[String]) -> Result<Vec<String>> {
    ask_duckdb("SELECT lower(unnest(?::VARCHAR[]))", texts)
}

/// The rows of `select` (one text column) asked of an in-memory DuckDB with `texts` as its one
/// parameter, a list.
fn ask_duckdb(select: &str, texts: &[String]) -> Result<Vec<String>> {
    let connection = duckdb::Connection::open_in_memory()?;
    let mut statement = connection.prepare(select)?;
    let list = duckdb::types::Value::List(texts.iter().map(|t| duckdb::types::Value::Text(t.clone())).collect());
    let rows = statement.query_map([list], |row| row.get::<_, String>(0))?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// The characters that Rust calls word characters and DuckDB's regex engine (RE2, whose Unicode
/// tables are older than Rust's) does not: letters newer than its tables, and symbols Rust
/// counts as letters, such as the circled ones. A search's exact check sees them as spaces,
/// [`search::words`] as letters, so a whole word of a search may lie inside one term, glued to
/// them (`ⅻⓡust` holds the word `ust`): an index also holds the pieces of each term between
/// them ([`terms`]), with their folded forms, so that a whole word is always a whole term.
/// Asked of the linked DuckDB once (`glue_is_what_duckdbs_regex_calls_no_word_character`
/// checks every character); `None` if it cannot answer, and then indexes are built without
/// pieces and words are looked for inside terms, as before.
fn glue() -> Option<&'static HashSet<char>> {
    static GLUE: OnceLock<Option<HashSet<char>>> = OnceLock::new();
    GLUE.get_or_init(|| {
        let words: Vec<String> =
            (0x80..=0x10FFFF_u32).filter_map(char::from_u32).filter(|c| is_word_char(*c)).map(String::from).collect();
        let select = format!(
            "SELECT c FROM unnest(?::VARCHAR[]) AS t(c) WHERE regexp_full_match(c, '{}')",
            search::NON_WORD
        );
        match ask_duckdb(&select, &words) {
            Ok(non_words) => {
                let mut glue: HashSet<char> = non_words.iter().filter_map(|c| c.chars().next()).collect();
                let folded: Vec<char> = glue.iter().map(|c| fold_char(*c)).collect();
                glue.extend(folded);
                Some(glue)
            }
            Err(error) => {
                tracing::warn!(%error, "could not ask DuckDB which characters its regexes call words; text indexes are built without pieces");
                None
            }
        }
    })
    .as_ref()
}

/// What an index built with the pieces between `glue` says of itself (its commit's payload):
/// the format and a digest of the glue (FNV-1a of the sorted characters), so that an index built
/// by a DuckDB whose regexes see words otherwise is looked up as one without pieces.
fn pieces_payload(glue: &HashSet<char>) -> String {
    let mut chars: Vec<char> = glue.iter().copied().collect();
    chars.sort_unstable();
    let digest = chars
        .iter()
        .flat_map(|c| (*c as u32).to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("skyglass text index: terms and their pieces, glue {digest:016x}")
}

/// The term pattern (a regex over whole terms) of a word that a text holds whole, as a word of
/// the exact check sees it: its characters, each as any of its case-insensitive forms (RE2's
/// simple case folding, a subset of Rust's) folded as the index folds. `None` if a form is glue
/// (the text's term may be cut there) or no glue is known.
fn whole_word_pattern(word: &str) -> Option<String> {
    use regex_syntax::hir::{ClassUnicode, ClassUnicodeRange};
    let glue = glue()?;
    let mut pattern = String::new();
    for c in word.chars() {
        let mut class = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
        class.case_fold_simple();
        let mut forms: Vec<char> = class.iter().flat_map(|range| range.start()..=range.end()).map(fold_char).collect();
        forms.sort_unstable();
        forms.dedup();
        if forms.iter().any(|form| glue.contains(form)) {
            return None;
        }
        let escaped: String = forms.iter().map(|form| regex_syntax::escape(&form.to_string())).collect();
        if forms.len() == 1 {
            pattern.push_str(&escaped);
        } else {
            pattern.push_str(&format!("[{escaped}]"));
        }
    }
    Some(pattern)
}

/// A text folded as DuckDB's `lower()` folds it.
pub fn fold(text: &str) -> String {
    text.chars().map(fold_char).collect()
}

/// The terms of a text (folded first), with the pieces of its words between `glue` characters.
fn terms(text: &str, glue: Option<&HashSet<char>>) -> Vec<String> {
    let folded = fold(text);
    let words = search::words(&folded);
    let mut out: Vec<String> = words.iter().map(|word| (*word).to_owned()).collect();
    if let Some(glue) = glue {
        // No ASCII character is glue: most words are looked at no further.
        let is_glue = |c: char| !c.is_ascii() && glue.contains(&c);
        for word in words.iter().filter(|word| word.chars().any(is_glue)) {
            out.extend(word.split(is_glue).filter(|piece| !piece.is_empty()).map(str::to_owned));
        }
    }
    out.extend(folded.chars().filter(|c| !c.is_whitespace() && !is_word_char(*c)).map(String::from));
    out
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// What a post must hold to contain a literal: exact terms, and words that must begin, end or
/// lie inside a term.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub exact: Vec<String>,
    pub prefix: Vec<String>,
    pub suffix: Vec<String>,
    pub infix: Vec<String>,
}

impl Needs {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.suffix.is_empty() && self.infix.is_empty()
    }
}

/// What a post must hold to contain `literal` (case-insensitively).
pub fn needs(literal: &str) -> Needs {
    let folded = fold(literal);
    let mut needs = Needs::default();
    // The words, by byte range, as `search::words` cuts them.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut start: Option<usize> = None;
    for (index, c) in folded.char_indices() {
        let single = search::is_single_char_word(c);
        if !is_word_char(c) || single {
            if let Some(s) = start.take() {
                spans.push((s, index));
            }
            if single {
                spans.push((index, index + c.len_utf8()));
            } else if !c.is_whitespace() {
                needs.exact.push(c.to_string());
            }
        } else if start.is_none() {
            start = Some(index);
        }
    }
    if let Some(s) = start {
        spans.push((s, folded.len()));
    }
    for (from, to) in spans {
        let word = &folded[from..to];
        let single = word.chars().count() == 1 && word.chars().all(search::is_single_char_word);
        // A word may run on past the literal's edge into more word characters of the text,
        // except a single-character word, which is always a term of its own.
        let open_before = from == 0 && !single;
        let open_after = to == folded.len() && !single;
        let list = match (open_before, open_after) {
            (false, false) => &mut needs.exact,
            (true, false) => &mut needs.suffix,
            (false, true) => &mut needs.prefix,
            (true, true) => &mut needs.infix,
        };
        list.push(word.to_owned());
    }
    for list in [&mut needs.exact, &mut needs.prefix, &mut needs.suffix, &mut needs.infix] {
        list.sort();
        list.dedup();
    }
    needs
}

/// A built index, open for searching. An index never changes once built, so one searcher
/// serves every search.
pub struct TextIndex {
    searcher: Searcher,
    terms: Field,
    created_at: Field,
    /// Whether its terms include their pieces between glue characters ([`glue`]), so a word a
    /// text holds whole is one of its terms.
    has_pieces: bool,
    /// Every term, each after a `\n`, the last followed by one (terms hold no white space):
    /// made at the first search that looks inside terms ([`TextIndex::terms_holding`]).
    all_terms: OnceLock<Box<[u8]>>,
}

/// Where in a term a word is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Start,
    End,
    Anywhere,
}

/// How an index is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Each text's terms: a search's words are looked for inside them.
    Terms,
    /// Its terms and their pieces between glue characters ([`glue`]): a search's words are
    /// looked up whole (or as the start of a term, for a prefix), which takes milliseconds
    /// where looking inside millions of terms takes seconds. Indexes built before it are
    /// [`Format::Terms`] until `skyglass lake reindex` builds them again.
    Pieces,
}

/// The `created_at` range a search asks for, in UTC microseconds: from `since_us` (inclusive)
/// to `until_us` (exclusive), either side open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Window {
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
}

/// The schema: the terms (whitespace-separated, already folded), the row and `created_at`.
fn schema() -> (Schema, Field) {
    let mut builder = Schema::builder();
    let indexing = TextFieldIndexing::default().set_tokenizer("whitespace").set_index_option(IndexRecordOption::Basic);
    let terms = builder.add_text_field("terms", TextOptions::default().set_indexing_options(indexing));
    builder.add_u64_field("row", FAST);
    builder.add_i64_field("created_at", FAST);
    (builder.build(), terms)
}

fn index_error(error: tantivy::TantivyError) -> Error {
    Error::Corrupt(format!("text index: {error}"))
}

impl TextIndex {
    /// Builds an index of `posts` (row number, `created_at`, text) in memory.
    pub fn build_in_memory<'a>(posts: impl IntoIterator<Item = (u64, i64, &'a str)>) -> Result<TextIndex> {
        Self::build_in_memory_as(Format::Pieces, posts)
    }

    /// Builds an index of `posts` in memory, in `format`.
    pub fn build_in_memory_as<'a>(
        format: Format,
        posts: impl IntoIterator<Item = (u64, i64, &'a str)>,
    ) -> Result<TextIndex> {
        let (schema, terms) = schema();
        let index = Index::create_in_ram(schema);
        Filler::new(&index, terms, format)?.fill(posts)?;
        Self::searching(&index)
    }

    /// Builds an index of `posts` in `dir` (which must be empty or absent), in `format`.
    pub fn build_in_dir<'a>(
        dir: &Path,
        format: Format,
        posts: impl IntoIterator<Item = (u64, i64, &'a str)>,
    ) -> Result<TextIndex> {
        std::fs::create_dir_all(dir).map_err(Error::io("create index directory", dir))?;
        let (schema, terms) = schema();
        let index = Index::create_in_dir(dir, schema).map_err(index_error)?;
        Filler::new(&index, terms, format)?.fill(posts)?;
        Self::searching(&index)
    }

    /// Opens an index built in `dir`.
    pub fn open(dir: &Path) -> Result<TextIndex> {
        Self::searching(&Index::open_in_dir(dir).map_err(index_error)?)
    }

    fn searching(index: &Index) -> Result<TextIndex> {
        let schema = index.schema();
        let field = |name| schema.get_field(name).map_err(index_error);
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(index_error)?;
        Ok(TextIndex {
            searcher: reader.searcher(),
            terms: field("terms")?,
            created_at: field("created_at")?,
            has_pieces: format_of(index)? == Format::Pieces,
            all_terms: OnceLock::new(),
        })
    }

    /// The list of every term, made on first use by a walk through each segment's term
    /// dictionary, and kept.
    fn all_terms(&self) -> Result<&[u8]> {
        if let Some(list) = self.all_terms.get() {
            return Ok(list);
        }
        let mut list = vec![b'\n'];
        for segment in self.searcher.segment_readers() {
            let inverted = segment.inverted_index(self.terms).map_err(index_error)?;
            let mut terms = inverted.terms().stream().map_err(|error| index_error(error.into()))?;
            while terms.advance() {
                list.extend_from_slice(terms.key());
                list.push(b'\n');
            }
        }
        Ok(self.all_terms.get_or_init(|| list.into_boxed_slice()))
    }

    /// The bytes the list of every term takes, if it was made (0 if not).
    pub fn term_list_bytes(&self) -> usize {
        self.all_terms.get().map_or(0, |list| list.len())
    }

    /// The terms that hold `word` at `place` (its start, its end, or anywhere), each once per
    /// segment that has it.
    fn terms_holding(&self, word: &str, place: Place) -> Result<Vec<&str>> {
        let list = self.all_terms()?;
        let needle = match place {
            Place::Start => format!("\n{word}"),
            Place::End => format!("{word}\n"),
            Place::Anywhere => word.to_owned(),
        };
        let finder = memmem::Finder::new(needle.as_bytes());
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(at) = finder.find(&list[from..]) {
            let word_at = from + at + usize::from(place == Place::Start);
            let word_end = word_at + word.len();
            // The list starts and ends with `\n`, and a word holds none.
            let start = memchr::memrchr(b'\n', &list[..word_at]).map_or(0, |i| i + 1);
            let end = memchr::memchr(b'\n', &list[word_end..]).map_or(list.len(), |i| word_end + i);
            // Cut at `\n`s, so within UTF-8 terms.
            if let Ok(term) = std::str::from_utf8(&list[start..end]) {
                found.push(term);
            }
            from = end;
        }
        Ok(found)
    }

    /// Whether it is in the format this build writes: with pieces, unless the glue is unknown.
    pub fn is_current(&self) -> bool {
        self.has_pieces == glue().is_some()
    }

    /// How many posts the index holds.
    pub fn posts(&self) -> Result<u64> {
        Ok(self.searcher.num_docs())
    }

    /// The rows that may match `query`, sorted; `None` when the index cannot narrow it (the
    /// query has no literal the index can look for), and every row must be checked.
    pub fn candidates(&self, query: &TextQuery) -> Result<Option<Vec<u64>>> {
        Ok(match self.candidates_up_to(std::slice::from_ref(query), Window::default(), usize::MAX)? {
            Candidates::Rows(rows) => Some(rows),
            Candidates::All | Candidates::TooMany => None,
        })
    }

    /// The rows created in `window` that may match every one of `queries`, sorted, unless
    /// there are more than `limit`: those are counted, not listed (counting a common term's
    /// millions of posts is cheap; listing them is not).
    pub fn candidates_up_to(&self, queries: &[TextQuery], window: Window, limit: usize) -> Result<Candidates> {
        let Some(query) = self.query(queries, window)? else { return Ok(Candidates::All) };
        if self.searcher.search(&query, &Count).map_err(index_error)? > limit {
            return Ok(Candidates::TooMany);
        }
        let found = self.searcher.search(&query, &DocSetCollector).map_err(index_error)?;
        let mut by_segment: Vec<Vec<u32>> = vec![Vec::new(); self.searcher.segment_readers().len()];
        for address in found {
            by_segment[address.segment_ord as usize].push(address.doc_id);
        }
        let mut rows = Vec::new();
        for (segment, docs) in self.searcher.segment_readers().iter().zip(by_segment) {
            let column = segment.fast_fields().u64("row").map_err(index_error)?;
            rows.extend(docs.into_iter().filter_map(|doc| column.first(doc)));
        }
        rows.sort_unstable();
        Ok(Candidates::Rows(rows))
    }

    /// How many posts created in `window` match every one of `queries`, less the rows `dead`
    /// (sorted), when the index's candidates are exactly the posts that match ([`is_exact`]);
    /// `None` otherwise. Counted from the postings alone: no text is read.
    pub fn exact_count(&self, queries: &[TextQuery], window: Window, dead: &[u64]) -> Result<Option<u64>> {
        if queries.is_empty() || !queries.iter().all(is_exact) {
            return Ok(None);
        }
        let Some(query) = self.query(queries, window)? else { return Ok(None) };
        let weight = query.weight(EnableScoring::disabled_from_searcher(&self.searcher)).map_err(index_error)?;
        // The dead rows as a bitset: a test per matching post, of millions at a month.
        let mut is_dead = vec![0_u64; dead.last().map_or(0, |last| (*last / 64 + 1) as usize)];
        for row in dead {
            is_dead[(row / 64) as usize] |= 1 << (row % 64);
        }
        let dead_row = |row: u64| is_dead.get((row / 64) as usize).is_some_and(|bits| bits & (1 << (row % 64)) != 0);
        let mut n = 0_u64;
        for segment in self.searcher.segment_readers() {
            if dead.is_empty() {
                n += u64::from(weight.count(segment).map_err(index_error)?);
                continue;
            }
            let rows = segment.fast_fields().u64("row").map_err(index_error)?;
            weight
                .for_each_no_score(segment, &mut |docs| {
                    n += docs.iter().filter(|doc| !rows.first(**doc).is_some_and(dead_row)).count() as u64;
                })
                .map_err(index_error)?;
        }
        Ok(Some(n))
    }

    /// The `created_at` and row of the `n` newest candidates of
    /// [`TextIndex::candidates_up_to`] (the oldest, unless `newest`), in that order; fewer if
    /// there are not as many (then every one). `None` when the index cannot narrow the search.
    pub fn first_candidates(
        &self,
        queries: &[TextQuery],
        window: Window,
        n: usize,
        newest: bool,
    ) -> Result<Option<Vec<(i64, u64)>>> {
        let Some(query) = self.query(queries, window)? else { return Ok(None) };
        let order = if newest { Order::Desc } else { Order::Asc };
        let top = TopDocs::with_limit(n.max(1)).order_by_fast_field::<i64>("created_at", order);
        let found = self.searcher.search(&query, &top).map_err(index_error)?;
        let mut rows = Vec::with_capacity(found.len());
        for segment in self.searcher.segment_readers() {
            rows.push(segment.fast_fields().u64("row").map_err(index_error)?);
        }
        Ok(Some(
            found
                .into_iter()
                .filter_map(|(created_at, address)| {
                    Some((created_at?, rows[address.segment_ord as usize].first(address.doc_id)?))
                })
                .take(n)
                .collect(),
        ))
    }

    /// What a post must hold to match every one of `queries` and be created in `window`; `None`
    /// when no query gives the index anything to look for.
    fn query(&self, queries: &[TextQuery], window: Window) -> Result<Option<BooleanQuery>> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for query in queries {
            self.add_clauses(query, &mut clauses)?;
        }
        if clauses.is_empty() {
            return Ok(None);
        }
        if window.since_us.is_some() || window.until_us.is_some() {
            let term = |us| Term::from_field_i64(self.created_at, us);
            let since = window.since_us.map_or(Bound::Unbounded, |us| Bound::Included(term(us)));
            let until = window.until_us.map_or(Bound::Unbounded, |us| Bound::Excluded(term(us)));
            clauses.push((Occur::Must, Box::new(RangeQuery::new(since, until))));
        }
        Ok(Some(BooleanQuery::new(clauses)))
    }

    /// Adds to `clauses` what a post must hold to match `query` (nothing if the index cannot
    /// narrow it).
    fn add_clauses(&self, query: &TextQuery, clauses: &mut Vec<(Occur, Box<dyn Query>)>) -> Result<()> {
        let Some(compiled) = search::compile(query)? else { return Ok(()) };
        // Words, phrases and prefixes match whole words (a prefix, the start of one): with the
        // pieces, each is a term (or a term's start), not a string inside one.
        let rest_of_term = match query.mode {
            TextMode::Substring => None,
            TextMode::Words | TextMode::Phrase => Some(""),
            TextMode::Prefix => Some(".*"),
        };
        for literal in &compiled.literals {
            let whole =
                rest_of_term.filter(|_| self.has_pieces).and_then(|rest| Some((whole_word_pattern(literal)?, rest)));
            if let Some((word, rest)) = whole {
                let query = RegexQuery::from_pattern(&format!("{word}{rest}"), self.terms).map_err(index_error)?;
                clauses.push((Occur::Must, Box::new(query)));
                continue;
            }
            let needs = needs(literal);
            if needs.is_empty() {
                continue;
            }
            for term in &needs.exact {
                let term = Term::from_field_text(self.terms, term);
                clauses.push((Occur::Must, Box::new(TermQuery::new(term, IndexRecordOption::Basic))));
            }
            let words = needs.prefix.iter().map(|w| (w, Place::Start));
            let words = words
                .chain(needs.suffix.iter().map(|w| (w, Place::End)))
                .chain(needs.infix.iter().map(|w| (w, Place::Anywhere)));
            for (word, place) in words {
                let terms = self.terms_holding(word, place)?;
                let query: Box<dyn Query> = if terms.is_empty() {
                    Box::new(EmptyQuery)
                } else {
                    Box::new(TermSetQuery::new(terms.into_iter().map(|t| Term::from_field_text(self.terms, t))))
                };
                clauses.push((Occur::Must, query));
            }
        }
        Ok(())
    }
}

/// Whether the candidates of `query` are exactly the posts that match it: a substring of word
/// characters alone (letters, digits and `_`, not the characters that are words of their own),
/// which, folded, lies inside one word of any text that holds it, so that a post holds it if
/// and only if one of its terms does (the index looks for it inside every term).
pub fn is_exact(query: &TextQuery) -> bool {
    query.mode == TextMode::Substring
        && !query.query.is_empty()
        && query.query.chars().count() <= search::MAX_QUERY_CHARS
        && fold(&query.query).chars().all(|c| is_word_char(c) && !search::is_single_char_word(c))
}

/// What an index can say of a text search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// It cannot narrow the search: every row must be checked.
    All,
    /// More rows than the limit asked for may match.
    TooMany,
    /// The rows that may match, sorted.
    Rows(Vec<u64>),
}

/// The format an index was built in, from its commit's payload.
fn format_of(index: &Index) -> Result<Format> {
    let payload = index.load_metas().map_err(index_error)?.payload;
    let current = glue().map(pieces_payload);
    Ok(if payload.is_some() && payload == current { Format::Pieces } else { Format::Terms })
}

/// Adds posts to an index being built, then commits it.
struct Filler {
    writer: IndexWriter<TantivyDocument>,
    terms: Field,
    row: Field,
    created_at: Field,
    /// The glue to cut pieces at, for [`Format::Pieces`] (when it is known).
    glue: Option<&'static HashSet<char>>,
}

impl Filler {
    fn new(index: &Index, terms: Field, format: Format) -> Result<Filler> {
        let schema = index.schema();
        let (row, created_at) =
            (schema.get_field("row").map_err(index_error)?, schema.get_field("created_at").map_err(index_error)?);
        let writer = index.writer_with_num_threads(1, BUILD_MEMORY).map_err(index_error)?;
        let glue = if format == Format::Pieces { glue() } else { None };
        Ok(Filler { writer, terms, row, created_at, glue })
    }

    fn add(&mut self, row: u64, created_at_us: i64, text: &str) -> Result<()> {
        let mut document = TantivyDocument::default();
        document.add_text(self.terms, terms(text, self.glue).join(" "));
        document.add_u64(self.row, row);
        document.add_i64(self.created_at, created_at_us);
        self.writer.add_document(document).map_err(index_error)?;
        Ok(())
    }

    /// Adds every one of `posts` (row number, `created_at`, text), then commits.
    fn fill<'a>(mut self, posts: impl IntoIterator<Item = (u64, i64, &'a str)>) -> Result<()> {
        for (row, created_at_us, text) in posts {
            self.add(row, created_at_us, text)?;
        }
        self.finish()
    }

    fn finish(mut self) -> Result<()> {
        let mut commit = self.writer.prepare_commit().map_err(index_error)?;
        if let Some(glue) = self.glue {
            commit.set_payload(&pieces_payload(glue));
        }
        commit.commit().map_err(index_error)?;
        self.writer.wait_merging_threads().map_err(index_error)
    }
}

/// Where the index of a `posts` data file lives: beside it, hidden (`.NAME.textindex`), so no
/// listing of data files sees it and a partition exchange carries it with its file.
pub fn dir_for(data_file: &Path) -> PathBuf {
    let name = data_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    data_file.with_file_name(format!(".{name}.textindex"))
}

/// Builds the index of one `posts` data file beside it ([`dir_for`]), replacing any, durably:
/// in a temporary directory (`.NAME.textindex.tmp`, which the flusher's cleanup removes if a
/// build is cut short), every file fsynced, then renamed into place. Its rows are the file's
/// row numbers. Returns the posts indexed.
pub fn build_for_file(data_file: &Path) -> Result<u64> {
    use arrow::array::AsArray;
    use arrow::datatypes::TimestampMicrosecondType;
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let target = dir_for(data_file);
    let tmp = crate::layout::temp_path_for(&target);
    remove_dir_if_present(&tmp)?;
    let file = fs::File::open(data_file).map_err(Error::io("open", data_file))?;
    let parquet = |source| Error::Parquet { path: data_file.to_path_buf(), source };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["created_at", "text"]);
    let reader = builder.with_projection(mask).build().map_err(parquet)?;

    fs::create_dir_all(&tmp).map_err(Error::io("create index directory", &tmp))?;
    let (schema, terms) = schema();
    let index = Index::create_in_dir(&tmp, schema).map_err(index_error)?;
    let mut filler = Filler::new(&index, terms, Format::Pieces)?;
    let mut row = 0_u64;
    for batch in reader {
        let batch = batch.map_err(|e| Error::Corrupt(format!("{}: {e}", data_file.display())))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| Error::Corrupt(format!("{}: no column {name} to index", data_file.display())))
        };
        let (created_at, text) = (column("created_at")?, column("text")?);
        let created_at = created_at.as_primitive_opt::<TimestampMicrosecondType>();
        let text = text.as_string_opt::<i32>();
        let (Some(created_at), Some(text)) = (created_at, text) else {
            return Err(Error::Corrupt(format!("{}: created_at or text has an unexpected type", data_file.display())));
        };
        for i in 0..batch.num_rows() {
            filler.add(row, created_at.value(i), text.value(i))?;
            row += 1;
        }
    }
    filler.finish()?;
    drop(index);
    for entry in fs::read_dir(&tmp).map_err(Error::io("list", &tmp))? {
        let path = entry.map_err(Error::io("list", &tmp))?.path();
        fs::File::open(&path).and_then(|f| f.sync_all()).map_err(Error::io("fsync", &path))?;
    }
    crate::writer::sync_dir(&tmp)?;
    remove_dir_if_present(&target)?;
    fs::rename(&tmp, &target).map_err(Error::io("rename into place", &target))?;
    crate::writer::sync_dir(target.parent().unwrap_or(Path::new(".")))?;
    Ok(row)
}

/// Gives `to` (a data file with the same rows as `from`, in the same order: a hard link or a
/// re-enriched copy) the index of `from`, if it has one, by hard links.
pub fn link_for(from: &Path, to: &Path) -> Result<()> {
    let source = dir_for(from);
    if !source.is_dir() {
        return Ok(());
    }
    let target = dir_for(to);
    fs::create_dir(&target).map_err(Error::io("create index directory", &target))?;
    for entry in fs::read_dir(&source).map_err(Error::io("list", &source))? {
        let entry = entry.map_err(Error::io("list", &source))?;
        let link = target.join(entry.file_name());
        fs::hard_link(entry.path(), &link).map_err(Error::io("link into staging", &link))?;
    }
    Ok(())
}

/// What `skyglass lake reindex` did in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reindexed {
    pub date: Option<chrono::NaiveDate>,
    /// The partition's data files.
    pub files: usize,
    /// Indexes built, and the posts they hold.
    pub built: usize,
    pub posts: u64,
    /// Indexes removed because their data file is gone.
    pub orphans: usize,
}

/// Whether the index in `dir` opens and is in the format this build writes.
pub fn up_to_date(dir: &Path) -> bool {
    dir.is_dir() && TextIndex::open(dir).is_ok_and(|index| index.is_current())
}

/// Builds the missing and outdated indexes ([`up_to_date`]; every one, with `rebuild`) of the
/// `posts` data files in the day partitions from `since` to `until`, and removes indexes whose
/// data file is gone; a partition
/// at a time, under the flush lock, so no compaction swaps a partition being indexed. Publishes
/// a generation if anything changed. `each` hears of every partition when it is done.
pub fn reindex(
    lake: &Path,
    since: Option<chrono::NaiveDate>,
    until: Option<chrono::NaiveDate>,
    rebuild: bool,
    each: impl FnMut(&Reindexed),
) -> Result<Vec<Reindexed>> {
    let work = |date, dir: &Path, names: &[String]| {
        let mut report = Reindexed { date: Some(date), files: names.len(), ..Reindexed::default() };
        for name in names {
            let file = dir.join(name);
            if rebuild || !up_to_date(&dir_for(&file)) {
                report.posts += build_for_file(&file)?;
                report.built += 1;
            }
        }
        report.orphans = crate::catalog::remove_orphans(dir, names, |name| {
            name.strip_prefix('.').and_then(|n| n.strip_suffix(".textindex"))
        })?;
        let changed = report.built + report.orphans > 0;
        Ok((report, changed))
    };
    crate::catalog::each_partition(lake, crate::layout::POSTS_TABLE, since, until, work, each)
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", dir)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
