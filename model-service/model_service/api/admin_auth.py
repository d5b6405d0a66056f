"""The /admin credential: one bearer token from settings, checked in constant time on every /admin request."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from model_service.core.config import Settings

# RFC 6750's b64token: anything else could never arrive intact in an `Authorization: Bearer` header.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# auto_error off: a missing or foreign credential gets our JSON 401, not FastAPI's default body.
_bearer = HTTPBearer(auto_error=False, description="the token of MODEL_SERVICE__ADMIN_TOKEN(_FILE)")


class AdminTokenSettingsError(Exception):
    """The admin token settings cannot be used; the service refuses to start rather than guess."""


class AdminDisabledError(Exception):
    """No admin token is configured, so every /admin route is refused whatever the request carries."""


class AdminUnauthorizedError(Exception):
    """The request carries no bearer token, or not the admin token."""

    def __init__(self, message: str, token_presented: bool) -> None:
        super().__init__(message)
        self.token_presented = token_presented


@dataclass(frozen=True)
class AdminToken:
    """The configured token, kept only as its SHA-256 digest (None: admin disabled).

    Comparing digests keeps the comparison constant-time in the token's length too:
    `hmac.compare_digest` returns early on inputs of different lengths.
    """

    digest: bytes | None

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminToken:
        """The token of `MODEL_SERVICE__ADMIN_TOKEN`, or of the file `MODEL_SERVICE__ADMIN_TOKEN_FILE` names.

        Raises AdminTokenSettingsError when both are set, the file cannot be read or is
        empty, or the token is not one a bearer header can carry.
        """
        token, source = None, None
        if settings.admin_token is not None and settings.admin_token_file is not None:
            raise AdminTokenSettingsError("set MODEL_SERVICE__ADMIN_TOKEN or MODEL_SERVICE__ADMIN_TOKEN_FILE, not both")
        if settings.admin_token is not None:
            token, source = settings.admin_token.get_secret_value(), "MODEL_SERVICE__ADMIN_TOKEN"
        elif settings.admin_token_file is not None:
            source = f"the file {settings.admin_token_file} (MODEL_SERVICE__ADMIN_TOKEN_FILE)"
            try:
                # Secret files are usually written by `echo` or an editor: one trailing line break.
                token = settings.admin_token_file.read_text().removesuffix("\n").removesuffix("\r")
            except (OSError, UnicodeDecodeError) as error:
                raise AdminTokenSettingsError(f"cannot read the admin token from {source}: {error}") from error
        if token is None:
            return cls(digest=None)
        if not _BEARER_TOKEN.fullmatch(token):
            # The value itself is never echoed: it is a secret, and may be one line off a real one.
            raise AdminTokenSettingsError(
                f"the admin token in {source} is empty or has characters a bearer token cannot carry "
                "(letters, digits and -._~+/ with trailing = only)"
            )
        return cls(digest=_digest(token))

    @property
    def enabled(self) -> bool:
        return self.digest is not None

    def check(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        """Return if `credentials` is `Bearer <the token>`; raise AdminDisabledError or AdminUnauthorizedError."""
        if self.digest is None:
            raise AdminDisabledError(
                "the admin endpoints are disabled: start the service with MODEL_SERVICE__ADMIN_TOKEN "
                "or MODEL_SERVICE__ADMIN_TOKEN_FILE to enable them"
            )
        presented = credentials.credentials.strip() if credentials is not None else ""
        if not presented:
            raise AdminUnauthorizedError("the admin endpoints need 'Authorization: Bearer <token>'", False)
        if not hmac.compare_digest(_digest(presented), self.digest):
            raise AdminUnauthorizedError("the bearer token is not the admin token", True)


def require_admin_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """FastAPI dependency of every /admin route: the request must carry the admin token."""
    admin_token: AdminToken = request.app.state.admin_token
    admin_token.check(credentials)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
