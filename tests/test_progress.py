"""Progress lines (progress.py): rewritten in place on a terminal, throttled in a log, one per SAE and batch."""

import io

from saeclaims import progress
from saeclaims.progress import ProgressLine
from saeclaims.splice import measure
from tests.conftest import tiny_subject


def test_a_terminal_line_is_rewritten_in_place_and_ended():
    out = io.StringIO()
    line = ProgressLine(tty=True, stream=out)
    line.step("a")
    line.step("b")
    line.done("measured")
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 3 and text.endswith(" s]\n")
    assert "saeclaims: b [" in text and "saeclaims: measured [" in text


def test_a_log_gets_whole_lines_at_most_every_few_seconds(monkeypatch):
    clock = iter([0.0, 1.0, 6.0, 7.0, 7.0])  # the three steps, then done's elapsed time and its stamp
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    line = ProgressLine(tty=False, stream=out, t0=0.0)
    for text in ("first", "too soon", "later"):
        line.step(text)
    line.done("measured")
    lines = out.getvalue().splitlines()
    assert [x.split(" [")[0] for x in lines] == ["saeclaims: first", "saeclaims: later", "saeclaims: measured"]
    assert "\r" not in out.getvalue()


def test_measure_reports_the_statistics_pass_and_each_sae_of_each_batch():
    subject = tiny_subject(n_seqs=6)
    steps: list[str] = []
    measure(subject, variants=("sae",), batch_size=4, progress=False, on_step=steps.append)
    hooks = subject.sae_ids
    assert steps[0] == f"{subject.name}: in-context statistics of {len(hooks)} SAEs"
    assert steps[1:] == [f"{subject.name}: sequences {a}-{b} of 6, SAE {h} ({j + 1}/{len(hooks)})"
                         for a, b in ((1, 4), (5, 6)) for j, h in enumerate(hooks)]
