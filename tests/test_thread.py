"""This repository's claims (thread.py): valid, distinct, registered idempotently, each showing real figures."""

from saeclaims.catalog import CATALOG, Catalog
from saeclaims.figures import FIGURES
from saeclaims.thread import THREAD_CLAIMS, register_thread_claims


def test_the_thread_claims_are_valid_and_distinct():
    cat = Catalog(THREAD_CLAIMS)
    assert len(cat) == 27
    assert cat.get("wpos-helix").references == ("gpt2-small (reference W_pos)",)
    assert cat.get("errors-worse-than-random").url.endswith("rZPiuFxESMxCDHe4B")  # Gurnee (2024)


def test_registering_twice_changes_nothing():
    first = register_thread_claims()
    assert register_thread_claims() == first and all(c.id in CATALOG for c in first)


def test_each_figure_a_claim_names_is_drawn_by_figures_py():
    names = {spec.name for spec in FIGURES}
    for c in THREAD_CLAIMS:
        assert set(c.figures) <= names, (c.id, set(c.figures) - names)
