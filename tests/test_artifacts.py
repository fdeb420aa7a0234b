"""Artifact I/O: atomic writes (no half files, no temp leftovers) and safe reads (no code execution)."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from lottery.core.artifacts import ArtifactError, load_torch, read_json, save_torch, write_json, write_text


class _RunsCode:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _state():
    gen = torch.Generator().manual_seed(0)
    return {
        "fc1.weight": torch.randn(4, 3, generator=gen),
        "mask": torch.tensor([True, False, True]),
        "step": torch.tensor(7),
        "nested": {"values": [torch.arange(3), 1.5, "text"]},
    }


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "level_0" / "weights.pt"  # the folder is created
    state = _state()
    save_torch(state, path)
    loaded = load_torch(path)
    assert set(loaded) == set(state)
    assert torch.equal(loaded["fc1.weight"], state["fc1.weight"])
    assert loaded["mask"].dtype == torch.bool
    assert torch.equal(loaded["mask"], state["mask"])
    assert int(loaded["step"]) == 7
    assert torch.equal(loaded["nested"]["values"][0], torch.arange(3))
    assert loaded["nested"]["values"][1:] == [1.5, "text"]


def test_save_leaves_no_temp_files(tmp_path):
    save_torch(_state(), tmp_path / "a.pt")
    save_torch({"x": torch.ones(2)}, tmp_path / "a.pt")  # overwrite
    write_json({"k": 1}, tmp_path / "b.json")
    write_text("hello\n", tmp_path / "c.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.json", "c.txt"]
    assert torch.equal(load_torch(tmp_path / "a.pt")["x"], torch.ones(2))
    assert (tmp_path / "c.txt").read_text() == "hello\n"


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "weights.pt"
    save_torch({"x": torch.arange(5)}, path)
    old_bytes = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_torch({"x": torch.zeros(5)}, path)
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes
    assert torch.equal(load_torch(path)["x"], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]


def test_interrupted_write_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    def interrupted(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_torch({"x": torch.zeros(1)}, tmp_path / "new.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_load_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(ArtifactError) as info:
        load_torch(path, what="mask")
    assert not marker.exists()
    message = str(info.value)
    assert str(path) in message
    assert "mask" in message


def test_load_refuses_code_execution_inside_a_torch_file(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "payload": _RunsCode(marker)}, path)  # a real zip-format torch file
    with pytest.raises(ArtifactError, match="evil.pt"):
        load_torch(path)
    assert not marker.exists()


def test_truncated_file(tmp_path):
    path = tmp_path / "weights.pt"
    save_torch({"w": torch.randn(100, 100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError) as info:
        load_torch(path, what="checkpoint")
    assert str(path) in str(info.value)
    assert "checkpoint" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not a torch file at all"])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match="weights.pt"):
        load_torch(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(ArtifactError) as info:
        load_torch(path, what="mask")
    assert str(info.value) == f"mask {path} does not exist"


def test_artifact_error_is_not_swallowed_as_value_error():
    assert issubclass(ArtifactError, RuntimeError)


def test_json_round_trip(tmp_path):
    obj = {"b": [1, 2.5, None, True], "a": {"nested": "text"}, "level": 3}
    path = tmp_path / "sub" / "summary.json"
    write_json(obj, path)
    assert read_json(path) == obj
    text = path.read_text()
    assert text.endswith("}\n")
    assert text.index('"a"') < text.index('"b"')  # keys sorted, so files diff cleanly
    assert json.loads(text) == obj


@pytest.mark.parametrize("content", ['{"a": 1', "", "nan nan", '{"a": 1}}'])
def test_corrupt_json(tmp_path, content):
    path = tmp_path / "summary.json"
    path.write_text(content)
    with pytest.raises(ArtifactError) as info:
        read_json(path, what="summary")
    assert str(path) in str(info.value)
    assert "summary" in str(info.value)


def test_missing_json(tmp_path):
    path = tmp_path / "missing.json"
    with pytest.raises(ArtifactError, match="missing.json"):
        read_json(path)


def test_non_utf8_json_is_an_artifact_error(tmp_path):
    path = tmp_path / "summary.json"
    path.write_bytes(b"\x80\xff{garbage")
    with pytest.raises(ArtifactError, match="summary.json"):
        read_json(path)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_written_files_follow_the_umask_like_plain_files(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    expected = plain.stat().st_mode & 0o777
    if expected == 0o600:
        pytest.skip("the umask already makes files owner-only")
    save_torch({"x": torch.ones(1)}, tmp_path / "weights.pt")
    write_json({"a": 1}, tmp_path / "summary.json")
    assert (tmp_path / "weights.pt").stat().st_mode & 0o777 == expected
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == expected
