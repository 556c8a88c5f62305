//! `skyglass generate`: a synthetic lake written straight through the lake writer, for scale
//! tiers and benchmarks. Rows are built directly (no JSON) with the synthetic firehose's
//! vocabulary and realistic shapes: a daily cycle peaking in the evening (UTC), authors whose
//! activity is heavily skewed, a language mix, hashtags with a long tail of popularity (see
//! [`Tags`]), about 30% replies, quotes, images, links and mentions. Some posts are deleted later (the `deletes` table) and a few
//! accounts taken down each day (the `accounts` table), as on Bluesky, so that queries pay for
//! leaving them out. With `likes_per_post`, posts get likes and reposts (the `interactions`
//! table): a few posts most of them, mostly within hours, some undone later. The same seed
//! gives the same lake.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use chrono::NaiveDate;
use lake::model::{
    AccountEvent, Delete, ENRICH_VERSION, EmbedType, Interaction, InteractionDelete, InteractionKind, Post,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::source::synthetic::{DOMAINS, HASHTAGS, body, cid, did_for, pick_language, tid};

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Rows per written file; a day holds several.
const ROWS_PER_FILE: usize = 500_000;
/// Relative posting rate per UTC hour: quiet at 06–10, busiest at 14–22.
const HOURLY_WEIGHTS: [u32; 24] = [6, 5, 4, 3, 3, 2, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10, 10, 9, 9, 8, 7];

#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub first_day: NaiveDate,
    pub days: u32,
    pub posts_per_day: u64,
    pub seed: u64,
    pub threads: usize,
    /// The share of posts deleted later (within a day of their creation).
    pub deleted_share: f64,
    /// Accounts taken down per day (their posts leave every answer).
    pub takedowns_per_day: u32,
    /// Whether each file gets its text index, as the files compaction writes do.
    pub text_indexes: bool,
    /// Likes and reposts per post, on average (Bluesky has about ten); none by default.
    pub likes_per_post: f64,
}

/// The share of posts that carry hashtags (one to three). In the real posts of
/// `../shared/data/real`, 2 of 15 do (two each); the synthetic firehose, which exercises the
/// pipeline rather than the lake's proportions, tags half its posts.
const TAGGED_SHARE: f64 = 0.12;
/// Distinct hashtags a tier draws from: the firehose's 20 named ones at the head, then made-up
/// words. Used by rank with weight 1/rank (Zipf), the most used takes about a tenth of all uses
/// and the first ten about a quarter, as a day of Bluesky's hashtags has a few big ones and a
/// tail of tags used once.
const TAG_VOCABULARY: usize = 20_000;
/// Tags of the tail that trend on a given day, and the share of that day's uses they take.
const TRENDING_PER_DAY: usize = 5;
const TRENDING_SHARE: f64 = 0.03;

/// The share of likes and reposts undone later.
const UNDONE_SHARE: f64 = 0.03;
/// Interactions written per file.
const INTERACTIONS_PER_FILE: usize = 1_000_000;

#[derive(Debug, Clone, Copy, Default)]
pub struct GenerateReport {
    pub posts: u64,
    /// Delete events written, each of a generated post.
    pub deleted: u64,
    /// Likes and reposts written (some undone later).
    pub interactions: u64,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Writes the lake and publishes it (one generation bump).
pub fn generate(lake: &Path, config: &GenerateConfig) -> anyhow::Result<GenerateReport> {
    let started = Instant::now();
    let days: Vec<NaiveDate> =
        (0..config.days).map(|d| config.first_day + chrono::Duration::days(i64::from(d))).collect();
    let threads = config.threads.max(1).min(days.len().max(1));
    let reports: Vec<anyhow::Result<GenerateReport>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let days: Vec<NaiveDate> = days.iter().copied().skip(worker).step_by(threads).collect();
                scope.spawn(move || -> anyhow::Result<GenerateReport> {
                    let mut report = GenerateReport::default();
                    for day in days {
                        let day_report = generate_day(lake, config, day)?;
                        report.posts += day_report.posts;
                        report.deleted += day_report.deleted;
                        report.interactions += day_report.interactions;
                        report.files += day_report.files;
                        report.bytes += day_report.bytes;
                    }
                    Ok(report)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a generator thread panicked"))))
            .collect()
    });
    let mut total = GenerateReport::default();
    for report in reports {
        let report = report?;
        total.posts += report.posts;
        total.deleted += report.deleted;
        total.interactions += report.interactions;
        total.files += report.files;
        total.bytes += report.bytes;
    }
    lake::catalog::publish(lake, chrono::Utc::now().timestamp_micros()).context("failed to publish the lake")?;
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

fn generate_day(lake: &Path, config: &GenerateConfig, day: NaiveDate) -> anyhow::Result<GenerateReport> {
    let day_start = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_micros();
    let seed = config.seed ^ (day_start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut posts = DayPosts::new(seed, day_start, config.posts_per_day);
    // Its own generator, so the posts are the same whatever share is deleted.
    let mut fate = SmallRng::seed_from_u64(seed.rotate_left(17));
    let mut report = GenerateReport::default();
    let takedowns: Vec<AccountEvent> = (0..config.takedowns_per_day)
        .map(|_| AccountEvent {
            did: did_for(fate.random_range(0..posts.n_authors)),
            seen_at_us: day_start + fate.random_range(0..MICROS_PER_DAY),
            active: Some(false),
            status: Some("takendown".to_owned()),
            ..AccountEvent::default()
        })
        .collect();
    if !takedowns.is_empty() {
        lake::writer::write_rows(lake, &format!("gen-{day}-accounts.parquet"), takedowns)?;
    }
    let mut chunk = 0;
    loop {
        let rows: Vec<Post> = posts.by_ref().take(ROWS_PER_FILE).collect();
        if rows.is_empty() {
            return Ok(report);
        }
        report.posts += rows.len() as u64;
        let mut deletes: Vec<Delete> = Vec::new();
        for post in rows.iter().filter(|_| config.deleted_share > 0.0) {
            if fate.random_bool(config.deleted_share.min(1.0)) {
                let deleted_at_us = post.indexed_at_us + fate.random_range(1_000_000..MICROS_PER_DAY);
                deletes.push(Delete { uri: post.uri.clone(), did: post.did.clone(), deleted_at_us });
            }
        }
        report.deleted += deletes.len() as u64;
        if !deletes.is_empty() {
            lake::writer::write_rows(lake, &format!("gen-{day}-{chunk:04}-deletes.parquet"), deletes)?;
        }
        if config.likes_per_post > 0.0 {
            report.interactions +=
                write_interactions(lake, config, &format!("gen-{day}-{chunk:04}"), &rows, &mut fate)?;
        }
        let name = format!("gen-{day}-{chunk:04}.parquet");
        for file in lake::writer::write_posts(lake, &name, rows)? {
            report.files += 1;
            report.bytes += file.bytes;
            // Written files are as large as compacted ones, and like them are searched through
            // their index (published with the lake at the end).
            if config.text_indexes {
                lake::textindex::build_for_file(&file.path)?;
            }
        }
        chunk += 1;
    }
}

/// Likes and reposts of `posts` (about `likes_per_post` each, most on a few of them, mostly
/// within hours of the post), and the few undone later; says how many were written.
fn write_interactions(
    lake: &Path,
    config: &GenerateConfig,
    name: &str,
    posts: &[Post],
    rng: &mut SmallRng,
) -> anyhow::Result<u64> {
    let total = (posts.len() as f64 * config.likes_per_post).round() as usize;
    let likers = usize::try_from(config.posts_per_day).unwrap_or(usize::MAX).max(1_000);
    let (mut written, mut part) = (0, 0);
    while written < total {
        let n = INTERACTIONS_PER_FILE.min(total - written);
        let mut interactions = Vec::with_capacity(n);
        let mut undone = Vec::new();
        for k in 0..n {
            // A heavy head: of half a million posts, the first (a random one in time) gets about
            // 1% of the likes, the first 1% about a fifth.
            let u: f64 = rng.random();
            let subject = &posts[((posts.len() as f64) * u.powi(3)) as usize % posts.len()];
            let u: f64 = rng.random();
            let did = did_for(((likers as f64) * u.powi(3)) as usize % likers);
            // Mostly within hours: an exponential delay of three hours on average, at most two days.
            let delay = (-(1.0 - rng.random::<f64>()).ln() * 3.0 * 3_600_000_000.0) as i64;
            let created_at_us = subject.created_at_us + delay.clamp(1_000_000, 2 * MICROS_PER_DAY);
            let (subject_did, subject_rkey) =
                lake::model::post_uri_parts(&subject.uri).context("generated uris have the post shape")?;
            let interaction = Interaction {
                did,
                kind: if rng.random_range(0..6) == 0 { InteractionKind::Repost } else { InteractionKind::Like },
                rkey: tid(created_at_us, (written + k) as u64),
                subject_did: subject_did.to_owned(),
                subject_rkey: subject_rkey.to_owned(),
                created_at_us,
                indexed_at_us: created_at_us + rng.random_range(0..2_000_000),
            };
            if rng.random_bool(UNDONE_SHARE) {
                undone.push(InteractionDelete {
                    did: interaction.did.clone(),
                    kind: interaction.kind,
                    rkey: interaction.rkey.clone(),
                    deleted_at_us: interaction.indexed_at_us + rng.random_range(1_000_000..MICROS_PER_DAY),
                });
            }
            interactions.push(interaction);
        }
        lake::writer::write_rows(lake, &format!("{name}-{part:02}-interactions.parquet"), interactions)?;
        if !undone.is_empty() {
            lake::writer::write_rows(lake, &format!("{name}-{part:02}-undone.parquet"), undone)?;
        }
        written += n;
        part += 1;
    }
    Ok(written as u64)
}

/// The posts of one day, in no particular order (the writer sorts each file).
struct DayPosts {
    rng: SmallRng,
    day_start: i64,
    remaining: u64,
    sequence: u64,
    n_authors: usize,
    /// Earlier posts of the day, for replies and quotes.
    recent: Vec<String>,
    hour_total: u32,
    /// This day's trending tags (ranks in the tail).
    trending: [usize; TRENDING_PER_DAY],
}

/// Hashtag popularity: a tag's rank, drawn with weight 1/rank from [`TAG_VOCABULARY`] tags, and
/// its name.
struct Tags {
    /// Cumulative weights by rank.
    cumulative: Vec<f64>,
}

impl Tags {
    fn get() -> &'static Tags {
        static TAGS: std::sync::OnceLock<Tags> = std::sync::OnceLock::new();
        TAGS.get_or_init(|| {
            let mut total = 0.0;
            let cumulative = (1..=TAG_VOCABULARY)
                .map(|rank| {
                    total += 1.0 / rank as f64;
                    total
                })
                .collect();
            Tags { cumulative }
        })
    }

    fn rank(&self, rng: &mut SmallRng) -> usize {
        let pick = rng.random::<f64>() * self.cumulative[TAG_VOCABULARY - 1];
        self.cumulative.partition_point(|&c| c < pick).min(TAG_VOCABULARY - 1)
    }

    /// The tag of `rank`: a named one of the head, else a made-up word of two or three
    /// syllables (the rank's digits in base 70, one syllable a digit), unique to the rank.
    fn name(rank: usize) -> std::borrow::Cow<'static, str> {
        const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
        const VOWELS: &[u8] = b"aeiou";
        let syllables = CONSONANTS.len() * VOWELS.len();
        if let Some(named) = HASHTAGS.get(rank) {
            return (*named).into();
        }
        let (mut n, mut word) = (rank, String::with_capacity(6));
        while n > 0 || word.len() < 4 {
            let syllable = n % syllables;
            word.push(char::from(CONSONANTS[syllable / VOWELS.len()]));
            word.push(char::from(VOWELS[syllable % VOWELS.len()]));
            n /= syllables;
        }
        word.into()
    }
}

impl DayPosts {
    fn new(seed: u64, day_start: i64, posts: u64) -> DayPosts {
        DayPosts {
            rng: SmallRng::seed_from_u64(seed),
            day_start,
            remaining: posts,
            sequence: 0,
            // About one poster per three posts a day, as on Bluesky; stable across days.
            n_authors: usize::try_from(posts / 3).unwrap_or(usize::MAX).max(1_000),
            recent: Vec::with_capacity(4_096),
            hour_total: HOURLY_WEIGHTS.iter().sum(),
            trending: [0; TRENDING_PER_DAY],
        }
        .with_trending_tags()
    }

    fn with_trending_tags(mut self) -> DayPosts {
        for slot in 0..TRENDING_PER_DAY {
            self.trending[slot] = self.rng.random_range(1_000..TAG_VOCABULARY);
        }
        self
    }

    /// The hashtags of one post, as written in its text: none for most posts.
    fn hashtags(&mut self) -> Vec<std::borrow::Cow<'static, str>> {
        if !self.rng.random_bool(TAGGED_SHARE) {
            return Vec::new();
        }
        let count = [1, 1, 1, 2, 2, 3][self.rng.random_range(0..6)];
        (0..count)
            .map(|_| {
                let rank = match self.rng.random_bool(TRENDING_SHARE) {
                    true => self.trending[self.rng.random_range(0..TRENDING_PER_DAY)],
                    false => Tags::get().rank(&mut self.rng),
                };
                Tags::name(rank)
            })
            .collect()
    }

    /// A skewed pick in `0..n`: 0 is the most likely, with a long tail.
    fn skewed(&mut self, n: usize) -> usize {
        let u: f64 = self.rng.random();
        ((n as f64) * u.powi(4)) as usize % n
    }

    fn time(&mut self) -> i64 {
        let mut pick = self.rng.random_range(0..self.hour_total);
        let mut hour = 0;
        while pick >= HOURLY_WEIGHTS[hour] {
            pick -= HOURLY_WEIGHTS[hour];
            hour += 1;
        }
        self.day_start + hour as i64 * 3_600_000_000 + self.rng.random_range(0..3_600_000_000)
    }
}

impl Iterator for DayPosts {
    type Item = Post;

    fn next(&mut self) -> Option<Post> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        self.sequence += 1;
        let created_at_us = self.time().min(self.day_start + MICROS_PER_DAY - 1);
        let author = self.skewed(self.n_authors);
        let did = did_for(author);
        let rkey = tid(created_at_us, self.sequence);
        let uri = format!("at://{did}/app.bsky.feed.post/{rkey}");

        let (lang, phrases) = pick_language(&mut self.rng);
        let mut text = body(&mut self.rng, phrases);
        let mut mentions = Vec::new();
        if self.rng.random_bool(0.15) {
            let mentioned = did_for(self.skewed(self.n_authors));
            text.push_str(&format!(" @{}.bsky.social", &mentioned[8..14]));
            mentions.push(mentioned);
        }
        let mut links = Vec::new();
        if self.rng.random_bool(0.12) {
            let link = format!("https://{}/p/{}", DOMAINS[self.rng.random_range(0..DOMAINS.len())], self.sequence);
            text.push(' ');
            text.push_str(&link);
            links.push(link);
        }
        let mut hashtags: Vec<String> = Vec::new();
        for tag in self.hashtags() {
            text.push_str(" #");
            text.push_str(&tag);
            let tag = lake::model::normalise_tag(&tag);
            if !hashtags.contains(&tag) {
                hashtags.push(tag);
            }
        }
        let (reply_parent, reply_root) = if !self.recent.is_empty() && self.rng.random_bool(0.3) {
            let parent = self.recent[self.rng.random_range(0..self.recent.len())].clone();
            (Some(parent.clone()), Some(parent))
        } else {
            (None, None)
        };
        let quoted =
            (!self.recent.is_empty()).then(|| self.recent[self.rng.random_range(0..self.recent.len())].clone());
        let (embed_type, image_count, external_uri, quote_uri) = match (self.rng.random_range(0..100), quoted) {
            (0..20, _) => (EmbedType::Images, self.rng.random_range(1..=4), None, None),
            (20..28, _) => (EmbedType::External, 0, Some(format!("https://{}/a/{}", DOMAINS[0], self.sequence)), None),
            (28..31, _) => (EmbedType::Video, 0, None, None),
            (31..36, Some(quoted)) => (EmbedType::Record, 0, None, Some(quoted)),
            (36..38, Some(quoted)) => (EmbedType::RecordWithMedia, 1, None, Some(quoted)),
            _ => (EmbedType::None, 0, None, None),
        };
        if self.recent.len() < 4_096 {
            self.recent.push(uri.clone());
        } else {
            let slot = self.rng.random_range(0..self.recent.len());
            self.recent[slot] = uri.clone();
        }
        Some(Post {
            cid: cid(&mut self.rng, "bafyrei"),
            rkey,
            did,
            uri,
            created_at_us,
            indexed_at_us: created_at_us + self.rng.random_range(100_000..2_000_000),
            created_at_clamped: false,
            text_len: i32::try_from(text.len()).unwrap_or(i32::MAX),
            text,
            langs: lang.map(|l| vec![l.to_owned()]).unwrap_or_default(),
            // The generator knows each text's language; detecting it again would only be slow.
            detected_lang: lang.map(|l| l.split('-').next().unwrap_or(l).to_owned()),
            reply_root,
            reply_parent,
            quote_uri,
            embed_type,
            image_count,
            external_uri,
            hashtags,
            mentions,
            links,
            labels: Vec::new(),
            enrich_version: ENRICH_VERSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashtags_have_a_few_big_ones_and_a_long_tail() {
        let posts: Vec<Post> = DayPosts::new(3, 0, 200_000).collect();
        let mut uses: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for tag in posts.iter().flat_map(|p| &p.hashtags) {
            *uses.entry(tag).or_default() += 1;
        }
        let tagged = posts.iter().filter(|p| !p.hashtags.is_empty()).count() as f64 / posts.len() as f64;
        assert!((0.10..0.14).contains(&tagged), "about 12% of posts carry hashtags: {tagged}");
        let mut counts: Vec<(usize, &str)> = uses.iter().map(|(t, n)| (*n, *t)).collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let total: usize = counts.iter().map(|c| c.0).sum();
        let share = |n: usize| counts.iter().take(n).map(|c| c.0).sum::<usize>() as f64 / total as f64;
        assert_eq!(counts[0].1, "art", "the head is the firehose's named tags: {:?}", &counts[..5]);
        assert!((0.07..0.13).contains(&share(1)), "the top tag takes about a tenth: {}", share(1));
        assert!((0.2..0.35).contains(&share(10)), "the top ten about a quarter: {}", share(10));
        let once = counts.iter().filter(|c| c.0 == 1).count();
        assert!(counts.len() > 5_000 && once > 1_000, "{} tags, {once} used once", counts.len());
        assert!(posts.iter().all(|p| p.hashtags.iter().all(|t| p.text.to_lowercase().contains(&format!("#{t}")))));
        let names: std::collections::HashSet<_> = (0..TAG_VOCABULARY).map(Tags::name).collect();
        assert_eq!(names.len(), TAG_VOCABULARY, "each rank its own tag");
    }

    #[test]
    fn a_generated_lake_has_every_post_once_and_the_same_seed_repeats_it() {
        let config = GenerateConfig {
            first_day: NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
            days: 2,
            posts_per_day: 3_000,
            seed: 9,
            threads: 2,
            deleted_share: 0.0,
            takedowns_per_day: 0,
            text_indexes: true,
            likes_per_post: 0.0,
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let report = generate(a.path(), &config).unwrap();
        generate(b.path(), &config).unwrap();
        assert_eq!((report.posts, report.deleted), (6_000, 0));
        let engine = lake::exec::Engine::open(a.path(), &lake::exec::EngineConfig::with_threads(2)).unwrap();
        let stats = engine.stats().unwrap();
        assert_eq!((stats.posts, stats.partitions, stats.generation), (6_000, 2, 1));
        let top = engine.top_authors(&lake::plan::TopPlan::new(Default::default(), 1)).unwrap();
        assert!(top[0].1 > 6_000 / 1_000, "the most active author posts far more than the average");
        let bytes = |dir: &Path| std::fs::read(dir.join("posts/date=2024-03-01/gen-2024-03-01-0000.parquet")).unwrap();
        assert_eq!(bytes(a.path()), bytes(b.path()), "the same seed writes the same file");
        let file = a.path().join("posts/date=2024-03-01/gen-2024-03-01-0000.parquet");
        let index = lake::textindex::TextIndex::open(&lake::textindex::dir_for(&file)).unwrap();
        assert_eq!(index.posts().unwrap(), 3_000, "each file has its text index");

        // With deletes and takedowns: the same posts in the files, fewer in the answers.
        let config = GenerateConfig { deleted_share: 0.05, takedowns_per_day: 40, ..config };
        let c = tempfile::tempdir().unwrap();
        let report = generate(c.path(), &config).unwrap();
        assert_eq!(bytes(c.path()), bytes(a.path()), "deletes do not change the posts");
        assert!((200..400).contains(&report.deleted), "about 5% of 6,000 deleted: {}", report.deleted);
        let engine = lake::exec::Engine::open(c.path(), &lake::exec::EngineConfig::with_threads(2)).unwrap();
        let live = engine.count(&Default::default()).unwrap();
        assert!(live < 6_000 - report.deleted, "the takedowns hide posts too: {live} live");

        // With likes: the same posts, about ten interactions each, a few posts with most.
        let config = GenerateConfig { likes_per_post: 10.0, ..config };
        let d = tempfile::tempdir().unwrap();
        let report = generate(d.path(), &config).unwrap();
        assert_eq!(bytes(d.path()), bytes(a.path()), "likes do not change the posts");
        assert_eq!(report.interactions, 60_000);
        let engine = lake::exec::Engine::open(d.path(), &lake::exec::EngineConfig::with_threads(2)).unwrap();
        let newest = lake::plan::PostFilter { since_us: Some(0), ..Default::default() };
        let plan = lake::plan::RankedPostsPlan::new(lake::plan::Engagement::Likes, newest, 10, []).unwrap();
        let top: Vec<u64> = engine.ranked_posts(&plan).unwrap().into_iter().map(|(_, n)| n).collect();
        // Ten likes a post on average, less deleted posts and taken-down likers.
        assert!(top[9] > 50, "a few posts get far more likes than the average: {top:?}");
    }
}
