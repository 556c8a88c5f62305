use super::*;
use proptest::prelude::*;
use serde_json::json;

const TIME_US: i64 = 1_779_719_009_157_119; // 2026-05-25T14:23:29.157119Z

fn post_event(record: Value) -> Vec<u8> {
    json!({
        "did": "did:plc:q235v55g5unth4zjjdpacfdr", "time_us": TIME_US, "kind": "commit",
        "commit": {"rev": "3mmoojpaqkn2z", "operation": "create", "collection": "app.bsky.feed.post",
                   "rkey": "3mmoojp4cd223", "record": record, "cid": "bafyreicl7rzkx"}
    })
    .to_string()
    .into_bytes()
}

fn decode_post(line: &[u8]) -> Post {
    match decode(line) {
        Decoded::Post(post) => *post,
        other => panic!("expected a post, got {other:?}"),
    }
}

fn reason(line: &[u8]) -> DropReason {
    match decode(line) {
        Decoded::Drop(drop) => drop.reason,
        other => panic!("expected a drop, got {other:?}"),
    }
}

#[test]
fn a_reply_post_with_multibyte_text_and_facets_becomes_a_full_row() {
    // "Ça va? 日本 #猫 @bob.test" — facet offsets below are UTF-8 byte offsets.
    let text = "Ça va? 日本 #猫 @bob.test";
    let tag_start = text.find("#猫").unwrap();
    let mention_start = text.find("@bob").unwrap();
    let line = post_event(json!({
        "$type": "app.bsky.feed.post", "createdAt": "2026-05-25T14:23:28.757Z", "langs": ["fr", "ja"],
        "text": text,
        "facets": [
            {"index": {"byteStart": tag_start, "byteEnd": tag_start + 4},
             "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "猫"}]},
            {"index": {"byteStart": mention_start, "byteEnd": text.len()},
             "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:bob"}]}
        ],
        "reply": {"parent": {"cid": "c1", "uri": "at://did:plc:p/app.bsky.feed.post/parent"},
                  "root": {"cid": "c2", "uri": "at://did:plc:r/app.bsky.feed.post/root"}},
        "labels": {"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "nudity"}]}
    }));
    let post = decode_post(&line);
    assert_eq!(post.uri, "at://did:plc:q235v55g5unth4zjjdpacfdr/app.bsky.feed.post/3mmoojp4cd223");
    assert_eq!(post.did, "did:plc:q235v55g5unth4zjjdpacfdr");
    assert_eq!(post.cid, "bafyreicl7rzkx");
    assert_eq!(post.created_at_us, 1_779_719_008_757_000);
    assert_eq!(post.indexed_at_us, TIME_US);
    assert!(!post.created_at_clamped);
    assert_eq!(post.langs, vec!["fr", "ja"]);
    assert_eq!(post.hashtags, vec!["猫"]);
    assert_eq!(post.mentions, vec!["did:plc:bob"]);
    assert_eq!(post.reply_parent.as_deref(), Some("at://did:plc:p/app.bsky.feed.post/parent"));
    assert_eq!(post.reply_root.as_deref(), Some("at://did:plc:r/app.bsky.feed.post/root"));
    assert_eq!(post.labels, vec!["nudity"]);
    assert_eq!(post.text_len as usize, text.len());
    assert_eq!(post.embed_type, EmbedType::None);
}

#[test]
fn embeds_are_classified_with_their_counts_and_targets() {
    let images = post_event(json!({"text": "", "createdAt": "2026-05-25T14:23:28Z",
        "embed": {"$type": "app.bsky.embed.images", "images": [{"alt": ""}, {"alt": ""}]}}));
    let post = decode_post(&images);
    assert_eq!((post.embed_type, post.image_count), (EmbedType::Images, 2));

    let quote = post_event(json!({"text": "q", "createdAt": "2026-05-25T14:23:28Z",
        "embed": {"$type": "app.bsky.embed.recordWithMedia",
                  "record": {"$type": "app.bsky.embed.record", "record": {"uri": "at://did:plc:x/app.bsky.feed.post/q", "cid": "c"}},
                  "media": {"$type": "app.bsky.embed.images", "images": [{"alt": ""}]}}}));
    let post = decode_post(&quote);
    assert_eq!(post.embed_type, EmbedType::RecordWithMedia);
    assert_eq!(post.quote_uri.as_deref(), Some("at://did:plc:x/app.bsky.feed.post/q"));
    assert_eq!(post.image_count, 1);

    let link = post_event(json!({"text": "", "createdAt": "2026-05-25T14:23:28Z",
        "embed": {"$type": "app.bsky.embed.external", "external": {"uri": "https://example.com", "title": "t"}}}));
    assert_eq!(decode_post(&link).external_uri.as_deref(), Some("https://example.com"));

    let unknown = post_event(json!({"text": "", "createdAt": "2026-05-25T14:23:28Z",
        "embed": {"$type": "app.bsky.embed.hologram"}}));
    assert_eq!(reason(&unknown), DropReason::UnknownEmbed);
}

#[test]
fn a_malformed_line_is_dropped_as_invalid_json() {
    assert_eq!(reason(b"{\"did\": \"did:plc:x\", \"time_us\": 1"), DropReason::InvalidJson);
    assert_eq!(reason(b"[1,2,3]"), DropReason::InvalidJson);
    assert_eq!(reason(b""), DropReason::InvalidJson);
}

#[test]
fn events_missing_what_they_need_are_dropped_with_the_field_named() {
    let no_text = post_event(json!({"createdAt": "2026-05-25T14:23:28Z"}));
    match decode(&no_text) {
        Decoded::Drop(drop) => {
            assert_eq!((drop.reason, drop.detail.as_str()), (DropReason::MissingField, "record.text"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reason(br#"{"time_us": 1, "kind": "commit"}"#), DropReason::MissingField);
    assert_eq!(reason(br#"{"did": "bob", "time_us": 1, "kind": "commit"}"#), DropReason::BadDid);
    assert_eq!(reason(br#"{"did": "did:plc:a", "time_us": 1, "kind": "party"}"#), DropReason::UnknownKind);
}

#[test]
fn a_non_post_collection_is_counted_as_other() {
    let follow = br#"{"did":"did:plc:mcc5","time_us":1779719009132431,"kind":"commit","commit":{"rev":"r","operation":"create","collection":"app.bsky.graph.follow","rkey":"3mmoojp7etg2g","record":{"$type":"app.bsky.graph.follow","subject":"did:plc:x"},"cid":"c"}}"#;
    assert_eq!(decode(follow), Decoded::Other { kind: OtherKind::OtherCollection, time_us: 1_779_719_009_132_431 });
}

fn interaction_event(operation: &str, collection: &str, record: Option<Value>) -> Vec<u8> {
    let mut line = json!({"did": "did:plc:mcc5yghbk7tixqryac2yxku7", "time_us": TIME_US, "kind": "commit",
        "commit": {"rev": "3mmoojp7vgo2g", "operation": operation, "collection": collection, "rkey": "3mmoojp7etg2g",
                   "cid": "bafyreidqpc7si"}});
    if let Some(record) = record {
        line["commit"]["record"] = record;
    }
    line.to_string().into_bytes()
}

#[test]
fn likes_and_reposts_of_posts_become_interactions_and_their_deletes_take_them_back() {
    let subject = "at://did:plc:vfnmgxg2yscfliemmcxzyfyh/app.bsky.feed.post/3mmoodizfwc2j";
    let record = |kind: &str, uri: Value| json!({"$type": kind, "createdAt": "2026-05-25T14:23:28.778Z", "subject": {"cid": "bafyreiaxf7", "uri": uri}});
    let like = interaction_event("create", "app.bsky.feed.like", Some(record("app.bsky.feed.like", json!(subject))));
    let expected = Interaction {
        did: "did:plc:mcc5yghbk7tixqryac2yxku7".into(),
        kind: InteractionKind::Like,
        rkey: "3mmoojp7etg2g".into(),
        subject_did: "did:plc:vfnmgxg2yscfliemmcxzyfyh".into(),
        subject_rkey: "3mmoodizfwc2j".into(),
        created_at_us: 1_779_719_008_778_000,
        indexed_at_us: TIME_US,
    };
    assert_eq!(decode(&like), Decoded::Interaction(expected.clone()));
    let repost =
        interaction_event("create", "app.bsky.feed.repost", Some(record("app.bsky.feed.repost", json!(subject))));
    assert_eq!(
        decode(&repost),
        Decoded::Interaction(Interaction { kind: InteractionKind::Repost, ..expected.clone() })
    );
    let unlike = interaction_event("delete", "app.bsky.feed.like", None);
    let taken_back = InteractionDelete {
        did: expected.did.clone(),
        kind: InteractionKind::Like,
        rkey: expected.rkey.clone(),
        deleted_at_us: TIME_US,
    };
    assert_eq!(decode(&unlike), Decoded::InteractionDelete(taken_back));
    // A like of a feed generator is counted, not stored; a subject that is no record's uri is
    // dropped, as is a like without one.
    let feed = "at://did:plc:vfnmgxg2yscfliemmcxzyfyh/app.bsky.feed.generator/whats-hot";
    let of_feed = interaction_event("create", "app.bsky.feed.like", Some(record("app.bsky.feed.like", json!(feed))));
    assert_eq!(decode(&of_feed), Decoded::Other { kind: OtherKind::OtherSubject, time_us: TIME_US });
    for bad in ["at://x", "https://bsky.app/post/1", "at://did:plc:a/app.bsky.feed.post/../x", "at://did:plc:a/post/3k"]
    {
        let line = interaction_event("create", "app.bsky.feed.like", Some(record("app.bsky.feed.like", json!(bad))));
        assert_eq!(reason(&line), DropReason::BadSubject, "{bad}");
    }
    let no_subject =
        interaction_event("create", "app.bsky.feed.like", Some(json!({"createdAt": "2026-05-25T14:23:28Z"})));
    assert_eq!(reason(&no_subject), DropReason::MissingField);
    let no_uri = interaction_event("create", "app.bsky.feed.like", Some(json!({"subject": {"cid": "c"}})));
    assert_eq!(reason(&no_uri), DropReason::MissingField);
    assert_eq!(reason(&interaction_event("create", "app.bsky.feed.repost", None)), DropReason::MissingField);
    // A clock far off is clamped to the event's, as a post's is.
    let mut skewed = record("app.bsky.feed.like", json!(subject));
    skewed["createdAt"] = json!("2999-01-01T00:00:00Z");
    let line = interaction_event("create", "app.bsky.feed.like", Some(skewed));
    assert!(matches!(decode(&line), Decoded::Interaction(i) if i.created_at_us == TIME_US));
    let update = interaction_event("update", "app.bsky.feed.like", Some(record("app.bsky.feed.like", json!(subject))));
    assert_eq!(decode(&update), Decoded::Other { kind: OtherKind::OtherCollection, time_us: TIME_US });
}

#[test]
fn identity_and_account_events_become_account_rows() {
    let event = |handle: Option<&str>, active: Option<bool>, status: Option<&str>| {
        Decoded::Account(AccountEvent {
            did: "did:plc:mcc5".into(),
            seen_at_us: 5,
            handle: handle.map(str::to_owned),
            active,
            status: status.map(str::to_owned),
        })
    };
    let identity = br#"{"did":"did:plc:mcc5","time_us":5,"kind":"identity","identity":{"did":"did:plc:mcc5","handle":"Alice.Bsky.Social","seq":1,"time":"t"}}"#;
    assert_eq!(decode(identity), event(Some("alice.bsky.social"), None, None));
    let no_handle =
        br#"{"did":"did:plc:mcc5","time_us":5,"kind":"identity","identity":{"did":"did:plc:mcc5","seq":1,"time":"t"}}"#;
    assert_eq!(decode(no_handle), event(None, None, None));
    let takedown = br#"{"did":"did:plc:mcc5","time_us":5,"kind":"account","account":{"active":false,"did":"did:plc:mcc5","seq":2,"status":"takendown","time":"t"}}"#;
    assert_eq!(decode(takedown), event(None, Some(false), Some("takendown")));
    let back = br#"{"did":"did:plc:mcc5","time_us":5,"kind":"account","account":{"active":true,"did":"did:plc:mcc5","seq":3,"time":"t"}}"#;
    assert_eq!(decode(back), event(None, Some(true), None));

    let bad_handle = br#"{"did":"did:plc:mcc5","time_us":5,"kind":"identity","identity":{"handle":"no spaces.test"}}"#;
    assert_eq!(reason(bad_handle), DropReason::BadHandle);
    let no_active = br#"{"did":"did:plc:mcc5","time_us":5,"kind":"account","account":{"status":"deleted"}}"#;
    assert_eq!(reason(no_active), DropReason::MissingField);
    assert_eq!(reason(br#"{"did":"did:plc:mcc5","time_us":5,"kind":"identity"}"#), DropReason::MissingField);
}

#[test]
fn a_post_delete_names_the_deleted_uri() {
    let delete = br#"{"did":"did:plc:abc","time_us":7,"kind":"commit","commit":{"rev":"r","operation":"delete","collection":"app.bsky.feed.post","rkey":"3k2"}}"#;
    assert_eq!(
        decode(delete),
        Decoded::PostDelete(Delete {
            uri: "at://did:plc:abc/app.bsky.feed.post/3k2".into(),
            did: "did:plc:abc".into(),
            deleted_at_us: 7
        })
    );
}

#[test]
fn text_over_the_lexicon_limit_is_dropped() {
    let long = post_event(json!({"text": "a".repeat(MAX_TEXT_BYTES + 1), "createdAt": "2026-05-25T14:23:28Z"}));
    assert_eq!(reason(&long), DropReason::TextTooLong);
    let at_limit = post_event(json!({"text": "a".repeat(MAX_TEXT_BYTES), "createdAt": "2026-05-25T14:23:28Z"}));
    decode_post(&at_limit);
}

#[test]
fn an_absurd_or_unparseable_clock_is_clamped_to_the_event_time_not_dropped() {
    for created_at in ["1970-01-01T00:00:00Z", "2099-01-01T00:00:00Z", "yesterday", ""] {
        let post = decode_post(&post_event(json!({"text": "t", "createdAt": created_at})));
        assert_eq!((post.created_at_us, post.created_at_clamped), (TIME_US, true), "{created_at}");
    }
    let with_offset = decode_post(&post_event(json!({"text": "t", "createdAt": "2026-05-25T16:23:28+02:00"})));
    assert_eq!(with_offset.created_at_us, 1_779_719_008_000_000);
}

fn real_lines() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/real");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut lines = Vec::new();
    for entry in entries.flatten() {
        if entry.path().extension().is_some_and(|e| e == "jsonl") {
            let body = std::fs::read(entry.path()).unwrap();
            lines.extend(body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
        }
    }
    lines
}

#[test]
fn parts_of_the_wrong_type_count_as_absent_on_either_path() {
    let record = json!({"text": "hi #there", "createdAt": "2026-05-25T14:23:28Z",
        "reply": {"root": {"uri": "at://a/b/c"}, "parent": {"uri": 5}},
        "labels": {"values": [{"val": "porn"}, "nsfw", {"val": ["x"]}]},
        "embed": {"$type": "app.bsky.embed.recordWithMedia", "record": {"record": {"uri": 7}},
                  "media": {"$type": "app.bsky.embed.images", "images": "three"}},
        "facets": [{"index": {"byteStart": "0", "byteEnd": 3}, "features": [{"$type": "app.bsky.richtext.facet#tag"}]},
                   {"index": {"byteStart": 0, "byteEnd": 2}, "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://x.org"}, 3]},
                   "junk"]});
    let line = post_event(record);
    assert!(fast::decode_commit(&line).is_none(), "the strict path leaves such an event to the lenient one");
    let post = decode_post(&line);
    assert_eq!(decode_value(&line), Decoded::Post(Box::new(post.clone())));
    assert_eq!((post.reply_root.as_deref(), post.reply_parent.as_deref()), (Some("at://a/b/c"), None));
    assert_eq!(post.labels, vec!["porn"]);
    assert_eq!((post.embed_type, post.image_count, post.quote_uri.as_deref()), (EmbedType::RecordWithMedia, 0, None));
    assert_eq!((post.hashtags, post.links), (vec!["there".to_owned()], vec!["https://x.org".to_owned()]));
}

#[test]
fn commits_of_every_kind_take_the_fast_path_and_decode_as_the_value_path_does() {
    let commit = |operation: &str, collection: &str, rkey: Value, record: Option<Value>| {
        let mut line = json!({"did": "did:plc:q235v55g5unth4zjjdpacfdr", "time_us": TIME_US, "kind": "commit",
            "commit": {"rev": "3m", "operation": operation, "collection": collection, "rkey": rkey, "cid": "bafy"}});
        if let Some(record) = record {
            line["commit"]["record"] = record;
        }
        line.to_string().into_bytes()
    };
    let like = json!({"$type": "app.bsky.feed.like", "subject": {"uri": "at://did:plc:a/app.bsky.feed.post/3j", "cid": "y"}, "createdAt": "2026-05-25T14:23:28Z"});
    let bad_like = json!({"$type": "app.bsky.feed.like", "subject": {"uri": "at://x", "cid": "y"}});
    let feed_like = json!({"subject": {"uri": "at://did:plc:a/app.bsky.feed.generator/x", "cid": "y"}});
    let profile = json!({"displayName": "A", "labels": {"values": [{"val": "x"}]}, "embed": 5});
    let post = json!({"text": "hi"});
    let fast = [
        (commit("create", "app.bsky.feed.like", json!("3k"), Some(like.clone())), "like"),
        (commit("create", "app.bsky.feed.repost", json!("3k"), Some(like.clone())), "repost"),
        (commit("create", "app.bsky.feed.like", json!("3k"), Some(bad_like)), "bad subject"),
        (commit("create", "app.bsky.feed.like", json!("3k"), Some(feed_like)), "other subject"),
        (commit("create", "app.bsky.feed.like", json!("3k"), None), "no record"),
        (commit("delete", "app.bsky.feed.like", json!("3k"), None), "unlike"),
        (
            commit("create", "app.bsky.graph.follow", json!("3k"), Some(json!({"subject": "did:plc:b"}))),
            "other_collection",
        ),
        (commit("delete", POST_COLLECTION, json!("3k"), None), "delete"),
        (commit("update", POST_COLLECTION, json!("3k"), Some(post.clone())), "post_update"),
        (commit("create", POST_COLLECTION, json!("3k"), Some(post.clone())), "post"),
    ];
    for (line, what) in fast {
        let decoded = fast::decode_commit(&line).unwrap_or_else(|| panic!("{what} took the slow path"));
        assert_eq!(decoded, decode_value(&line), "{what}");
    }
    // Odd shapes go the lenient way, which decides as before.
    let slow = [
        commit("create", "app.bsky.actor.profile", json!("self"), Some(profile)),
        commit("delete", POST_COLLECTION, json!("../x"), None),
        commit("create", POST_COLLECTION, json!("3k"), Some(json!({"langs": ["en"]}))),
        commit("erase", "app.bsky.feed.like", json!("3k"), Some(like)),
    ];
    for line in slow {
        assert!(fast::decode_commit(&line).is_none());
        assert_eq!(decode(&line), decode_value(&line));
    }
    assert!(
        matches!(decode(&commit("delete", POST_COLLECTION, json!("../x"), None)), Decoded::Drop(d) if d.reason == DropReason::BadRkey)
    );
}

proptest! {
    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_events(index in any::<prop::sample::Index>(), position in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut lines = real_lines();
        lines.push(post_event(json!({"text": "日本 #猫", "createdAt": "2026-05-25T14:23:28Z",
            "facets": [{"index": {"byteStart": 1, "byteEnd": 99}, "features": [{"$type": "app.bsky.richtext.facet#tag"}]}]})));
        let mut line = lines[index.index(lines.len())].clone();
        let at = position.index(line.len());
        if cut { line.truncate(at) } else { line[at] = byte }
        let decoded = decode(&line);
        // Where the fast path decodes, the Value path says the same.
        if let Some(fast) = fast::decode_commit(&line) {
            prop_assert_eq!(&fast, &decode_value(&line));
            prop_assert_eq!(&fast, &decoded);
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_value_path(text in "\\PC{0,40}", created in prop::option::of("[0-9T:Z.-]{0,24}"), langs in prop::option::of(prop::collection::vec("[a-z]{2}", 0..3)), reply in any::<bool>(), labels in any::<bool>(), null_cid in any::<bool>()) {
        let mut record = json!({"text": text, "facets": [{"index": {"byteStart": 0, "byteEnd": 3}, "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "x"}]}]});
        if let Some(created) = created { record["createdAt"] = json!(created); }
        if let Some(langs) = langs { record["langs"] = json!(langs); }
        if reply { record["reply"] = json!({"root": {"uri": "at://a/b/c"}, "parent": {"uri": "at://a/b/d", "cid": "x"}}); }
        if labels { record["labels"] = json!({"values": [{"val": "porn"}, {"x": 1}]}); }
        let mut line: Value = serde_json::from_slice(&post_event(record)).unwrap();
        if null_cid { line["commit"]["cid"] = Value::Null; }
        let line = line.to_string().into_bytes();
        let value = decode_value(&line);
        match fast::decode_commit(&line) {
            Some(fast) => prop_assert_eq!(fast, value),
            None => prop_assert!(null_cid, "a well-formed post create took the slow path: {value:?}"),
        }
    }
}
