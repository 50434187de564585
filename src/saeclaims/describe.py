"""Moved to `saeclaims.subjects.describe`; kept so `from saeclaims.describe import ...` still works."""

from .subjects import SubjectInfo, describe_subject, hooks_in_scope  # noqa: F401
from .subjects.describe import _scan_sae_dirs  # noqa: F401
