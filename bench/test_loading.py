"""How long loading the default subject takes (the foundation's target: under 5 s on CPU), measured
after imports, with artifact hashes verified as in every real run."""

import pytest

from saeclaims.subjects import load_organism

pytestmark = pytest.mark.gpu


def test_load_organism(benchmark, device):
    load_organism(device=str(device))  # warm the file cache and imports outside the timed region
    benchmark.group = "loading"
    subject = benchmark.pedantic(load_organism, kwargs={"device": str(device)}, rounds=3, iterations=1)
    assert subject.tokens.shape == (64, 1024)
