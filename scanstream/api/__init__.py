"""The HTTP API: `create_app(settings)`, `app_from_env()`, and bearer tokens."""

from scanstream.api.app import app_from_env, create_app
from scanstream.api.auth import make_token, verify_token

__all__ = ["app_from_env", "create_app", "make_token", "verify_token"]
