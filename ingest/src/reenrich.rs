//! `skyglass lake reenrich`: brings stored posts up to the current [`ENRICH_VERSION`].
//!
//! A stored post keeps its text, its facet-derived hashtags, mentions and links, its embed and
//! its reply, but not the raw record. Re-enrichment therefore recomputes what those columns
//! determine: the detected language, the hashtags written in the text (added to the stored ones,
//! in order, without duplicates) and the text length. A change to how records themselves are
//! decoded (facets, embeds) needs the events again: replay the source from an earlier cursor.

use std::path::Path;

use chrono::NaiveDate;
use lake::model::{ENRICH_VERSION, Post};
use lake::rewrite::{Rewritten, redo_stale_posts};

use crate::{language, text};

/// Redoes the enrichment of one stored post (see the module docs for what that covers).
pub fn redo_enrichment(post: &mut Post) {
    post.detected_lang = language::detect(&post.text).map(str::to_owned);
    for tag in text::hashtags_in_text(&post.text) {
        if !post.hashtags.contains(&tag) {
            post.hashtags.push(tag);
        }
    }
    post.text_len = i32::try_from(post.text.len()).unwrap_or(i32::MAX);
    post.enrich_version = ENRICH_VERSION;
}

/// Re-enriches the stale posts of every `posts` partition from `since` through `until`
/// (inclusive; open-ended without it), one partition at a time, each swapped in atomically.
pub fn reenrich(
    lake: &Path,
    since: NaiveDate,
    until: Option<NaiveDate>,
    mut done: impl FnMut(&Rewritten),
) -> lake::Result<Vec<Rewritten>> {
    let partitions = lake::catalog::table_files(lake, lake::layout::POSTS_TABLE)?.partitions;
    let mut reports = Vec::new();
    for (date, _) in partitions.into_iter().filter(|(d, _)| *d >= since && until.is_none_or(|u| *d <= u)) {
        let now_us = chrono::Utc::now().timestamp_micros();
        let report = redo_stale_posts(lake, date, ENRICH_VERSION, now_us, redo_enrichment)?;
        tracing::info!(
            %date, files = report.files, rewritten_files = report.rewritten_files,
            rows = report.rows, rewritten_rows = report.rewritten_rows, "partition re-enriched"
        );
        done(&report);
        reports.push(report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, decode};
    use lake::exec::{Engine, EngineConfig};
    use lake::model::PostColumn;
    use lake::plan::{PostFilter, PostOrder, PostsPlan};

    const LINES: &[&str] = &[
        r##"{"did":"did:plc:aaaa","time_us":1732867200000000,"kind":"commit","commit":{"rev":"1","operation":"create","collection":"app.bsky.feed.post","rkey":"3kaaa","cid":"bafy1","record":{"$type":"app.bsky.feed.post","text":"Das ist ein ganz normaler Satz auf Deutsch, mit #Tag und mehr Wörtern.","createdAt":"2024-11-29T08:00:00Z","langs":["de"]}}}"##,
        r##"{"did":"did:plc:bbbb","time_us":1732867201000000,"kind":"commit","commit":{"rev":"1","operation":"create","collection":"app.bsky.feed.post","rkey":"3kbbb","cid":"bafy2","record":{"$type":"app.bsky.feed.post","text":"This is a perfectly ordinary English sentence about the weather #rain","createdAt":"2024-11-29T09:00:00Z","langs":["en"],"facets":[{"index":{"byteStart":0,"byteEnd":4},"features":[{"$type":"app.bsky.richtext.facet#tag","tag":"Facet"}]}]}}}"##,
        r##"{"did":"did:plc:cccc","time_us":1732953600000000,"kind":"commit","commit":{"rev":"1","operation":"create","collection":"app.bsky.feed.post","rkey":"3kccc","cid":"bafy3","record":{"$type":"app.bsky.feed.post","text":"これは日本語の投稿です。今日はとても良い天気ですね。","createdAt":"2024-11-30T10:00:00Z"}}}"##,
        r##"{"did":"did:plc:dddd","time_us":1732953601000000,"kind":"commit","commit":{"rev":"1","operation":"create","collection":"app.bsky.feed.post","rkey":"3kddd","cid":"bafy4","record":{"$type":"app.bsky.feed.post","text":"ok","createdAt":"2024-11-30T11:00:00Z"}}}"##,
    ];

    fn fresh_posts() -> Vec<Post> {
        LINES
            .iter()
            .map(|line| match decode(line.as_bytes()) {
                Decoded::Post(post) => *post,
                other => panic!("not a post: {other:?}"),
            })
            .collect()
    }

    fn stored(lake: &Path) -> Vec<Post> {
        let engine = Engine::open(lake, &EngineConfig::default()).unwrap();
        let plan = PostsPlan::new(PostFilter::default(), PostOrder::Oldest, 100, PostColumn::ALL);
        engine.posts(&plan).unwrap()
    }

    #[test]
    fn stale_partitions_come_back_as_a_fresh_decode_would_write_them() {
        let lake = tempfile::tempdir().unwrap();
        let fresh = fresh_posts();
        assert_eq!(fresh[0].detected_lang.as_deref(), Some("de"), "the fixture is detectable");
        // As an older version stored them: no detected language, no text tags, no length.
        let aged: Vec<Post> = fresh
            .iter()
            .cloned()
            .map(|mut p| {
                p.detected_lang = None;
                p.hashtags.retain(|t| t == "facet");
                p.text_len = 0;
                p.enrich_version = ENRICH_VERSION - 1;
                p
            })
            .collect();
        lake::writer::write_posts(lake.path(), "1-0_4-0.parquet", aged).unwrap();

        let mut seen = Vec::new();
        let since = NaiveDate::from_ymd_opt(2024, 11, 30).unwrap();
        let reports = reenrich(lake.path(), since, None, |r| seen.push(r.date)).unwrap();
        assert_eq!(reports.len(), 1, "only the days since --since");
        assert_eq!(seen, vec![Some(since)]);
        let all = reenrich(lake.path(), NaiveDate::MIN, None, |_| {}).unwrap();
        assert_eq!(all.iter().map(|r| r.rewritten_rows).collect::<Vec<_>>(), vec![2, 0]);

        let mut got = stored(lake.path());
        got.sort_by(|a, b| a.uri.cmp(&b.uri));
        let mut want = fresh;
        want.sort_by(|a, b| a.uri.cmp(&b.uri));
        assert_eq!(got, want);
    }
}
