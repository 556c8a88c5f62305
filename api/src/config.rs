//! Settings from three places besides the built-in defaults: flags, `SKYGLASS_*` environment
//! variables and a TOML file (`--config FILE`), with precedence flag > variable > file >
//! default.
//!
//! One rule names a setting in all three: the flag `--flush-interval`, the variable
//! `SKYGLASS_FLUSH_INTERVAL` and the file key `flush_interval`. Every setting that has a
//! variable has a key, and the file may hold keys of any command (one file serves `serve`,
//! `ingest` and `lake …`); a command takes the keys it has. An unknown key or variable is
//! refused with one line that names it, so a typo never goes unnoticed.
//!
//! How: clap parses the command line and the environment with their defaults, then every
//! setting of the chosen command that came from its default and has a key in the file is
//! appended to the command line as its flag, and clap parses again. File values thus go
//! through the same parsers, and a bad one is reported with its key.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// The variable that names the config file; it has no file key of its own.
const CONFIG_VARIABLE: &str = "SKYGLASS_CONFIG";
const PREFIX: &str = "SKYGLASS_";
/// The file's one key that is not a setting: the `[[export]]` tables.
pub const EXPORT_KEY: &str = "export";

/// The command line, resolved: what to run, and where each of its settings came from.
#[derive(Debug)]
pub struct Resolved {
    pub cli: Cli,
    /// The config file's `[[export]]` tables, as written (checked by [`crate::export::spec::load`]).
    pub exports: Option<toml::Value>,
    /// The chosen command's settings (file key, value, where it came from), by key.
    pub settings: Vec<Setting>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    /// As given (for a list, its values joined by commas); `None` when unset with no default.
    pub value: Option<String>,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Environment,
    File,
    Default,
    Unset,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Environment => "environment",
            Source::File => "config file",
            Source::Default => "default",
            Source::Unset => "unset",
        }
    }
}

/// Why the settings could not be resolved.
#[derive(Debug)]
pub enum ConfigError {
    /// A bad flag or variable value (clap's own error, printed as clap prints it).
    Cli(clap::Error),
    /// Anything else, in one line.
    Message(String),
}

/// The file key of a `SKYGLASS_*` variable: `SKYGLASS_FLUSH_INTERVAL` → `flush_interval`.
pub fn key_of_variable(variable: &str) -> Option<String> {
    variable.strip_prefix(PREFIX).filter(|rest| !rest.is_empty()).map(str::to_ascii_lowercase)
}

/// Every `SKYGLASS_*` variable any command reads, `SKYGLASS_CONFIG` included.
pub fn known_variables() -> BTreeSet<String> {
    let mut command = Cli::command();
    command.build();
    let mut known = BTreeSet::new();
    let mut stack = vec![&command];
    while let Some(command) = stack.pop() {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                known.insert(env.to_string_lossy().into_owned());
            }
        }
        stack.extend(command.get_subcommands());
    }
    known
}

/// Every file key: the known variables but `SKYGLASS_CONFIG`, in lower case without the prefix.
pub fn known_keys() -> BTreeSet<String> {
    known_variables().iter().filter(|v| *v != CONFIG_VARIABLE).filter_map(|v| key_of_variable(v)).collect()
}

/// Refuses a `SKYGLASS_*` variable that no command reads.
pub fn check_environment(variables: impl IntoIterator<Item = OsString>) -> Result<(), String> {
    let known = known_variables();
    for name in variables {
        let name = name.to_string_lossy();
        if name.starts_with(PREFIX) && !known.contains(name.as_ref()) {
            let list: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(format!("unknown environment variable {name}: known ones are {}", list.join(", ")));
        }
    }
    Ok(())
}

/// Reads and checks a config file: TOML, every key known, every value a single one.
pub fn read_file(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|span| text[..span.start].lines().count().max(1));
        let at = line.map(|l| format!(", line {l}")).unwrap_or_default();
        format!("config file {}{at}: {}", path.display(), e.message().trim().replace('\n', "; "))
    })?;
    let known = known_keys();
    for (key, value) in &table {
        if key == EXPORT_KEY {
            continue;
        }
        if !known.contains(key) {
            let list: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(format!(
                "config file {}: unknown key `{key}`; the keys are the SKYGLASS_* settings in lower case \
                 without the prefix: {}",
                path.display(),
                list.join(", ")
            ));
        }
        if scalar(value).is_none() {
            return Err(format!(
                "config file {}: `{key}` must be a string, number or boolean (or a list of them), not {}",
                path.display(),
                value.type_str()
            ));
        }
    }
    Ok(table)
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        // A list setting (like `cors_origins`) as a TOML array: its values as the flag takes
        // them, comma separated.
        toml::Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>().map(|items| items.join(",")),
        toml::Value::Table(_) => None,
    }
}

/// Parses `argv` (the program name first) with the environment and the config file it names.
pub fn resolve(argv: Vec<OsString>) -> Result<Resolved, ConfigError> {
    let command = || {
        let mut command = Cli::command();
        command.build();
        command
    };
    let first = command().try_get_matches_from(&argv).map_err(ConfigError::Cli)?;
    let config_path = first.get_one::<PathBuf>("config").cloned();
    let file = match &config_path {
        Some(path) => read_file(path).map_err(ConfigError::Message)?,
        None => toml::Table::new(),
    };

    // The chosen command's settings that fell back to their default (or have none) and that
    // the file sets: appended as flags, so they rank above defaults only.
    let root = command();
    let (leaf, leaf_matches) = chosen(&root, &first);
    let mut from_file = Vec::new();
    for arg in leaf.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
        let Some(key) = key_of_variable(&env.to_string_lossy()) else { continue };
        let Some(value) = file.get(&key).and_then(scalar) else { continue };
        if matches!(leaf_matches.value_source(arg.get_id().as_str()), None | Some(ValueSource::DefaultValue)) {
            from_file.push((key, format!("--{long}"), value));
        }
    }
    let mut full = argv.clone();
    for (_, flag, value) in &from_file {
        full.push(flag.into());
        full.push(value.into());
    }
    let matches = match command().try_get_matches_from(&full) {
        Ok(matches) => matches,
        Err(error) => return Err(blame_file_value(&argv, &from_file, config_path.as_deref(), error)),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(ConfigError::Cli)?;

    let (leaf, leaf_matches) = chosen(&root, &matches);
    let file_keys: BTreeSet<&str> = from_file.iter().map(|(key, _, _)| key.as_str()).collect();
    let mut settings = Vec::new();
    for arg in leaf.get_arguments() {
        let Some(env) = arg.get_env().filter(|env| *env != CONFIG_VARIABLE) else { continue };
        let Some(key) = key_of_variable(&env.to_string_lossy()) else { continue };
        let id = arg.get_id().as_str();
        let value = leaf_matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect::<Vec<_>>().join(","));
        let source = match leaf_matches.value_source(id) {
            _ if file_keys.contains(key.as_str()) => Source::File,
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Environment,
            Some(ValueSource::DefaultValue) => Source::Default,
            _ => Source::Unset,
        };
        settings.push(Setting { key, value, source });
    }
    settings.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Resolved { cli, exports: file.get(EXPORT_KEY).cloned(), settings })
}

/// The command clap chose (a subcommand of a subcommand, say) and its matches.
fn chosen<'a>(mut command: &'a clap::Command, mut matches: &'a ArgMatches) -> (&'a clap::Command, &'a ArgMatches) {
    while let Some((name, sub)) = matches.subcommand() {
        match command.find_subcommand(name) {
            Some(found) => (command, matches) = (found, sub),
            None => break,
        }
    }
    (command, matches)
}

/// A parse that failed once the file's values were added: finds the value to blame, trying
/// each alone, and names its key.
fn blame_file_value(
    argv: &[OsString],
    from_file: &[(String, String, String)],
    path: Option<&Path>,
    error: clap::Error,
) -> ConfigError {
    let path = path.map(|p| p.display().to_string()).unwrap_or_default();
    for (key, flag, value) in from_file {
        let mut one = argv.to_vec();
        one.push(flag.into());
        one.push(value.into());
        if let Err(e) = Cli::command().try_get_matches_from(&one) {
            let reason = e.to_string();
            let reason = reason.lines().next().unwrap_or_default().trim_start_matches("error: ");
            return ConfigError::Message(format!("config file {path}: `{key} = {value:?}`: {reason}"));
        }
    }
    ConfigError::Cli(error)
}

/// The resolved settings as a TOML file, each line saying where its value came from.
pub fn render(settings: &[Setting]) -> String {
    let mut out = String::new();
    for setting in settings {
        let line = match &setting.value {
            Some(value) => {
                // Numbers and booleans bare, as one would write them in the file.
                let literal = match value.parse::<i64>() {
                    Ok(number) => toml::Value::Integer(number),
                    Err(_) => match value.as_str() {
                        "true" | "false" => toml::Value::Boolean(value == "true"),
                        _ => toml::Value::String(value.clone()),
                    },
                };
                format!("{} = {literal}", setting.key)
            }
            None => format!("# {} is unset", setting.key),
        };
        out.push_str(&format!("{line:<60} # {}\n", setting.source.as_str()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("skyglass").chain(args.iter().copied()).map(OsString::from).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn setting<'a>(resolved: &'a Resolved, key: &str) -> &'a Setting {
        resolved.settings.iter().find(|s| s.key == key).unwrap_or_else(|| panic!("no setting {key}"))
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let config = file("listen = \"127.0.0.1:9999\"\nflush_interval = \"30s\"\nmax_page_size = 7\n");
        let path = config.path().to_str().unwrap();
        let resolved = resolve(argv(&["serve", "--config", path, "--listen", "127.0.0.1:1234"])).unwrap();
        let crate::cli::Command::Serve(serve) = &resolved.cli.command else { panic!("not serve") };
        assert_eq!(serve.listen.to_string(), "127.0.0.1:1234");
        assert_eq!(serve.flush.flush_interval, std::time::Duration::from_secs(30));
        assert_eq!(serve.max_page_size, 7);
        assert_eq!(serve.redis.redis_namespace, "skyglass");
        assert_eq!(setting(&resolved, "listen").source, Source::Flag);
        assert_eq!(setting(&resolved, "flush_interval").source, Source::File);
        assert_eq!(setting(&resolved, "redis_namespace").source, Source::Default);
        assert_eq!(setting(&resolved, "query_threads").source, Source::Unset);
    }

    #[test]
    fn a_file_serves_every_command_and_each_takes_its_own_keys() {
        let config = file("listen = \"127.0.0.1:9999\"\nlake = \"/tmp/somewhere\"\n");
        let path = config.path().to_str().unwrap();
        let resolved = resolve(argv(&["lake", "stats", "--config", path])).unwrap();
        let crate::cli::Command::Lake { command: crate::cli::LakeCommand::Stats(args) } = &resolved.cli.command else {
            panic!("not lake stats")
        };
        assert_eq!(args.lake, PathBuf::from("/tmp/somewhere"));
        assert!(resolved.settings.iter().all(|s| s.key != "listen"));
    }

    #[test]
    fn a_list_setting_takes_a_toml_array() {
        let config = file("cors_origins = [\"https://a.example\", \"http://localhost:5173\"]\n");
        let resolved = resolve(argv(&["serve", "--config", config.path().to_str().unwrap()])).unwrap();
        let crate::cli::Command::Serve(serve) = &resolved.cli.command else { panic!("not serve") };
        assert_eq!(serve.cors_origins, ["https://a.example", "http://localhost:5173"]);
    }

    #[test]
    fn bad_files_are_refused_in_one_line_naming_the_key() {
        let cases = [
            ("lisen = \"x\"\n", "unknown key `lisen`"),
            ("flush_interval = \"soon\"\n", "`flush_interval = \"soon\"`"),
            ("max_page_size = 0\n", "`max_page_size = \"0\"`"),
            ("listen = { a = 1 }\n", "`listen` must be a string, number or boolean"),
            ("listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n", "`listen = \"127.0.0.1:1,127.0.0.1:2\"`"),
            ("cors_origins = [\"https://a.example\", \"https://b.example/path\"]\n", "`cors_origins = "),
            ("listen = \n", "line 1"),
        ];
        for (text, expected) in cases {
            let config = file(text);
            let path = config.path().to_str().unwrap();
            let Err(ConfigError::Message(message)) = resolve(argv(&["serve", "--config", path])) else {
                panic!("{text:?} was accepted")
            };
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(!message.contains('\n'), "{text:?}: {message}");
        }
        let Err(ConfigError::Message(message)) = resolve(argv(&["serve", "--config", "/no/such/file.toml"])) else {
            panic!("a missing file was accepted")
        };
        assert!(message.contains("cannot read config file /no/such/file.toml"), "{message}");
    }

    #[test]
    fn every_variable_has_a_key_and_unknown_variables_are_refused() {
        let keys = known_keys();
        for key in ["lake", "redis_url", "listen", "flush_interval", "source", "log_format"] {
            assert!(keys.contains(key), "{key} missing from {keys:?}");
        }
        assert!(!keys.contains("config"));
        assert!(check_environment([OsString::from("SKYGLASS_LISTEN"), OsString::from("PATH")]).is_ok());
        let error = check_environment([OsString::from("SKYGLASS_LISTN")]).unwrap_err();
        assert!(error.contains("unknown environment variable SKYGLASS_LISTN"), "{error}");
    }

    #[test]
    fn every_flag_with_a_variable_is_named_like_it() {
        let mut command = Cli::command();
        command.build();
        let mut stack = vec![&command];
        while let Some(command) = stack.pop() {
            for arg in command.get_arguments() {
                let Some(env) = arg.get_env() else { continue };
                let key = key_of_variable(&env.to_string_lossy()).unwrap();
                assert_eq!(arg.get_long().map(|l| l.replace('-', "_")), Some(key), "{env:?}");
            }
            stack.extend(command.get_subcommands());
        }
    }

    /// The example's exports load (the five the README promises, each with its time zone), and
    /// a bad one is refused
    /// in one line naming it.
    #[test]
    fn the_example_exports_load_and_bad_ones_are_refused() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/skyglass.example.toml");
        let resolved = resolve(argv(&["serve", "--config", path.to_str().unwrap()])).unwrap();
        let types = crate::export::table::SchemaTypes::skyglass();
        let specs = crate::export::spec::load(resolved.exports.as_ref().unwrap(), &types).unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "posts-per-language-daily",
                "activity-hourly",
                "top-hashtags-daily",
                "top-authors-daily",
                "top-hashtags-rolling-week"
            ]
        );
        let raw = std::fs::read_to_string(&path).unwrap();
        let tables = raw.parse::<toml::Table>().unwrap()["export"].as_array().unwrap().clone();
        assert!(tables.iter().all(|t| t.get("time_zone").is_some()), "every example names its time zone");
        assert_eq!(specs[4].relative.len(), 2, "the rolling week's variables are relative times");

        let bad = |extra: &str| {
            let text = format!(
                "[[export]]\nname = \"x\"\nquery = \"{{ topHashtags {{ tag }} }}\"\nperiod = \"yesterday\"\nformat = \"csv\"\ndestination = \"/tmp\"\n{extra}"
            );
            let config = file(&text);
            let resolved = resolve(argv(&["serve", "--config", config.path().to_str().unwrap()])).unwrap();
            crate::export::spec::load(resolved.exports.as_ref().unwrap(), &types).unwrap_err()
        };
        assert!(bad("schedule = \"often\"").contains("export `x`: `schedule`"), "{}", bad("schedule = \"often\""));
        assert!(bad("time_zone = \"Mars/Olympus\"").contains("`time_zone`"));
        assert!(bad("colour = \"red\"").contains("unknown field `colour`"));
        assert!(bad("[[export]]\nname = \"x\"\nquery = \"{ lake { posts } }\"\nperiod = \"last hour\"\nformat = \"csv\"\ndestination = \"/tmp\"").contains("declared twice"));
    }

    /// `deploy/skyglass.example.toml` documents every key: each appears, set to its default
    /// where it has one (and the file then resolves to exactly the defaults) or commented out.
    #[test]
    fn the_example_config_documents_every_key_with_its_true_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/skyglass.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let table = read_file(&path).unwrap();
        let documented: BTreeSet<String> = text
            .lines()
            .filter_map(|line| line.trim_start_matches('#').trim_start().split_once(" = "))
            .map(|(key, _)| key.trim().to_owned())
            .collect();
        for key in known_keys() {
            assert!(documented.contains(&key), "{key} is not in {}", path.display());
        }
        for command in [&["serve"][..], &["ingest"], &["lake", "stats"]] {
            let with_file: Vec<&str> = command.iter().copied().chain(["--config", path.to_str().unwrap()]).collect();
            let defaults = resolve(argv(command)).unwrap();
            let example = resolve(argv(&with_file)).unwrap();
            for (a, b) in defaults.settings.iter().zip(&example.settings) {
                assert_eq!(
                    (&a.key, &a.value),
                    (&b.key, &b.value),
                    "{command:?}: the example's value is not the default"
                );
                if table.contains_key(&a.key) {
                    assert_eq!(b.source, Source::File, "{}", a.key);
                }
            }
        }
    }
}
