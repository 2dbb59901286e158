"""Webhook endpoints of the gateway (mixed into ``GatewayService``).

Delivery, signing and retries happen in the catalog (``services.catalog.webhooks``).
"""

from __future__ import annotations

from typing import Any

from services.gateway import schemas as s
from services.gateway.api import Call, api

WRITE = ("admin", "operator")


class WebhooksApi:
    catalog_rpc: Any

    @api(
        "GET",
        "/api/v1/webhooks",
        summary="List webhooks",
        action="webhook.list",
        roles=WRITE,
        query=s.SourceQuery,
        response=s.WebhookList,
    )
    def list_webhooks(self, call: Call) -> Any:
        return {"items": self.catalog_rpc.list_webhooks(call.p, call.query.get("tenant"))}

    @api(
        "POST",
        "/api/v1/webhooks",
        summary="Subscribe a URL to job events (signed JSON POSTs, retried)",
        action="webhook.create",
        roles=WRITE,
        body=s.WebhookCreate,
        response=s.WebhookOut,
        status=201,
        audit_success=True,
        errors=(404,),
    )
    def create_webhook(self, call: Call) -> Any:
        call.tenant = call.who.tenant_for_write(call.body.get("tenant"))
        hook = self.catalog_rpc.create_webhook(call.p, {**call.body, "tenant": call.tenant})
        call.resource_id = hook["id"]
        call.audit_details = {"url": hook["url"], "events": hook["events"]}
        return hook

    @api(
        "DELETE",
        "/api/v1/webhooks/<webhook_id>",
        summary="Delete a webhook",
        action="webhook.delete",
        roles=WRITE,
        response=s.WebhookOut,
        audit_success=True,
        errors=(404,),
    )
    def delete_webhook(self, call: Call, webhook_id: str) -> Any:
        hook = self.catalog_rpc.delete_webhook(call.p, webhook_id)
        call.tenant = hook["tenant"]
        return hook

    @api(
        "GET",
        "/api/v1/webhooks/<webhook_id>/deliveries",
        summary="A webhook's deliveries, newest first, with every attempt",
        action="webhook.deliveries",
        roles=WRITE,
        query=s.Paging,
        response=s.DeliveryPage,
        errors=(404,),
    )
    def webhook_deliveries(self, call: Call, webhook_id: str) -> Any:
        return self.catalog_rpc.list_deliveries(
            call.p, webhook_id, call.query["page"], call.query["per_page"]
        )
