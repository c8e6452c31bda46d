"""The demo chat web app, by its old name: see :mod:`feedback_plugin.integrations.demo`.

Kept for ``uvicorn --factory feedback_plugin.integrations.webapp:create_demo_app``,
``webapp.STATIC_DIR`` (the ``<feedback-buttons>`` files) and
``python -m feedback_plugin.integrations.webapp [options]``, which is
``feedback-plugin serve [options]``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .demo.app import STATIC_DIR, create_demo_app
from .demo.content import HelpCentreRetriever, help_centre_tool, load_documents
from .offline_model import NO_ANSWER, OFFLINE_RESPONDER

__all__ = [
    "NO_ANSWER",
    "OFFLINE_RESPONDER",
    "STATIC_DIR",
    "HelpCentreRetriever",
    "create_demo_app",
    "help_centre_tool",
    "load_documents",
    "main",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``feedback-plugin serve`` with these options (the same parser and server)."""
    from ..cli import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
