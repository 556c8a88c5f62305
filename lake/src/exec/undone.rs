//! The likes and reposts of the snapshot's `interactions` files that do not count: undone (a
//! stored delete names them) or made by a hidden account. Counts are read from the files'
//! rollups of subjects ([`crate::rollup`]), which count every row of their file; the view
//! `interaction_counts` takes these rows out again, each once.
//!
//! `dead_interactions` is kept up to date file by file as the snapshot moves, like the posts'
//! `dead_rows`: a new file is checked against every delete and hidden account, a new deletes
//! file and a newly hidden account against the files already checked, and an account shown
//! again leaves. A deletes file going away (compaction retires the deletes it applied, and
//! rewrites every file that held their likes) starts the deletes over.
//!
//! A delete names the like (`did`, `kind`, `rkey`), not its subject. The files are sorted by
//! actor, so a statement looks for a batch of deletes' actors (or hidden accounts) by a literal
//! list, whose values the row groups' statistics rule most of the files' row groups out by (an
//! `IN` over a subquery would not be pushed into the scan): in a generated file of 6 M likes,
//! 60 actors' likes were found in 56 of 373 row groups. More than 1,024 actors at once (the
//! first check of a new compacted file, a start over, many hidden accounts) are joined with one
//! scan of the files' actors instead.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duckdb::Connection;

use super::heads::{Picked, SubjectHeads};
use super::rollups::partition_day;
use crate::error::Result;

/// Created with the engine. `hidden`: taken out because its account is hidden (else deleted).
pub(super) const CREATE_TABLE: &str = "
CREATE TABLE dead_interactions (file VARCHAR, \"date\" DATE, did VARCHAR, kind VARCHAR, rkey VARCHAR,
  subject_did VARCHAR, subject_rkey VARCHAR, hidden BOOLEAN);";

/// Actors looked for by one statement's literal list.
const ACTORS_PER_STATEMENT: usize = 64;

/// Above this many actors, one statement joins with a scan of the files' keys.
const MOST_LISTED_ACTORS: usize = 1_024;

/// What `dead_interactions` holds, and what the snapshot lists. Apart from the rollup tables
/// (and under a lock of its own): counting likes never waits for the posts' rollups.
#[derive(Debug, Default)]
pub(super) struct UndoneInteractions {
    /// The snapshot's `interactions` data files and `interaction_deletes` files (each with
    /// its inode: a file replaced under its name is another), and hidden accounts.
    files: HashMap<PathBuf, u64>,
    deletes: HashMap<PathBuf, u64>,
    hidden: Arc<HashSet<String>>,
    /// Whether the table holds what the snapshot lists.
    synced: bool,
    /// The data files (and inodes) the table was checked against `applied` and `hidden_applied`
    /// for.
    probed: HashMap<PathBuf, u64>,
    applied: HashMap<PathBuf, u64>,
    hidden_applied: Arc<HashSet<String>>,
    /// The largest rows of the files' rollups of subjects, kept with the table.
    heads: SubjectHeads,
    /// The catalog generation the snapshot listed.
    generation: crate::catalog::Generation,
}

/// A SQL list of string literals (paths and DIDs come from the lake, never from a user; a
/// quote is doubled all the same).
fn literals<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let list: Vec<String> = values.into_iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect();
    list.join(", ")
}

/// A SQL list of the paths' string literals.
pub(super) fn paths<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> String {
    literals(paths.into_iter().map(|p| p.to_str().unwrap_or_default()))
}

/// Which rows a probe takes out.
enum Taken<'a> {
    /// Those the deletes in these files name.
    Deleted(&'a [&'a Path]),
    /// Those of these accounts.
    Hidden(&'a [String]),
}

/// Adds to `dead_interactions` the rows of `files` that `taken` takes out.
fn probe(connection: &Connection, files: &[&PathBuf], taken: Taken<'_>) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    // The keys looked for go into `probe_keys`.
    let (actors, join, hidden) = match taken {
        Taken::Deleted(deletes) => {
            if deletes.is_empty() {
                return Ok(());
            }
            let deletes: Vec<PathBuf> = deletes.iter().map(|p| p.to_path_buf()).collect();
            connection.execute_batch(&format!(
                "CREATE OR REPLACE TEMP TABLE probe_keys AS SELECT DISTINCT did, kind, rkey FROM read_parquet([{}])",
                paths(&deletes)
            ))?;
            let mut statement = connection.prepare("SELECT DISTINCT did FROM probe_keys ORDER BY did")?;
            let actors: Vec<String> = statement.query_map([], |row| row.get(0))?.collect::<duckdb::Result<_>>()?;
            (actors, "SEMI JOIN probe_keys AS k ON k.did = p.did AND k.kind = p.kind AND k.rkey = p.rkey", false)
        }
        Taken::Hidden(dids) => {
            if dids.is_empty() {
                return Ok(());
            }
            let list = duckdb::types::Value::List(dids.iter().map(|d| duckdb::types::Value::Text(d.clone())).collect());
            connection
                .execute("CREATE OR REPLACE TEMP TABLE probe_keys AS SELECT unnest(?::VARCHAR[]) AS did", [list])?;
            (dids.to_vec(), "SEMI JOIN probe_keys AS k ON k.did = p.did", true)
        }
    };
    let insert = |condition: &str| -> Result<()> {
        connection.execute_batch(&format!(
            "INSERT INTO dead_interactions SELECT p.filename, p.\"date\", p.did, p.kind, p.rkey, p.subject_did, \
             p.subject_rkey, {hidden} FROM read_parquet([{}], filename = true, hive_partitioning = true, \
             hive_types = {{'date': DATE}}) AS p {join} {condition}",
            paths(files.iter().copied())
        ))?;
        Ok(())
    };
    if actors.len() > MOST_LISTED_ACTORS {
        insert("")?;
    } else {
        for chunk in actors.chunks(ACTORS_PER_STATEMENT) {
            insert(&format!("WHERE p.did IN ({})", literals(chunk.iter().map(String::as_str))))?;
        }
    }
    connection.execute_batch("DROP TABLE IF EXISTS probe_keys")?;
    Ok(())
}

impl UndoneInteractions {
    /// The snapshot moved: the table must catch up before the next statement counts.
    pub fn moved(
        &mut self,
        generation: crate::catalog::Generation,
        files: &[PathBuf],
        deletes: &[PathBuf],
        hidden: Arc<HashSet<String>>,
    ) {
        self.generation = generation;
        self.files = super::rollups::with_inodes(files);
        self.deletes = super::rollups::with_inodes(deletes);
        self.hidden = hidden;
        self.synced = false;
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Keeps `kept` of the largest rows per file and kind, read again at the next sync.
    #[cfg(test)]
    pub fn keep_largest_rows(&mut self, kept: usize) {
        self.heads.keep(kept);
        self.synced = false;
    }

    /// The candidates of a ranking of `kind` over the posts with keys in `range`, counted from
    /// `first_day` on, picked from the largest rows of the files' rollups of subjects (see
    /// [`SubjectHeads::pick`]), with the generation they are of.
    pub fn pick(
        &self,
        first_day: chrono::NaiveDate,
        kind: crate::model::InteractionKind,
        range: (&str, &str),
        most: usize,
    ) -> Option<(Picked, crate::catalog::Generation)> {
        let picked = self.heads.pick(self.files.keys().map(PathBuf::as_path), first_day, kind, range, most)?;
        Some((picked, self.generation))
    }

    /// Brings `dead_interactions` to the snapshot.
    pub fn sync(&mut self, connection: &Connection) -> Result<()> {
        if self.synced {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (files, deletes, hidden) = (self.files.clone(), self.deletes.clone(), self.hidden.clone());
        if !self.applied.iter().all(|(path, ino)| deletes.get(path) == Some(ino)) {
            // Every delete is new to the files already checked.
            connection.execute_batch("DELETE FROM dead_interactions WHERE NOT hidden")?;
            self.applied.clear();
        }
        let gone: Vec<&PathBuf> =
            self.probed.iter().filter(|(path, ino)| files.get(*path) != Some(ino)).map(|(p, _)| p).collect();
        if !gone.is_empty() {
            connection.execute_batch(&format!("DELETE FROM dead_interactions WHERE file IN ({})", paths(gone)))?;
        }
        let old: Vec<&PathBuf> =
            files.iter().filter(|(path, ino)| self.probed.get(*path) == Some(ino)).map(|(p, _)| p).collect();
        let added: Vec<&PathBuf> =
            files.iter().filter(|(path, ino)| self.probed.get(*path) != Some(ino)).map(|(p, _)| p).collect();
        // Whatever a sync cut short added of the new files' rows goes first.
        if !added.is_empty() {
            connection.execute_batch(&format!(
                "DELETE FROM dead_interactions WHERE file IN ({})",
                paths(added.iter().copied())
            ))?;
        }

        let new_deletes: Vec<&Path> =
            deletes.iter().filter(|(d, ino)| self.applied.get(*d) != Some(ino)).map(|(d, _)| d.as_path()).collect();
        let all_deletes: Vec<&Path> = deletes.keys().map(PathBuf::as_path).collect();
        probe(connection, &old, Taken::Deleted(&new_deletes))?;
        probe(connection, &added, Taken::Deleted(&all_deletes))?;

        let shown: Vec<String> = self.hidden_applied.difference(&hidden).cloned().collect();
        if !shown.is_empty() {
            connection.execute_batch(&format!(
                "DELETE FROM dead_interactions WHERE hidden AND did IN ({})",
                literals(shown.iter().map(String::as_str))
            ))?;
        }
        let mut newly: Vec<String> = hidden.difference(&self.hidden_applied).cloned().collect();
        let mut all_hidden: Vec<String> = hidden.iter().cloned().collect();
        newly.sort_unstable();
        all_hidden.sort_unstable();
        probe(connection, &old, Taken::Hidden(&newly))?;
        probe(connection, &added, Taken::Hidden(&all_hidden))?;

        self.heads.sync(connection, &files);
        self.probed = files;
        self.applied = deletes;
        self.hidden_applied = hidden;
        self.synced = true;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "undone likes and reposts brought up to date"
        );
        Ok(())
    }
}

/// The `interaction_counts` view (`kind, subject_did, subject_rkey, "date", n`) over `files`,
/// the snapshot's `interactions` data files: their rollups of subjects (or, for the files
/// without one, their rows counted by day and subject), less `dead_interactions`, each row
/// once; `interaction_received`, the same rows from the rollups by the subject's author (an
/// author's rows are a few row groups of those); and the `interaction_sources` view
/// (`"date"`), one row for each file with a rollup and for each day of the files without, the
/// most positive rows a subject can have.
pub(super) fn counts_view_sql(files: &[PathBuf]) -> String {
    let read = |list: &[PathBuf]| {
        format!("read_parquet([{}], hive_partitioning = true, hive_types = {{'date': DATE}})", paths(list))
    };
    let (rolled, unrolled): (Vec<PathBuf>, Vec<PathBuf>) =
        files.iter().cloned().partition(|path| crate::rollup::has_rollups(path));
    let view = |kind: crate::rollup::Kind| {
        let sidecars: Vec<PathBuf> = rolled.iter().map(|path| crate::rollup::path_for(path, kind)).collect();
        let mut parts = vec![
            "SELECT kind, subject_did, subject_rkey, \"date\", -1 AS n FROM (SELECT DISTINCT file, did, kind, rkey, \
             subject_did, subject_rkey, \"date\" FROM dead_interactions)"
                .to_owned(),
        ];
        if !sidecars.is_empty() {
            parts.push(format!("SELECT kind, subject_did, subject_rkey, \"date\", n FROM {}", read(&sidecars)));
        }
        if !unrolled.is_empty() {
            parts.push(format!(
                "SELECT kind, subject_did, subject_rkey, \"date\", count(*) AS n FROM {} GROUP BY ALL",
                read(&unrolled)
            ));
        }
        parts.join("\nUNION ALL ")
    };
    // Where a subject's positive rows come from, at most one each: a file's sidecar, or a day
    // of the files without one (their rows summed by day above).
    let unrolled_days: std::collections::BTreeSet<_> = unrolled.iter().filter_map(|path| partition_day(path)).collect();
    let sources: Vec<String> = rolled
        .iter()
        .filter_map(|path| partition_day(path))
        .chain(unrolled_days)
        .map(|day| format!("(DATE '{day}')"))
        .collect();
    let sources = match sources.is_empty() {
        true => "SELECT NULL::DATE AS \"date\" WHERE false".to_owned(),
        false => format!("SELECT * FROM (VALUES {}) AS s(\"date\")", sources.join(", ")),
    };
    format!(
        "CREATE OR REPLACE VIEW interaction_counts AS {};\nCREATE OR REPLACE VIEW interaction_received AS {};\n\
         CREATE OR REPLACE VIEW interaction_sources AS {sources}",
        view(crate::rollup::Kind::Subjects),
        view(crate::rollup::Kind::Received)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::AtomicBool;

    use crate::compact::interactions::{Undone, compact_partition, retire_deletes};
    use crate::exec::{Engine, EngineConfig};
    use crate::layout;
    use crate::model::{AccountEvent, Interaction, InteractionDelete, InteractionKind, Post};
    use crate::plan::{Engagement, EngagementPlan};
    use crate::writer::write_rows;

    const DAY: i64 = 86_400_000_000;

    /// The lake's likes and reposts as the test made them, and what takes them out.
    #[derive(Default)]
    struct Model {
        stored: Vec<Interaction>,
        undone: HashSet<(String, InteractionKind, String)>,
        hidden: HashSet<String>,
    }

    impl Model {
        fn counts(&self, kind: InteractionKind) -> HashMap<String, u64> {
            let mut counts = HashMap::new();
            for i in &self.stored {
                let undone = self.undone.contains(&(i.did.clone(), i.kind, i.rkey.clone()));
                if i.kind == kind && !undone && !self.hidden.contains(&i.did) {
                    *counts
                        .entry(format!("at://{}/app.bsky.feed.post/{}", i.subject_did, i.subject_rkey))
                        .or_default() += 1;
                }
            }
            counts
        }
    }

    fn undo(like: &Interaction) -> InteractionDelete {
        InteractionDelete {
            did: like.did.clone(),
            kind: like.kind,
            rkey: like.rkey.clone(),
            deleted_at_us: 20_002 * DAY,
        }
    }

    fn account(did: &str, seen_at_us: i64, active: bool) -> AccountEvent {
        AccountEvent {
            did: did.into(),
            seen_at_us,
            active: Some(active),
            status: (!active).then(|| "takendown".to_owned()),
            ..AccountEvent::default()
        }
    }

    /// Each snapshot's counts of likes and reposts, per post and per author, against the same
    /// counts made in Rust and against an engine that counts the rows themselves (`--rollups
    /// false`): as deletes come for files already checked (a few actors, and more than a list
    /// holds), as an account is hidden and shown again, as new files come with deletes of their
    /// own, for a file without its rollup, and after a compaction that applies and retires the
    /// deletes.
    #[test]
    fn counts_follow_deletes_accounts_and_compaction_snapshot_by_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path();
        let posts: Vec<Post> = (0..60)
            .map(|i| Post {
                uri: format!("at://did:plc:a{}/app.bsky.feed.post/p{i:03}", i % 3),
                did: format!("did:plc:a{}", i % 3),
                rkey: format!("p{i:03}"),
                created_at_us: 20_000 * DAY + i,
                indexed_at_us: 20_000 * DAY + i,
                ..Post::default()
            })
            .collect();
        crate::writer::write_posts(lake, "posts.parquet", posts.clone()).unwrap();
        let interaction = |j: usize, actors: usize, day: i64| Interaction {
            did: format!("did:plc:f{}", j % actors),
            kind: if j.is_multiple_of(3) { InteractionKind::Repost } else { InteractionKind::Like },
            rkey: format!("r{j:06}"),
            subject_did: posts[j * 7 % 60].did.clone(),
            subject_rkey: posts[j * 7 % 60].rkey.clone(),
            created_at_us: day * DAY + j as i64,
            indexed_at_us: day * DAY + j as i64,
        };
        let rolled = Engine::open(lake, &EngineConfig::with_threads(2)).unwrap();
        let rows = Engine::open(lake, &EngineConfig { rollups: false, ..EngineConfig::with_threads(2) }).unwrap();
        let subjects: Vec<(String, i64)> = posts.iter().map(|p| (p.uri.clone(), p.created_at_us)).collect();
        let authors: Vec<String> = (0..3).map(|k| format!("did:plc:a{k}")).collect();
        let mut generation = 1;
        let mut check = |model: &Model, step: &str| {
            generation += 1;
            crate::catalog::publish(lake, generation).unwrap();
            for (engagement, kind) in
                [(Engagement::Likes, InteractionKind::Like), (Engagement::Reposts, InteractionKind::Repost)]
            {
                let expected = model.counts(kind);
                let plan = EngagementPlan::new(engagement, &subjects);
                assert_eq!(rolled.engagement(&plan).unwrap(), expected, "{step}: {engagement:?}");
                assert_eq!(rows.engagement(&plan).unwrap(), expected, "{step}: {engagement:?}, the rows");
                let mut received: HashMap<(String, Engagement), u64> = HashMap::new();
                for post in &posts {
                    if let Some(n) = expected.get(&post.uri) {
                        *received.entry((post.did.clone(), engagement)).or_default() += n;
                    }
                }
                assert_eq!(rolled.received(&[engagement], &authors).unwrap(), received, "{step}: {engagement:?}");
            }
        };
        let mut model = Model::default();

        // 2,000 by 1,500 actors on the first day; 600 by 40 on the next, in a file whose rollup
        // is gone (counted row by row).
        let first: Vec<Interaction> = (0..2_000).map(|j| interaction(j, 1_500, 20_000)).collect();
        let second: Vec<Interaction> = (2_000..2_600).map(|j| interaction(j, 40, 20_001)).collect();
        write_rows(lake, "a.parquet", first.clone()).unwrap();
        let b = write_rows(lake, "b.parquet", second.clone()).unwrap();
        std::fs::remove_file(crate::rollup::path_for(&b[0].path, crate::rollup::Kind::Subjects)).unwrap();
        model.stored.extend(first.iter().cloned().chain(second.iter().cloned()));
        check(&model, "stored");

        // Deletes for the files already checked: a few hundred actors, looked for by lists.
        let some: Vec<InteractionDelete> = first.iter().step_by(7).chain(second.iter().step_by(5)).map(undo).collect();
        write_rows(lake, "d1.parquet", some.clone()).unwrap();
        model.undone.extend(some.iter().map(|d| (d.did.clone(), d.kind, d.rkey.clone())));
        check(&model, "a few undone");

        // More actors than a list holds: joined with a scan of the keys.
        let many: Vec<InteractionDelete> = first[300..1_500].iter().map(undo).collect();
        write_rows(lake, "d2.parquet", many.clone()).unwrap();
        model.undone.extend(many.iter().map(|d| (d.did.clone(), d.kind, d.rkey.clone())));
        check(&model, "many undone");

        // An actor of both files taken down, then shown again.
        write_rows(lake, "acc1.parquet", vec![account("did:plc:f3", 20_002 * DAY, false)]).unwrap();
        model.hidden.insert("did:plc:f3".into());
        check(&model, "hidden");
        write_rows(lake, "acc2.parquet", vec![account("did:plc:f3", 20_003 * DAY, true)]).unwrap();
        model.hidden.clear();
        check(&model, "shown again");

        // A new file, and deletes of its likes and of an old one.
        let third: Vec<Interaction> = (2_600..2_900).map(|j| interaction(j, 30, 20_001)).collect();
        write_rows(lake, "c.parquet", third.clone()).unwrap();
        let later = vec![undo(&third[4]), undo(&third[10]), undo(&first[1_999])];
        write_rows(lake, "d3.parquet", later.clone()).unwrap();
        model.stored.extend(third.iter().cloned());
        model.undone.extend(later.iter().map(|d| (d.did.clone(), d.kind, d.rkey.clone())));
        check(&model, "new file");

        // A deletes file replaced under its name (another inode): its old deletes count no more.
        write_rows(lake, "d3.parquet", later[..1].to_vec()).unwrap();
        for gone in &later[1..] {
            model.undone.remove(&(gone.did.clone(), gone.kind, gone.rkey.clone()));
        }
        check(&model, "a deletes file replaced");

        // Compaction leaves the undone rows out of the files and retires their deletes: the
        // deletes files the engine applied go away.
        let now_us = 30_000 * DAY;
        let cancel = AtomicBool::new(false);
        let undone = Undone::load(lake, now_us).unwrap();
        for date in crate::compact::partitions(lake, layout::INTERACTIONS_TABLE).unwrap() {
            compact_partition(lake, date, 1 << 30, now_us, &undone, &cancel).unwrap();
        }
        for date in crate::compact::partitions(lake, layout::INTERACTION_DELETES_TABLE).unwrap() {
            retire_deletes(lake, date, now_us, undone.tombstones(), &cancel).unwrap();
        }
        assert!(crate::catalog::table_files(lake, layout::INTERACTION_DELETES_TABLE).unwrap().paths.is_empty());
        check(&model, "compacted");
    }
}
