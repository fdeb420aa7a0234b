"""model=hf: a pretrained Hugging Face causal LM (GPT-2, OPT, GPT-NeoX/Pythia, Llama, Mistral, Gemma 3) as a lottery
network.

    lottery model=hf model.path=facebook/opt-125m data=icl_text data.task=antonyms pruning.strategy=structured

The library's own `AutoModelForCausalLM.from_pretrained` loads it (local files only when `model.path` is a folder or
HF_HUB_OFFLINE is set); transformers is imported here only, so `import lottery` never needs it (`pip install -e
'.[hf]'`). Its theta_0 is the pretrained weights: `rewind.step=0it` rewinds every level to them (Chen et al. 2020).

Heads, FFN units and FFN blocks are masked in the same weight masks as every other model (lottery/models/
hf_families.py says which slices each owns). `forward(x, gates=...)` multiplies each head's slice of the attention
output projection's input, each FFN unit's input to the down-projection and each FFN block's output by a gate, with
forward hooks on the library's modules (no `head_mask`, no patched source): at gates of one nothing changes, and
d loss / d gate is the gradient importance of Michel et al. 2019. A `layers` gate scales a whole decoder block's
contribution to the residual stream; `forward(x, skip=[...])` replaces removed layers by the identity (not computed),
and `forward(x, at=mask)` runs the output head only at the scored positions (lottery/structured/probe.py).

Gemma 3 (Gemma3ForCausalLM, model_type gemma3_text) is gated like Llama, with Llama's module names, except that its
FFN-block gate scales post_feedforward_layernorm's output: Gemma normalises the attention output and the FFN output
again before adding them to the residual stream, so a removed head's zeros pass through the output projection and
post_attention_layernorm (the remaining heads' output is re-normalised, exactly as with zeroed weights), and a removed
block's zeros stay exactly zero through the norm (hf_families.py says why the block gate sits after it). Its
sliding-window layers are the library's own: a skipped layer is the identity, and the model cut to the kept layers
must keep their `config.layer_types` (sliding or full attention) with them.

Token tasks whose vocabulary is their own (data=icl_recall) are mapped into the model's: task token i is model token
`token_offset + i`, and the outputs are the logits of those tokens. Text tasks (data=icl_text) use the model's
tokenizer, so their tokens are the model's (the identity map, all logits).

`model.gguf_file` names a GGUF file inside the folder model.path (llama.cpp's format, weights and tokenizer in one
file, usually quantized): transformers' own GGUF support dequantizes it to a plain model of its family (float32), so
everything above applies unchanged; `quantization` says which file type the weights came from ("Q4_1", ...).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from lottery.core.units import UnitLayout
from lottery.models import dequantized
from lottery.models import hf_families as fam

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
# GGUF general.architecture -> model_type, for the architectures that transformers' GGUF loader reads and
# hf_families.FAMILIES covers (llama.cpp writes Mistral models as "llama"; it has no GPT-NeoX loader in transformers,
# and OPT has no GGUF form). A "gemma3" file holds the text model alone, which transformers loads as
# Gemma3ForCausalLM with model_type "gemma3_text".
GGUF_MODEL_TYPES = {"llama": "llama", "gpt2": "gpt2", "gemma3": "gemma3_text"}


class HFModelError(ValueError):
    """A model.path or model setting that cannot be loaded; the message names the value and the fix."""


def offline(path: str, local_files_only: bool | None = None) -> bool:
    """Local files only: when asked, when `path` is a folder, or when the hub is switched off (HF_HUB_OFFLINE=1)."""
    if local_files_only is not None:
        return local_files_only
    return Path(path).is_dir() or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _looks_local(path: str) -> bool:
    """A hub id is `name` or `org/name`; anything else (absolute, relative, ~, deeper) is meant as a folder."""
    return path.startswith(("/", ".", "~")) or path.count("/") > 1 or os.sep in path.replace("/", "")


def gguf_path(path: str, gguf_file: str) -> Path:
    """The GGUF file `gguf_file` inside the folder `path`, or HFModelError naming what is there instead."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise HFModelError(
            f"model.gguf_file={gguf_file!r} is read from the folder model.path, and model.path={path!r} is not a "
            "folder; give the folder that holds the .gguf file (download it first: hub GGUF repos are not fetched)"
        )
    file = folder / gguf_file
    if not file.is_file():
        there = sorted(f.name for f in folder.glob("*.gguf"))
        fix = f"the GGUF files {', '.join(there)}; give one of those" if there else "no .gguf file; give its folder"
        raise HFModelError(f"model.gguf_file={gguf_file!r} is not a file in model.path={path!r}, which holds {fix}")
    return file


# GGUF metadata value types (the GGUF spec): fixed-width struct formats; 8 is a string, 9 an array
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _gguf_value(buf: mmap.mmap, pos: int, kind: int) -> tuple[object, int]:
    """One metadata value and the offset past it. Arrays (the vocabulary, 100k strings in a real file) are walked
    and returned as None: nothing here needs them, and decoding them would cost seconds."""
    if kind in _GGUF_SCALARS:
        return struct.unpack_from(_GGUF_SCALARS[kind], buf, pos)[0], pos + struct.calcsize(_GGUF_SCALARS[kind])
    if kind == 8:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return bytes(buf[pos + 8 : pos + 8 + n]).decode("utf-8", "replace"), pos + 8 + n
    if kind == 9:
        item, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if item in _GGUF_SCALARS:
            return None, pos + count * struct.calcsize(_GGUF_SCALARS[item])
        for _ in range(count):
            _, pos = _gguf_value(buf, pos, item)
        return None, pos
    raise ValueError(f"unknown GGUF metadata value type {kind}")


def gguf_header(file: Path) -> tuple[dict[str, object], list[int]]:
    """A GGUF file's metadata (arrays left out) and its tensors' ggml types, read from the memory-mapped header
    alone: no tensor data is touched, so a 100 MB file answers in milliseconds (gguf.GGUFReader takes seconds)."""
    with open(file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise HFModelError(f"{str(file)!r} is not a GGUF file (no GGUF magic bytes); give a .gguf file")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:  # v1 counted in 32 bits; llama.cpp has written v2+ since 2023
            raise HFModelError(f"{str(file)!r} is GGUF v{version}; convert it again with a current llama.cpp")
        pos, metadata = 24, {}
        for _ in range(n_kv):
            key, pos = _gguf_value(buf, pos, 8)
            (kind,) = struct.unpack_from("<I", buf, pos)
            metadata[key], pos = _gguf_value(buf, pos + 4, kind)
        types = []
        for _ in range(n_tensors):  # name, n_dims, dims, ggml type, offset
            _, pos = _gguf_value(buf, pos, 8)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            pos += 4 + 8 * n_dims
            types.append(struct.unpack_from("<I", buf, pos)[0])
            pos += 12
    return metadata, types


def gguf_model_type(path: str, gguf_file: str) -> str:
    """The model_type of a GGUF file's architecture, from its metadata only."""
    arch = gguf_header(gguf_path(path, gguf_file))[0].get("general.architecture")
    if arch not in GGUF_MODEL_TYPES:
        raise HFModelError(
            f"model.gguf_file={gguf_file!r} holds a {arch!r} model; model=hf reads GGUF files of the architectures "
            f"{', '.join(GGUF_MODEL_TYPES)} (those transformers' GGUF loader and lottery's families both cover); "
            "give such a file, or a folder written by save_pretrained"
        )
    return GGUF_MODEL_TYPES[arch]


def gguf_quantization(path: str, gguf_file: str) -> str:
    """The file type of a GGUF file's weights: "Q4_1", "Q8_0", ..., or "F32"/"F16"/"BF16" for unquantized ones.
    llama.cpp records it as general.file_type; files without it are named by their commonest tensor type."""
    import gguf

    metadata, types = gguf_header(gguf_path(path, gguf_file))
    try:
        name = gguf.LlamaFileType(metadata["general.file_type"]).name
    except (KeyError, ValueError):  # absent, or a number this gguf package does not know
        name = "GUESSED"
    if name == "GUESSED":
        name = gguf.GGMLQuantizationType(max(set(types), key=types.count)).name if types else "F32"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def model_type(path: str, local_files_only: bool | None = None, gguf_file: str | None = None) -> str:
    """config.json's model_type (or the GGUF file's architecture), read without loading any weights."""
    if gguf_file is not None:
        return gguf_model_type(path, gguf_file)
    folder = Path(path).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        if not config.is_file():
            ggufs = sorted(f.name for f in folder.glob("*.gguf"))
            hint = f" (it holds GGUF files: give model.gguf_file={ggufs[0]})" if ggufs else ""
            raise HFModelError(
                f"model.path={path!r} is a folder without config.json{hint}; give a folder written by "
                "save_pretrained (config.json and the weights) or a hub id such as facebook/opt-125m"
            )
        return json.loads(config.read_text()).get("model_type", "")
    if _looks_local(path):
        raise HFModelError(
            f"model.path={path!r} does not exist; give a folder written by save_pretrained or a hub id such as "
            "facebook/opt-125m (hub ids need network access or the hub cache)"
        )
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=offline(path, local_files_only)).model_type
    except OSError as err:
        raise HFModelError(
            f"model.path={path!r} is neither a folder nor a hub id whose config can be read here ({err}); give a "
            "folder written by save_pretrained, or run once with network access to fill the hub cache"
        ) from None


def check_model(path: str, local_files_only: bool | None = None, gguf_file: str | None = None) -> str:
    """The family of `path` (or of the GGUF file `gguf_file` in it), or HFModelError before any weights load."""
    kind = model_type(path, local_files_only, gguf_file)
    if kind not in fam.FAMILIES:
        raise HFModelError(
            f"model.path={path!r} is a {kind or 'model without a model_type'!r} model; model=hf supports the "
            f"causal-LM families {', '.join(fam.SUPPORTED)}"
        )
    return kind


def has_tokenizer(path: str, gguf_file: str | None = None) -> bool:
    """Whether a tokenizer was saved beside the model (always assumed for hub ids, which the library resolves, and
    for GGUF files, which hold their tokenizer)."""
    if gguf_file is not None:
        return True
    folder = Path(path).expanduser()
    return not folder.is_dir() or any((folder / f).is_file() for f in TOKENIZER_FILES)


class HFCausalLM(nn.Module):
    scores_positions = True  # forward(x, at=...) runs the output head on the scored positions only
    skips_layers = True  # forward(x, skip=...) replaces whole decoder layers by the identity

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        path: str,
        dtype: str = "float32",
        token_offset: int = 0,
        gguf_file: str | None = None,
        local_files_only: bool | None = None,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if width != 1.0:
            raise HFModelError(f"model.width={width}: a pretrained model has its own width; leave model.width=1.0")
        if dtype not in DTYPES:
            raise HFModelError(f"model.dtype={dtype!r} is not one of {list(DTYPES)}")
        kind = check_model(path, local_files_only, gguf_file)
        # which GGUF file type the weights were dequantized from, so a report can say the model was quantized
        self.quantization = gguf_quantization(path, gguf_file) if gguf_file is not None else None
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging

        logging.disable_progress_bar()  # a bar per load would fill a run's log; the run's own output says what loads
        where = str(Path(path).expanduser()) if Path(path).expanduser().is_dir() else path

        def from_pretrained(folder: str = where, gguf: str | None = gguf_file):
            return AutoModelForCausalLM.from_pretrained(
                folder, dtype=DTYPES[dtype], local_files_only=offline(path, local_files_only), gguf_file=gguf
            )

        if gguf_file is None:
            self.lm, self.loaded_from = from_pretrained(), where
        else:  # dequantized once, then read back as safetensors (lottery/models/dequantized.py says why)
            file = gguf_path(path, gguf_file)
            self.lm, self.loaded_from = dequantized.load(
                file, dtype, from_pretrained, lambda folder: from_pretrained(str(folder), None)
            )
        self.family_name, self.family = kind, fam.FAMILIES[kind]
        if getattr(self.lm.config, "final_logit_softcapping", None) is not None:
            # forward(x, at=...) runs the output head itself, without the library's tanh cap on the logits
            raise HFModelError(
                f"model.path={path!r} caps its logits (final_logit_softcapping="
                f"{self.lm.config.final_logit_softcapping}), which model=hf's scored-position logits leave out; give "
                "a model without it (Gemma 3's own configs have none)"
            )
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        vocab = self.lm.get_input_embeddings().num_embeddings
        if token_offset < 0 or token_offset + num_classes > vocab:
            raise HFModelError(
                f"the task has {num_classes} tokens, which model.token_offset={token_offset} maps to model tokens "
                f"{token_offset}..{token_offset + num_classes - 1}, beyond the model's vocabulary of {vocab}; use a "
                "smaller task (data.n_keys, data.n_values) or a smaller model.token_offset"
            )
        self.identity = token_offset == 0 and num_classes == vocab
        self.register_buffer("token_ids", torch.arange(num_classes) + token_offset, persistent=False)
        self.shape = self._read_shape()
        self.compacted = False  # set by lottery/structured/hf_export.py: layer shapes then differ
        self.train()  # from_pretrained leaves the model in eval mode; a fresh network starts in train mode

    def decoder_layers(self) -> nn.ModuleList:
        return self.lm.get_submodule(self.family.layers)

    def _read_shape(self) -> fam.Shape:
        config, f = self.lm.config, self.family
        layer = self.decoder_layers()[0]
        o, down = layer.get_submodule(f.o), layer.get_submodule(f.down)
        n_heads = config.num_attention_heads
        o_in = o.weight.shape[0] if f.conv1d else o.weight.shape[1]
        d_ff, d_model = down.weight.shape if f.conv1d else down.weight.shape[::-1]
        return fam.Shape(
            n_layers=len(self.decoder_layers()),
            n_heads=n_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
            head_dim=o_in // n_heads,
            d_ff=int(d_ff),
            down_bias=down.bias is not None,
            d_model=int(d_model),
            o_bias=o.bias is not None,
        )

    def layout(self) -> UnitLayout:
        if self.compacted:
            raise ValueError("a compacted model has no unit layout; prune the full model and compact again")
        return fam.layout(self.family, self.shape)

    def prunable_weights(self) -> dict[str, nn.Parameter]:
        """The tensors that units own (lottery/core/masks.py asks a model for these when it can answer)."""
        names = fam.weight_names(self.family, self.shape.n_layers, self.shape.down_bias, o_bias=self.shape.o_bias)
        return {n: self.get_parameter(n) for n in names}

    def forward(
        self,
        x: torch.Tensor,
        gates: Mapping[str, torch.Tensor] | None = None,
        at: torch.Tensor | None = None,
        skip: Sequence[int] = (),
    ) -> torch.Tensor:
        """Logits (batch, T, num_classes), or with `at` (a bool (batch, T) of the positions that are scored) only
        those positions' logits, (at.sum(), num_classes): the output head then runs on the scored positions alone,
        so memory does not grow with vocabulary x prompt length. `gates`: optional {"heads": (B|1, layers, heads),
        "mlp_units": (B|1, layers, d_ff), "mlp_blocks": (B|1, layers), "layers": (B|1, layers)} multipliers (full model
        only); "heads" may also be (B, layers, T, heads), a gate per token. `skip`: decoder layers replaced by the
        identity for this call (not even computed)."""
        ids = x if self.identity else self.token_ids[x]
        hooks = self._gate_hooks(gates) if gates else []
        layers = self.decoder_layers()
        kept = {i: layers[i] for i in skip}
        try:
            for i in kept:
                layers[i] = _Identity()
            if at is None:
                logits = self.lm(input_ids=ids, use_cache=False).logits
            else:
                hidden = self.lm.base_model(input_ids=ids, use_cache=False).last_hidden_state
                logits = self.lm.get_output_embeddings()(hidden[at])
        finally:
            for hook in hooks:
                hook.remove()
            for i, layer in kept.items():
                layers[i] = layer
        return logits if self.identity else logits[..., self.token_ids]

    def _gate_hooks(self, gates: Mapping[str, torch.Tensor]) -> list:
        hooks, f, s = [], self.family, self.shape
        for layer, block in enumerate(self.decoder_layers()):
            o, down = block.get_submodule(f.o), block.get_submodule(f.down)
            if "heads" in gates:
                hooks.append(o.register_forward_pre_hook(_scale_inputs(gates["heads"][:, layer], s.head_dim)))
            if "mlp_units" in gates:
                hooks.append(down.register_forward_pre_hook(_scale_inputs(gates["mlp_units"][:, layer], 1)))
            if "mlp_blocks" in gates:  # where the block enters the residual stream (after Gemma's post-norm)
                out = block.get_submodule(f.ffn_out) if f.ffn_out else down
                hooks.append(out.register_forward_hook(_scale_output(gates["mlp_blocks"][:, layer])))
            if "layers" in gates:
                hooks.append(block.register_forward_hook(_scale_layer(gates["layers"][:, layer]), with_kwargs=True))
        return hooks


class _Identity(nn.Module):
    """A removed decoder layer: returns its input hidden states (every supported family passes them first)."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


def _scale_layer(gate: torch.Tensor):
    """A layer's output as input + gate * (output - input): the identity at 0, unchanged at 1, and d loss / d gate
    is <dL/d out, the layer's contribution to the residual stream>."""

    def hook(module, args, kwargs, out):
        x = args[0] if args else kwargs["hidden_states"]
        y = out[0] if isinstance(out, tuple) else out
        g = gate.to(y.dtype).reshape(-1, *([1] * (y.dim() - 1)))
        y = x + g * (y - x)
        return (y, *out[1:]) if isinstance(out, tuple) else y

    return hook


def _scale_inputs(gate: torch.Tensor, width: int):
    """A pre-hook multiplying consecutive groups of `width` input features by gate (B|1, groups), or per token by
    gate (B, T, groups) (the per-token head score of Bansal et al., lottery/structured/probe.py). The input is
    (B, T, features), or (B*T, features) where the library flattens tokens first (OPT's FFN)."""

    def hook(module, args):
        x = args[0]
        g = gate.to(x.dtype)
        if g.dim() == 3:  # one gate per token: x must be (B, T, features) with the gate's B and T
            scaled = x.reshape(*g.shape, width) * g[..., None]
        else:
            scaled = x.reshape(g.shape[0], -1, g.shape[1], width) * g[:, None, :, None]
        return (scaled.reshape(x.shape), *args[1:])

    return hook


def _scale_output(gate: torch.Tensor):
    def hook(module, args, out):
        g = gate.to(out.dtype)
        return (out.reshape(g.shape[0], -1, out.shape[-1]) * g[:, None, None]).reshape(out.shape)

    return hook
