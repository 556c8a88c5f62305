//! Who may ask what: API keys with roles, anonymous reading, introspection, and the
//! persisted-query allow-list.
//!
//! A key is sent as `Authorization: Bearer KEY` or `X-Api-Key: KEY` (over the websocket, in the
//! `connection_init` payload as `authorization` or `apiKey`). Keys live in a TOML file of
//! `[[key]]` tables (`name`, `role`, `sha256`) written by `skyglass keys add`: only their
//! SHA-256 is kept, and a presented key is compared with every stored hash in constant time.
//! `--admin-token` is one more admin key. Roles: `reader` reads; `admin` also runs mutations,
//! lists exports, introspects when introspection is off for others, and sends documents outside
//! the allow-list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use async_graphql::ServerResult;
use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a caller may do, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// No key (only when anonymous reading is on).
    #[default]
    Anonymous,
    Reader,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Anonymous => "anonymous",
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

/// Who sent a request, as the HTTP layer established it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller {
    pub role: Role,
    /// Whose cost budget the request spends: its key's, else its address's.
    pub client: crate::throttle::Client,
}

impl Caller {
    pub fn is_admin(self) -> bool {
        self.role == Role::Admin
    }
}

/// Why a request was turned away before it ran (HTTP 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A key was sent that no stored hash matches.
    UnknownKey,
    /// No key was sent and anonymous reading is off.
    KeyNeeded,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::UnknownKey => "the API key is not known",
            Refusal::KeyNeeded => "this server needs an API key: send `Authorization: Bearer KEY` or `X-Api-Key: KEY`",
        }
    }
}

/// One stored key: its name, role and SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    pub name: String,
    pub role: Role,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    key: Vec<StoredKey>,
}

/// Reads a keys file; a missing file has no keys.
pub fn read_keys(path: &Path) -> anyhow::Result<Vec<StoredKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("failed to read the keys file {}", path.display())),
    };
    let file: KeysFile = toml::from_str(&text)
        .map_err(|error| anyhow::anyhow!("keys file {}: {}", path.display(), error.message().replace('\n', " ")))?;
    for key in &file.key {
        anyhow::ensure!(
            key.sha256.len() == 64 && key.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "keys file {}: key `{}`: `sha256` must be 64 hex digits",
            path.display(),
            key.name
        );
        anyhow::ensure!(
            key.role != Role::Anonymous,
            "keys file {}: key `{}`: role must be reader or admin",
            path.display(),
            key.name
        );
    }
    Ok(file.key)
}

/// Adds a new key named `name` to the keys file (created, readable by its owner only) and
/// returns the key, which is shown once and kept nowhere.
pub fn add_key(path: &Path, name: &str, role: Role) -> anyhow::Result<String> {
    anyhow::ensure!(role != Role::Anonymous, "--role must be reader or admin");
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "the key's name `{name}` must be letters, digits, '-', '_' or '.'"
    );
    let mut keys = read_keys(path)?;
    anyhow::ensure!(!keys.iter().any(|k| k.name == name), "{} already has a key named `{name}`", path.display());
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|error| anyhow::anyhow!("no randomness for a key: {error}"))?;
    let key = format!("sgk_{}", hex(&secret));
    keys.push(StoredKey { name: name.to_owned(), role, sha256: hex(&Sha256::digest(key.as_bytes())) });
    write_keys(path, &keys)?;
    Ok(key)
}

/// Removes the key named `name`; false when there is none.
pub fn remove_key(path: &Path, name: &str) -> anyhow::Result<bool> {
    let mut keys = read_keys(path)?;
    let before = keys.len();
    keys.retain(|k| k.name != name);
    if keys.len() == before {
        return Ok(false);
    }
    write_keys(path, &keys)?;
    Ok(true)
}

fn write_keys(path: &Path, keys: &[StoredKey]) -> anyhow::Result<()> {
    let text = format!(
        "# Skyglass API keys (`skyglass keys`): only each key's SHA-256 is kept.\n\n{}",
        toml::to_string(&KeysFile { key: keys.to_vec() })?
    );
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    lake::writer::write_bytes_atomically(path, text.as_bytes())
        .with_context(|| format!("failed to write the keys file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The access rules of one API process.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// SHA-256 of each key, with its role.
    keys: Vec<([u8; 32], Role)>,
    /// Whether a request without a key may read.
    pub anonymous: bool,
    /// Whether callers below admin may introspect the schema.
    pub introspection: bool,
    /// When set, callers below admin may run only these documents, by SHA-256 (hex).
    pub allow_list: Option<HashMap<String, String>>,
    /// Most aliased fields and most root fields in one document below admin (0: no cap).
    pub max_aliases: usize,
    pub max_root_fields: usize,
}

/// How an API process admits requests, as configured.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    pub keys_file: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub anonymous: bool,
    pub introspection: bool,
    /// Persisted-query manifests (JSON objects of SHA-256 → document) that make the allow-list;
    /// `None`: any document.
    pub allow_list: Option<Vec<PathBuf>>,
    pub max_aliases: usize,
    pub max_root_fields: usize,
}

impl Access {
    /// No keys; anyone reads and introspects; any document.
    pub fn open() -> Access {
        Access { anonymous: true, introspection: true, ..Access::default() }
    }

    pub fn load(config: &AccessConfig) -> anyhow::Result<Access> {
        let mut keys = Vec::new();
        if let Some(path) = &config.keys_file {
            anyhow::ensure!(
                path.is_file(),
                "--api-keys {}: no such file (write one with `skyglass keys add`)",
                path.display()
            );
            for key in read_keys(path)? {
                let mut hash = [0u8; 32];
                for (i, byte) in hash.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&key.sha256[2 * i..2 * i + 2], 16)?;
                }
                keys.push((hash, key.role));
            }
        }
        if let Some(token) = &config.admin_token {
            keys.push((Sha256::digest(token.trim().as_bytes()).into(), Role::Admin));
        }
        let allow_list = match &config.allow_list {
            None => None,
            Some(paths) => {
                let mut documents = HashMap::new();
                for path in paths {
                    documents.extend(read_manifest(path)?);
                }
                Some(documents)
            }
        };
        Ok(Access {
            keys,
            anonymous: config.anonymous,
            introspection: config.introspection,
            allow_list,
            max_aliases: config.max_aliases,
            max_root_fields: config.max_root_fields,
        })
    }

    /// The caller presenting `key` (`None`: no key).
    pub fn caller(&self, key: Option<&str>) -> Result<Caller, Refusal> {
        let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) else {
            return if self.anonymous { Ok(Caller::default()) } else { Err(Refusal::KeyNeeded) };
        };
        let sent: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every stored hash is compared whole, so the time taken says nothing of the key.
        let mut role = None;
        for (hash, stored_role) in &self.keys {
            let differs = hash.iter().zip(sent.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if differs == 0 {
                role = Some(*stored_role);
            }
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&sent[..8]);
        role.map(|role| Caller { role, client: crate::throttle::Client::Key(id) }).ok_or(Refusal::UnknownKey)
    }

    /// The key of an HTTP request: `Authorization: Bearer KEY`, else `X-Api-Key: KEY`.
    pub fn key_in_headers(headers: &axum::http::HeaderMap) -> Option<&str> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
    }

    /// The key in a websocket's `connection_init` payload: `authorization` (`Bearer KEY`, or the
    /// key alone) or `apiKey`.
    pub fn key_in_payload(payload: &serde_json::Value) -> Option<&str> {
        let authorization = payload.get("authorization").or_else(|| payload.get("Authorization"));
        let authorization = authorization.and_then(|v| v.as_str()).map(|v| v.strip_prefix("Bearer ").unwrap_or(v));
        authorization.or_else(|| payload.get("apiKey").and_then(|v| v.as_str()))
    }

    /// The allow-list's document of `hash`, if it has one.
    pub fn allowed_document(&self, hash: &str) -> Option<&str> {
        self.allow_list.as_ref()?.get(hash).map(String::as_str)
    }
}

/// A persisted-query manifest: a JSON object of SHA-256 (hex) → document, each checked.
pub fn read_manifest(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the persisted-query manifest {}", path.display()))?;
    let documents: HashMap<String, String> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON object of SHA-256 → document", path.display()))?;
    for (hash, document) in &documents {
        anyhow::ensure!(
            hex(&Sha256::digest(document.as_bytes())) == hash.to_ascii_lowercase(),
            "{}: the document under {hash} does not hash to it",
            path.display()
        );
    }
    Ok(documents.into_iter().map(|(hash, document)| (hash.to_ascii_lowercase(), document)).collect())
}

/// The schema extension that applies [`Access`] to every operation, over HTTP and the
/// websocket alike: introspection and the allow-list for callers below admin.
pub struct Admission(pub std::sync::Arc<Access>);

impl ExtensionFactory for Admission {
    fn create(&self) -> std::sync::Arc<dyn Extension> {
        std::sync::Arc::new(AdmissionExtension(self.0.clone()))
    }
}

struct AdmissionExtension(std::sync::Arc<Access>);

#[async_trait::async_trait]
impl Extension for AdmissionExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        let caller = request
            .data
            .get(&std::any::TypeId::of::<Caller>())
            .and_then(|caller| caller.downcast_ref::<Caller>().copied())
            .or_else(|| ctx.data_opt::<Caller>().copied())
            .unwrap_or_default();
        if !caller.is_admin() {
            // Parsed once for the caps and introspection; one that does not parse is left to
            // the parser's own error.
            let document = async_graphql::parser::parse_query(&request.query).ok();
            if let Some(document) = &document {
                let (aliases, root_fields) = shape(document);
                let access = &self.0;
                if access.max_aliases > 0 && aliases > access.max_aliases {
                    let message = format!(
                        "the document has {aliases} aliased fields; at most {} are answered",
                        access.max_aliases
                    );
                    return Err(crate::error::request_error(&message, crate::error::TOO_COMPLEX));
                }
                if access.max_root_fields > 0 && root_fields > access.max_root_fields {
                    let message = format!(
                        "the operation asks {root_fields} root fields; at most {} are answered",
                        access.max_root_fields
                    );
                    return Err(crate::error::request_error(&message, crate::error::TOO_COMPLEX));
                }
            }
            if !self.0.introspection {
                if document.as_ref().is_some_and(asks_introspection) {
                    return Err(crate::error::request_error(
                        "introspection is off on this server for callers below admin",
                        crate::error::INTROSPECTION_DISABLED,
                    ));
                }
                request = request.disable_introspection();
            }
            if self.0.allow_list.is_some() {
                let hash = hex(&Sha256::digest(request.query.as_bytes()));
                if self.0.allowed_document(&hash).is_none() {
                    return Err(crate::error::request_error(
                        "this server answers only the persisted queries of its allow-list: send a listed document's sha256Hash",
                        crate::error::PERSISTED_QUERY_NOT_ALLOWED,
                    ));
                }
            }
        }
        next.run(ctx, request).await
    }
}

/// How many aliased fields a document has, and the most root fields any of its operations
/// asks (fragments spread at the root counted in).
fn shape(document: &async_graphql::parser::types::ExecutableDocument) -> (usize, usize) {
    use async_graphql::parser::types::{Selection, SelectionSet};
    fn aliases(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => {
                    usize::from(field.node.alias.is_some()) + aliases(&field.node.selection_set.node)
                }
                Selection::InlineFragment(fragment) => aliases(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    fn roots(set: &SelectionSet, document: &async_graphql::parser::types::ExecutableDocument, depth: usize) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(_) => 1,
                Selection::InlineFragment(fragment) => roots(&fragment.node.selection_set.node, document, depth),
                // Bounded, so a fragment cycle (refused later by validation) cannot loop here.
                Selection::FragmentSpread(spread) if depth < 8 => document
                    .fragments
                    .get(&spread.node.fragment_name.node)
                    .map_or(0, |f| roots(&f.node.selection_set.node, document, depth + 1)),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let aliased = document.operations.iter().map(|(_, op)| aliases(&op.node.selection_set.node)).sum::<usize>()
        + document.fragments.values().map(|f| aliases(&f.node.selection_set.node)).sum::<usize>();
    let root_fields =
        document.operations.iter().map(|(_, op)| roots(&op.node.selection_set.node, document, 0)).max().unwrap_or(0);
    (aliased, root_fields)
}

/// Whether a document selects `__schema` or `__type` anywhere (`__typename` is no
/// introspection).
fn asks_introspection(document: &async_graphql::parser::types::ExecutableDocument) -> bool {
    use async_graphql::parser::types::{Selection, SelectionSet};
    fn walk(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| match &item.node {
            Selection::Field(field) => {
                matches!(field.node.name.node.as_str(), "__schema" | "__type") || walk(&field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => walk(&fragment.node.selection_set.node),
            Selection::FragmentSpread(_) => false,
        })
    }
    document.operations.iter().any(|(_, operation)| walk(&operation.node.selection_set.node))
        || document.fragments.values().any(|fragment| walk(&fragment.node.selection_set.node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_root_fields_are_counted_through_fragments() {
        let parse = |q: &str| shape(&async_graphql::parser::parse_query(q).unwrap());
        assert_eq!(parse("{ a: lake { posts } b: lake { files } posts { totalCount } }"), (2, 3));
        assert_eq!(parse("{ ...F } fragment F on Query { x: lake { posts } lake { y: files } }"), (2, 2));
        assert_eq!(parse("query A { lake { posts } } query B { lake { posts } posts { totalCount } }"), (0, 2));
        // A cycle is bounded (validation refuses it afterwards).
        assert!(parse("{ ...F } fragment F on Query { lake { posts } ...F }").1 <= 9);
    }

    #[test]
    fn introspection_is_found_where_it_is_asked_and_only_there() {
        let asks_introspection = |q: &str| asks_introspection(&async_graphql::parser::parse_query(q).unwrap());
        assert!(asks_introspection("{ __schema { types { name } } }"));
        assert!(asks_introspection(
            "query { posts { nodes { ...F } } } fragment F on Post { author { ... on Author { __type(name: \"X\") { name } } } }"
        ));
        assert!(!asks_introspection("{ posts(filter: { textContains: \"__schema\" }) { nodes { __typename } } }"));
        assert!(!asks_introspection("# __schema\n{ lake { posts } }"));
    }

    #[test]
    fn a_key_is_known_by_its_hash_alone_and_anonymous_reading_is_a_setting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.toml");
        let reader = add_key(&file, "dash", Role::Reader).unwrap();
        let admin = add_key(&file, "ops", Role::Admin).unwrap();
        assert!(add_key(&file, "dash", Role::Admin).is_err(), "names are unique");
        let config = AccessConfig { keys_file: Some(file.clone()), ..AccessConfig::default() };
        let access = Access::load(&config).unwrap();
        assert_eq!(access.caller(Some(&reader)).unwrap().role, Role::Reader);
        assert_eq!(access.caller(Some(&admin)).unwrap().role, Role::Admin);
        assert_eq!(access.caller(Some("sgk_0")).unwrap_err(), Refusal::UnknownKey);
        assert_eq!(access.caller(None).unwrap_err(), Refusal::KeyNeeded);
        let open = Access::load(&AccessConfig { anonymous: true, ..config }).unwrap();
        assert_eq!(open.caller(None).unwrap().role, Role::Anonymous);
        assert!(remove_key(&file, "dash").unwrap());
        let access = Access::load(&AccessConfig { keys_file: Some(file), ..AccessConfig::default() }).unwrap();
        assert_eq!(access.caller(Some(&reader)).unwrap_err(), Refusal::UnknownKey);
    }
}
