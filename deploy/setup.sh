#!/usr/bin/env bash
# Makes a checkout ready to run: system packages, the Python venv, the Kafka classpath, the FerretDB binary, and the
# etcd + Kubernetes API server + controller manager binaries (built from the Go module proxy; no Docker, no kind).
#
# Idempotent and fast on re-run: each step records a stamp (a hash of its inputs) under .opswarm/tools/ and is
# redone only when its inputs changed or its output is missing. Prints one line per step:
#   setup: <step> ok          already satisfied, nothing done
#   setup: <step> installed   done now
#   setup: <step> skipped     left out on request (OPSWARM_SETUP_SKIP="apt ferretdb ...")
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# System packages the project needs (chromium: the browser tests drive it with Playwright).
APT_PACKAGES=(redis-server prometheus prometheus-alertmanager chromium)
MIN_PYTHON="3.11"
TOOLS_DIR="$ROOT/.opswarm/tools"
VENV_DIR="$ROOT/.venv"
KAFKA_POM="deploy/kafka/pom.xml"
KAFKA_CLASSPATH="$TOOLS_DIR/kafka.classpath"
FERRETDB_SRC="deploy/ferretdb"
FERRETDB_BIN="$TOOLS_DIR/bin/opswarm-ferretdb"
ETCD_SRC="deploy/etcd"
ETCD_BIN="$TOOLS_DIR/bin/opswarm-etcd"
KUBE_SRC="deploy/kube"
KUBE_BINS=(kube-apiserver kube-controller-manager)
SKIP=" ${OPSWARM_SETUP_SKIP:-} "

mkdir -p "$TOOLS_DIR/bin"

report() { echo "setup: $1 $2"; }
fail() { echo "setup: $1 failed: $2" >&2; exit 1; }
skipped() { [[ "$SKIP" == *" $1 "* ]]; }
# Runs a step's command with its output appended to .opswarm/tools/<step>.log; on failure shows the log's tail.
run_logged() {
    local step="$1" log="$TOOLS_DIR/$1.log"
    shift
    echo "== $(date -u +%FT%TZ) $*" >>"$log"
    "$@" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; fail "$step" "'$*' failed; full output in $log"; }
}
need_command() { command -v "$1" >/dev/null 2>&1 || fail "$2" "'$1' not found on PATH ($3)"; }

# The stamp of a step is the sha256 of its inputs; `stamp_matches STEP HASH` is true when the step is done.
inputs_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_matches() { [[ -f "$TOOLS_DIR/$1.stamp" && "$(cat "$TOOLS_DIR/$1.stamp")" == "$2" ]]; }
write_stamp() { echo "$2" >"$TOOLS_DIR/$1.stamp"; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

step_apt() {
    if skipped apt; then report apt skipped; return; fi
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then report apt ok; return; fi
    need_command apt-get apt "install ${missing[*]} with your package manager"
    run_logged apt as_root apt-get update -q
    # The Debian packages may start a system redis on 6379 and a Prometheus on 9090 (plus an Alertmanager on 9093);
    # harmless, the local stack runs its own on its own ports.
    run_logged apt as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    report apt installed
}

python_is_recent() { "$1" -c "import sys; sys.exit(0 if sys.version_info >= (${MIN_PYTHON/./,}) else 1)" 2>/dev/null; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1 && python_is_recent "$candidate" && {
            echo "$candidate"
            return
        }
    done
    fail venv "Python >= $MIN_PYTHON is required; found: $(python3 --version 2>&1 || echo none). Set PYTHON=/path/to/python3.11"
}

step_venv() {
    if skipped venv; then report venv skipped; return; fi
    if [[ -x "$VENV_DIR/bin/python" ]] && ! python_is_recent "$VENV_DIR/bin/python"; then
        fail venv "$VENV_DIR uses $("$VENV_DIR/bin/python" --version 2>&1), need >= $MIN_PYTHON; remove it and re-run"
    fi
    local hash
    hash="$( (cat pyproject.toml; "$VENV_DIR/bin/python" --version 2>/dev/null || true) | sha256sum | cut -d' ' -f1)"
    if [[ -x "$VENV_DIR/bin/opswarm" ]] && stamp_matches venv "$hash"; then report venv ok; return; fi
    if [[ ! -x "$VENV_DIR/bin/python" ]]; then
        local python
        python="$(find_python)"
        "$python" -m venv "$VENV_DIR" || fail venv "cannot create $VENV_DIR (on Debian: apt-get install python3-venv)"
        hash="$( (cat pyproject.toml; "$VENV_DIR/bin/python" --version) | sha256sum | cut -d' ' -f1)"
    fi
    run_logged venv "$VENV_DIR/bin/python" -m pip install -e '.[dev]'
    write_stamp venv "$hash"
    report venv installed
}

classpath_complete() {
    [[ -s "$KAFKA_CLASSPATH" ]] || return 1
    local jar
    while IFS= read -r jar; do [[ -f "$jar" ]] || return 1; done < <(tr ':' '\n' <"$KAFKA_CLASSPATH")
}

step_kafka() {
    if skipped kafka; then report kafka skipped; return; fi
    local hash
    hash="$(inputs_hash "$KAFKA_POM")"
    if stamp_matches kafka "$hash" && classpath_complete; then report kafka ok; return; fi
    need_command java kafka "install a Java 17+ runtime"
    need_command mvn kafka "install Maven 3.8+"
    local java_version
    java_version="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    [[ "${java_version%%.*}" -ge 17 ]] 2>/dev/null || fail kafka "Kafka 4 needs Java 17+, 'java' is ${java_version:-unknown}"
    run_logged kafka mvn -B -f "$KAFKA_POM" dependency:build-classpath -Dmdep.outputFile="$KAFKA_CLASSPATH"
    classpath_complete || fail kafka "$KAFKA_CLASSPATH names jars that do not exist"
    write_stamp kafka "$hash"
    report kafka installed
}

# A Go module's one command: built when its sources (or Go) changed or the binary is missing.
# go_binary_step STEP SRC_DIR BIN GO_VERSION [go build flags...]
go_binary_step() {
    local step="$1" src="$2" bin="$3" go_min="$4" hash
    shift 4
    if skipped "$step"; then report "$step" skipped; return; fi
    need_command go "$step" "install Go $go_min+"
    hash="$( (cat "$src"/go.mod "$src"/go.sum "$src"/*.go; go version) | sha256sum | cut -d' ' -f1)"
    if [[ -x "$bin" ]] && stamp_matches "$step" "$hash"; then report "$step" ok; return; fi
    run_logged "$step" go -C "$src" build "$@" -o "$bin" .
    write_stamp "$step" "$hash"
    report "$step" installed
}

step_ferretdb() { go_binary_step ferretdb "$FERRETDB_SRC" "$FERRETDB_BIN" 1.24; }

# etcd is the storage of the Kubernetes API server (Debian's etcd-server is 3.4; Kubernetes 1.37 is paired with 3.7).
step_etcd() { go_binary_step etcd "$ETCD_SRC" "$ETCD_BIN" 1.26 -ldflags "-s -w"; }

# The upstream kube-apiserver and kube-controller-manager; a cold build takes minutes and a few GB of Go caches.
# The -X flags give /version the real release instead of "v0.0.0-master" (what `go build` alone stamps).
step_kube() {
    if skipped kube; then report kube skipped; return; fi
    need_command go kube "install Go 1.26+"
    local hash bin built=1
    hash="$( (cat "$KUBE_SRC"/go.mod "$KUBE_SRC"/go.sum "$KUBE_SRC"/cmd/*/*.go; go version) | sha256sum | cut -d' ' -f1)"
    for bin in "${KUBE_BINS[@]}"; do [[ -x "$TOOLS_DIR/bin/opswarm-$bin" ]] || built=0; done
    if [[ "$built" -eq 1 ]] && stamp_matches kube "$hash"; then report kube ok; return; fi
    local version major minor pkg="k8s.io/component-base/version"
    version="$(go -C "$KUBE_SRC" list -m -f '{{.Version}}' k8s.io/kubernetes)" || fail kube "cannot read the k8s.io/kubernetes version from $KUBE_SRC/go.mod"
    IFS=. read -r major minor _ <<<"${version#v}"
    for bin in "${KUBE_BINS[@]}"; do
        run_logged kube go -C "$KUBE_SRC" build \
            -ldflags "-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
            -o "$TOOLS_DIR/bin/opswarm-$bin" "./cmd/$bin"
    done
    write_stamp kube "$hash"
    report kube installed
}

step_apt
step_venv
step_kafka
step_ferretdb
step_etcd
step_kube
