"""The claims this repository judges: the thread around Anders & Bloom (2024) and its follow-ups."""

from saeclaims.thread import register_thread_claims

register_thread_claims()
