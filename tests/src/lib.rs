//! The end-to-end test harness: a private `redis-server` per test, the real `skyglass` binary
//! of this build, and helpers that read like the domain (`app.query(..)`, `ingest_once(..)`).
//! Nothing here is mocked.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub mod browser;
pub mod jetstream;

/// Polls `check` until it returns `Some` or `deadline` passes.
pub fn poll<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` of our own on a unix socket in a temporary directory, with no
/// persistence; killed when dropped.
pub struct RedisServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> anyhow::Result<RedisServer> {
        let dir = tempfile::tempdir()?;
        let child = Self::spawn(dir.path())?;
        let mut server = RedisServer { child, dir };
        server.wait_ready()?;
        Ok(server)
    }

    /// Kills the server (SIGKILL) and starts a new, empty one on the same socket.
    pub fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = Self::spawn(self.dir.path())?;
        self.wait_ready()
    }

    /// Kills the server; clients see it unreachable until [`RedisServer::restart_empty`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(dir: &Path) -> anyhow::Result<Child> {
        let socket = dir.join("redis.sock");
        let log = dir.join("redis.log");
        Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--logfile")
            .arg(&log)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start redis-server: is it installed? (apt-get install redis-server)")
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = self.url();
        let ready = poll(Duration::from_secs(10), || {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut conn = client.get_connection().ok()?;
            redis::cmd("PING").query::<String>(&mut conn).ok()
        });
        if ready.is_none() {
            self.kill();
            let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
            bail!("redis-server did not become ready within 10 s; its log:\n{log}");
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.path().join("redis.sock").display())
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str()).unwrap().get_connection().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `skyglass` binary of this build (`target/<profile>/skyglass`, beside the test's
/// `deps/` directory), or `SKYGLASS_BIN` when set.
pub fn skyglass_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SKYGLASS_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binaries live in <target>/<profile>/deps");
    let bin = profile_dir.join("skyglass");
    assert!(
        bin.exists(),
        "{} is missing: run the whole suite with the README's test command (it builds the binary)",
        bin.display()
    );
    bin
}

/// A `skyglass` command with a clean environment for the given lake and Redis.
pub fn skyglass(lake: &Path, redis_url: &str) -> Command {
    let mut command = Command::new(skyglass_bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SKYGLASS_") {
            command.env_remove(name);
        }
    }
    command.env("SKYGLASS_LAKE", lake).env("SKYGLASS_REDIS_URL", redis_url);
    if std::env::var_os("TEST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    command
}

/// Runs `skyglass ingest --source file:PATH --once` and returns its output; fails the test
/// with the command's stderr when it does not exit 0.
pub fn ingest_once(lake: &Path, redis_url: &str, file: &Path) -> Output {
    let output = skyglass(lake, redis_url)
        .args(["ingest", "--once", "--source"])
        .arg(format!("file:{}", file.display()))
        .output()
        .expect("skyglass runs");
    assert!(
        output.status.success(),
        "ingest --once failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The value of one series (`name{labels}`, as Prometheus prints it) in a `/metrics` body.
pub fn metric_in(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A running `skyglass serve`, killed when dropped.
pub struct App {
    child: Child,
    pub base_url: String,
    pub client: reqwest::blocking::Client,
    /// Every line the process wrote to stderr (its log) so far.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl App {
    /// Starts `skyglass serve --role api` on a free port and waits until it answers.
    pub fn serve_api(lake: &Path, redis_url: &str) -> anyhow::Result<App> {
        Self::serve(skyglass(lake, redis_url).args([
            "serve",
            "--role",
            "api",
            "--listen",
            "127.0.0.1:0",
            "--max-page-size",
            "1000",
        ]))
    }

    /// Starts a prepared `serve` command; reads the listening address from its first line, and
    /// keeps its log (stderr) for [`App::log_lines`], echoed when `TEST_LOG` is set.
    pub fn serve(command: &mut Command) -> anyhow::Result<App> {
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("failed to start skyglass")?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let log = child.stderr.take().expect("piped stderr");
        let echo = std::env::var_os("TEST_LOG").is_some();
        let log_reader = std::thread::spawn({
            let stderr = stderr.clone();
            move || {
                for line in BufReader::new(log).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("{line}");
                    }
                    stderr.lock().unwrap().push(line);
                }
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).ok().flatten();
        let Some(base_url) = line.as_deref().and_then(parse_graphql_url) else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = log_reader.join();
            let stderr = stderr.lock().unwrap().join("\n");
            bail!("skyglass serve did not report its address (first line {line:?}); stderr:\n{stderr}");
        };
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let app = App { child, base_url, client, stderr };
        // A server is ready for queries once its rollup tables are made (`/readyz` says
        // `"rollups": true`; roles that answer no queries do not say): wait for that, and no
        // more, so that tests of readiness still see what else is missing.
        let rollups_made = poll(Duration::from_secs(30), || {
            let body = app.client.get(format!("{}/readyz", app.base_url)).send().ok()?.json::<Value>().ok()?;
            (body["rollups"] != json!(false)).then_some(())
        });
        anyhow::ensure!(rollups_made.is_some(), "skyglass serve did not make its rollup tables within 30 s");
        Ok(app)
    }

    /// The lines the process has logged so far (stderr).
    pub fn log_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// POSTs a GraphQL query with variables and returns the whole response body.
    pub fn request(&self, query: &str, variables: Value) -> Value {
        self.request_with(query, variables, json!({}))
    }

    /// [`App::request`] with the request's `extensions` (`{"explain": true}`, say).
    pub fn request_with(&self, query: &str, variables: Value, extensions: Value) -> Value {
        self.client
            .post(format!("{}/graphql", self.base_url))
            .json(&json!({ "query": query, "variables": variables, "extensions": extensions }))
            .send()
            .expect("the server answers")
            .json()
            .expect("the answer is JSON")
    }

    /// Runs a query that must succeed and returns its `data`.
    pub fn query(&self, query: &str, variables: Value) -> Value {
        let response = self.request(query, variables);
        assert!(response.get("errors").is_none(), "query failed: {response:#}\nquery: {query}");
        response["data"].clone()
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client.get(format!("{}{path}", self.base_url)).send().expect("the server answers")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate();
        self.exit_within(Duration::from_secs(30)).unwrap_or_else(|| {
            let _ = self.child.kill();
            self.child.wait().expect("the process ends")
        })
    }

    /// Sends SIGTERM, without waiting.
    pub fn terminate(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    /// How the process exited, if it did within `deadline`.
    pub fn exit_within(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        poll(deadline, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_graphql_url(line: &str) -> Option<String> {
    let rest = &line[line.find("http://")? + "http://".len()..];
    let host = rest.split(['/', ' ']).next().filter(|h| !h.is_empty())?;
    Some(format!("http://{host}"))
}

/// The shared real-data folder (`../shared/data/real` beside the repository), if present.
pub fn real_data_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/real");
    dir.is_dir().then_some(dir)
}

/// The repository's fixtures directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_address_is_read_from_the_serving_line() {
        let line = "skyglass is serving: playground http://127.0.0.1:4321/ , GraphQL http://127.0.0.1:4321/graphql";
        assert_eq!(super::parse_graphql_url(line).as_deref(), Some("http://127.0.0.1:4321"));
    }
}
