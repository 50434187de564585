"""pyproject's explicit package list and the organism's package data stay complete.

The list is explicit because a find directive cannot add the data-only `saeclaims_organism`
package; these tests catch a new subpackage or organism file that a wheel would silently drop.
"""

import json
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
ORGANISM = ROOT / SETUPTOOLS["package-dir"]["saeclaims_organism"]


def test_every_package_under_src_is_listed():
    src = ROOT / "src"
    found = {".".join(p.parent.relative_to(src).parts) for p in src.rglob("__init__.py")}
    assert found - set(SETUPTOOLS["packages"]) == set()


@pytest.mark.skipif(not (ORGANISM / "card.json").exists(), reason="organism not built")
def test_package_data_covers_every_file_the_card_verifies():
    shipped = {p.relative_to(ORGANISM).as_posix()
               for pattern in SETUPTOOLS["package-data"]["saeclaims_organism"]
               for p in ORGANISM.glob(pattern) if p.is_file()}
    card = json.loads((ORGANISM / "card.json").read_text())
    assert set(card["sha256"]) | {"card.json"} <= shipped
    assert not any(part.startswith(".") for rel in shipped for part in Path(rel).parts)
