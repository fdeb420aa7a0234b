"""Experiment hashing, unit level: which fields count, how nested sections flatten, and digest stability."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import pytest

from lottery.core.hashing import digest, hash_inputs


@dataclass
class Inner:
    rate: float = 0.2
    layers: list[str] = field(default_factory=list)
    path: str = field(default="/tmp", metadata={"hash": False})


@dataclass
class Other:
    kind: str = "a"


@dataclass
class Outer:
    name: str = "x"
    lr: float = 0.1
    _target_: str = "some.import.Path"
    _private: int = 0
    device: str = field(default="cpu", metadata={"hash": False})
    inner: Inner = field(default_factory=Inner)
    skipped: Other = field(default_factory=Other, metadata={"hash": False})
    extra: dict = field(default_factory=dict)
    items: list = field(default_factory=list)


@dataclass
class Required:
    width: int  # no default: always hashed


def test_all_defaults_hash_to_nothing():
    assert hash_inputs(Outer()) == {}


def test_non_default_values_are_hashed():
    assert hash_inputs(Outer(name="y", lr=0.5)) == {"name": "y", "lr": 0.5}


def test_private_fields_are_skipped():
    assert hash_inputs(Outer(_target_="another.Path", _private=3)) == {}


def test_hash_false_fields_are_skipped():
    assert hash_inputs(Outer(device="cuda")) == {}
    assert hash_inputs(Outer(skipped=Other(kind="b"))) == {}
    assert hash_inputs(Outer(inner=Inner(path="/elsewhere"))) == {}


def test_fields_without_default_are_always_hashed():
    assert hash_inputs(Required(width=3)) == {"width": 3}


def test_nested_dataclasses_flatten_to_dotted_keys():
    config = Outer(lr=0.5, inner=Inner(rate=0.1, layers=["fc3"]))
    assert hash_inputs(config) == {"lr": 0.5, "inner.rate": 0.1, "inner.layers": ["fc3"]}
    assert hash_inputs(Inner(rate=0.3), prefix="pruning.") == {"pruning.rate": 0.3}


def test_default_factory_values_count_as_default():
    assert hash_inputs(Outer(inner=Inner(layers=[]), extra={}, items=[])) == {}


def test_containers_become_plain_json():
    config = Outer(extra={1: (1, 2)}, items=[Inner(rate=0.5), Inner(), (3, 4)])
    inputs = hash_inputs(config)
    # Dict keys become strings, tuples lists, dataclasses dicts of their own hashed non-default fields.
    assert inputs == {"extra": {"1": [1, 2]}, "items": [{"rate": 0.5}, {}, [3, 4]]}
    json.dumps(inputs)  # serialisable as is


def test_digest_is_sha256_of_canonical_json():
    inputs = {"b": 1, "a": [1, 2]}
    expected = hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()
    assert digest(inputs) == expected[:10]
    assert digest(inputs, length=16) == expected[:16]
    assert len(digest({})) == 10


def test_digest_ignores_dict_order():
    a = {"lr": 0.1, "inner.rate": 0.2, "extra": {"x": 1, "y": 2}}
    b = {"extra": {"y": 2, "x": 1}, "inner.rate": 0.2, "lr": 0.1}
    assert list(a) != list(b)
    assert digest(a) == digest(b)


@pytest.mark.parametrize(
    "changed",
    [
        Outer(lr=0.2),
        Outer(name="z"),
        Outer(inner=Inner(rate=0.3)),
        Outer(inner=Inner(layers=["fc1"])),
        Outer(extra={"k": 1}),
    ],
)
def test_digest_changes_with_a_hashed_value(changed):
    assert digest(hash_inputs(changed)) != digest(hash_inputs(Outer()))


def test_digest_unchanged_by_unhashed_values():
    base = digest(hash_inputs(Outer(lr=0.2)))
    assert digest(hash_inputs(Outer(lr=0.2, device="cuda", _target_="x.Y", inner=Inner(path="/p")))) == base


def test_list_order_matters():
    assert digest(hash_inputs(Outer(items=[1, 2]))) != digest(hash_inputs(Outer(items=[2, 1])))


def test_setting_a_value_back_to_its_default_gives_the_default_hash():
    config = Outer(lr=0.5)
    config = dataclasses.replace(config, lr=0.1)
    assert hash_inputs(config) == {}
    assert digest(hash_inputs(config)) == digest({})
