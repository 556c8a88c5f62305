# Shared by scripts/run and scripts/test. Sourced, not run.

# One build cache outside the checkout, shared by every clone (CI reuses it): DuckDB's C++
# takes 35 to 70 minutes to compile on 2 cores, once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/skyglass/target}"

# One cargo profile for everything (binary, tests, clippy), so DuckDB is compiled only once.
CARGO_PROFILE_FLAGS=(--release --workspace)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

# Installs redis-server from the system packages when it is missing.
ensure_redis_server() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return 0; fi
  echo "==> installing redis-server from the system packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
}

# Installs wrk (the HTTP load generator) when it is missing, for the cache benchmark.
ensure_wrk() {
  if command -v wrk >/dev/null; then return 0; fi
  echo "==> installing wrk from the system packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null
}

# Prints a Python that has chDB (ClickHouse in-process, from PyPI), for the query benchmark's
# peer: a virtual environment of its own beside the build cache, made (with python3 and venv
# from the system packages when missing) and filled from PyPI once.
ensure_chdb_python() {
  local venv="$HOME/.cache/skyglass/chdb-venv"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import chdb" 2>/dev/null; then
    echo "$venv/bin/python"; return 0
  fi
  echo "==> installing chdb from PyPI into $venv" >&2
  if ! command -v python3 >/dev/null || ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q "chdb==4.4.0" >&2 && echo "$venv/bin/python"
}

# Installs promtool (Debian's prometheus package) when it is missing, to check deploy/.
ensure_promtool() {
  if command -v promtool >/dev/null; then return 0; fi
  echo "==> installing promtool (the prometheus package) from the system packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

# Installs PyYAML (Debian's python3-yaml) when no python3 has it: deploy/check parses the
# compose file and the Grafana provisioning with it.
ensure_pyyaml() {
  if python3 -c "import yaml" 2>/dev/null || /usr/bin/python3 -c "import yaml" 2>/dev/null; then return 0; fi
  echo "==> installing PyYAML (python3-yaml) from the system packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-yaml >/dev/null
}

# Installs Node.js and npm from the system packages when missing: the playground and the
# explorer are built with npm from the npm registry.
ensure_node() {
  if command -v node >/dev/null && command -v npm >/dev/null; then return 0; fi
  echo "==> installing Node.js and npm from the system packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
}

# Installs Chromium from the system packages when missing, for the browser tests.
ensure_chromium() {
  if command -v chromium >/dev/null || [ -n "${CHROMIUM_BIN:-}" ]; then return 0; fi
  echo "==> installing chromium from the system packages (for the browser tests)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
}

# Builds the playground and the explorer (api/web -> api/web/dist) when their sources or
# packages changed since the last build; the packages come from the lockfile (npm ci).
build_web() {
  ensure_node
  (
    cd api/web
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
      echo "==> installing the web packages (npm ci)"
      npm ci --no-audit --no-fund --loglevel=error
    fi
    if [ ! -f dist/index.html ] || [ -n "$(find index.html explore src vite.config.js package-lock.json -newer dist/index.html -print -quit)" ]; then
      echo "==> building the playground and the explorer (vite)"
      npm run --silent build -- --logLevel warn
    fi
  )
}

ensure_cargo_tools() {
  for tool in rustfmt clippy-driver; do
    if ! command -v "$tool" >/dev/null && ! [ -x "$HOME/.cargo/bin/$tool" ]; then
      echo "$tool is missing: install it with 'rustup component add ${tool%-driver}'" >&2
      return 1
    fi
  done
}

# Installs cargo-deny (from crates.io, built once into the shared cache) when it is missing.
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
  if cargo deny --version 2>/dev/null | grep -q " $CARGO_DENY_VERSION"; then return 0; fi
  echo "==> installing cargo-deny $CARGO_DENY_VERSION (once; a few minutes)"
  CARGO_TARGET_DIR="$HOME/.cache/skyglass/cargo-deny-build" \
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --quiet
}

# Licences, bans and sources (deny.toml), always; advisories when the RustSec database can be
# fetched (it is a git repository on github.com), or was fetched before.
check_dependencies() {
  echo "==> cargo deny check licenses bans sources"
  cargo deny --log-level error check licenses bans sources
  if cargo deny --log-level off fetch db >/dev/null 2>&1 \
    || compgen -G "$HOME/.cargo/advisory-dbs/*/crates" >/dev/null; then
    echo "==> cargo deny check advisories"
    cargo deny --log-level error check --disable-fetch advisories
  else
    echo "==> cargo deny check advisories: SKIPPED, the RustSec database (github.com/RustSec/advisory-db) cannot be fetched from this machine"
  fi
}
