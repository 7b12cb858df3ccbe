#!/usr/bin/env bash
# The documentation site (issue 18): install the docs extra, build it in strict mode (a broken
# link, a missing reference, a docstring it cannot parse fail), then tests/test_site.py: every
# public name is in the reference, and headless Chromium reads the home page, the tutorial and a
# reference page without a console error; then tests/test_docs.py: every Python block of the
# README and docs/ runs, against its real peers (redis-server, tinyproxy, Dante, gunicorn).
# SHAKEHANDS_REQUIRE_DOCS=1: a skip there is a failure.
# (.ci/run: not alongside the main tests: it reinstalls the package into .venv-ci, whose Python
# the other parts start, and tests/test_docs.py listens on fixed ports.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

python -m pip install -q -e '.[docs]'
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$(mktemp -d)"
SHAKEHANDS_REQUIRE_DOCS=1 python -m pytest -q tests/test_site.py tests/test_docs.py -p no:cacheprovider
