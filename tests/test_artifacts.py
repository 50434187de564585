"""Artifact integrity (artifacts.py): the advice for a changed file fits where the file lies."""

import pytest

from saeclaims.artifacts import ArtifactError, sha256_file, verify_tree


def _changed(folder):
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(b"original")
    digest = sha256_file(folder / "w.bin")
    (folder / "w.bin").write_bytes(b"changed")
    return {"w.bin": digest}


def test_inside_a_git_checkout_the_advice_is_git_checkout_relative_to_it(tmp_path):
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    expected = _changed(tmp_path / "repo" / "fixtures" / "organism")
    with pytest.raises(ArtifactError) as err:
        verify_tree(tmp_path / "repo" / "fixtures" / "organism", expected)
    assert f"`git -C {tmp_path / 'repo'} checkout -- fixtures/organism/w.bin`" in str(err.value)
    assert "--sae-subject local:DIR" in str(err.value)


def test_outside_any_checkout_there_is_no_git_advice(tmp_path):
    expected = _changed(tmp_path / "copy")
    with pytest.raises(ArtifactError) as err:
        verify_tree(tmp_path / "copy", expected)
    text = str(err.value)
    assert "is in no git checkout" in text and "checkout --" not in text
    assert "--sae-subject local:DIR" in text
