"""Where the CLI finds the gateway and its token.

Order: ``COFFER_URL`` / ``COFFER_TOKEN`` in the environment, then what ``coffer login``
saved in ``$XDG_CONFIG_HOME/coffer/config.json`` (default ``~/.config``), then for the
URL the embedded default. The file holds a secret, so it is written 0600 (through a
temporary file in the same 0700 folder, then renamed, so it is never readable by others
even for a moment and never left half-written).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli import exitcodes
from cli.errors import CliError

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Settings:
    url: str
    token: str | None
    #: Where each value came from, for `coffer login` and error messages.
    source: str


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "coffer" / "config.json"


def load_saved() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(
            "bad_config",
            f"cannot read {path}: {exc}",
            exitcodes.USAGE,
            hint="run `coffer logout` then `coffer login` to write it again",
        ) from exc
    return data if isinstance(data, dict) else {}


def save(url: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": url, "token": token}, out, indent=2)
        out.write("\n")
    os.chmod(tmp, 0o600)  # O_CREAT's mode is ignored for a file that already existed
    os.replace(tmp, path)
    return path


def forget() -> bool:
    """Remove the saved login; False when there was none."""
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return True


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


def resolve() -> Settings:
    saved = load_saved()
    env_url, env_token = os.environ.get("COFFER_URL"), os.environ.get("COFFER_TOKEN")
    url = env_url or saved.get("url") or DEFAULT_URL
    token = env_token or saved.get("token") or None
    source = "environment" if env_token else ("saved login" if token else "none")
    return Settings(url=normalize_url(str(url)), token=token, source=source)
