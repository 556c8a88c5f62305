//! Rollups: small pre-aggregated tables beside each `posts` and `interactions` data file, from
//! which the engine answers time buckets, top hashtags, top authors and engagement counts over
//! long ranges without reading the rows.
//!
//! Each `posts` data file `NAME.parquet` gets six hidden sidecars in its partition directory,
//! so that a partition exchange carries them with it and no listing of data files sees them:
//!
//! - `.NAME.cells` (Parquet, named so that no `*.parquet` glob takes it for data): the file's posts counted (`n`) per UTC hour of `created_at` and per
//!   value of every column that a filter or a grouping answered from rollups reads: `langs` (the
//!   whole list, as stored), `embed_type`, and whether the post is a reply (`is_reply`);
//! - `.NAME.tags`: the file's posts counted per UTC hour and hashtag, each post once
//!   per distinct tag, as `topHashtags` counts them;
//! - `.NAME.authors`: the file's posts counted per UTC day and author, from which
//!   `topAuthors` over whole days is answered (see [`crate::exec`]'s author counts);
//! - `.NAME.domains`: the file's posts counted per UTC hour and link domain
//!   ([`link_domains`]), each post once per distinct domain, as `trending(kind: LINK_DOMAIN)`
//!   counts them;
//! - `.NAME.tagauthors`: the file's posts counted per hashtag and author, sorted by tag in
//!   small row groups, from which the distinct authors of a few tags over whole days are
//!   counted (`topHashtags { authors }`) without reading the posts;
//! - `.NAME.keys`: the file's posts' keys (`did, rkey`), sorted by author in small row groups,
//!   so that an author's posts are found in a few row groups instead of in every one (a busy
//!   author posts in each of them): what an author's posts got in all is read from these.
//!
//! Each `interactions` data file gets two:
//!
//! - `.NAME.subjects`: its likes and reposts counted (`n`) per kind and subject post, sorted by
//!   `(kind, subject_rkey, subject_did)` in small row groups, so that a page of posts' counts
//!   reads a few row groups and a ranking reads one row per post and file instead of one per
//!   like (a week of Bluesky: 204 M likes and reposts, 43 M rows);
//! - `.NAME.received`: the same rows sorted by `(kind, subject_did, subject_rkey)`, so that what
//!   an author's posts got in all reads the row groups of the author's rows, not every row's
//!   author (a busy author's posts span every record key).
//!
//! The engine subtracts the rows undone since (deleted, or of a hidden account) from a table it
//! keeps per lake generation, as it does for posts (see [`crate::exec`]).
//!
//! The posts of a cell agree on every column such a statement reads (its hour stands for their
//! `created_at`, which only hour-aligned ranges and buckets compare), so each condition holds
//! for all of them or for none: the statement over cells weighted by `n` counts exactly what it
//! counts over the posts. [`crate::sql::compile_rollup`] says which plans qualify.
//!
//! Cells count every row of their file. The engine subtracts the rows that are not live
//! (deleted, or of a hidden account, as the lake's files record them) from a small table it
//! keeps per lake generation, and adds the hot tier's posts and every post outside the cells'
//! hours (the range's uneven ends, partitions some file of which has no rollup yet) row by row.
//! Deletes and account changes still in the buffer apply to the posts they hide in files from
//! the next flush on, as they do for cached answers.
//!
//! Rollups are written with the same durability rules as data files (temp, fsync, rename): by
//! the flusher for each file before it is published, by compaction for each file it writes, by
//! `skyglass generate`, and by `skyglass lake rollup` for the files without them.

use std::fs;
use std::path::{Path, PathBuf};

use duckdb::Connection;

use crate::error::{Error, Result};
use crate::layout;

/// The rollups of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cells,
    Tags,
    Authors,
    Domains,
    /// Of a `posts` file: its posts per hashtag and author, by tag.
    TagAuthors,
    /// Of a `posts` file: its posts' keys by author.
    Keys,
    /// Of an `interactions` file: likes and reposts per kind and subject.
    Subjects,
    /// Of an `interactions` file: the rows of [`Kind::Subjects`] by the subject's author.
    Received,
}

/// The distinct link domains of a post, as a SQL list expression over its `links` and
/// `external_uri` (of the relation `alias`, or unqualified for `""`): each link's authority,
/// lower-cased, less user, `www.` and port.
pub fn link_domains(alias: &str) -> String {
    let (links, card) = if alias.is_empty() {
        ("links".to_owned(), "external_uri".to_owned())
    } else {
        (format!("{alias}.links"), format!("{alias}.external_uri"))
    };
    format!(
        "list_distinct(list_filter(list_transform(\
         list_concat({links}, CASE WHEN {card} IS NULL THEN [] ELSE [{card}] END), \
         lambda u: split_part(regexp_replace(regexp_extract(lower(u), '^[a-z][a-z0-9+.-]*://([^/?#]*)', 1), \
         '^([^@]*@)?(www[.])?', ''), ':', 1)), lambda d: d <> ''))"
    )
}

impl Kind {
    /// Every kind, of any table.
    pub const ALL: [Kind; 8] = [
        Kind::Cells,
        Kind::Tags,
        Kind::Authors,
        Kind::Domains,
        Kind::TagAuthors,
        Kind::Keys,
        Kind::Subjects,
        Kind::Received,
    ];
    /// Those of a `posts` data file.
    pub const POSTS: [Kind; 6] = [Kind::Cells, Kind::Tags, Kind::Authors, Kind::Domains, Kind::TagAuthors, Kind::Keys];
    /// Those of an `interactions` data file, in the order they are built: [`Kind::Received`]
    /// is read from [`Kind::Subjects`].
    pub const INTERACTIONS: [Kind; 2] = [Kind::Subjects, Kind::Received];

    /// The rollups a data file of `table` has (none for the other tables).
    pub fn of_table(table: &str) -> &'static [Kind] {
        match table {
            layout::POSTS_TABLE => &Kind::POSTS,
            layout::INTERACTIONS_TABLE => &Kind::INTERACTIONS,
            _ => &[],
        }
    }

    /// The rollups of a data file, by the table its partition is in.
    pub fn of_file(data_file: &Path) -> &'static [Kind] {
        let table = data_file.parent().and_then(Path::parent).and_then(Path::file_name);
        table.and_then(|t| t.to_str()).map_or(&[], Kind::of_table)
    }

    fn suffix(self) -> &'static str {
        match self {
            Kind::Cells => "cells",
            Kind::Tags => "tags",
            Kind::Authors => "authors",
            Kind::Domains => "domains",
            Kind::TagAuthors => "tagauthors",
            Kind::Keys => "keys",
            Kind::Subjects => "subjects",
            Kind::Received => "received",
        }
    }

    /// Whether the rollup counts each of its file's rows exactly once (its `n` sum to the
    /// file's rows, or it holds one row per row: [`Kind::has_counts`]); a tag rollup counts a
    /// post once per tag, a domain rollup once per domain.
    pub fn counts_each_post_once(self) -> bool {
        matches!(self, Kind::Cells | Kind::Authors | Kind::Keys | Kind::Subjects | Kind::Received)
    }

    /// Whether it holds a count (`n`) per row; [`Kind::Keys`] holds one row per post instead.
    pub fn has_counts(self) -> bool {
        self != Kind::Keys
    }

    /// Rows per row group: the subjects of a page of posts, an author's keys and a tag's
    /// authors are looked up by key, which small row groups narrow; the others are read whole.
    /// A tag's authors are read for the top tags, whose rows lie among the long tail's between
    /// them in byte order: row groups of 2,048 rows (the least DuckDB writes) leave out more of
    /// the tail's than those of 16,384 (`exec::tag_authors`).
    fn row_group_rows(self) -> usize {
        match self {
            Kind::TagAuthors => 2_048,
            Kind::Keys | Kind::Subjects | Kind::Received => crate::writer::ROW_GROUP_ROWS,
            _ => 1_000_000,
        }
    }

    /// The kind of a rollup, from its file name.
    pub fn of_sidecar(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| name.ends_with(&format!(".{}", kind.suffix())))
    }

    /// What the rollup holds, from `source` (a `read_parquet` of the data file).
    fn select(self, source: &str) -> String {
        match self {
            Kind::Cells => format!(
                "SELECT date_trunc('hour', created_at) AS created_at, langs, embed_type, \
                 reply_parent IS NOT NULL AS is_reply, count(*) AS n \
                 FROM {source} GROUP BY ALL ORDER BY ALL"
            ),
            Kind::Tags => format!(
                "SELECT date_trunc('hour', created_at) AS created_at, tag, count(*) AS n \
                 FROM (SELECT created_at, unnest(list_distinct(hashtags)) AS tag FROM {source}) \
                 GROUP BY ALL ORDER BY ALL"
            ),
            Kind::Authors => format!(
                "SELECT CAST(created_at AS DATE) AS day, did, count(*) AS n FROM {source} GROUP BY ALL ORDER BY ALL"
            ),
            Kind::Domains => format!(
                "SELECT date_trunc('hour', created_at) AS created_at, domain, count(*) AS n \
                 FROM (SELECT created_at, unnest({}) AS domain FROM {source}) \
                 GROUP BY ALL ORDER BY ALL",
                link_domains("")
            ),
            Kind::TagAuthors => format!(
                "SELECT tag, did, count(*) AS n \
                 FROM (SELECT did, unnest(list_distinct(hashtags)) AS tag FROM {source}) \
                 GROUP BY ALL ORDER BY tag, did"
            ),
            Kind::Keys => format!("SELECT did, rkey FROM {source} ORDER BY did, rkey"),
            Kind::Subjects => format!(
                "SELECT kind, subject_did, subject_rkey, count(*) AS n FROM {source} \
                 GROUP BY ALL ORDER BY kind, subject_rkey, subject_did"
            ),
            Kind::Received => {
                format!("SELECT kind, subject_did, subject_rkey, count(*) AS n FROM {source} GROUP BY ALL {BY_AUTHOR}")
            }
        }
    }
}

/// The order of [`Kind::Received`]'s rows.
const BY_AUTHOR: &str = "ORDER BY kind, subject_did, subject_rkey";

/// Where rollup `kind` of a data file lives: beside it, hidden (`.NAME.cells`), and
/// without the `.parquet` ending that globs over data files match.
pub fn path_for(data_file: &Path, kind: Kind) -> PathBuf {
    let name = data_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    data_file.with_file_name(format!(".{name}.{}", kind.suffix()))
}

/// The data file a rollup's file name belongs to (`.NAME.cells` → `NAME`), if it is one.
pub fn data_file_of(sidecar_name: &str) -> Option<&str> {
    let inner = sidecar_name.strip_prefix('.')?;
    Kind::ALL
        .iter()
        .find_map(|kind| inner.strip_suffix(&format!(".{}", kind.suffix())))
        .filter(|data| layout::is_data_file(data))
}

/// Whether a data file has all its rollups (those of its table: [`Kind::of_file`]).
pub fn has_rollups(data_file: &Path) -> bool {
    missing(data_file).is_empty()
}

/// The rollups a data file lacks.
pub fn missing(data_file: &Path) -> Vec<Kind> {
    Kind::of_file(data_file).iter().copied().filter(|kind| !path_for(data_file, *kind).is_file()).collect()
}

fn sql_path(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "''"))
}

/// Builds every rollup of the data file `data_file` ([`Kind::of_file`]) from `source` (the file
/// itself, or the same rows under a temporary name before it is placed), replacing any, durably: written
/// under a temporary name (`.NAME.cells.tmp`, which the flusher's cleanup removes if a
/// build is cut short), fsynced, renamed into place, and the directory fsynced.
pub fn build_for_file(source: &Path, data_file: &Path) -> Result<()> {
    build_kinds(source, data_file, Kind::of_file(data_file))
}

/// [`build_for_file`] for the rollups `kinds` alone.
fn build_kinds(source: &Path, data_file: &Path, kinds: &[Kind]) -> Result<()> {
    let connection = Connection::open_in_memory()?;
    connection.execute_batch("SET threads = 1; SET preserve_insertion_order = false;")?;
    let read = format!("read_parquet({})", sql_path(source));
    let subjects = path_for(data_file, Kind::Subjects);
    for &kind in kinds {
        let target = path_for(data_file, kind);
        let tmp = layout::temp_path_for(&target);
        let select = match kind {
            // The rollup of subjects (in place before it) in another order: the rows are not
            // counted twice.
            Kind::Received if subjects.is_file() => {
                format!(
                    "SELECT kind, subject_did, subject_rkey, n FROM read_parquet({}) {BY_AUTHOR}",
                    sql_path(&subjects)
                )
            }
            _ => kind.select(&read),
        };
        let copy = format!(
            "COPY ({select}) TO {} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {})",
            sql_path(&tmp),
            kind.row_group_rows()
        );
        if let Err(error) = connection.execute_batch(&copy) {
            let _ = fs::remove_file(&tmp);
            return Err(error.into());
        }
        fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(Error::io("fsync", &tmp))?;
        fs::rename(&tmp, &target).map_err(Error::io("rename into place", &target))?;
    }
    crate::writer::sync_dir(data_file.parent().unwrap_or(Path::new(".")))
}

/// Gives `to` (a data file with the same rows as `from`: a hard link into a staging directory)
/// the rollups of `from`, if it has them, by hard links.
pub fn link_for(from: &Path, to: &Path) -> Result<()> {
    for kind in Kind::ALL {
        let source = path_for(from, kind);
        if source.is_file() {
            let target = path_for(to, kind);
            fs::hard_link(&source, &target).map_err(Error::io("link into staging", &target))?;
        }
    }
    Ok(())
}

/// What `skyglass lake rollup` did in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rolled {
    pub table: &'static str,
    pub date: Option<chrono::NaiveDate>,
    /// The partition's data files.
    pub files: usize,
    /// Data files whose rollups were built.
    pub built: usize,
    /// Rollups removed because their data file is gone.
    pub orphans: usize,
}

/// Builds the missing rollups (every one, with `rebuild`) of the `posts` and `interactions` data
/// files in the day partitions from `since` to `until`, and removes rollups whose data file is gone; a partition
/// at a time, under the flush lock, so no compaction swaps a partition being rolled up.
/// Publishes a generation if anything changed. `each` hears of every partition when it is done.
pub fn rollup(
    lake: &Path,
    since: Option<chrono::NaiveDate>,
    until: Option<chrono::NaiveDate>,
    rebuild: bool,
    mut each: impl FnMut(&Rolled),
) -> Result<Vec<Rolled>> {
    let mut reports = Vec::new();
    for table in [layout::POSTS_TABLE, layout::INTERACTIONS_TABLE] {
        let work = |date, dir: &Path, names: &[String]| {
            let mut report = Rolled { table, date: Some(date), files: names.len(), ..Rolled::default() };
            for name in names {
                let file = dir.join(name);
                let kinds = if rebuild { Kind::of_table(table).to_vec() } else { missing(&file) };
                if !kinds.is_empty() {
                    build_kinds(&file, &file, &kinds)?;
                    report.built += 1;
                }
            }
            report.orphans = crate::catalog::remove_orphans(dir, names, data_file_of)?;
            let changed = report.built + report.orphans > 0;
            Ok((report, changed))
        };
        reports.extend(crate::catalog::each_partition(lake, table, since, until, work, &mut each)?);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EmbedType, Post};

    const HOUR: i64 = 3_600_000_000;

    fn post(n: i64, at: i64, langs: &[&str], tags: &[&str], reply: bool) -> Post {
        Post {
            uri: format!("at://did:plc:a/app.bsky.feed.post/{n}"),
            did: "did:plc:a".into(),
            rkey: n.to_string(),
            created_at_us: at,
            indexed_at_us: at,
            langs: langs.iter().map(|l| (*l).to_owned()).collect(),
            hashtags: tags.iter().map(|t| (*t).to_owned()).collect(),
            reply_parent: reply.then(|| "at://did:plc:b/app.bsky.feed.post/p".to_owned()),
            embed_type: EmbedType::None,
            ..Post::default()
        }
    }

    #[test]
    fn a_files_rollups_count_its_posts_per_hour_and_value() {
        let lake = tempfile::tempdir().unwrap();
        let day = 20_000 * 24 * HOUR;
        let mut posts = vec![
            post(1, day + 5, &["en"], &["rust", "rust"], false),
            post(2, day + 10, &["en"], &["rust"], true),
            post(3, day + HOUR + 1, &["ja", "en"], &[], false),
            post(4, day + HOUR + 2, &["en"], &["rust", "go"], false),
        ];
        // Two links to one domain (user, `www.`, port and case aside) and a link card's.
        posts[0].links = vec!["https://www.Example.com:443/a".into(), "http://me@example.com/b".into()];
        posts[0].external_uri = Some("https://news.example.org/x".into());
        posts[3].links = vec!["https://example.com/c".into(), "not a link".into()];
        let written = crate::writer::write_posts(lake.path(), "f.parquet", posts).unwrap();
        let file = &written[0].path;
        assert!(has_rollups(file), "the writer builds them");
        for kind in Kind::POSTS {
            fs::remove_file(path_for(file, kind)).unwrap();
        }
        assert!(!has_rollups(file));
        build_for_file(file, file).unwrap();
        assert!(has_rollups(file));
        let connection = Connection::open_in_memory().unwrap();
        let rows = |kind: Kind, columns: &str| -> Vec<String> {
            let sql = format!("SELECT {columns} FROM read_parquet({}) ORDER BY ALL", sql_path(&path_for(file, kind)));
            let mut statement = connection.prepare(&sql).unwrap();
            statement.query_map([], |row| row.get::<_, String>(0)).unwrap().map(|r| r.unwrap()).collect()
        };
        let hour = |h: i64| chrono::DateTime::from_timestamp_micros(day + h * HOUR).unwrap().naive_utc().to_string();
        assert_eq!(
            rows(Kind::Cells, "concat_ws('|', created_at, langs::VARCHAR, is_reply, n)"),
            vec![
                format!("{}|[en]|false|1", hour(0)),
                format!("{}|[en]|true|1", hour(0)),
                format!("{}|[en]|false|1", hour(1)),
                format!("{}|[ja, en]|false|1", hour(1)),
            ]
        );
        assert_eq!(
            rows(Kind::Tags, "concat_ws('|', created_at, tag, n)"),
            vec![format!("{}|rust|2", hour(0)), format!("{}|go|1", hour(1)), format!("{}|rust|1", hour(1))]
        );
        assert_eq!(
            rows(Kind::Domains, "concat_ws('|', created_at, domain, n)"),
            vec![
                format!("{}|example.com|1", hour(0)),
                format!("{}|news.example.org|1", hour(0)),
                format!("{}|example.com|1", hour(1)),
            ]
        );
        let day = chrono::DateTime::from_timestamp_micros(day).unwrap().date_naive();
        assert_eq!(rows(Kind::Authors, "concat_ws('|', day, did, n)"), vec![format!("{day}|did:plc:a|4")]);
        assert_eq!(rows(Kind::TagAuthors, "concat_ws('|', tag, did, n)"), ["go|did:plc:a|1", "rust|did:plc:a|3"]);
        assert_eq!(
            rows(Kind::Keys, "concat_ws('|', did, rkey)"),
            ["1", "2", "3", "4"].map(|k| format!("did:plc:a|{k}"))
        );
    }

    #[test]
    fn lake_rollup_builds_the_missing_ones_and_removes_orphans() {
        let lake = tempfile::tempdir().unwrap();
        let day = 20_000 * 24 * HOUR;
        let a = crate::writer::write_posts(lake.path(), "a.parquet", vec![post(1, day, &[], &[], false)]).unwrap();
        let b = crate::writer::write_posts(lake.path(), "b.parquet", vec![post(2, day, &[], &[], false)]).unwrap();
        fs::remove_file(path_for(&b[0].path, Kind::Tags)).unwrap();
        assert!(has_rollups(&a[0].path) && !has_rollups(&b[0].path));
        let orphan = path_for(&a[0].path.with_file_name("gone.parquet"), Kind::Cells);
        fs::write(&orphan, b"x").unwrap();
        let reports = rollup(lake.path(), None, None, false, |_| {}).unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!((reports[0].files, reports[0].built, reports[0].orphans), (2, 1, 1));
        assert!(has_rollups(&b[0].path) && !orphan.exists());
        let again = rollup(lake.path(), None, None, false, |_| {}).unwrap();
        assert_eq!((again[0].built, again[0].orphans), (0, 0), "nothing left to do");
        assert_eq!(rollup(lake.path(), None, None, true, |_| {}).unwrap()[0].built, 2, "--rebuild redoes all");
    }

    #[test]
    fn sidecar_names_lead_back_to_their_data_file() {
        let cells = path_for(Path::new("/l/posts/date=2026-11-30/a_b.parquet"), Kind::Cells);
        assert_eq!(cells, Path::new("/l/posts/date=2026-11-30/.a_b.parquet.cells"));
        assert_eq!(data_file_of(".a_b.parquet.tags"), Some("a_b.parquet"));
        assert_eq!(data_file_of(".a_b.parquet.textindex"), None);
        assert_eq!(data_file_of(".a_b.parquet.cells.tmp"), None);
        assert!(!layout::is_data_file(".a_b.parquet.cells"));
    }
}
