#!/usr/bin/env bash
# The whole test suite: ruff, mypy (strict, config in pyproject.toml) and pytest.
#
#   bash scripts/test.sh              # everything
#   bash scripts/test.sh -k handler   # arguments go to pytest
#   bash scripts/test.sh -m 'not slow'   # the fast inner loop: tests marked slow (over ~1 s) left out
#
# Sets itself up on first run (creates .venv, installs the project with all its extras;
# as root with apt-get, installs Debian's chromium for the browser test).
# Every step runs even if an earlier one failed; the exit code is non-zero if any failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_venv.sh
ensure_venv

# The browser test drives Debian's chromium (Playwright cannot download its own browser
# here), and its screenshot wants an emoji font for the 👍 / 👎. Install them when missing
# and we may: root with apt-get. Quietly; if it fails, the browser test says so (it fails
# when $CI is set, and is skipped otherwise).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium for the browser test (apt-get install chromium)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
        fonts-noto-color-emoji; } \
        >/tmp/feedback-plugin-chromium-install.log 2>&1 \
        || echo "setup: chromium install failed (log: /tmp/feedback-plugin-chromium-install.log)" >&2
fi

failed=()

echo "== ruff check ."
ruff check . || failed+=("ruff")

echo "== mypy"
mypy || failed+=("mypy")

echo "== pytest $*"
pytest_status=0
python -m pytest "$@" || pytest_status=$?
[ "$pytest_status" -eq 0 ] || failed+=("pytest (exit $pytest_status)")

if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    [ "$pytest_status" -ne 0 ] && exit "$pytest_status"
    exit 1
fi
echo "all checks passed"
