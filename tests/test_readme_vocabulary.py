"""README documents what a newcomer needs and the source alone said (issue 26): the claim-writing vocabulary
matches the library's names, the ledger file name rule is the code's, the regression recipes are runnable in
form, and progress is described."""

import re
from pathlib import Path

from saeclaims import instruments
from saeclaims.ledger import ledger_file
from saeclaims.measurements import LOSS_METRICS, RECON_METRICS
from saeclaims.variants import REGISTRY

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(title)
    nxt = re.search(r"^##+ ", README[start + len(title):], flags=re.M)
    return README[start: start + len(title) + (nxt.start() if nxt else len(README))]


def test_the_vocabulary_names_every_metric_variant_and_helper_the_library_has():
    vocab = _section("### Vocabulary for a claim test")
    for name in (*LOSS_METRICS, *RECON_METRICS, "x_norm", "wpos_share", *REGISTRY):
        assert f"`{name}`" in vocab, name
    for helper in re.findall(r"`(\w+)\(m", vocab):
        assert callable(getattr(instruments, helper, None)), helper


def test_the_ledger_file_names_in_readme_are_the_codes():
    for spec, name in re.findall(r"`(local:[^`]+)` -> `([^`]+\.toml)`", README):
        assert ledger_file(Path("claims/expected"), spec).name == name, spec


def test_the_ci_example_compares_a_release_with_its_own_report():
    ci = _section("A CI job that re-checks a new release")
    assert 'origin/main:reports/$RELEASE/report/report.json' in ci and '--sae-subject "$RELEASE"' in ci
    assert "--baseline-any-subject" not in ci.split("```")[1]  # same subject: no override needed
    recipe = _section("### I changed an SAE: compare it")
    assert "--sae-subject local:my-sae --baseline report/report.json --baseline-any-subject" in recipe


def test_progress_is_described():
    assert "--sae-progress" in README and "saeclaims: loading subject organism" in README
