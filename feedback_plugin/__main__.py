"""``python -m feedback_plugin``: the ``feedback-plugin`` command (``serve`` runs the demo chat)."""

import sys

from .cli import main

sys.exit(main())
