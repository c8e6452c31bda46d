"""Capture: turning LangChain runs into recorded turns."""

from .enable import disable, enable, enabled, with_configurable_session
from .handler import FeedbackCallbackHandler

__all__ = [
    "FeedbackCallbackHandler",
    "disable",
    "enable",
    "enabled",
    "with_configurable_session",
]
