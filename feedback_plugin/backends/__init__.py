"""Storage backends: the I/O under :class:`~feedback_plugin.SessionStore`.

A backend speaks the narrow :class:`~feedback_plugin.backends.base.Backend`
protocol; all policy (validation, user scoping, the positive threshold,
write-behind) lives above it in the store.
"""

from .base import Backend, Item, SessionKey
from .disk import DiskBackend

__all__ = ["Backend", "DiskBackend", "Item", "SessionKey"]
