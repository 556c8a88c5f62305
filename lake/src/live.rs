//! A [`PostFilter`] checked against one post in Rust, for posts as they arrive (live
//! subscriptions): the same conditions the compiled SQL states (`crate::sql`), including the
//! same text search patterns (`crate::search`), so a live feed and `posts` agree on what matches.

use regex::Regex;

use crate::error::{Error, Result};
use crate::model::{Post, normalise_tag};
use crate::plan::{Clock, PostFilter};
use crate::search;

/// A filter, compiled for checking posts one at a time.
#[derive(Debug, Clone)]
pub struct PostMatcher {
    filter: PostFilter,
    /// Bare languages (`en`) and full tags (`en-us`), lower case.
    bare_langs: Vec<String>,
    full_langs: Vec<String>,
    detected_langs: Vec<String>,
    hashtags: Vec<String>,
    /// Case-insensitive literals every text must contain, and patterns it must match.
    literals: Vec<String>,
    patterns: Vec<Regex>,
}

impl PostMatcher {
    pub fn new(filter: PostFilter) -> Result<PostMatcher> {
        let (full_langs, bare_langs) =
            filter.langs.iter().map(|l| l.trim().to_lowercase()).partition(|l| l.contains('-'));
        let mut literals = Vec::new();
        let mut patterns = Vec::new();
        for query in &filter.text {
            let Some(compiled) = search::compile(query)? else { continue };
            literals.extend(compiled.literals.iter().map(|l| l.to_lowercase()));
            for pattern in compiled.patterns {
                let regex = Regex::new(&format!("(?i){pattern}"))
                    .map_err(|e| Error::InvalidArgument(format!("text query pattern: {e}")))?;
                patterns.push(regex);
            }
        }
        Ok(PostMatcher {
            detected_langs: filter.detected_langs.iter().map(|l| l.trim().to_lowercase()).collect(),
            hashtags: filter.hashtags.iter().map(|t| normalise_tag(t)).collect(),
            full_langs,
            bare_langs,
            literals,
            patterns,
            filter,
        })
    }

    pub fn matches(&self, post: &Post) -> bool {
        let f = &self.filter;
        let time = match f.clock {
            Clock::CreatedAt => post.created_at_us,
            Clock::IndexedAt => post.indexed_at_us,
        };
        let any = |wanted: &[String], have: &[String]| wanted.is_empty() || have.iter().any(|h| wanted.contains(h));
        f.since_us.is_none_or(|since| time >= since)
            && f.until_us.is_none_or(|until| time < until)
            && (f.uris.is_empty() || f.uris.contains(&post.uri))
            && (f.authors.is_empty() || f.authors.contains(&post.did))
            && self.langs_match(post)
            && (self.detected_langs.is_empty()
                || post.detected_lang.as_ref().is_some_and(|l| self.detected_langs.contains(l)))
            && self.text_matches(&post.text)
            && any(&self.hashtags, &post.hashtags)
            && any(&f.mentions, &post.mentions)
            && f.is_reply.is_none_or(|reply| reply == post.reply_parent.is_some())
            && (f.embed_types.is_empty() || f.embed_types.contains(&post.embed_type))
    }

    fn langs_match(&self, post: &Post) -> bool {
        if self.full_langs.is_empty() && self.bare_langs.is_empty() {
            return true;
        }
        post.langs.iter().any(|lang| {
            let lang = lang.to_lowercase();
            let bare = lang.split('-').next().unwrap_or_default();
            self.full_langs.contains(&lang) || self.bare_langs.iter().any(|b| b == bare)
        })
    }

    fn text_matches(&self, text: &str) -> bool {
        if self.literals.is_empty() && self.patterns.is_empty() {
            return true;
        }
        let lower = text.to_lowercase();
        self.literals.iter().all(|l| lower.contains(l.as_str())) && self.patterns.iter().all(|p| p.is_match(text))
    }
}
