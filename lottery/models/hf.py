"""model=hf: a pretrained Hugging Face causal LM (GPT-2, OPT, GPT-NeoX/Pythia, Llama, Mistral) as a lottery network.

    lottery model=hf model.path=facebook/opt-125m data=icl_text data.task=antonyms pruning.strategy=structured

The library's own `AutoModelForCausalLM.from_pretrained` loads it (local files only when `model.path` is a folder or
HF_HUB_OFFLINE is set); transformers is imported here only, so `import lottery` never needs it (`pip install -e
'.[hf]'`). Its theta_0 is the pretrained weights: `rewind.step=0it` rewinds every level to them (Chen et al. 2020).

Heads, FFN units and FFN blocks are masked in the same weight masks as every other model (lottery/models/
hf_families.py says which slices each owns). `forward(x, gates=...)` multiplies each head's slice of the attention
output projection's input, each FFN unit's input to the down-projection and each FFN block's output by a gate, with
forward hooks on the library's modules (no `head_mask`, no patched source): at gates of one nothing changes, and
d loss / d gate is the gradient importance of Michel et al. 2019.

Token tasks whose vocabulary is their own (data=icl_recall) are mapped into the model's: task token i is model token
`token_offset + i`, and the outputs are the logits of those tokens. Text tasks (data=icl_text) use the model's
tokenizer, so their tokens are the model's (the identity map, all logits).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from lottery.core.units import UnitLayout
from lottery.models import hf_families as fam

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


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


def model_type(path: str, local_files_only: bool | None = None) -> str:
    """config.json's model_type, read without loading any weights."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        if not config.is_file():
            raise HFModelError(
                f"model.path={path!r} is a folder without config.json; give a folder written by save_pretrained "
                "(config.json and the weights) or a hub id such as facebook/opt-125m"
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


def check_model(path: str, local_files_only: bool | None = None) -> str:
    """The family of `path`, or HFModelError before any weights load."""
    kind = model_type(path, local_files_only)
    if kind not in fam.FAMILIES:
        raise HFModelError(
            f"model.path={path!r} is a {kind or 'model without a model_type'!r} model; model=hf supports the "
            f"causal-LM families {', '.join(fam.SUPPORTED)}"
        )
    return kind


def has_tokenizer(path: str) -> bool:
    """Whether a tokenizer was saved beside the model (always assumed for hub ids, which the library resolves)."""
    folder = Path(path).expanduser()
    return not folder.is_dir() or any((folder / f).is_file() for f in TOKENIZER_FILES)


class HFCausalLM(nn.Module):
    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        path: str,
        dtype: str = "float32",
        token_offset: int = 0,
        local_files_only: bool | None = None,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if width != 1.0:
            raise HFModelError(f"model.width={width}: a pretrained model has its own width; leave model.width=1.0")
        if dtype not in DTYPES:
            raise HFModelError(f"model.dtype={dtype!r} is not one of {list(DTYPES)}")
        kind = check_model(path, local_files_only)
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging

        logging.disable_progress_bar()  # a bar per load would fill a run's log; the run's own output says what loads
        self.lm = AutoModelForCausalLM.from_pretrained(
            str(Path(path).expanduser()) if Path(path).expanduser().is_dir() else path,
            dtype=DTYPES[dtype],
            local_files_only=offline(path, local_files_only),
        )
        self.family_name, self.family = kind, fam.FAMILIES[kind]
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
        )

    def layout(self) -> UnitLayout:
        if self.compacted:
            raise ValueError("a compacted model has no unit layout; prune the full model and compact again")
        return fam.layout(self.family, self.shape)

    def prunable_weights(self) -> dict[str, nn.Parameter]:
        """The tensors that units own (lottery/core/masks.py asks a model for these when it can answer)."""
        names = fam.weight_names(self.family, self.shape.n_layers, self.shape.down_bias)
        return {n: self.get_parameter(n) for n in names}

    def forward(self, x: torch.Tensor, gates: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (batch, T, num_classes). `gates`: optional {"heads": (B|1, layers, heads), "mlp_units":
        (B|1, layers, d_ff), "mlp_blocks": (B|1, layers)} multipliers (full model only)."""
        ids = x if self.identity else self.token_ids[x]
        hooks = self._gate_hooks(gates) if gates else []
        try:
            logits = self.lm(input_ids=ids, use_cache=False).logits
        finally:
            for hook in hooks:
                hook.remove()
        return logits if self.identity else logits[..., self.token_ids]

    def _gate_hooks(self, gates: Mapping[str, torch.Tensor]) -> list:
        hooks, f, s = [], self.family, self.shape
        for layer, block in enumerate(self.decoder_layers()):
            o, down = block.get_submodule(f.o), block.get_submodule(f.down)
            if "heads" in gates:
                hooks.append(o.register_forward_pre_hook(_scale_inputs(gates["heads"][:, layer], s.head_dim)))
            if "mlp_units" in gates:
                hooks.append(down.register_forward_pre_hook(_scale_inputs(gates["mlp_units"][:, layer], 1)))
            if "mlp_blocks" in gates:
                hooks.append(down.register_forward_hook(_scale_output(gates["mlp_blocks"][:, layer])))
        return hooks


def _scale_inputs(gate: torch.Tensor, width: int):
    """A pre-hook multiplying consecutive groups of `width` input features by gate (B|1, groups). The input is
    (B, T, features), or (B*T, features) where the library flattens tokens first (OPT's FFN)."""

    def hook(module, args):
        x = args[0]
        g = gate.to(x.dtype)
        scaled = x.reshape(g.shape[0], -1, g.shape[1], width) * g[:, None, :, None]
        return (scaled.reshape(x.shape), *args[1:])

    return hook


def _scale_output(gate: torch.Tensor):
    def hook(module, args, out):
        g = gate.to(out.dtype)
        return (out.reshape(g.shape[0], -1, out.shape[-1]) * g[:, None, None]).reshape(out.shape)

    return hook
