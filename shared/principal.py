"""Who is calling: built by the gateway from a token, passed with every catalog RPC.

The gateway decides which roles may call an endpoint; the catalog applies the tenant
scope to every query, so a bug in one place cannot show another tenant's data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from shared.errors import Forbidden

ROLES = ("admin", "operator", "viewer", "auditor")


@dataclass(frozen=True)
class Principal:
    id: str
    role: str
    tenant: str | None = None
    #: 'token', 'admin' (COFFER_ADMIN_TOKEN), 'service' (another team's message), 'system'
    kind: str = "token"
    name: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Principal:
        return cls(**data)

    def actor(self) -> dict[str, Any]:
        return {"type": self.kind, "id": self.id, "role": self.role}

    def sees(self, tenant: str | None) -> bool:
        return self.tenant is None or self.tenant == tenant

    def tenant_filter(self, requested: str | None) -> str | None:
        """The tenant a listing is limited to (``None``: all, for a tenant-less admin)."""
        if self.tenant is None:
            return requested
        if requested not in (None, self.tenant):
            raise Forbidden("this token is limited to its own tenant", {"tenant": requested})
        return self.tenant

    def tenant_for_write(self, requested: str | None) -> str:
        """The tenant a new resource belongs to."""
        if self.tenant is None:
            if not requested:
                from shared.errors import ValidationFailed

                raise ValidationFailed(
                    "an admin must name the tenant",
                    {"tenant": ["Missing data for required field."]},
                )
            return requested
        if requested not in (None, self.tenant):
            raise Forbidden("this token is limited to its own tenant", {"tenant": requested})
        return self.tenant


SYSTEM = Principal(id="coffer", role="admin", tenant=None, kind="system", name="system")


def service_principal(tenant: str, requested_by: str) -> Principal:
    """A message on the bus acts as an operator of the tenant it names."""
    return Principal(
        id=requested_by, role="operator", tenant=tenant, kind="service", name=requested_by
    )
