"""Root conftest. The saeclaims pytest plugin loads through its `pytest11` entry point; the claims
this repository judges are registered in `claims/conftest.py`."""

import pytest


@pytest.fixture(scope="session")
def device(sae_device):
    """This repository's tests and benchmarks run on the plugin's device (GPU when present, else CPU)."""
    return sae_device
