//! The synthetic firehose: realistic Jetstream events generated locally, so Skyglass runs with
//! no internet. Authors post at a skewed rate (a few are very active), languages follow a
//! plausible mix, texts carry hashtags, mentions, links, emoji and non-Latin scripts with
//! correct UTF-8 facet offsets, and posts reply to, quote and embed like real ones. About one
//! event in ten is a like or a repost (of recent posts, a few getting most), and one in a
//! hundred deletes an earlier post. (Bluesky has about ten likes a post; these events are
//! mostly posts, which is what the posts ingest benchmark measures.
//! [`Generator::with_likes_per_post`] makes Bluesky's mix, with a few likes undone.)

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::RawEvent;

const N_AUTHORS: usize = 20_000;
const RECENT_POSTS: usize = 2_000;
const RECENT_LIKES: usize = 2_000;
/// Of the likes and reposts in Bluesky's mix, the percentage that undo an earlier one.
const UNDONE_PERCENT: u32 = 3;

/// (language tag or none, weight, phrases). Phrases mix scripts, emoji and punctuation; a post
/// strings one to six of them together (see [`body`]), short quips and longer sentences alike.
pub(crate) const LANGUAGES: &[(Option<&str>, u32, &[&str])] = &[
    (
        Some("en"),
        45,
        &[
            "just shipped a new build",
            "coffee first, then the world",
            "what a game last night 🏀",
            "reading about lakehouses today",
            "the sky is so blue this morning ☀️",
            "anyone else watching the launch?",
            "hot take: tabs are fine",
            "I have been thinking about this all week and I still do not know what the right answer is.",
            "Finally finished the garden fence, and of course it started raining the minute I put the tools away.",
            "Thread on why the new transit plan matters more than people think, especially for the night shifts.",
            "my cat knocked the plant off the shelf again and then looked at me like it was my fault",
        ],
    ),
    (
        Some("ja"),
        18,
        &[
            "今日はいい天気ですね",
            "新しいカメラを買いました📷",
            "猫がかわいすぎる🐈",
            "ラーメン食べたい",
            "おはようございます！",
            "仕事が終わったので、これから友達と駅前の新しいカフェに行ってきます。",
            "昨日の配信を見てくれた皆さん、本当にありがとうございました！次回もよろしくお願いします。",
            "週末は久しぶりに実家に帰って、家族みんなでのんびり過ごしました。",
        ],
    ),
    (
        Some("pt"),
        10,
        &[
            "bom dia pessoal",
            "que jogo incrível ontem ⚽",
            "café e código",
            "alguém mais acordado?",
            "Hoje finalmente consegui terminar aquele projeto que estava parado há meses, que alívio.",
            "Alguém sabe se o show de sábado ainda tem ingressos? Queria muito ir com a minha irmã.",
        ],
    ),
    (
        Some("de"),
        6,
        &[
            "Guten Morgen zusammen",
            "schönes Wetter heute",
            "Kaffee ist fertig ☕",
            "Heute habe ich endlich die Steuererklärung abgeschickt und fühle mich wie ein neuer Mensch.",
            "Die Bahn hat wieder einmal Verspätung, aber wenigstens scheint die Sonne am Bahnsteig.",
        ],
    ),
    (
        Some("es"),
        5,
        &[
            "buenos días a todos",
            "qué partido tan bueno",
            "nuevo proyecto en marcha 🚀",
            "Ayer fuimos al concierto en el parque y la verdad es que fue una de las mejores noches del año.",
        ],
    ),
    (
        Some("ko"),
        4,
        &[
            "오늘 날씨 좋네요",
            "커피 한 잔 ☕",
            "새 노래 나왔어요 🎵",
            "오늘 퇴근하고 친구들이랑 오랜만에 맛있는 저녁 먹었어요. 정말 즐거운 하루였습니다.",
        ],
    ),
    (
        Some("fr"),
        3,
        &[
            "bonjour tout le monde",
            "ça avance bien aujourd'hui",
            "quelle belle journée 🌸",
            "Je viens de finir ce livre et je ne sais pas quoi penser de la fin, quelqu'un l'a déjà lu ?",
        ],
    ),
    (
        Some("ru"),
        3,
        &[
            "доброе утро всем",
            "отличная погода сегодня",
            "новый проект 🚀",
            "Сегодня наконец-то закончил ремонт на кухне, теперь можно спокойно пить чай у окна.",
        ],
    ),
    (
        Some("en-US"),
        3,
        &[
            "heading to the game tonight",
            "fall colors are here 🍂",
            "Drove three hours to see the leaves and it was worth every single minute of traffic.",
        ],
    ),
    (None, 3, &["🎉🎉🎉", "lol", "ok"]),
];

/// How many phrases a post strings together, by weight: most posts are a line or two, a
/// quarter run long. With the phrases above this averages about 120 bytes of text, as on the
/// real firehose (`../shared/data/real`).
const PHRASES_PER_POST: [(usize, u32); 6] = [(1, 26), (2, 24), (3, 20), (4, 12), (5, 10), (6, 8)];

/// A post's text in one language: one to six of its phrases.
pub(crate) fn body(rng: &mut SmallRng, phrases: &[&str]) -> String {
    let total: u32 = PHRASES_PER_POST.iter().map(|(_, weight)| weight).sum();
    let mut pick = rng.random_range(0..total);
    let mut count = 1;
    for (n, weight) in PHRASES_PER_POST {
        if pick < weight {
            count = n;
            break;
        }
        pick -= weight;
    }
    // Room is left for the mention, link and hashtags added after, within the 300-grapheme
    // limit of the lexicon (counted here in chars, which is never fewer).
    const MAX_CHARS: usize = 200;
    let mut text = String::new();
    let mut chars = 0;
    for i in 0..count {
        let phrase = phrases[rng.random_range(0..phrases.len())];
        let more = phrase.chars().count() + usize::from(i > 0);
        if i > 0 && chars + more > MAX_CHARS {
            break;
        }
        if i > 0 {
            text.push(' ');
        }
        text.push_str(phrase);
        chars += more;
    }
    text
}

/// A content identifier shaped like the firehose's: `bafyrei` (records) or `bafkrei` (blobs)
/// and 52 base32 characters, random, so it compresses as badly as a real one.
pub(crate) fn cid(rng: &mut SmallRng, prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut cid = String::with_capacity(prefix.len() + 52);
    cid.push_str(prefix);
    let mut bits = 0_u64;
    for i in 0..52 {
        if i % 12 == 0 {
            bits = rng.random();
        }
        cid.push(ALPHABET[(bits & 31) as usize] as char);
        bits >>= 5;
    }
    cid
}

pub(crate) const HASHTAGS: &[&str] = &[
    "art",
    "photography",
    "bluesky",
    "nba",
    "music",
    "gamedev",
    "rust",
    "猫",
    "wildlife",
    "news",
    "science",
    "booksky",
    "futebol",
    "日本",
    "AI",
    "climate",
    "f1",
    "kpop",
    "knitting",
    "opensource",
];

pub(crate) const DOMAINS: &[&str] = &["example.com", "news.example.org", "blog.example.net", "video.example.io"];

pub struct Generator {
    rng: SmallRng,
    authors: Vec<String>,
    recent_posts: VecDeque<String>,
    sequence: u64,
    /// Percentage of events that are likes or reposts, or (with `recent_likes`) undo one.
    likes_percent: u32,
    /// Recent likes and reposts as (did, collection, rkey), kept only when some are undone.
    recent_likes: Option<VecDeque<(String, &'static str, String)>>,
}

/// A language of [`LANGUAGES`] by its weight: its tag (if any) and its phrases.
pub(crate) fn pick_language(rng: &mut SmallRng) -> (Option<&'static str>, &'static [&'static str]) {
    let total: u32 = LANGUAGES.iter().map(|l| l.1).sum();
    let mut pick = rng.random_range(0..total);
    for (lang, weight, phrases) in LANGUAGES {
        if pick < *weight {
            return (*lang, phrases);
        }
        pick -= weight;
    }
    unreachable!("the weights cover the range")
}

pub fn did_for(index: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut n = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let id: String = (0..24)
        .map(|_| {
            let c = ALPHABET[(n % 32) as usize] as char;
            n = n.rotate_right(5) ^ 0x5bd1_e995;
            c
        })
        .collect();
    format!("did:plc:{id}")
}

/// A record key in the TID style: base32-sortable microseconds and a counter.
pub(crate) fn tid(time_us: i64, sequence: u64) -> String {
    const ALPHABET: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let value = ((time_us as u64) << 10) | (sequence & 0x3ff);
    (0..13).rev().map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char).collect()
}

/// Builds a post text and its facets; facet offsets are UTF-8 byte offsets.
struct TextBuilder {
    text: String,
    facets: Vec<Value>,
}

impl TextBuilder {
    fn push(&mut self, plain: &str) {
        self.text.push_str(plain);
    }

    fn push_facet(&mut self, shown: &str, feature: Value) {
        let start = self.text.len();
        self.text.push_str(shown);
        self.facets.push(json!({"index": {"byteStart": start, "byteEnd": self.text.len()}, "features": [feature]}));
    }
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: SmallRng::seed_from_u64(seed),
            authors: (0..N_AUTHORS).map(did_for).collect(),
            recent_posts: VecDeque::with_capacity(RECENT_POSTS),
            sequence: 0,
            likes_percent: 10,
            recent_likes: None,
        }
    }

    /// Bluesky's own mix: `likes_per_post` likes and reposts for each post (at most 98), a
    /// hundredth of the events deleting a post and 3% of the likes and reposts undoing one.
    pub fn with_likes_per_post(seed: u64, likes_per_post: u32) -> Generator {
        let likes_per_post = likes_per_post.min(98);
        // Of every 100 events, one deletes a post; the other 99 split likes_per_post : 1.
        let likes_percent = (99 * likes_per_post).div_ceil(likes_per_post + 1);
        Generator { likes_percent, recent_likes: Some(VecDeque::with_capacity(RECENT_LIKES)), ..Generator::new(seed) }
    }

    /// A skewed pick: index 0 is the most likely, with a long tail.
    fn skewed(&mut self, n: usize) -> usize {
        let u: f64 = self.rng.random();
        ((n as f64) * u.powi(3)) as usize % n
    }

    fn author(&mut self) -> String {
        let index = self.skewed(self.authors.len());
        self.authors[index].clone()
    }

    /// One Jetstream event seen at `time_us`, as a JSON line.
    pub fn event(&mut self, time_us: i64) -> String {
        self.sequence += 1;
        let roll: u32 = self.rng.random_range(0..100);
        let event = if roll < self.likes_percent {
            self.like_or_unlike(time_us)
        } else if roll < self.likes_percent + 1 && !self.recent_posts.is_empty() {
            self.delete(time_us)
        } else {
            self.post(time_us)
        };
        event.to_string()
    }

    fn commit(did: &str, time_us: i64, commit: Value) -> Value {
        json!({"did": did, "time_us": time_us, "kind": "commit", "commit": commit})
    }

    /// A like or a repost, or (when some are undone) now and then the deletion of a recent one.
    fn like_or_unlike(&mut self, time_us: i64) -> Value {
        let undone = match &self.recent_likes {
            Some(recent) if !recent.is_empty() => self.rng.random_range(0..100) < UNDONE_PERCENT,
            _ => false,
        };
        let Some(recent) = self.recent_likes.as_mut().filter(|_| undone) else {
            let (like, key) = self.like(time_us);
            if let Some(recent) = &mut self.recent_likes {
                if recent.len() == RECENT_LIKES {
                    recent.pop_front();
                }
                recent.push_back(key);
            }
            return like;
        };
        let index = self.rng.random_range(0..recent.len());
        let (did, collection, rkey) = recent.remove(index).expect("index is in range");
        Self::commit(
            &did,
            time_us,
            json!({"rev": tid(time_us, self.sequence), "operation": "delete", "collection": collection, "rkey": rkey}),
        )
    }

    /// A like (one in six a repost) of a recent post, a few of them getting most, with its key
    /// (did, collection, rkey).
    fn like(&mut self, time_us: i64) -> (Value, (String, &'static str, String)) {
        let did = self.author();
        let rkey = tid(time_us, self.sequence);
        let subject = if self.recent_posts.is_empty() {
            format!("at://{}/app.bsky.feed.post/3kaaaaaaaaaaa", did_for(1))
        } else {
            let index = self.skewed(self.recent_posts.len());
            self.recent_posts[index].clone()
        };
        let collection = if self.rng.random_range(0..6) == 0 { "app.bsky.feed.repost" } else { "app.bsky.feed.like" };
        let like = Self::commit(
            &did,
            time_us,
            json!({
                "rev": rkey, "operation": "create", "collection": collection, "rkey": rkey,
                "record": {"$type": collection, "createdAt": rfc3339(time_us), "subject": {"cid": cid(&mut self.rng, "bafyrei"), "uri": subject}},
                "cid": cid(&mut self.rng, "bafyrei")
            }),
        );
        (like, (did, collection, rkey))
    }

    fn delete(&mut self, time_us: i64) -> Value {
        let index = self.rng.random_range(0..self.recent_posts.len());
        let uri = self.recent_posts.remove(index).expect("index is in range");
        let rest = uri.trim_start_matches("at://");
        let (did, rkey) = rest.split_once("/app.bsky.feed.post/").expect("generated uris have this shape");
        Self::commit(
            did,
            time_us,
            json!({
                "rev": tid(time_us, self.sequence), "operation": "delete", "collection": "app.bsky.feed.post", "rkey": rkey
            }),
        )
    }

    fn post(&mut self, time_us: i64) -> Value {
        let did = self.author();
        let rkey = tid(time_us, self.sequence);
        let uri = format!("at://{did}/app.bsky.feed.post/{rkey}");

        let (lang, phrases) = pick_language(&mut self.rng);

        let mut text = TextBuilder { text: body(&mut self.rng, phrases), facets: Vec::new() };
        if self.rng.random_bool(0.15) {
            let mentioned = self.author();
            let handle = format!("@{}.bsky.social", &mentioned[8..14]);
            text.push(" ");
            text.push_facet(&handle, json!({"$type": "app.bsky.richtext.facet#mention", "did": mentioned}));
        }
        if self.rng.random_bool(0.12) {
            let link = format!("https://{}/p/{}", DOMAINS[self.rng.random_range(0..DOMAINS.len())], self.sequence);
            text.push(" ");
            text.push_facet(&link.clone(), json!({"$type": "app.bsky.richtext.facet#link", "uri": link}));
        }
        let n_tags = [0, 0, 0, 1, 1, 2][self.rng.random_range(0..6)];
        for _ in 0..n_tags {
            let tag = HASHTAGS[self.skewed(HASHTAGS.len())];
            text.push(" ");
            if self.rng.random_bool(0.8) {
                text.push_facet(&format!("#{tag}"), json!({"$type": "app.bsky.richtext.facet#tag", "tag": tag}));
            } else {
                // Some clients write tags without a facet.
                text.push(&format!("#{tag}"));
            }
        }

        // The client's clock: usually a little before the firehose saw the post.
        let created_us = time_us - self.rng.random_range(0..2_000_000);
        let mut record = json!({"$type": "app.bsky.feed.post", "createdAt": rfc3339(created_us), "text": text.text});
        if let Some(lang) = lang {
            record["langs"] = json!([lang]);
        }
        if !text.facets.is_empty() {
            record["facets"] = Value::Array(text.facets);
        }
        if !self.recent_posts.is_empty() && self.rng.random_bool(0.3) {
            let parent = self.recent_posts[self.rng.random_range(0..self.recent_posts.len())].clone();
            let root = self.recent_posts.back().cloned().unwrap_or_else(|| parent.clone());
            let (parent_cid, root_cid) = (cid(&mut self.rng, "bafyrei"), cid(&mut self.rng, "bafyrei"));
            record["reply"] =
                json!({"parent": {"uri": parent, "cid": parent_cid}, "root": {"uri": root, "cid": root_cid}});
        }
        let embed_roll: u32 = self.rng.random_range(0..100);
        let quoted = self.recent_posts.front().cloned();
        let blob = |rng: &mut SmallRng, mime: &str| json!({"$type": "blob", "ref": {"$link": cid(rng, "bafkrei")}, "mimeType": mime, "size": rng.random_range(20_000..900_000)});
        let images = |rng: &mut SmallRng, n: usize| -> Value {
            Value::Array(
                (0..n)
                    .map(|_| {
                        json!({"alt": "", "aspectRatio": {"height": 1536, "width": 2048}, "image": blob(rng, "image/jpeg")})
                    })
                    .collect(),
            )
        };
        let quoted_cid = cid(&mut self.rng, "bafyrei");
        let embed = match (embed_roll, quoted) {
            (0..20, _) => {
                let n = self.rng.random_range(1..=4);
                Some(json!({"$type": "app.bsky.embed.images", "images": images(&mut self.rng, n)}))
            }
            (20..28, _) => Some(
                json!({"$type": "app.bsky.embed.external", "external": {"uri": format!("https://{}/a/{}", DOMAINS[0], self.sequence),
                    "title": "What the new transit plan means for the night shifts", "description": "A look at the city's plan.",
                    "thumb": blob(&mut self.rng, "image/jpeg")}}),
            ),
            (28..31, _) => Some(
                json!({"$type": "app.bsky.embed.video", "video": blob(&mut self.rng, "video/mp4"), "aspectRatio": {"height": 1920, "width": 1080}}),
            ),
            (31..36, Some(quoted)) => {
                Some(json!({"$type": "app.bsky.embed.record", "record": {"uri": quoted, "cid": quoted_cid}}))
            }
            (36..38, Some(quoted)) => Some(json!({"$type": "app.bsky.embed.recordWithMedia",
                "record": {"$type": "app.bsky.embed.record", "record": {"uri": quoted, "cid": quoted_cid}},
                "media": {"$type": "app.bsky.embed.images", "images": images(&mut self.rng, 1)}})),
            _ => None,
        };
        if let Some(embed) = embed {
            record["embed"] = embed;
        }

        if self.recent_posts.len() == RECENT_POSTS {
            self.recent_posts.pop_front();
        }
        self.recent_posts.push_back(uri);
        Self::commit(
            &did,
            time_us,
            json!({
                "rev": rkey, "operation": "create", "collection": "app.bsky.feed.post", "rkey": rkey,
                "record": record, "cid": cid(&mut self.rng, "bafyrei")
            }),
        )
    }
}

fn rfc3339(time_us: i64) -> String {
    DateTime::from_timestamp_micros(time_us).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Emits `events_per_sec` events per second, stamped with the current time, until stopped.
pub async fn run(
    events_per_sec: u32,
    events: mpsc::Sender<RawEvent>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut generator = Generator::new(chrono::Utc::now().timestamp_micros() as u64);
    let tick = Duration::from_millis(100);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owed = 0.0_f64;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return Ok(());
        }
        owed += f64::from(events_per_sec) * tick.as_secs_f64();
        while owed >= 1.0 {
            owed -= 1.0;
            let line = generator.event(chrono::Utc::now().timestamp_micros());
            if events.send(line.into_bytes()).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, decode};

    #[test]
    fn generated_events_decode_without_drops_and_look_like_the_firehose() {
        let mut generator = Generator::new(7);
        let (mut posts, mut langs, mut replies, mut tagged, mut images, mut non_latin) =
            (Vec::new(), std::collections::HashSet::new(), 0, 0, 0, 0);
        let mut authors = std::collections::HashMap::<String, usize>::new();
        for i in 0..5_000 {
            match decode(generator.event(1_780_000_000_000_000 + i * 1000).as_bytes()) {
                Decoded::Post(post) => posts.push(*post),
                Decoded::Drop(drop) => panic!("synthetic event dropped: {drop:?}"),
                _ => {}
            }
        }
        for post in &posts {
            langs.extend(post.langs.iter().cloned());
            replies += usize::from(post.reply_parent.is_some());
            tagged += usize::from(!post.hashtags.is_empty());
            images += usize::from(post.image_count > 0);
            non_latin += usize::from(post.text.chars().any(|c| c as u32 > 0x2000));
            *authors.entry(post.did.clone()).or_default() += 1;
        }
        let n = posts.len();
        assert!(n > 4_000, "{n} posts");
        assert!(langs.len() >= 8, "{langs:?}");
        assert!(
            replies * 100 / n >= 20 && tagged * 100 / n >= 20 && images * 100 / n >= 10,
            "{replies} {tagged} {images}"
        );
        assert!(non_latin * 100 / n >= 20);
        let most_active = authors.values().max().copied().unwrap_or(0);
        assert!(most_active >= 20, "author activity is not skewed: max {most_active}");
    }

    /// Real posts average well over 100 bytes of text and about 800 bytes of event
    /// (`../shared/data/real`); decoding, language detection and storage all grow with both, so
    /// the benchmarks are only honest if the synthetic firehose matches.
    #[test]
    fn texts_and_events_are_as_long_as_real_ones() {
        let mut generator = Generator::new(3);
        let (mut posts, mut text_bytes, mut event_bytes, mut longest) = (0, 0, 0, 0);
        for i in 0..5_000 {
            let line = generator.event(1_780_000_000_000_000 + i * 1000);
            if let Decoded::Post(post) = decode(line.as_bytes()) {
                posts += 1;
                text_bytes += post.text.len();
                event_bytes += line.len();
                longest = longest.max(post.text.chars().count());
            }
        }
        let (text_mean, event_mean) = (text_bytes / posts, event_bytes / posts);
        assert!((100..=180).contains(&text_mean), "mean text {text_mean} bytes");
        assert!((650..=1_000).contains(&event_mean), "mean post event {event_mean} bytes");
        assert!(longest <= 300, "a text of {longest} graphemes is over the lexicon limit");
    }

    #[test]
    fn bluesky_s_mix_has_ten_likes_a_post_and_undoes_only_likes_it_made() {
        let mut generator = Generator::with_likes_per_post(5, 10);
        let (mut posts, mut post_deletes, mut reposts) = (0_usize, 0_usize, 0_usize);
        let mut live = std::collections::HashSet::new();
        let mut likes_and_reposts = 0_usize;
        let mut undone = 0_usize;
        for i in 0..50_000 {
            match decode(generator.event(1_780_000_000_000_000 + i * 1000).as_bytes()) {
                Decoded::Post(_) => posts += 1,
                Decoded::PostDelete(_) => post_deletes += 1,
                Decoded::Interaction(like) => {
                    likes_and_reposts += 1;
                    reposts += usize::from(like.kind == lake::model::InteractionKind::Repost);
                    live.insert((like.did, like.kind, like.rkey));
                }
                Decoded::InteractionDelete(unlike) => {
                    undone += 1;
                    assert!(live.remove(&(unlike.did, unlike.kind, unlike.rkey)), "an unlike of a like never made");
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
        let per_post = likes_and_reposts as f64 / posts as f64;
        assert!((9.0..=11.0).contains(&per_post), "{per_post:.1} likes and reposts a post");
        assert!((300..=700).contains(&post_deletes), "{post_deletes} post deletes in 50,000 events");
        let undone_percent = undone as f64 * 100.0 / likes_and_reposts as f64;
        assert!((2.0..=4.0).contains(&undone_percent), "{undone_percent:.1}% undone");
        let repost_percent = reposts as f64 * 100.0 / likes_and_reposts as f64;
        assert!((12.0..=22.0).contains(&repost_percent), "{repost_percent:.1}% reposts");
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let (mut a, mut b) = (Generator::new(1), Generator::new(1));
        for i in 0..100 {
            assert_eq!(a.event(i), b.event(i));
        }
    }
}
