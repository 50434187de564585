"""`--dist loadgroup` under pytest >= 9.2: xdist's group mark carried to where pytest now reads a node id.

Why: pytest-xdist (3.8, the newest on the index) marks a test's group on the worker by renaming it,
`item._nodeid = "<nodeid>@<group>"`, and its scheduler groups by that suffix. pytest 9.2 derives `Node.nodeid` from
`item._id`, so the suffix never reached the scheduler: an xdist_group's tests spread over the workers as under
`--dist load`, and each worker measured every subject and hook its claim tests touched. This hook, after
xdist's, sets `_id` from the renamed id; where pytest has no `_id` (before 9.2) xdist's rename works and it does
nothing.
"""

from __future__ import annotations

import pytest


class GroupIds:
    """Registered by the plugin where xdist is installed."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        try:
            from _pytest.nodeid import NodeId
        except ImportError:  # pytest < 9.2: nodeid is _nodeid, which xdist sets itself
            return
        for item in items:
            renamed = vars(item).get("_nodeid")
            if isinstance(renamed, str) and renamed != item.nodeid and hasattr(item, "_id"):
                item._id = NodeId.parse(renamed)


def plain_nodeid(nodeid: str) -> str:
    """A test's node id without the `@group` suffix xdist appends under --dist loadgroup, so report rows name the
    test itself whatever the scheduling. A suffix follows a `::` and holds no bracket: an `@` inside a parameter
    id is always followed by the id's closing bracket, so it is never taken for one."""
    head, at, group = nodeid.rpartition("@")
    if at and "::" in head and not any(c in group for c in "[]"):
        return head
    return nodeid
