"""The installed `coffer` script as a real process, and the CLI's import boundary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cli import exitcodes
from tests.fixtures import free_port
from tests.test_boundaries import imported_modules

ROOT = Path(__file__).resolve().parents[2]


def test_installed_script_gateway_down_exits_7(tmp_path: Path) -> None:
    """The `coffer` script that `pip install` made, as a real process, against a closed port."""
    script = Path(sys.executable).with_name("coffer")
    assert script.exists(), "the project's [project.scripts] entry was not installed"
    env = {
        **os.environ,
        "COFFER_URL": f"http://127.0.0.1:{free_port()}",
        "COFFER_TOKEN": "t",
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    proc = subprocess.run(
        [str(script), "backups", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == exitcodes.UNAVAILABLE, proc.stderr
    assert "unreachable" in proc.stderr and "COFFER_URL" in proc.stderr
    assert proc.stdout == ""


def test_cli_imports_neither_services_nor_shared() -> None:
    """The CLI talks HTTP only, so it installs and runs without the platform's code."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "cli").rglob("*.py")
        if "tests" not in path.parts
        for module in imported_modules(path)
        if module.split(".")[0] in ("services", "shared")
    ]
    assert not offenders, offenders
