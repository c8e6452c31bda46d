"""``python -m feedback_plugin.cli``: the ``feedback-plugin`` command."""

import sys

from . import main

sys.exit(main())
