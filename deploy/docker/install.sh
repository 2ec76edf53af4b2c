#!/usr/bin/env bash
# What the imgstream image adds to the official Flink image, as one script: deploy/docker/Dockerfile runs
# it with --prefix /opt/imgstream --flink-home /opt/flink, and CI (tests/integration/test_k8s_app_mode.py)
# runs it into a temporary prefix. It installs
#   PREFIX/venv                     Python 3.11, this package and exactly the versions in requirements.lock
#   PREFIX/flink_jobs/classify.py   the job script, where the FlinkDeployment's PythonDriver arguments name it
# and, given a Flink distribution (--flink-home or $FLINK_HOME),
#   FLINK_HOME/lib/flink-sql-connector-kafka-<version>.jar   checked against streaming/stack/jars.lock
#   FLINK_HOME/plugins/s3-fs-presto/                          the S3 filesystem, from FLINK_HOME/opt
# Idempotent: a second run leaves the same files (an existing venv is kept if it is Python 3.11).
#
# usage: install.sh --prefix DIR [--python PY] [--src DIR] [--flink-home DIR] [--connector-jar FILE]
#                   [--without-s3-plugin]
#   --prefix DIR         where venv/ and flink_jobs/ go ($PREFIX)
#   --python PY          the base interpreter ($PYTHON; default python3.11): a path or a command, or, when uv
#                        is used, a version such as 3.11.18 that uv installs into PREFIX/python (or
#                        $UV_PYTHON_INSTALL_DIR) from its pinned python-build-standalone release
#   --src DIR            the repository (default: two folders above this script)
#   --flink-home DIR     the Flink distribution to add the connector and the S3 plugin to ($FLINK_HOME)
#   --connector-jar FILE the Kafka connector jar from this file instead of Maven Central
#                        ($KAFKA_CONNECTOR_JAR); its SHA-256 is checked all the same
#   --without-s3-plugin  for a distribution without opt/flink-s3-fs-presto-*.jar (the apache-flink wheel's)
# Environment: UV (the uv binary; default: uv on PATH, else pip; UV=none forces pip). FLINK_VERSION,
# KAFKA_CONNECTOR_VERSION and KAFKA_CONNECTOR_SHA256, when set (the Dockerfile passes its ARGs), must agree
# with the installed PyFlink and with jars.lock.
set -euo pipefail

readonly PYTHON_SERIES=3.11  # pyproject.toml: requires-python >=3.11,<3.12 (and PyFlink 2.2's wheels)
readonly MAVEN_CENTRAL=https://repo1.maven.org/maven2

log() { printf 'install.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage_error() { usage >&2; log "error: $*"; exit 2; }
needs_value() { [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"; }
usage() { sed -n '/^# usage:/,/^set -euo/{/^set -euo/d; s/^# \{0,1\}//; p;}' "${BASH_SOURCE[0]}"; }

prefix=${PREFIX:-}
python=${PYTHON:-python3.11}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
flink_home=${FLINK_HOME:-}
connector_jar=${KAFKA_CONNECTOR_JAR:-}
with_s3_plugin=1
while (($#)); do
  case $1 in
    --prefix) needs_value "$@"; prefix=$2; shift 2 ;;
    --python) needs_value "$@"; python=$2; shift 2 ;;
    --src) needs_value "$@"; src=$2; shift 2 ;;
    --flink-home) needs_value "$@"; flink_home=$2; shift 2 ;;
    --connector-jar) needs_value "$@"; connector_jar=$2; shift 2 ;;
    --without-s3-plugin) with_s3_plugin=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument: $1" ;;
  esac
done
[[ -n $prefix ]] || usage_error "--prefix (or \$PREFIX) is required"
for file in pyproject.toml requirements.lock flink_jobs/classify.py streaming/stack/jars.lock; do
  [[ -f $src/$file ]] || die "$src is not the imgstream repository (no $file)"
done
# the Kafka connector's row in jars.lock, checked before anything is installed
mapfile -t rows < <(awk -F'\t' '$6 == "flink-connector" {print $1 "\t" $2 "\t" $3 "\t" $5}' \
  "$src/streaming/stack/jars.lock")
((${#rows[@]} == 1)) || die "streaming/stack/jars.lock has ${#rows[@]} flink-connector rows, not 1"
IFS=$'\t' read -r group artifact version sha256 <<<"${rows[0]}"
[[ -z ${KAFKA_CONNECTOR_VERSION:-} || $KAFKA_CONNECTOR_VERSION == "$version" ]] \
  || die "KAFKA_CONNECTOR_VERSION=$KAFKA_CONNECTOR_VERSION but jars.lock pins $version"
[[ -z ${KAFKA_CONNECTOR_SHA256:-} || $KAFKA_CONNECTOR_SHA256 == "$sha256" ]] \
  || die "KAFKA_CONNECTOR_SHA256 differs from jars.lock's $sha256"
[[ -z $flink_home || -d $flink_home/lib ]] || die "$flink_home is not a Flink distribution (no lib/)"
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
venv=$prefix/venv
uv=${UV:-$(command -v uv || true)}
[[ $uv == none ]] && uv=

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- Python 3.11 in PREFIX/venv ---------------------------------------------------------------------
is_python_series() {
  "$1" -I -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$PYTHON_SERIES'.split('.'))))"
}

if [[ -x $venv/bin/python ]] && is_python_series "$venv/bin/python"; then
  log "keeping $venv ($("$venv/bin/python" -V))"
elif [[ -e $venv ]]; then
  die "$venv exists but is not a Python $PYTHON_SERIES venv; remove it"
elif [[ -n $uv ]]; then
  if [[ $python =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]]; then
    # a version: uv's managed Python (python-build-standalone, checksums inside uv), kept inside the prefix
    export UV_PYTHON_INSTALL_DIR=${UV_PYTHON_INSTALL_DIR:-$prefix/python} UV_PYTHON_PREFERENCE=only-managed
    "$uv" python install "$python"
  fi
  "$uv" venv --python "$python" "$venv"
else
  [[ ! $python =~ ^[0-9.]+$ ]] || die "--python $python is a version: that needs uv; give an interpreter instead"
  "$python" -m venv "$venv"
fi
is_python_series "$venv/bin/python" \
  || die "$venv/bin/python is $("$venv/bin/python" -V 2>&1), not Python $PYTHON_SERIES"

# --- the package and exactly the locked versions of its dependencies --------------------------------
# from a copy of what the image's build context holds, so the install never writes into the sources
mkdir -p "$work/src"
tar -C "$src" --exclude=__pycache__ --exclude='*.pyc' --exclude=triton_models/repository -cf - \
  pyproject.toml requirements.lock README.md streaming flink_jobs triton_models | tar -C "$work/src" -xf -
# requirements.lock holds the sha256 of every file it pins: installed in hash-checking mode, as ./run does,
# but only the package's own dependencies (not its test and bench extras): the lock's entries that its
# `dependencies` need, followed through the lock's "# via" annotations (pip-compile's list of what
# requires each entry), and pip, setuptools and wheel. Those three go first: with no build isolation, the
# lock's sdists and this package are built with them, never with an unpinned download. Then the package,
# without dependencies (all of them are in the lock); pip check fails if one was not.
"$venv/bin/python" -I - "$work/src/requirements.lock" "$work/src/pyproject.toml" "$work" <<'PY'
import re
import sys
import tomllib
from pathlib import Path

TOOLS = {"pip", "setuptools", "wheel"}


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


blocks, parents, name = {}, {}, None  # entry -> its lines; entry -> what requires it
for line in Path(sys.argv[1]).read_text(encoding="utf-8").splitlines(keepends=True):
    if re.match(r"[A-Za-z0-9]", line):
        name = norm(re.match(r"[A-Za-z0-9._-]+", line).group())
        blocks[name], parents[name] = [], set()
    elif name is None:
        continue  # the header
    comment = re.match(r"\s*#\s*(?:via\b)?\s*([A-Za-z0-9._-]+)", line)
    if comment and not line.lstrip().startswith("--"):
        parents[name].add(norm(comment.group(1)))
    if name is not None:
        blocks[name].append(line)
with open(sys.argv[2], "rb") as f:
    project = tomllib.load(f)["project"]
needed = TOOLS | {norm(re.match(r"[A-Za-z0-9._-]+", d).group()) for d in project["dependencies"]}
missing = needed - set(blocks)
if missing:
    sys.exit(f"requirements.lock does not pin {sorted(missing)}")
while True:
    more = {entry for entry, via in parents.items() if entry not in needed and via & needed}
    if not more:
        break
    needed |= more
out = Path(sys.argv[3])
(out / "tools.lock").write_text("".join(line for entry in sorted(TOOLS) for line in blocks[entry]))
(out / "runtime.lock").write_text("".join(line for entry in sorted(needed) for line in blocks[entry]))
PY
if [[ -n $uv ]]; then
  install=("$uv" pip install --python "$venv/bin/python" --no-deps --no-build-isolation)
else
  install=("$venv/bin/python" -m pip install --no-input --disable-pip-version-check --no-deps --no-build-isolation)
fi
"${install[@]}" --require-hashes -r "$work/tools.lock"
"${install[@]}" --require-hashes -r "$work/runtime.lock"
"${install[@]}" "$work/src"
"$venv/bin/python" -m pip check
# the hashes pin what is installed; this checks that nothing outside the lock came in
"$venv/bin/python" -I - "$work/src/requirements.lock" "$work/src/pyproject.toml" <<'PY'
import re
import sys
import tomllib
from importlib import metadata


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


lock = {}
for line in open(sys.argv[1], encoding="utf-8"):
    if line[:1].isalnum():  # "name==version \", then its hashes and annotations, indented
        name, _, version = line.split()[0].partition("==")
        lock[norm(name.split("[", 1)[0])] = version
with open(sys.argv[2], "rb") as f:
    project = norm(tomllib.load(f)["project"]["name"])
unlocked = sorted(f"{d.metadata['Name']}=={d.version} (lock: {lock.get(norm(d.metadata['Name']), 'none')})"
                  for d in metadata.distributions()
                  if norm(d.metadata["Name"]) != project
                  and lock.get(norm(d.metadata["Name"])) != d.version)
if unlocked:
    sys.exit("installed but not as requirements.lock pins them: " + ", ".join(unlocked))
PY
(cd / && "$venv/bin/python" -I -c "import pyflink, streaming.config, triton_models.build, flink_jobs")
installed=$("$venv/bin/python" -I -c 'import importlib.metadata as m; print(m.version("imgstream"))')
log "installed imgstream $installed into $venv"

# --- the job script, at the path the FlinkDeployment's PythonDriver arguments name ------------------
install -D -m 0644 "$src/flink_jobs/classify.py" "$prefix/flink_jobs/classify.py"

[[ -n $flink_home ]] || { log "no --flink-home: the Kafka connector and the S3 plugin are not installed"; exit 0; }

# --- Flink: the distribution must be the PyFlink version of the venv ---------------------------------
flink_version=$("$venv/bin/python" -I -c 'import importlib.metadata as m; print(m.version("apache-flink"))')
[[ -z ${FLINK_VERSION:-} || $FLINK_VERSION == "$flink_version" ]] \
  || die "FLINK_VERSION=$FLINK_VERSION but the venv has PyFlink $flink_version"
[[ -f $flink_home/opt/flink-python-$flink_version.jar ]] \
  || die "$flink_home has no opt/flink-python-$flink_version.jar (PythonDriver): not Flink $flink_version"

# --- the Kafka connector in lib/, verified against jars.lock ----------------------------------------
[[ $version == *-"${flink_version%.*}" ]] || die "$artifact $version is not built for Flink ${flink_version%.*}"
target=$flink_home/lib/$artifact-$version.jar
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
if [[ -f $target ]] && [[ $(sha256_of "$target") == "$sha256" ]]; then
  log "keeping $target"
else
  fetched=$work/$artifact-$version.jar
  if [[ -n $connector_jar ]]; then
    cp "$connector_jar" "$fetched"
  else
    url=$MAVEN_CENTRAL/${group//.//}/$artifact/$version/$artifact-$version.jar
    log "fetching $url"
    if command -v curl >/dev/null; then
      curl -fsSL --retry 3 --retry-delay 2 -o "$fetched" "$url"
    else
      "$venv/bin/python" -I - "$url" "$fetched" <<'PY'
import shutil
import ssl
import sys
import urllib.request

import certifi

context = ssl.create_default_context(cafile=certifi.where())
with urllib.request.urlopen(sys.argv[1], timeout=60, context=context) as response:
    with open(sys.argv[2], "wb") as out:
        shutil.copyfileobj(response, out)
PY
    fi
  fi
  actual=$(sha256_of "$fetched")
  [[ $actual == "$sha256" ]] || die "${connector_jar:-$artifact-$version.jar}: sha256 $actual, jars.lock says $sha256"
  rm -f "$target"  # a link (a private FLINK_HOME) is replaced by the file, never written through
  install -m 0644 "$fetched" "$target"
  log "installed $target"
fi

# --- the S3 filesystem (checkpoints, savepoints, HA): a plugin in its own folder under plugins/ ------
plugin=$flink_home/opt/flink-s3-fs-presto-$flink_version.jar
if [[ -f $plugin ]]; then
  install -D -m 0644 "$plugin" "$flink_home/plugins/s3-fs-presto/$(basename "$plugin")"
  log "installed the S3 plugin $flink_home/plugins/s3-fs-presto"
elif ((with_s3_plugin)); then
  die "$flink_home has no opt/flink-s3-fs-presto-$flink_version.jar" \
    "(use --without-s3-plugin where S3 is not needed)"
else
  log "no S3 plugin: $flink_home has no opt/flink-s3-fs-presto-$flink_version.jar (--without-s3-plugin)"
fi
