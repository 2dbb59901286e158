"""Small nameko dependency providers every service may use."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider

from shared.config import Settings, settings


class SettingsProvider(DependencyProvider):
    """The service's :class:`Settings`, resolved once from its config at start-up."""

    def setup(self) -> None:
        self.value = settings(self.container.config)

    def get_dependency(self, worker_ctx: Any) -> Settings:
        return self.value
