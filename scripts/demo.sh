#!/usr/bin/env bash
# The main job: the demo chat web app -- a chat page whose answers carry 👍 / 👎 buttons.
# A LangChain v1 agent (create_agent with FeedbackMiddleware) answers from bundled
# help-centre articles and records every turn; the answers you like come back as memory.
# Open the printed URL in a browser.
#
#   bash scripts/demo.sh                      # web app on http://127.0.0.1:8000/
#   bash scripts/demo.sh --port 9000          # other options: feedback-plugin serve --help
#   bash scripts/demo.sh --cli                # the terminal chat loop instead (scripted demo)
#   bash scripts/demo.sh --cli --interactive  # ask your own questions in the terminal
#
# Sets itself up on first run (creates .venv, installs the project with its web extra).
# Offline, no API keys: without FEEDBACK_PLUGIN_CHAT_MODEL (e.g. "openai:gpt-4o-mini", needs
# `pip install langchain-openai` and a key) the built-in offline model answers.
# Turns are stored in ./data/demo-store (or $FEEDBACK_PLUGIN_DIR, or --store DIR). The script
# prints the `feedback-plugin` command line that reads that store, e.g.
#   .venv/bin/feedback-plugin --store ./data/demo-store sessions
set -euo pipefail
here="$PWD"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
source scripts/_venv.sh
ensure_venv

# The store both demos use: the last --store given wins, as in their own argument parsing.
store="${FEEDBACK_PLUGIN_DIR:-$root/data/demo-store}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --store) store="${args[i + 1]:-$store}" ;;
        --store=*) store="${args[i]#--store=}" ;;
    esac
done

# The command line that looks into that store, as the caller can paste it: relative to the
# repository when they ran this script from there, absolute otherwise.
print_cli_line() {
    local cli="$root/.venv/bin/feedback-plugin" where="$store"
    case "$where" in
        /* | *://*) ;;
        *) where="$root/$where" ;;  # relative to the repository: this script runs from there
    esac
    if [ "$here" = "$root" ]; then
        cli=".venv/bin/feedback-plugin"
        case "$where" in "$root"/*) where="./${where#"$root"/}" ;; esac
    fi
    printf 'Look into the turns from another terminal:\n  %s --store %s sessions\n' \
        "$cli" "$(printf '%q' "$where")"
    printf '  %s --store %s show SESSION   (SESSION: the id, or the 8 characters the page shows)\n' \
        "$cli" "$(printf '%q' "$where")"
}

case "${1:-}" in
    --cli) shift; print_cli_line; exec python examples/chat_loop.py --store "$store" "$@" ;;
    --interactive) print_cli_line; exec python examples/chat_loop.py --store "$store" "$@" ;;  # old spelling
esac

print_cli_line
exec python -m feedback_plugin serve --store "$store" "$@"  # = .venv/bin/feedback-plugin serve
