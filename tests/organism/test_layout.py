"""The evaluation set's layout: windows that never cross a document, and each window's document."""

import numpy as np
import pytest

from saeclaims.organism.layout import document_windows, stream_window_documents, windows


def _doc(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.uint16)


def test_document_windows_go_round_robin_and_never_cross_a_document():
    docs = [_doc(100, 9), _doc(200, 4), _doc(300, 13)]  # bodies of 4 tokens: 2, 1 and 3 windows
    rows, ids = document_windows(docs, 5, 0, 6)
    assert ids.tolist() == [0, 1, 2, 0, 2, 2]
    assert rows[:, 0].tolist() == [0] * 6
    assert rows[0, 1:].tolist() == [100, 101, 102, 103] and rows[3, 1:].tolist() == [104, 105, 106, 107]
    assert rows[5, 1:].tolist() == [308, 309, 310, 311]  # doc 2's last partial token (312) dropped
    assert ids.dtype == np.int32 and rows.dtype == np.uint16


def test_document_windows_skip_short_documents_and_say_when_too_few():
    rows, ids = document_windows([_doc(1, 3), _doc(10, 8)], 5, 0, 2)
    assert ids.tolist() == [1, 1]
    with pytest.raises(ValueError, match="need 3 windows of 5 tokens, the 2 documents hold 2"):
        document_windows([_doc(1, 3), _doc(10, 8)], 5, 0, 3)


def test_stream_window_documents_names_the_majority_document():
    # docs of 6, 2 and 9 tokens, each after BOS (0), cut into windows with bodies of 4
    stream = np.concatenate([[0], _doc(1, 6), [0], _doc(20, 2), [0], _doc(40, 9)]).astype(np.uint16)
    rows = windows(stream, 5, 0)  # bodies: [0 1 2 3] [4 5 6 0] [20 21 0 40] [41 42 43 44] ...
    labels = stream_window_documents(rows, 0)
    assert labels[0] == labels[1]  # 1, then 3 of doc 0 (plus the next doc's BOS)
    assert labels[2] != labels[1] and labels[3] == labels[4]  # a 2-2 tie goes to the earlier document
    assert len(np.unique(labels)) == 3
