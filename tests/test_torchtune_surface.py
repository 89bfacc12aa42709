"""torchtune is used through one module only (tandem_components/torchtune_api.py)."""

import re
from pathlib import Path

import tandem_components

ROOT = Path(tandem_components.__file__).resolve().parent.parent
ALLOWED = {ROOT / "tandem_components" / "torchtune_api.py"}
IMPORT = re.compile(r"^\s*(from|import)\s+torchtune\b", re.M)


def test_only_torchtune_api_imports_torchtune():
    offenders = []
    for folder in ("tandem_components", "recipes", "tools", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if path not in ALLOWED and IMPORT.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
