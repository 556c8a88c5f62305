//! Text search modes and their compilation to patterns DuckDB runs (RE2 syntax).
//!
//! Words are runs of letters, digits, marks and `_`; every Han, Hiragana or Katakana character
//! is a word of its own (these scripts do not separate words with spaces), as in Lucene's
//! standard tokenizer. Matching is case-insensitive. A pattern is built only from word
//! characters of the query (never RE2 syntax) and fixed classes, and bound as a parameter.

use crate::error::{Error, Result};

/// How a text query matches a post's text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TextMode {
    /// The query appears anywhere in the text, as typed (any script, emoji, punctuation).
    #[default]
    Substring,
    /// Every word of the query appears as a whole word, in any order.
    Words,
    /// The words of the query appear in this order, separated only by non-word characters.
    Phrase,
    /// Every word of the query begins a word of the text (`rus` finds "Rust" and "Russia").
    Prefix,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TextQuery {
    pub query: String,
    pub mode: TextMode,
}

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 512;
/// Most words a word-based query may have.
pub const MAX_QUERY_WORDS: usize = 16;

/// The character ranges that are words of one character each, shared by the Rust tokenizer and
/// the RE2 patterns so both agree.
const SINGLE_CHAR_WORDS: [(char, char); 8] = [
    ('\u{3040}', '\u{30FF}'),   // Hiragana, Katakana
    ('\u{31F0}', '\u{31FF}'),   // Katakana phonetic extensions
    ('\u{3400}', '\u{4DBF}'),   // CJK extension A
    ('\u{4E00}', '\u{9FFF}'),   // CJK unified ideographs
    ('\u{F900}', '\u{FAFF}'),   // CJK compatibility ideographs
    ('\u{FF66}', '\u{FF9F}'),   // halfwidth Katakana
    ('\u{20000}', '\u{2FA1F}'), // CJK extensions B to F, compatibility supplement
    ('\u{30000}', '\u{3134F}'), // CJK extension G
];

pub fn is_single_char_word(c: char) -> bool {
    SINGLE_CHAR_WORDS.iter().any(|(low, high)| (*low..=*high).contains(&c))
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The words of `text`, in order.
pub fn words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    for (index, c) in text.char_indices() {
        let single = is_single_char_word(c);
        if !is_word_char(c) || single {
            if let Some(s) = start.take() {
                words.push(&text[s..index]);
            }
            if single {
                words.push(&text[index..index + c.len_utf8()]);
            }
        } else if start.is_none() {
            start = Some(index);
        }
    }
    if let Some(s) = start {
        words.push(&text[s..]);
    }
    words
}

/// RE2 class of characters that are not part of a word.
pub(crate) const NON_WORD: &str = r"[^\pL\pN\pM_]";

fn single_char_class() -> String {
    let ranges: String = SINGLE_CHAR_WORDS
        .iter()
        .map(|(low, high)| format!(r"\x{{{:X}}}-\x{{{:X}}}", *low as u32, *high as u32))
        .collect();
    format!("[{ranges}]")
}

/// What may stand before (or after) a word for it to be whole: the text's edge, a non-word
/// character, or a single-character word. Single-character words need no boundary.
fn boundary(word: &str, edge: &str) -> String {
    if word.chars().all(is_single_char_word) {
        String::new()
    } else {
        format!("(?:{edge}|{NON_WORD}|{})", single_char_class())
    }
}

/// What one query compiles to: every pattern must match (case-insensitively) and, as a cheap
/// prefilter, the text must contain every literal (case-insensitively, `ILIKE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub literals: Vec<String>,
    pub patterns: Vec<String>,
}

/// Compiles a query; `Ok(None)` when it does not constrain (an empty substring).
pub fn compile(query: &TextQuery) -> Result<Option<Compiled>> {
    let chars = query.query.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(Error::InvalidArgument(format!(
            "a text query is at most {MAX_QUERY_CHARS} characters, this one has {chars}"
        )));
    }
    if query.mode == TextMode::Substring {
        return Ok(
            (!query.query.is_empty()).then(|| Compiled { literals: vec![query.query.clone()], patterns: Vec::new() })
        );
    }
    let mut words = words(&query.query);
    if words.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the text query `{}` has no words to search for; use mode SUBSTRING for punctuation or symbols",
            query.query.chars().take(64).collect::<String>()
        )));
    }
    if words.len() > MAX_QUERY_WORDS {
        return Err(Error::InvalidArgument(format!(
            "a text query has at most {MAX_QUERY_WORDS} words, this one has {}",
            words.len()
        )));
    }
    let literals: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
    let whole = |w: &str| format!("{}{w}{}", boundary(w, "^"), boundary(w, "$"));
    let patterns = match query.mode {
        TextMode::Substring => unreachable!("handled above"),
        TextMode::Words => {
            words.sort_unstable();
            words.dedup();
            words.iter().map(|w| whole(w)).collect()
        }
        TextMode::Prefix => words.iter().map(|w| format!("{}{w}", boundary(w, "^"))).collect(),
        TextMode::Phrase => {
            let mut pattern = boundary(words[0], "^");
            for (index, word) in words.iter().enumerate() {
                if index > 0 {
                    let previous = words[index - 1];
                    let joined = previous.chars().all(is_single_char_word) || word.chars().all(is_single_char_word);
                    pattern.push_str(NON_WORD);
                    pattern.push(if joined { '*' } else { '+' });
                }
                pattern.push_str(word);
            }
            pattern.push_str(&boundary(words[words.len() - 1], "$"));
            vec![pattern]
        }
    };
    Ok(Some(Compiled { literals, patterns }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_punctuation_and_per_ideograph() {
        assert_eq!(
            words("Hello, wörld_1! 東京タワー rust-lang 🦀"),
            ["Hello", "wörld_1", "東", "京", "タ", "ワ", "ー", "rust", "lang"]
        );
        assert!(words("!!! 🦀 ...").is_empty());
    }

    #[test]
    fn word_queries_need_words() {
        let query = TextQuery { query: "🦀!".into(), mode: TextMode::Words };
        assert_eq!(compile(&query).unwrap_err().kind(), crate::ErrorKind::BadInput);
        let empty = TextQuery { query: String::new(), mode: TextMode::Substring };
        assert_eq!(compile(&empty).unwrap(), None);
    }

    #[test]
    fn patterns_hold_no_query_syntax() {
        let query = TextQuery { query: r"a.b* (c|d) [e] \f".into(), mode: TextMode::Phrase };
        let compiled = compile(&query).unwrap().unwrap();
        assert_eq!(compiled.literals, ["a", "b", "c", "d", "e", "f"]);
        let pattern = &compiled.patterns[0];
        for metachar in [".", "*(", "|d", "\\f"] {
            assert!(!pattern.contains(metachar), "{pattern}");
        }
    }
}
