"""sae-claims: interpretability claims about SAEs as statistical unit tests.

Write a claim: `register_claim(...)` in a conftest.py, then a test marked `@pytest.mark.claim("id")`
that uses the `claim` fixture (see README, "Write your own claim").
"""

from .catalog import Claim, ClaimError, Scope, register_claim, register_scope

__version__ = "0.1.0"
__all__ = ["Claim", "ClaimError", "Scope", "register_claim", "register_scope"]
