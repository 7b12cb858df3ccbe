#!/usr/bin/env bash
# shakehands.asgi against the oldest uvicorn it supports (pyproject's asgi extra: uvicorn>=0.36,
# the first release that takes a protocol class's import string in --ws). The main run tested the
# newest release; this one runs tests/asgi with 0.36.1 in a virtualenv of its own, without the
# websockets-sansio reference cases (that implementation changed since; the cases are about it).
# ci: alongside
# (.ci/run: runs in the background with the main tests: a virtualenv of its own, no fixed port.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

oldest="$(python - <<'PY'
import re, tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["asgi"]
print(re.fullmatch(r"uvicorn>=([\d.]+)", extra[0]).group(1))
PY
)"
venv=.venv-uvicorn-oldest
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q -e . "uvicorn==${oldest}" httptools fastapi starlette \
    redis pytest pytest-asyncio pytest-timeout hypothesis websockets
"$venv/bin/python" -c "import uvicorn; print('uvicorn', uvicorn.__version__)"
"$venv/bin/python" -m pytest -q tests/asgi -k "not websockets-sansio"
