//! The index never misses a match: for texts in many scripts and queries cut from them, every
//! post DuckDB finds (the exact semantics, over a real lake) is among the index's candidates.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::exec::{Engine, EngineConfig};
use crate::model::Post;
use crate::plan::{PostFilter, PostOrder, PostsPlan};
use crate::search::TextMode;

/// Pieces of text in many scripts, with the characters whose case folding is unusual.
const PIECES: &[&str] = &[
    "Rust",
    "rust",
    "RUSTACEAN",
    "trust",
    "crust!",
    "Café",
    "CAFÉ",
    "naïve",
    "İstanbul",
    "ıi",
    "KELVIN",
    "\u{212A}",
    "ſun",
    "Straße",
    "STRASSE",
    "ΣΊΣΥΦΟΣ",
    "σίσυφος",
    "Привет",
    "мир",
    "水の音",
    "東京タワー",
    "ｶﾀｶﾅ",
    "🦋",
    "☕",
    "100%",
    "50_50",
    "a_b",
    "e\u{301}",
    "#rust",
    "@alice",
    "don't",
    "l'eau",
    "x.y",
    "Ǆ",
    "ǅ",
    "ǆ",
    "ﬁ",
    "Ⅻ",
    "ⅻ",
    "①",
    "ß",
    "ẞ",
    "Ω",
    "\u{2126}",
    "—",
    " ",
    "  ",
    "\n",
    "\u{a0}",
];

fn corpus() -> Vec<String> {
    let mut state = 11_u64;
    let mut next = move |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as usize
    };
    (0..400)
        .map(|_| {
            let n = 1 + next(8);
            let mut text = String::new();
            for _ in 0..n {
                text.push_str(PIECES[next(PIECES.len())]);
                if next(3) > 0 {
                    text.push(' ');
                }
            }
            text
        })
        .collect()
}

fn uri(row: usize) -> String {
    format!("at://did:plc:a/app.bsky.feed.post/{row:05}")
}

/// A query cut from a text of the corpus: a slice at character boundaries, or a piece.
fn query(texts: &[String]) -> impl Strategy<Value = TextQuery> + use<'_> {
    let modes = prop::sample::select(&[TextMode::Substring, TextMode::Words, TextMode::Phrase, TextMode::Prefix][..]);
    let slice = (0..texts.len(), any::<prop::sample::Index>(), 1usize..12).prop_map(move |(t, start, len)| {
        let chars: Vec<char> = texts[t].chars().collect();
        let from = start.index(chars.len());
        chars[from..(from + len).min(chars.len())].iter().collect::<String>()
    });
    let piece = prop::sample::select(PIECES).prop_map(str::to_owned);
    (prop_oneof![3 => slice, 1 => piece], modes).prop_map(|(query, mode)| TextQuery { query, mode })
}

#[test]
fn every_match_is_a_candidate() {
    let texts = corpus();
    let lake = tempfile::tempdir().unwrap();
    let posts: Vec<Post> = texts
        .iter()
        .enumerate()
        .map(|(row, text)| Post {
            uri: uri(row),
            did: "did:plc:a".into(),
            created_at_us: 1_700_000_000_000_000 + row as i64,
            indexed_at_us: 1_700_000_000_000_000 + row as i64,
            text: text.clone(),
            ..Post::default()
        })
        .collect();
    crate::writer::write_posts(lake.path(), "a.parquet", posts.clone()).unwrap();
    let engine = Engine::open(lake.path(), &EngineConfig { threads: 1 }).unwrap();
    let index = TextIndex::build_in_memory(
        posts.iter().enumerate().map(|(row, p)| (row as u64, p.created_at_us, p.text.as_str())),
    )
    .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 300,
        failure_persistence: None,
        ..Default::default()
    });
    let narrowed_count = std::cell::Cell::new(0usize);
    runner
        .run(&query(&texts), |query| {
            let filter = PostFilter { text: vec![query.clone()], ..PostFilter::default() };
            let plan = PostsPlan::new(filter, PostOrder::Oldest, 10_000, []);
            let Ok(matches) = engine.posts(&plan) else {
                // A query the API refuses (no words for a word mode) has no matches to miss.
                return Ok(());
            };
            let matches: BTreeSet<String> = matches.into_iter().map(|p| p.uri).collect();
            let Some(candidates) = index.candidates(&query).unwrap() else { return Ok(()) };
            let candidates: BTreeSet<String> = candidates.into_iter().map(|row| uri(row as usize)).collect();
            let missed: Vec<&String> = matches.difference(&candidates).collect();
            prop_assert!(missed.is_empty(), "{query:?} missed {missed:?}");
            if candidates.len() < texts.len() {
                narrowed_count.set(narrowed_count.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    let narrowed = narrowed_count.get();
    assert!(narrowed > 100, "the index narrowed only {narrowed} of 300 queries");
}

#[test]
fn folding_is_duckdbs_lower_for_every_character() {
    let connection = duckdb::Connection::open_in_memory().unwrap();
    let chars: Vec<char> = (0..=0x10FFFF_u32).filter_map(char::from_u32).filter(|c| *c != '\0').collect();
    for chunk in chars.chunks(4096) {
        let text: String = chunk.iter().collect();
        let lowered: String = connection.query_row("SELECT lower(?)", [&text], |row| row.get(0)).unwrap();
        let ours = fold(&text);
        if lowered != ours {
            let theirs: Vec<char> = lowered.chars().collect();
            let first = chunk.iter().zip(&theirs).position(|(c, l)| fold_char(*c) != *l);
            panic!("folding differs from DuckDB's lower() near {:?}", first.map(|i| (chunk[i], theirs[i])));
        }
    }
}

#[test]
fn literals_need_exact_terms_inside_and_partial_ones_at_their_edges() {
    assert_eq!(
        needs("llo, Wor"),
        Needs { exact: vec![",".into()], prefix: vec!["wor".into()], suffix: vec!["llo".into()], infix: vec![] }
    );
    assert_eq!(needs("ust"), Needs { infix: vec!["ust".into()], ..Needs::default() });
    assert_eq!(needs(" big cat "), Needs { exact: vec!["big".into(), "cat".into()], ..Needs::default() });
    // A single-character word is a term of its own, wherever it stands.
    assert_eq!(needs("水の"), Needs { exact: vec!["の".into(), "水".into()], ..Needs::default() });
    assert_eq!(needs("🦋"), Needs { exact: vec!["🦋".into()], ..Needs::default() });
    assert!(needs("  ").is_empty());
}

#[test]
fn an_index_in_a_directory_opens_again_with_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let texts = ["the Rust book", "水の音", "nothing here"];
    let built =
        TextIndex::build_in_dir(dir.path(), texts.iter().enumerate().map(|(i, t)| (i as u64 * 10, 0, *t))).unwrap();
    let opened = TextIndex::open(dir.path()).unwrap();
    let query = TextQuery { query: "rust".into(), mode: TextMode::Words };
    assert_eq!(built.candidates(&query).unwrap(), Some(vec![0]));
    assert_eq!(opened.candidates(&query).unwrap(), Some(vec![0]));
    let query = TextQuery { query: "の".into(), mode: TextMode::Substring };
    assert_eq!(opened.candidates(&query).unwrap(), Some(vec![10]));
}
