"""What the REST router's parts share: the user dependencies, the guarded route class,
the documented error answers and the store-error context (:func:`.rest.create_router`
makes one :class:`Guards` and hands it to :mod:`.rest_sessions` and :mod:`.rest_words`)."""

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from .guards import SafeJSONResponse

__all__ = ["Guards"]


@dataclass(frozen=True)
class Guards:
    """The checks every ``/api`` route of one router goes through."""

    read: Callable[..., Awaitable[str | None]]
    """The dependency giving the caller's user, for a key with the ``read`` scope."""
    write: Callable[..., Awaitable[str | None]]
    """The same for the ``feedback`` scope (every route that changes something)."""
    route_class: type[APIRoute]
    """Checks the key, the rate and the body's size before the body is read."""
    responses: Callable[..., dict[int | str, dict[str, Any]]]
    """The OpenAPI ``responses`` of the error codes given."""
    errors: Callable[[str], AbstractContextManager[None]]
    """Store failures become 503, the library's input errors 422 (``store_errors``)."""
    auth_codes: tuple[int, ...]
    """401 / 403 (and 429) when the router has keys (and a rate limit)."""

    def router(self) -> APIRouter:
        """A router whose routes go through these checks."""
        return APIRouter(
            tags=["feedback"], route_class=self.route_class, default_response_class=SafeJSONResponse
        )
