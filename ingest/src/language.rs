//! The `detected_lang` enrichment: the language of a post's text as a BCP 47 primary tag
//! (`en`, `ja`, `pt`), detected from the words alone (links, mentions and hashtags removed),
//! or `None` when the text is too short or the detector is not confident. The record's own
//! `langs` (what the author's client declared) stay as given; the two often differ.

use lake::model::Post;
use whatlang::{Lang, Script};

/// Fewer letters than this carry too little signal to classify.
pub const MIN_LETTERS: usize = 12;
/// Below this confidence, no language is recorded. whatlang's confidence (0 to 1) is the
/// margin of the best language over the runner-up, so close relatives score low even when
/// right (measured: a clear Russian sentence 0.02, against Ukrainian); the threshold drops only
/// near ties, and [`MIN_LETTERS`] does most of the filtering.
pub const MIN_CONFIDENCE: f64 = 0.01;

/// Fills `detected_lang` of every post that has none, on every core: detection costs about
/// 50 µs a post (whatlang's trigram models), the largest single cost of a flush.
pub fn detect_all(posts: &mut [Post]) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = posts.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for part in posts.chunks_mut(chunk) {
            scope.spawn(move || {
                for post in part.iter_mut().filter(|p| p.detected_lang.is_none()) {
                    post.detected_lang = detect(&post.text).map(str::to_owned);
                }
            });
        }
    });
}

/// The language of `text`, if it can be told with confidence.
pub fn detect(text: &str) -> Option<&'static str> {
    let words: String = text
        .split_whitespace()
        .filter(|w| !(w.starts_with('#') || w.starts_with('@') || w.starts_with("http") || w.contains("://")))
        .collect::<Vec<_>>()
        .join(" ");
    if words.chars().filter(|c| c.is_alphabetic()).count() < MIN_LETTERS {
        return None;
    }
    // Scripts written in one language only need no trigram models (a hundred times faster).
    let single = match whatlang::detect_script(&words)? {
        Script::Hiragana | Script::Katakana => Some(Lang::Jpn),
        Script::Hangul => Some(Lang::Kor),
        Script::Greek => Some(Lang::Ell),
        Script::Georgian => Some(Lang::Kat),
        Script::Armenian => Some(Lang::Hye),
        Script::Thai => Some(Lang::Tha),
        _ => None,
    };
    if let Some(lang) = single {
        return Some(tag(lang));
    }
    let info = whatlang::detect(&words)?;
    if info.confidence() < MIN_CONFIDENCE {
        return None;
    }
    Some(tag(info.lang()))
}

/// ISO 639-1, as BCP 47 prefers (every language whatlang knows has one).
fn tag(lang: Lang) -> &'static str {
    match lang {
        Lang::Eng => "en",
        Lang::Rus => "ru",
        Lang::Cmn => "zh",
        Lang::Spa => "es",
        Lang::Por => "pt",
        Lang::Ita => "it",
        Lang::Ben => "bn",
        Lang::Fra => "fr",
        Lang::Deu => "de",
        Lang::Ukr => "uk",
        Lang::Kat => "ka",
        Lang::Ara => "ar",
        Lang::Hin => "hi",
        Lang::Jpn => "ja",
        Lang::Heb => "he",
        Lang::Yid => "yi",
        Lang::Pol => "pl",
        Lang::Amh => "am",
        Lang::Jav => "jv",
        Lang::Kor => "ko",
        Lang::Nob => "nb",
        Lang::Dan => "da",
        Lang::Swe => "sv",
        Lang::Fin => "fi",
        Lang::Tur => "tr",
        Lang::Nld => "nl",
        Lang::Hun => "hu",
        Lang::Ces => "cs",
        Lang::Ell => "el",
        Lang::Bul => "bg",
        Lang::Bel => "be",
        Lang::Mar => "mr",
        Lang::Kan => "kn",
        Lang::Ron => "ro",
        Lang::Slv => "sl",
        Lang::Hrv => "hr",
        Lang::Srp => "sr",
        Lang::Mkd => "mk",
        Lang::Lit => "lt",
        Lang::Lav => "lv",
        Lang::Est => "et",
        Lang::Tam => "ta",
        Lang::Vie => "vi",
        Lang::Urd => "ur",
        Lang::Tha => "th",
        Lang::Guj => "gu",
        Lang::Uzb => "uz",
        Lang::Pan => "pa",
        Lang::Aze => "az",
        Lang::Ind => "id",
        Lang::Tel => "te",
        Lang::Pes => "fa",
        Lang::Mal => "ml",
        Lang::Ori => "or",
        Lang::Mya => "my",
        Lang::Nep => "ne",
        Lang::Sin => "si",
        Lang::Khm => "km",
        Lang::Tuk => "tk",
        Lang::Aka => "ak",
        Lang::Zul => "zu",
        Lang::Sna => "sn",
        Lang::Afr => "af",
        Lang::Lat => "la",
        Lang::Slk => "sk",
        Lang::Cat => "ca",
        Lang::Tgl => "tl",
        Lang::Hye => "hy",
        Lang::Cym => "cy",
        Lang::Epo => "eo",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_texts_get_their_language_and_short_or_noisy_ones_none() {
        let cases = [
            ("The weather is lovely this morning, going for a long walk in the park", Some("en")),
            ("今日はとても良い天気なので、公園を散歩しに行きました", Some("ja")),
            ("Bom dia a todos, hoje o dia está lindo e vamos para a praia", Some("pt")),
            ("Доброе утро всем, сегодня отличная погода для прогулки", Some("ru")),
            ("Guten Morgen zusammen, heute ist wirklich schönes Wetter draußen", Some("de")),
            ("lol ok", None),
            ("🎉🎉🎉 #party @friend.bsky.social https://example.com/a/very/long/link", None),
        ];
        for (text, expected) in cases {
            assert_eq!(detect(text), expected, "{text}");
        }
    }

    #[test]
    fn every_tag_is_lower_case_ascii() {
        for lang in Lang::all() {
            let tag = tag(*lang);
            assert!((2..=3).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_lowercase()), "{lang:?}: {tag}");
        }
    }
}
