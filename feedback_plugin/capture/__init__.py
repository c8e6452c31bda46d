"""Capture: turning LangChain runs into recorded turns.

Imported eagerly, unlike :mod:`feedback_plugin` and :mod:`feedback_plugin.memory`:
every module here needs LangChain anyway, and the function ``enable`` shares
its name with the submodule ``enable``, which a lazy package could hand out
instead of the function, depending on import order. ``import feedback_plugin``
does not import this package until a capture name is used.
"""

from .enable import disable, enable, enabled, with_configurable_session
from .handler import FeedbackCallbackHandler

__all__ = [
    "FeedbackCallbackHandler",
    "disable",
    "enable",
    "enabled",
    "with_configurable_session",
]
