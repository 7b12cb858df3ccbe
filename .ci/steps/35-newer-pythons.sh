#!/usr/bin/env bash
# The compiled paths lean on asyncio's internals that change between Python versions (the
# selector transport's reader, the listening socket's reader, Task's waiting protocol): the main
# run is on the default Python (3.11); this step builds the package with each newer CPython found
# (3.12, 3.13: pyenv's, or on PATH) and runs the protocol core, the compiled paths and the asyncio
# APIs there, C speed-ups required. A Python that is not installed is reported and skipped.
# ci: alongside
# (.ci/run: runs in the background with the main tests: virtualenvs of their own, no fixed port.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

found=0
for version in 3.12 3.13; do
    python=""
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python "$(command -v "python$version" || true)"; do
        if [[ -n "$candidate" && -x "$candidate" ]] && "$candidate" --version >/dev/null 2>&1; then
            python="$candidate"
            break
        fi
    done
    if [[ -z "$python" ]]; then
        echo "!!! Python $version is not installed here: its run is skipped" >&2
        continue
    fi
    found=1
    venv=".venv-py$version"
    echo "--- $("$python" --version) ($python)"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q -e . pytest pytest-asyncio pytest-timeout hypothesis \
        websockets uvloop aiohttp
    SHAKEHANDS_REQUIRE_SPEEDUPS=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider \
        tests/protocol tests/fastpath tests/asyncio
done
if (( ! found )); then
    echo "!!! no Python newer than 3.11 found: nothing run by this step" >&2
fi
