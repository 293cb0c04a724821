"""One exception base, a few subclasses a caller can act on."""

import re

# msgspec validation messages end with " - at `$.path[2]`" when a field is at fault.
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


class ScanstreamError(Exception):
    """Base of every error scanstream raises on purpose."""


class StoreUnavailable(ScanstreamError):
    """Redis cannot be reached or answered with a connection-level failure."""


class ScanNotFound(ScanstreamError):
    """No such scan: unknown, malformed, expired or another user's (one answer for all)."""


class ScanConflict(ScanstreamError):
    """The request contradicts the scan's state (e.g. cancelling a scan that already ended)."""


class InvalidRequest(ScanstreamError):
    """Input that breaks the schema; `field` names the offending field when there is one."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class QuotaExceeded(ScanstreamError):
    """A user's limit on new scans (per minute, or active at once): `429` with Retry-After."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s


class StrategyLoadError(ScanstreamError):
    """A strategy module named in SCANSTREAM_STRATEGIES could not be loaded."""


class ConfigError(ScanstreamError):
    """A setting is missing or malformed."""


def split_validation_message(message: str) -> tuple[str, str]:
    """A msgspec ValidationError's text as (path, message): `.strategies[2]`, or "" when
    the error names no field."""
    match = _AT.match(message)
    if match is None:  # pragma: no cover - the pattern matches any string
        return "", message
    return match["path"] or "", match["msg"]
