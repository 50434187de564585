"""xdist_group keeps its tests on one worker under --dist loadgroup (pytest >= 9.2 needs xdist_groups.GroupIds)."""

import json

import pytest

pytest_plugins = ["pytester"]
pytest.importorskip("xdist")

GROUPED = """
import json, os, pathlib
import pytest

OUT = pathlib.Path({out!r})

@pytest.mark.xdist_group("one")
@pytest.mark.parametrize("i", range(12))
def test_grouped(i):
    (OUT / f"g{{i}}").write_text(os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.parametrize("i", range(12))
def test_free(i):
    (OUT / f"f{{i}}").write_text(os.environ["PYTEST_XDIST_WORKER"])
"""


def test_an_xdist_group_runs_on_one_worker(pytester):
    out = pytester.mkdir("out")
    pytester.makepyfile(test_grouped=GROUPED.format(out=str(out)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--no-sae-report", "-n", "2",
                                           "--dist", "loadgroup")
    result.assert_outcomes(passed=24)
    workers = {p.name: p.read_text() for p in out.iterdir()}
    assert len({workers[f"g{i}"] for i in range(12)}) == 1, json.dumps(workers)


def test_the_group_suffix_is_taken_off_report_node_ids():
    from saeclaims.xdist_groups import plain_nodeid

    assert plain_nodeid("claims/t.py::test_a[organism-blocks.2.hook_resid_pre]@organism::blocks.2.hook_resid_pre") \
        == "claims/t.py::test_a[organism-blocks.2.hook_resid_pre]"
    assert plain_nodeid("t.py::test_a[x]@local:fixtures/mixed::blocks.0.hook_resid_pre") == "t.py::test_a[x]"
    assert plain_nodeid("t.py::test_a@one") == "t.py::test_a"
    assert plain_nodeid("t.py::test_a[a@b]") == "t.py::test_a[a@b]"  # an @ inside a parameter id stays
    assert plain_nodeid("t.py::test_a[a@b]@g") == "t.py::test_a[a@b]"
    assert plain_nodeid("dir@1/t.py::test_a") == "dir@1/t.py::test_a"  # an @ in the path: no :: before it
    assert plain_nodeid("t.py::test_a") == "t.py::test_a"
