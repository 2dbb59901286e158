"""Errors that cross service boundaries as real exception classes.

Every subclass of :class:`CofferError` registers itself with nameko's exception
registry, so an error raised inside the catalog arrives at the gateway as the same
class, not as a ``RemoteError`` string. Each carries a stable ``code`` (what clients
match on), the HTTP status the gateway answers with, a human message and details.
"""

from __future__ import annotations

from typing import Any, ClassVar

from nameko.exceptions import deserialize_to_instance


class CofferError(Exception):
    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str = "", details: dict[str, Any] | None = None) -> None:
        # args must be exactly (message, details): nameko rebuilds the instance on
        # the calling side with ``cls(*exc_args)``.
        super().__init__(message or self.__class__.__doc__ or self.code, details or {})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        deserialize_to_instance(cls)

    @property
    def message(self) -> str:
        return str(self.args[0])

    @property
    def details(self) -> dict[str, Any]:
        details = self.args[1] if len(self.args) > 1 else {}
        return details if isinstance(details, dict) else {"detail": details}

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


deserialize_to_instance(CofferError)


# 400 -- the request itself is wrong
class ValidationFailed(CofferError):
    """The input does not match its schema."""

    code = "validation_failed"
    http_status = 400


class InvalidJSON(CofferError):
    """The request body is not valid JSON."""

    code = "invalid_json"
    http_status = 400


class UnknownDriver(CofferError):
    """No source driver of that name is registered."""

    code = "unknown_driver"
    http_status = 400


class InvalidSourceConfig(CofferError):
    """The driver refuses this configuration."""

    code = "invalid_source_config"
    http_status = 400


class InvalidMessage(CofferError):
    """A message on the coffer exchange does not match its schema."""

    code = "invalid_message"
    http_status = 400


class Unsupported(CofferError):
    """The source's driver does not offer this operation."""

    code = "unsupported"
    http_status = 400


class ConfirmationRequired(CofferError):
    """A destructive operation needs ``confirm`` equal to the source name."""

    code = "confirmation_required"
    http_status = 400


class InvalidSchedule(CofferError):
    """The cron expression or preset of a schedule is not valid."""

    code = "invalid_schedule"
    http_status = 400


class UnknownTimezone(InvalidSchedule):
    """The time zone is not an IANA name this host knows."""

    code = "unknown_timezone"


# 401 / 403 -- who is asking
class Unauthenticated(CofferError):
    """A valid bearer token is required."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(CofferError):
    """The token's role does not allow this."""

    code = "forbidden"
    http_status = 403


# 404 -- absent, or in another tenant (never told apart)
class NotFound(CofferError):
    """No such resource."""

    code = "not_found"
    http_status = 404


class SourceNotFound(NotFound):
    """No such source in this tenant."""

    code = "source_not_found"


class BackupNotFound(NotFound):
    """No such backup in this tenant."""

    code = "backup_not_found"


class RestoreNotFound(NotFound):
    """No such restore in this tenant."""

    code = "restore_not_found"


class ScheduleNotFound(NotFound):
    """No such schedule in this tenant."""

    code = "schedule_not_found"


class WebhookNotFound(NotFound):
    """No such webhook in this tenant."""

    code = "webhook_not_found"


class TenantNotFound(NotFound):
    """No such tenant."""

    code = "tenant_not_found"


# 409 -- the state of things forbids it
class Conflict(CofferError):
    """The request conflicts with the current state."""

    code = "conflict"
    http_status = 409


class AlreadyExists(Conflict):
    """A resource with that name already exists."""

    code = "already_exists"


class InvalidState(Conflict):
    """The job is not in a state that allows this."""

    code = "invalid_state"


class LegalHold(Conflict):
    """The backup is on legal hold: it cannot be deleted until the hold is released."""

    code = "legal_hold"


class TargetNotEmpty(Conflict):
    """The restore target holds data; only mode 'replace' may overwrite it."""

    code = "target_not_empty"


# 422 -- well-formed, but the world does not cooperate
class SourceUnavailable(CofferError):
    """The source cannot be reached or read."""

    code = "source_unavailable"
    http_status = 422


class UnsafePath(CofferError):
    """An entry would be written outside the restore target."""

    code = "unsafe_path"
    http_status = 422


class IntegrityError(CofferError):
    """Stored data does not match its checksum."""

    code = "integrity_error"
    http_status = 422


class MasterKeyMismatch(IntegrityError):
    """The configured master key does not open the repository's tenant keys."""

    code = "master_key_mismatch"
    http_status = 500


# 503 -- a dependency is down
class StoreUnavailable(CofferError):
    """The object store cannot be reached."""

    code = "store_unavailable"
    http_status = 503


class ServiceUnavailable(CofferError):
    """A Coffer service did not answer in time."""

    code = "service_unavailable"
    http_status = 503


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The ``error`` object of the HTTP and event contracts for any exception."""
    if isinstance(exc, CofferError):
        return exc.to_dict()
    return {"code": "internal_error", "message": "internal error", "details": {}}
