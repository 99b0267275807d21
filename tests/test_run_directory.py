"""One run-provenance rule for every resumable output directory (eda_adapters/run_directory.py)."""

from __future__ import annotations

import json

import pytest

from eda_adapters import EdaInputError, RunDirectory, RunMismatchError
from eda_adapters.run_directory import key_differences

KEY = {"kind": "regeneration", "target": {"fingerprint": "abc", "dtype": "float32"}, "seed": 0, "layers": (1, 2)}


def test_a_new_directory_is_claimed_and_the_same_run_resumes(tmp_path):
    run = RunDirectory(tmp_path / "out", "regeneration")
    assert run.claim(KEY) is False  # new: the key is written
    assert json.loads((tmp_path / "out" / "run.json").read_text())["layers"] == [1, 2]
    (tmp_path / "out" / "chunk-0").write_text("work")
    assert run.claim(dict(KEY)) is True  # same key (tuples read back as lists): resumes
    assert run.check(KEY) is True
    (tmp_path / "empty").mkdir()
    assert RunDirectory(tmp_path / "empty", "regeneration").check(KEY) is False


def test_another_run_is_refused_naming_every_difference_and_nothing_changes(tmp_path):
    run = RunDirectory(tmp_path / "out", "regeneration", fix="use another --output-dir")
    run.claim(KEY)
    before = (tmp_path / "out" / "run.json").read_text()
    other = {**KEY, "target": {"fingerprint": "xyz", "dtype": "float32"}, "seed": 1}
    with pytest.raises(RunMismatchError) as caught:
        run.claim(other)
    message = str(caught.value)
    assert "holds another regeneration run (seed: 0 there, 1 now; target.fingerprint: 'abc' there, 'xyz' now)" in \
        message
    assert "use another --output-dir" in message and "\n" not in message
    assert (tmp_path / "out" / "run.json").read_text() == before
    assert isinstance(caught.value, EdaInputError)  # the CLI prints it in one line


def test_fields_limit_what_must_agree(tmp_path):
    run = RunDirectory(tmp_path / "ft", "fine-tune", "finetune.json")
    run.write_key({"base": "b", "data": "d", "settings": {"lr": 1e-3}, "train_loss": 0.5})
    assert run.check({"base": "b", "data": "d", "settings": {"lr": 1e-3}}, fields=("base", "data", "settings"))
    with pytest.raises(RunMismatchError, match=r"settings.lr: 0.001 there, 0.002 now"):
        run.check({"base": "b", "data": "d", "settings": {"lr": 2e-3}}, fields=("base", "data", "settings"))
    with pytest.raises(RunMismatchError, match="train_loss"):  # without fields, the whole key must agree
        run.check({"base": "b", "data": "d", "settings": {"lr": 1e-3}})


def test_foreign_files_a_file_and_an_unreadable_key_are_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(RunMismatchError, match="not empty and holds no run.json: it is not a features run made here"):
        RunDirectory(tmp_path / "mine", "features").claim(KEY)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunMismatchError, match="is a file"):
        RunDirectory(tmp_path / "file", "features").check(KEY)
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "run.json").write_text('{"kind": ')
    with pytest.raises(RunMismatchError, match=r"run.json is unreadable \(JSONDecodeError\)"):
        RunDirectory(tmp_path / "torn", "features").check(KEY)


def test_require_empty_for_jobs_that_never_resume(tmp_path):
    out = tmp_path / "export"
    assert RunDirectory(out, "export").require_empty() == out
    out.mkdir()
    (out / "model.safetensors").write_text("old")
    with pytest.raises(RunMismatchError, match=r"not empty: .* export output, or pass overwrite=True \(--overwrite\)"):
        RunDirectory(out, "export").require_empty(overwrite_hint="pass overwrite=True (--overwrite)")
    with pytest.raises(RunMismatchError, match="export output$"):
        RunDirectory(out, "export").require_empty()
    assert RunDirectory(out, "export").require_empty(overwrite=True) == out


def test_key_differences_walks_nested_keys_in_order():
    assert key_differences({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": None}) == ["b.c: 2 there, 3 now"]
    assert key_differences({"a": [1, 2]}, {"a": (1, 2)}) == []
    assert key_differences({}, {"x": 1}) == ["x: None there, 1 now"]
