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
    "Ⓡust",
    "ⓡust",
    "ⅻⓡust",
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

/// A seeded generator of numbers below its argument (a linear congruential one: enough for
/// fixtures, the same on every machine).
fn numbers(seed: u64) -> impl FnMut(usize) -> usize {
    let mut state = seed;
    move |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as usize
    }
}

fn corpus() -> Vec<String> {
    let mut next = numbers(11);
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
    crate::model::post_uri("did:plc:a", &rkey(row))
}

fn rkey(row: usize) -> String {
    format!("{row:05}")
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

/// One post per text, in that order (by `created_at`, as a data file holds them).
fn posts_of(texts: &[String]) -> Vec<Post> {
    texts
        .iter()
        .enumerate()
        .map(|(row, text)| Post {
            uri: uri(row),
            did: "did:plc:a".into(),
            rkey: rkey(row),
            created_at_us: 1_700_000_000_000_000 + row as i64,
            indexed_at_us: 1_700_000_000_000_000 + row as i64,
            text: text.clone(),
            ..Post::default()
        })
        .collect()
}

#[test]
fn every_match_is_a_candidate() {
    let texts = corpus();
    let lake = tempfile::tempdir().unwrap();
    let posts = posts_of(&texts);
    crate::writer::write_posts(lake.path(), "a.parquet", posts.clone()).unwrap();
    let engine = Engine::open(lake.path(), &EngineConfig::with_threads(1)).unwrap();
    let rows = || posts.iter().enumerate().map(|(row, p)| (row as u64, p.created_at_us, p.text.as_str()));
    let indexes = [Format::Pieces, Format::Terms].map(|format| TextIndex::build_in_memory_as(format, rows()).unwrap());
    assert!(indexes[0].has_pieces && !indexes[1].has_pieces);
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
            for index in &indexes {
                let Some(candidates) = index.candidates(&query).unwrap() else { return Ok(()) };
                let candidates: BTreeSet<String> = candidates.into_iter().map(|row| uri(row as usize)).collect();
                let missed: Vec<&String> = matches.difference(&candidates).collect();
                prop_assert!(missed.is_empty(), "{query:?} missed {missed:?} (pieces: {})", index.has_pieces);
                if candidates.len() < texts.len() && index.has_pieces {
                    narrowed_count.set(narrowed_count.get() + 1);
                }
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
fn glue_is_what_duckdbs_regex_calls_no_word_character() {
    let glue = glue().expect("DuckDB answers");
    assert!(glue.contains(&'ⓡ') && glue.contains(&'Ⓡ'), "the circled letters are glue");
    let connection = duckdb::Connection::open_in_memory().unwrap();
    let words: Vec<char> = (0..=0x10FFFF_u32).filter_map(char::from_u32).filter(|c| is_word_char(*c)).collect();
    for chunk in words.chunks(4096) {
        let text: String = chunk.iter().collect();
        // What is left once RE2 removes its word characters.
        let left: String = connection
            .query_row(&format!("SELECT regexp_replace(?, '{}', '', 'g')", r"[\pL\pN\pM_]"), [&text], |row| row.get(0))
            .unwrap();
        let non_words: HashSet<char> = left.chars().collect();
        for c in chunk {
            let folded_glue = || glue.iter().any(|g| fold_char(*g) == *c);
            assert_eq!(glue.contains(c), non_words.contains(c) || folded_glue(), "{c:?} (U+{:04X})", *c as u32);
        }
    }
    assert!(glue.iter().all(|c| is_word_char(*c)), "every glue character was checked above");
}

#[test]
fn words_are_looked_up_whole_with_every_form_of_their_case() {
    let texts = ["trust", "ⅻⓡust", "ust.", "USt", "ſun", "sun", "sunny", "ⓡ", "KELVIN", "\u{212A}elvin", "asun"];
    let rows = || texts.iter().enumerate().map(|(row, text)| (row as u64, 0, *text));
    let pieces = TextIndex::build_in_memory(rows()).unwrap();
    let terms = TextIndex::build_in_memory_as(Format::Terms, rows()).unwrap();
    let rows_of = |index: &TextIndex, query: &str, mode| {
        index.candidates(&TextQuery { query: query.into(), mode }).unwrap().expect("the index narrows it")
    };
    assert_eq!(rows_of(&pieces, "ust", TextMode::Words), [1, 2, 3], "whole, or glued to a circled letter");
    assert_eq!(rows_of(&terms, "ust", TextMode::Words), [0, 1, 2, 3], "inside a term");
    assert_eq!(rows_of(&pieces, "Su", TextMode::Prefix), [4, 5, 6], "ſ is a case of s to RE2");
    assert_eq!(rows_of(&pieces, "sun", TextMode::Phrase), [4, 5]);
    assert_eq!(rows_of(&pieces, "kelvin", TextMode::Words), [8, 9], "the Kelvin sign folds to k");
    assert_eq!(rows_of(&pieces, "ⓡust", TextMode::Words), [1], "a word with glue is looked for inside terms");
    assert_eq!(whole_word_pattern("Sun").as_deref(), Some("[sſ]un"));
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
fn words_inside_terms_are_found_at_their_place_in_the_list_of_terms() {
    let texts = ["Coffee coffeehouse", "decaf-coffee", "ilovecoffee", "tea"];
    let index = TextIndex::build_in_memory(texts.iter().enumerate().map(|(row, text)| (row as u64, 0, *text))).unwrap();
    assert_eq!(index.term_list_bytes(), 0, "made at the first search inside terms");
    let holding = |word: &str, place: Place| {
        let mut terms = index.terms_holding(word, place).unwrap();
        terms.sort_unstable();
        terms
    };
    assert_eq!(holding("coffee", Place::Anywhere), ["coffee", "coffeehouse", "ilovecoffee"]);
    assert_eq!(holding("coffee", Place::Start), ["coffee", "coffeehouse"]);
    assert_eq!(holding("coffee", Place::End), ["coffee", "ilovecoffee"]);
    assert_eq!(holding("ffee", Place::Start), Vec::<&str>::new());
    // The first and the last term of the list (in byte order: "-", ..., "tea").
    assert_eq!(holding("-", Place::Start), ["-"]);
    assert_eq!(holding("tea", Place::End), ["tea"]);
    assert_eq!(holding("ea", Place::Anywhere), ["tea"]);
    assert_eq!(holding("e", Place::Anywhere).len(), 5, "every term with an e, once each");
    assert_eq!(index.term_list_bytes(), "\n-\ncoffee\ncoffeehouse\ndecaf\nilovecoffee\ntea\n".len());
    // A word no term holds matches no post.
    let search = |query: &str| index.candidates(&TextQuery { query: query.into(), mode: TextMode::Substring }).unwrap();
    assert_eq!(search("zebra"), Some(vec![]));
    assert_eq!(search("love"), Some(vec![2]));
    assert_eq!(search("f-co"), Some(vec![1]));
}

#[test]
fn an_index_in_a_directory_opens_again_with_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let texts = ["the Rust book", "水の音", "nothing here"];
    let rows = texts.iter().enumerate().map(|(i, t)| (i as u64 * 10, 0, *t));
    let built = TextIndex::build_in_dir(dir.path(), Format::Pieces, rows).unwrap();
    let opened = TextIndex::open(dir.path()).unwrap();
    assert!(opened.has_pieces && up_to_date(dir.path()));
    let query = TextQuery { query: "rust".into(), mode: TextMode::Words };
    assert_eq!(built.candidates(&query).unwrap(), Some(vec![0]));
    assert_eq!(opened.candidates(&query).unwrap(), Some(vec![0]));
    let query = TextQuery { query: "の".into(), mode: TextMode::Substring };
    assert_eq!(opened.candidates(&query).unwrap(), Some(vec![10]));
}

/// The file row numbers of `file` whose text contains `word`, case-insensitively, by DuckDB.
fn rows_containing(file: &Path, word: &str) -> BTreeSet<u64> {
    let connection = duckdb::Connection::open_in_memory().unwrap();
    let mut statement = connection
        .prepare(
            "SELECT file_row_number FROM read_parquet(?, file_row_number = true) WHERE contains(lower(text), lower(?))",
        )
        .unwrap();
    let rows = statement.query_map(duckdb::params![file.to_string_lossy(), word], |row| row.get::<_, i64>(0)).unwrap();
    rows.map(|row| row.unwrap() as u64).collect()
}

#[test]
fn a_data_files_index_is_built_beside_it_from_its_rows() {
    let texts = corpus();
    let lake = tempfile::tempdir().unwrap();
    let written = crate::writer::write_posts(lake.path(), "a.parquet", posts_of(&texts)).unwrap();
    let file = &written[0].path;
    assert_eq!(build_for_file(file).unwrap(), texts.len() as u64);
    let index = TextIndex::open(&dir_for(file)).unwrap();
    assert_eq!(index.posts().unwrap(), texts.len() as u64);
    for word in ["rust", "水", "café", "🦋", "straße", "привет"] {
        let expected = rows_containing(file, word);
        assert!(!expected.is_empty(), "{word} is in the corpus");
        let query = TextQuery { query: word.into(), mode: TextMode::Substring };
        let candidates: BTreeSet<u64> = index.candidates(&query).unwrap().unwrap().into_iter().collect();
        let missed: Vec<&u64> = expected.difference(&candidates).collect();
        assert!(missed.is_empty(), "{word}: rows {missed:?} missed");
    }
    // Built again in place; nothing temporary is left, and no data file listing sees it.
    build_for_file(file).unwrap();
    let names: Vec<String> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2 + crate::rollup::Kind::POSTS.len(), "the file, its index and its rollups: {names:?}");
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    assert_eq!(crate::catalog::table_files(lake.path(), crate::layout::POSTS_TABLE).unwrap().files, 1);
}

#[test]
fn compaction_indexes_the_files_it_writes_and_reindex_builds_the_missing_ones() {
    use crate::layout;
    let texts = corpus();
    let lake = tempfile::tempdir().unwrap();
    let posts = posts_of(&texts);
    for (n, chunk) in posts.chunks(150).enumerate() {
        crate::writer::write_posts(lake.path(), &format!("f{n}.parquet"), chunk.to_vec()).unwrap();
    }
    let date = layout::date_of_micros(posts[0].created_at_us);
    let dir = layout::partition_dir(lake.path(), layout::POSTS_TABLE, date);
    let generation = crate::catalog::read_state(lake.path()).unwrap().generation;

    let reports = reindex(lake.path(), None, None, false, |_| {}).unwrap();
    assert_eq!((reports[0].files, reports[0].built, reports[0].posts), (3, 3, texts.len() as u64));
    assert_eq!(crate::catalog::read_state(lake.path()).unwrap().generation, generation + 1, "published");
    let again = reindex(lake.path(), None, None, false, |_| {}).unwrap();
    assert_eq!((again[0].built, again[0].orphans), (0, 0));

    let compacted = crate::compact::compact_partition(lake.path(), date, 1 << 30, 42, &Default::default()).unwrap();
    assert!(compacted.changed());
    let names = crate::catalog::data_file_names(&dir).unwrap();
    assert_eq!(names.len(), 1);
    let file = dir.join(&names[0]);
    let index = TextIndex::open(&dir_for(&file)).unwrap();
    assert_eq!(index.posts().unwrap(), texts.len() as u64);
    let expected = rows_containing(&file, "rust");
    let query = TextQuery { query: "rust".into(), mode: TextMode::Substring };
    let candidates: BTreeSet<u64> = index.candidates(&query).unwrap().unwrap().into_iter().collect();
    assert!(expected.is_subset(&candidates), "the compacted file's index lists its own row numbers");
    let indexes = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".textindex"))
        .count();
    assert_eq!(indexes, 1, "the merged files' indexes went with them");

    // An index in the older format is built again, and `lake verify` says so until it is.
    let rows = texts.iter().enumerate().map(|(row, text)| (row as u64, 0, text.as_str()));
    std::fs::remove_dir_all(dir_for(&file)).unwrap();
    TextIndex::build_in_dir(&dir_for(&file), Format::Terms, rows).unwrap();
    assert!(!up_to_date(&dir_for(&file)));
    let findings = crate::verify::verify(lake.path()).unwrap().findings;
    assert!(findings.iter().any(|f| f.what.contains("older format")), "{findings:?}");
    let rebuilt = reindex(lake.path(), None, None, false, |_| {}).unwrap();
    assert_eq!(rebuilt[0].built, 1);
    assert!(up_to_date(&dir_for(&file)) && TextIndex::open(&dir_for(&file)).unwrap().has_pieces);

    // An index whose data file is gone is removed.
    std::fs::create_dir(dir.join(".gone.parquet.textindex")).unwrap();
    let cleaned = reindex(lake.path(), None, None, false, |_| {}).unwrap();
    assert_eq!((cleaned[0].built, cleaned[0].orphans), (0, 1));
    assert!(!dir.join(".gone.parquet.textindex").exists());
}

/// Every post of `filter` in `order`, in pages of 40.
fn every_page(engine: &Engine, filter: &PostFilter, order: PostOrder) -> crate::Result<Vec<Vec<String>>> {
    let mut plan = PostsPlan::new(filter.clone(), order, 40, []);
    let mut pages = Vec::new();
    loop {
        let page = engine.posts(&plan)?;
        let Some(last) = page.last() else { return Ok(pages) };
        plan.after = Some(crate::plan::Keyset { created_at_us: last.created_at_us, uri: last.uri.clone() });
        pages.push(page.into_iter().map(|p| p.uri).collect());
    }
}

/// Statements over indexed files answer exactly as over the same files without indexes:
/// pages both ways and counts, in every mode, with a deleted post, a file without an index and
/// a post in the hot tier.
#[test]
fn the_index_path_answers_exactly_as_the_scan() {
    let texts = corpus();
    let posts = posts_of(&texts);
    let (indexed, plain) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for lake in [indexed.path(), plain.path()] {
        for (n, chunk) in posts.chunks(150).enumerate() {
            crate::writer::write_posts(lake, &format!("f{n}.parquet"), chunk.to_vec()).unwrap();
        }
        let delete =
            crate::model::Delete { uri: uri(7), did: "did:plc:a".into(), deleted_at_us: posts[7].created_at_us + 1 };
        crate::writer::write_rows(lake, "d.parquet", vec![delete]).unwrap();
    }
    // One file is left without its index: it is read whole.
    index_all_but_f1(indexed.path(), posts[0].created_at_us);

    // `a` takes out the indexed files' deleted rows with an anti-join of the deletes, `c` from
    // the rollup tables' dead rows, which `c` has brought up to date. `c` reads the candidates
    // from their pages, `a` through DuckDB.
    let open = |lake: &Path| Engine::open(lake, &EngineConfig::with_threads(1)).unwrap();
    let (a, b, c) = (open(indexed.path()), open(plain.path()), open(indexed.path()));
    a.read_no_rows_from_pages();
    let hot =
        Post {
            uri: uri(9_999), rkey: rkey(9_999), text: "Rust 水の音 🦋 hot".into(), ..posts_of(&texts)[399].clone()
        };
    let hot = Post { created_at_us: hot.created_at_us + 10, indexed_at_us: hot.indexed_at_us + 10, ..hot };
    for engine in [&a, &b, &c] {
        engine.set_hot(crate::exec::HotTier::posts(std::slice::from_ref(&hot))).unwrap();
    }
    c.prepare_rollups().unwrap();

    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 80,
        failure_persistence: None,
        ..Default::default()
    });
    runner
        .run(&query(&texts), |query| {
            let filter = PostFilter { text: vec![query.clone()], ..PostFilter::default() };
            for order in [PostOrder::Newest, PostOrder::Oldest] {
                for indexed in [&a, &c] {
                    match (every_page(indexed, &filter, order), every_page(&b, &filter, order)) {
                        (Ok(with), Ok(without)) => prop_assert_eq!(with, without, "{:?} {:?}", query, order),
                        (with, without) => prop_assert_eq!(with.is_err(), without.is_err(), "{:?}", query),
                    }
                }
            }
            let (with, without) = (a.count(&filter), b.count(&filter));
            if let (Ok(with), Ok(without)) = (&with, &without) {
                prop_assert_eq!(with, without, "{:?}", query);
            }
            Ok(())
        })
        .unwrap();
    // The deleted post is found by no engine, on either path.
    assert!(texts[7].trim().chars().count() > 3, "{:?} is a search the index narrows", texts[7]);
    let deleted = TextQuery { query: texts[7].clone(), mode: TextMode::Substring };
    let deleted = PostFilter { text: vec![deleted], ..PostFilter::default() };
    for engine in [&a, &b, &c] {
        let found = every_page(engine, &deleted, PostOrder::Newest).unwrap().concat();
        assert!(!found.contains(&uri(7)), "{found:?}");
    }
    assert!(a.text_index_uses() > 80, "the indexes narrowed only {} statements", a.text_index_uses());
    assert_eq!(b.text_index_uses(), 0);
}

/// Builds the index of every data file of `lake` but `f1.parquet` (of the day of `day_us`),
/// and publishes.
fn index_all_but_f1(lake: &Path, day_us: i64) {
    reindex(lake, None, None, false, |_| {}).unwrap();
    let dir = crate::layout::partition_dir(lake, crate::layout::POSTS_TABLE, crate::layout::date_of_micros(day_us));
    std::fs::remove_dir_all(dir_for(&dir.join("f1.parquet"))).unwrap();
    crate::catalog::publish(lake, 1).unwrap();
}

/// Writes the takedown of `did`'s account into `lake`: its posts leave every answer.
fn take_down(lake: &Path, did: &str) {
    let takedown = crate::model::AccountEvent {
        did: did.into(),
        seen_at_us: 1,
        active: Some(false),
        status: Some("takendown".into()),
        ..Default::default()
    };
    crate::writer::write_rows(lake, "a.parquet", vec![takedown]).unwrap();
}

/// A count of substring searches of word characters alone comes from the indexes (whose
/// candidates are then exactly the matches), less the deleted posts and a hidden account's,
/// plus a file without an index and the hot tier counted from the posts: the counts a scan
/// gives, and the live texts that hold the search, folded, counted in Rust.
#[test]
fn exact_searches_are_counted_from_the_indexes_as_a_scan_counts_them() {
    let texts = corpus();
    let mut posts = posts_of(&texts);
    // Every tenth post is by an account taken down.
    for post in posts.iter_mut().skip(3).step_by(10) {
        post.did = "did:plc:gone".into();
        post.uri = crate::model::post_uri(&post.did, &post.rkey);
    }
    let (indexed, plain) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let deleted = [7_usize, 21, 150, 299];
    for lake in [indexed.path(), plain.path()] {
        for (n, chunk) in posts.chunks(150).enumerate() {
            crate::writer::write_posts(lake, &format!("f{n}.parquet"), chunk.to_vec()).unwrap();
        }
        let deletes = deleted.map(|row| crate::model::Delete {
            uri: posts[row].uri.clone(),
            did: posts[row].did.clone(),
            deleted_at_us: posts[row].created_at_us + 1,
        });
        crate::writer::write_rows(lake, "d.parquet", deletes.to_vec()).unwrap();
        take_down(lake, "did:plc:gone");
    }
    index_all_but_f1(indexed.path(), posts[0].created_at_us);
    let open = |lake: &Path| Engine::open(lake, &EngineConfig::with_threads(1)).unwrap();
    let (with, without) = (open(indexed.path()), open(plain.path()));
    let hot = Post { uri: uri(9_999), rkey: rkey(9_999), text: "Rust hot ☕".into(), ..posts[399].clone() };
    let hot = Post { created_at_us: hot.created_at_us + 10, indexed_at_us: hot.indexed_at_us + 10, ..hot };
    for engine in [&with, &without] {
        engine.set_hot(crate::exec::HotTier::posts(std::slice::from_ref(&hot))).unwrap();
    }
    with.prepare_rollups().unwrap();

    let mut live: Vec<&Post> = posts
        .iter()
        .enumerate()
        .filter(|(row, p)| !deleted.contains(row) && p.did != "did:plc:gone")
        .map(|(_, p)| p)
        .collect();
    live.push(&hot);
    let words = texts.iter().take(80).flat_map(|text| text.split(|c: char| !c.is_alphanumeric() && c != '_'));
    let queries: BTreeSet<String> =
        PIECES.iter().copied().chain(words).filter(|q| !q.is_empty()).map(str::to_owned).collect();
    let middle = posts[200].created_at_us;
    let (mut exact, mut found) = (0, 0);
    for query in queries {
        let text = TextQuery { query, mode: TextMode::Substring };
        for (since_us, until_us) in [(None, None), (Some(middle), None), (Some(middle - 100), Some(middle + 37))] {
            let filter = PostFilter { since_us, until_us, text: vec![text.clone()], ..PostFilter::default() };
            crate::exec::explain_on_this_thread(true);
            crate::exec::take_answered();
            let counted = with.count(&filter).unwrap();
            let answered = crate::exec::take_answered();
            crate::exec::explain_on_this_thread(false);
            assert_eq!(counted, without.count(&filter).unwrap(), "{filter:?}");
            let from_index = answered.iter().flat_map(|a| &a.statements).any(|s| s.sql.contains("n_posts +"));
            assert_eq!(from_index, is_exact(&text), "{text:?}");
            assert_eq!(answered[0].from == "text indexes", from_index, "{answered:?}");
            if from_index {
                exact += 1;
                let needle = fold(&text.query);
                let in_range = |p: &&&Post| {
                    since_us.is_none_or(|s| p.created_at_us >= s) && until_us.is_none_or(|u| p.created_at_us < u)
                };
                let expected = live.iter().filter(in_range).filter(|p| fold(&p.text).contains(&needle)).count();
                assert_eq!(counted, expected as u64, "{filter:?}");
                found += usize::from(expected > 0);
            }
        }
    }
    assert!(exact > 30 && found > 30, "{exact} counts from the indexes, {found} of them not zero");
}

/// Three days of posts whose times come in threes, over a small vocabulary: "the" is in most of
/// them, other words in fewer, so searches have more candidates than a page first looks among.
fn common_posts() -> Vec<Post> {
    const WORDS: [&str; 12] =
        ["the", "The", "sky", "is", "blue", "morning", "Rust", "水", "音", "🦋", "rain", "coffee"];
    let mut next = numbers(5);
    (0..3_000)
        .map(|row| {
            let words: Vec<&str> = (0..2 + next(6))
                .map(|_| if next(3) == 0 { WORDS[next(2)] } else { WORDS[next(WORDS.len())] })
                .collect();
            // Three posts a time, some 260 s apart: three UTC days, ties at every time.
            let at = 1_700_006_400_000_000 + (row / 3) as i64 * 259_000_000;
            let did = match row % 50 {
                7 => "did:plc:rare",
                n if n % 10 == 3 => "did:plc:hidden",
                _ => "did:plc:a",
            };
            Post {
                uri: crate::model::post_uri(did, &rkey(row)),
                did: did.into(),
                rkey: rkey(row),
                created_at_us: at,
                indexed_at_us: at,
                text: words.join(" "),
                ..Post::default()
            }
        })
        .collect()
}

/// Pages of searches with more candidates than a page first reads (the newest or oldest
/// thousand, then eight thousand) are the scan's pages, in every mode, both ways, through every
/// cursor, in a time range, with another filter that few candidates pass, a deleted post, a
/// hidden author and a post in the hot tier.
#[test]
fn pages_cut_at_the_newest_candidates_are_the_scans_pages() {
    let posts = common_posts();
    let (indexed, plain) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for lake in [indexed.path(), plain.path()] {
        for (n, chunk) in posts.chunks(700).enumerate() {
            crate::writer::write_posts(lake, &format!("f{n}.parquet"), chunk.to_vec()).unwrap();
        }
        let newest = &posts[2_996];
        let delete = crate::model::Delete { uri: newest.uri.clone(), did: newest.did.clone(), deleted_at_us: 1 };
        crate::writer::write_rows(lake, "d.parquet", vec![delete]).unwrap();
        take_down(lake, "did:plc:hidden");
    }
    reindex(indexed.path(), None, None, false, |_| {}).unwrap();
    let (a, b) = (
        Engine::open(indexed.path(), &EngineConfig::with_threads(1)).unwrap(),
        Engine::open(plain.path(), &EngineConfig::with_threads(1)).unwrap(),
    );
    let last = posts.last().unwrap();
    let hot = Post {
        uri: uri(9_999),
        rkey: rkey(9_999),
        text: "the sky is blue".into(),
        created_at_us: last.created_at_us + 5,
        ..last.clone()
    };
    for engine in [&a, &b] {
        engine.set_hot(crate::exec::HotTier::posts(std::slice::from_ref(&hot))).unwrap();
    }
    // The indexed engine takes the deleted rows out of the candidates by the rollup tables.
    a.prepare_rollups().unwrap();
    let text = |query: &str, mode| TextQuery { query: query.into(), mode };
    let middle = posts[1_500].created_at_us;
    let filters = [
        vec![text("the", TextMode::Words)],
        vec![text("THE", TextMode::Substring)],
        vec![text("th", TextMode::Prefix)],
        vec![text("the sky", TextMode::Phrase)],
        vec![text("sky is blue", TextMode::Phrase)],
        vec![text("the", TextMode::Words), text("blue", TextMode::Substring)],
        vec![text("水", TextMode::Words)],
    ]
    .into_iter()
    .enumerate()
    .flat_map(|(n, texts)| {
        let all = PostFilter { text: texts.clone(), ..PostFilter::default() };
        let range = PostFilter { since_us: Some(middle - 86_400_000_000), until_us: Some(middle), ..all.clone() };
        if n % 3 == 0 { vec![all, range] } else { vec![all] }
    })
    // Few of the newest candidates are this author's: the first cuts do not fill a page.
    .chain([PostFilter {
        text: vec![text("the", TextMode::Words)],
        authors: vec!["did:plc:rare".into()],
        ..PostFilter::default()
    }]);
    let scanned: usize = posts.iter().filter(|p| p.text.to_lowercase().contains("the")).count();
    assert!(scanned > 2_000, "the common word is in {scanned} posts");
    for filter in filters {
        for order in [PostOrder::Newest, PostOrder::Oldest] {
            let (with, without) = (every_page(&a, &filter, order).unwrap(), every_page(&b, &filter, order).unwrap());
            assert!(!with.is_empty(), "{filter:?} finds posts");
            assert_eq!(with, without, "{filter:?} {order:?}");
        }
    }
    assert!(a.text_page_cuts() > 100, "only {} pages were cut at the newest candidates", a.text_page_cuts());
    assert_eq!(b.text_page_cuts(), 0);
}
