"""Root conftest: the saeclaims plugin (options, subject fixtures, evidence, REPORT.md)."""

pytest_plugins = ["saeclaims.pytest_plugin"]
