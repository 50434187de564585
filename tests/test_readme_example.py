"""README's "Write your own claim", run verbatim in a temporary directory outside this repository.

Every fenced block preceded by `<!-- example: own-claim PATH -->` is written to PATH; the block marked
`command` is run there. The plugin comes from the installed package (its entry point), the organism
from the installed data package, so this is what a user with `pip install saeclaims` gets.
"""

import json
import re
import shlex
from pathlib import Path

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- example: own-claim (\S+) -->\s*```[a-z]*\n(.*?)```", re.S)


def example_blocks() -> dict[str, str]:
    return dict(BLOCK.findall(README.read_text()))


def test_the_readme_names_its_example_files():
    blocks = example_blocks()
    assert {"conftest.py", "command"} <= set(blocks) and len(blocks) >= 4


def test_the_readme_example_runs_outside_the_repository(pytester):
    blocks = example_blocks()
    for name, text in blocks.items():
        if name != "command":
            (pytester.path / name).parent.mkdir(parents=True, exist_ok=True)
            (pytester.path / name).write_text(text)
    assert not str(pytester.path).startswith(str(README.parent))
    argv = shlex.split(blocks["command"].strip())
    assert argv[0] == "pytest"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *argv[1:], timeout=600)
    result.assert_outcomes(passed=6)  # 5 hooks in context + the layer-0 SAE beyond it, as the ledger says
    payload = json.loads((pytester.path / "report" / "report.json").read_text())
    verdicts = {(e["claim"], e["sae_id"]): e["verdict"] for e in payload["evidence"]}
    assert verdicts[("layer0-explains-most-variance-beyond-context", "blocks.0.hook_resid_pre")] == "refuted"
    assert payload["header"]["family_size"] == 6
    assert "explains-most-variance-in-context" in (pytester.path / "REPORT.md").read_text()
