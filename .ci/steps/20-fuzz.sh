#!/usr/bin/env bash
# Short coverage-guided fuzzing run: every atheris target of fuzz/ for 25 s from our seeds
# (about 1.5 minutes in all). The long run and its counts are documented in docs/security.md.
# ci: alongside
# (.ci/run: runs in the background with the main tests: no install, no fixed port.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if ! python -c "import atheris" 2>/dev/null; then
    {
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        echo "!!! FUZZING SKIPPED: atheris is not installed for $(python --version 2>&1)."
        echo "!!! (the dev extra installs it on CPython outside Windows; pip could not here)."
        echo "!!! The hypothesis property tests of the same checks ran in pytest."
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    } >&2
    exit 0
fi

python fuzz/run.py --seconds 25
