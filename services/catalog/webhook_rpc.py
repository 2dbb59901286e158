"""The catalog's webhook RPCs and delivery timer (mixed into ``CatalogService``).

The rules and the sending are in :mod:`services.catalog.webhooks`.
"""

from __future__ import annotations

from typing import Any

from nameko.rpc import rpc
from nameko.timer import timer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.catalog import webhooks
from services.catalog.models import Webhook, WebhookDelivery, new_id
from shared.config import Settings
from shared.errors import CofferError, WebhookNotFound
from shared.principal import Principal


class WebhookRpc:
    db: Session
    settings: Settings

    def _box(self) -> Any: ...  # provided by CatalogService
    def _tenant(self, name: str) -> Any: ...  # provided by CatalogService

    def _webhook(self, who: Principal, webhook_id: str) -> Webhook:
        row = self.db.get(Webhook, webhook_id)
        if row is None or not who.sees(row.tenant):
            raise WebhookNotFound(f"no webhook {webhook_id!r}", {"webhook_id": webhook_id})
        return row

    def _open_secret(self, row: Webhook) -> str:
        return str(self._box().open(row.secret, aad=f"webhook:{row.id}")["secret"])

    @rpc(expected_exceptions=CofferError)
    def create_webhook(self, principal: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``{url, events, secret?, tenant?}``; the answer shows the secret, once."""
        who = Principal.from_dict(principal)
        tenant = who.tenant_for_write(data.get("tenant"))
        self._tenant(tenant)
        secret = data.get("secret") or webhooks.new_secret()
        row = Webhook(
            id=new_id(), tenant=tenant, url=data["url"], events=sorted(set(data["events"]))
        )
        row.secret = self._box().seal({"secret": secret}, aad=f"webhook:{row.id}")
        self.db.add(row)
        self.db.commit()
        return {**webhooks.webhook_view(row), "secret": secret}

    @rpc(expected_exceptions=CofferError)
    def list_webhooks(
        self, principal: dict[str, Any], tenant: str | None = None
    ) -> list[dict[str, Any]]:
        scope = Principal.from_dict(principal).tenant_filter(tenant)
        query = select(Webhook).order_by(Webhook.created_at, Webhook.id)
        if scope is not None:
            query = query.where(Webhook.tenant == scope)
        return [webhooks.webhook_view(r) for r in self.db.scalars(query)]

    @rpc(expected_exceptions=CofferError)
    def delete_webhook(self, principal: dict[str, Any], webhook_id: str) -> dict[str, Any]:
        row = self._webhook(Principal.from_dict(principal), webhook_id)
        view = webhooks.webhook_view(row)
        self.db.query(WebhookDelivery).filter(WebhookDelivery.webhook_id == row.id).delete()
        self.db.delete(row)
        self.db.commit()
        return view

    @rpc(expected_exceptions=CofferError)
    def list_deliveries(
        self, principal: dict[str, Any], webhook_id: str, page: int = 1, per_page: int = 50
    ) -> dict[str, Any]:
        row = self._webhook(Principal.from_dict(principal), webhook_id)
        where = WebhookDelivery.webhook_id == row.id
        total = self.db.scalar(select(func.count()).select_from(WebhookDelivery).where(where))
        rows = self.db.scalars(
            select(WebhookDelivery)
            .where(where)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
        return {
            "items": [webhooks.delivery_view(d) for d in rows],
            "total": total or 0,
            "page": page,
            "per_page": per_page,
        }

    @timer(interval=1)
    def deliver_webhooks(self) -> None:
        webhooks.deliver_due(self.db, self.settings, self._open_secret)
