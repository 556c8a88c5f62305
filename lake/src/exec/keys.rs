//! The stored posts' keys by author, from which what an author's posts got in all is counted
//! ([`crate::plan::Plan::Received`]): an author's keys are a few row groups of the rollups of
//! keys ([`crate::rollup::Kind::Keys`]), where the posts themselves hold a busy author's rows in
//! every row group (reading `did` alone from a week of posts took 0.56 s).

use std::path::PathBuf;

use super::undone::paths;
use crate::rollup::{self, Kind};

/// The `post_key_files` view (`did, rkey, uri`) over `files`, the snapshot's `posts` data files:
/// their rollups of keys, or the rows themselves for the files without rollups. The uri is
/// made from the key, as every post's is (`at://{did}/app.bsky.feed.post/{rkey}`), for the
/// replies and quotes that name posts by it. Like `post_files`, it holds what the files
/// hold: the engine's `post_keys` view takes out what is not live.
pub(super) fn key_files_view_sql(files: &[PathBuf]) -> String {
    let (rolled, unrolled): (Vec<&PathBuf>, Vec<&PathBuf>) = files.iter().partition(|path| rollup::has_rollups(path));
    let sidecars: Vec<PathBuf> = rolled.iter().map(|path| rollup::path_for(path, Kind::Keys)).collect();
    let parts: Vec<String> = [sidecars.iter().collect::<Vec<_>>(), unrolled]
        .iter()
        .filter(|list| !list.is_empty())
        .map(|list| format!("SELECT did, rkey FROM read_parquet([{}])", paths(list.iter().copied())))
        .collect();
    let keys = match parts.is_empty() {
        true => "SELECT NULL::VARCHAR AS did, NULL::VARCHAR AS rkey WHERE false".to_owned(),
        false => parts.join(" UNION ALL "),
    };
    format!(
        "CREATE OR REPLACE VIEW post_key_files AS \
         SELECT did, rkey, 'at://' || did || '/app.bsky.feed.post/' || rkey AS uri FROM ({keys})"
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::exec::{Engine, EngineConfig, HotTier};
    use crate::model::{AccountEvent, Delete, Interaction, InteractionKind, Post};
    use crate::plan::Engagement;
    use crate::writer::{write_posts, write_rows};

    const DAY: i64 = 86_400_000_000;

    fn post(author: &str, n: usize) -> Post {
        let did = format!("did:plc:{author}");
        Post {
            uri: crate::model::post_uri(&did, &format!("k{n:04}")),
            rkey: format!("k{n:04}"),
            did,
            created_at_us: 20_000 * DAY + n as i64,
            indexed_at_us: 20_000 * DAY + n as i64,
            ..Post::default()
        }
    }

    /// An author's totals received count what their live posts got and nothing else: not the
    /// likes of deleted posts (in the lake or in the hot tier), nor of posts the lake never
    /// stored, nor anything of a hidden author; the hot tier's posts and a file without rollups
    /// count. Against the same sums made in Rust, with rollups and without.
    #[test]
    fn totals_received_count_the_authors_live_posts_alone() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path();
        let stored_a: Vec<Post> = (0..40).map(|n| post("a", n)).collect();
        let unrolled_a: Vec<Post> = (40..50).map(|n| post("a", n)).collect();
        let b: Vec<Post> = (0..20).map(|n| post("b", n)).collect();
        let c: Vec<Post> = (0..20).map(|n| post("c", n)).collect();
        let hot: Vec<Post> = (50..53).map(|n| post("a", n + 1_000)).collect();
        // d replies to a's and c's posts, and quotes some.
        let targets: Vec<&Post> = stored_a.iter().chain(&unrolled_a).chain(&c).chain(&hot).collect();
        let reactions: Vec<Post> = (0..60)
            .map(|n| Post {
                reply_parent: Some(targets[n * 7 % targets.len()].uri.clone()),
                quote_uri: n.is_multiple_of(4).then(|| targets[n * 3 % targets.len()].uri.clone()),
                ..post("d", n)
            })
            .collect();
        write_posts(lake, "a.parquet", stored_a.iter().chain(&b).chain(&c).chain(&reactions).cloned().collect())
            .unwrap();
        let written = write_posts(lake, "b.parquet", unrolled_a.clone()).unwrap();
        for kind in crate::rollup::Kind::POSTS {
            std::fs::remove_file(crate::rollup::path_for(&written[0].path, kind)).unwrap();
        }
        // Every fourth of c's posts deleted in the lake, one more in the hot tier; b taken down.
        let deleted: Vec<Delete> = c
            .iter()
            .step_by(4)
            .map(|p| Delete { uri: p.uri.clone(), did: p.did.clone(), deleted_at_us: 20_001 * DAY })
            .collect();
        write_rows(lake, "d.parquet", deleted.clone()).unwrap();
        let hot_deleted = vec![c[5].uri.clone()];
        let takedown = AccountEvent {
            did: "did:plc:b".into(),
            seen_at_us: 20_001 * DAY,
            active: Some(false),
            status: Some("takendown".into()),
            ..AccountEvent::default()
        };
        write_rows(lake, "e.parquet", vec![takedown]).unwrap();
        // Each post liked (n % 5) times, and a post the lake never stored liked too.
        let never = post("c", 9_999);
        let mut likes = Vec::new();
        for (j, subject) in targets.iter().copied().chain(&b).chain([&never]).enumerate() {
            for k in 0..(j % 5 + 1) {
                likes.push(Interaction {
                    did: format!("did:plc:u{k}"),
                    kind: if k == 3 { InteractionKind::Repost } else { InteractionKind::Like },
                    rkey: format!("l{j:04}{k}"),
                    subject_did: subject.did.clone(),
                    subject_rkey: subject.rkey.clone(),
                    created_at_us: 20_001 * DAY + j as i64,
                    indexed_at_us: 20_001 * DAY + j as i64,
                });
            }
        }
        write_rows(lake, "f.parquet", likes.clone()).unwrap();
        crate::catalog::publish(lake, 1).unwrap();

        // The same in Rust: the live posts, and what each got.
        let gone =
            |p: &Post| deleted.iter().any(|d| d.uri == p.uri) || hot_deleted.contains(&p.uri) || p.did.ends_with(":b");
        let live: Vec<&Post> = targets.iter().copied().chain(&b).chain(&reactions).filter(|p| !gone(p)).collect();
        let dids: Vec<String> = ["a", "b", "c", "nobody"].iter().map(|a| format!("did:plc:{a}")).collect();
        let mut expected: HashMap<(String, Engagement), u64> = HashMap::new();
        for p in live.iter().filter(|p| dids.contains(&p.did)) {
            let mut add = |engagement, n: usize| {
                if n > 0 {
                    *expected.entry((p.did.clone(), engagement)).or_default() += n as u64;
                }
            };
            let subject = |i: &&Interaction| i.subject_did == p.did && i.subject_rkey == p.rkey;
            add(Engagement::Likes, likes.iter().filter(subject).filter(|i| i.kind == InteractionKind::Like).count());
            add(
                Engagement::Reposts,
                likes.iter().filter(subject).filter(|i| i.kind == InteractionKind::Repost).count(),
            );
            add(Engagement::Replies, reactions.iter().filter(|r| r.reply_parent.as_ref() == Some(&p.uri)).count());
            add(Engagement::Quotes, reactions.iter().filter(|r| r.quote_uri.as_ref() == Some(&p.uri)).count());
        }
        assert!(
            [Engagement::Likes, Engagement::Reposts, Engagement::Replies, Engagement::Quotes]
                .iter()
                .all(|e| expected.contains_key(&("did:plc:a".to_owned(), *e))
                    && expected.contains_key(&("did:plc:c".to_owned(), *e))),
            "a and c got every engagement: {expected:?}"
        );

        for rollups in [true, false] {
            let engine = Engine::open(lake, &EngineConfig { rollups, ..EngineConfig::with_threads(2) }).unwrap();
            engine.set_hot(HotTier { posts: &hot, deleted: &hot_deleted, accounts: &[] }).unwrap();
            assert_eq!(engine.received(&Engagement::ALL, &dids).unwrap(), expected, "rollups {rollups}");
            let likes_alone: HashMap<_, _> =
                expected.iter().filter(|((_, e), _)| *e == Engagement::Likes).map(|(k, n)| (k.clone(), *n)).collect();
            assert_eq!(engine.received(&[Engagement::Likes], &dids).unwrap(), likes_alone, "rollups {rollups}");
        }
    }
}
