# Sourced by scripts/demo.sh and scripts/test.sh: make sure .venv exists and holds this project.
#
# Needs only python3 (with its venv module) and pip's package index. Creates .venv when
# missing, and runs `pip install -e ".[all]"` (every extra: the tests cover each integration) when pyproject.toml (or the extras) changed
# since the last install (kept in .venv/.feedback-plugin-installed). Then puts .venv first on PATH.
# Set PYTHON=/path/to/python3 to build the venv with another interpreter.

ensure_venv() {
    local root venv stamp want extras="all"
    root="$(pwd)"
    venv="$root/.venv"
    stamp="$venv/.feedback-plugin-installed"

    if [ ! -x "$venv/bin/python" ]; then
        echo "setup: creating $venv" >&2
        "${PYTHON:-python3}" -m venv "$venv" || {
            echo "setup: 'python3 -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
            return 1
        }
    fi

    want="$("$venv/bin/python" -c 'import hashlib, sys
print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest() + " " + sys.version.split()[0])') $extras"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "setup: installing the project and its dev tools into .venv (pip install -e '.[$extras]')" >&2
        local log="$venv/pip-install.log"
        if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$extras]" \
            >"$log" 2>&1; then
            cat "$log" >&2
            echo "setup: pip install failed (log: $log; delete .venv to start over)" >&2
            return 1
        fi
        printf '%s\n' "$want" > "$stamp"
    fi

    export VIRTUAL_ENV="$venv"
    export PATH="$venv/bin:$PATH"
    hash -r
}
