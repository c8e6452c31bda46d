#!/usr/bin/env bash
# The main job: the demo chat web app -- a chat page whose answers carry 👍 / 👎 buttons.
# A LangChain chain over bundled help-centre articles records every turn; the answers you
# like come back as memory. Open the printed URL in a browser.
#
#   bash scripts/demo.sh                      # web app on http://127.0.0.1:8000/
#   bash scripts/demo.sh --port 9000          # other options go to the web app (--host, --store)
#   bash scripts/demo.sh --cli                # the terminal chat loop instead (scripted demo)
#   bash scripts/demo.sh --cli --interactive  # ask your own questions in the terminal
#
# Sets itself up on first run (creates .venv, installs the project with its web extra).
# Offline, no API keys: without FEEDBACK_PLUGIN_CHAT_MODEL (e.g. "openai:gpt-4o-mini", needs
# `pip install langchain langchain-openai` and a key) the built-in offline responder answers.
# Turns are stored in ./data/demo-store (or $FEEDBACK_PLUGIN_DIR, or --store DIR).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_venv.sh
ensure_venv

case "${1:-}" in
    --cli) shift; exec python examples/chat_loop.py "$@" ;;
    --interactive) exec python examples/chat_loop.py "$@" ;;  # the CLI's old spelling
esac

store="${FEEDBACK_PLUGIN_DIR:-$PWD/data/demo-store}"
exec python -m feedback_plugin.integrations.webapp --store "$store" "$@"
