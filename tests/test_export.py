"""lottery-export writes the units a pretrained study removed as a folder that plain transformers loads: fewer layers
in the config (Gemma 3's layer types following), whole key/value groups cut under grouped-query attention, FFN width
cut to the most any layer keeps; its logits equal the gated model's; what a family cannot shrink is refused, and so is
an output folder that holds anything."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

pytest.importorskip("transformers")

from conftest import compose_config, seed_dir_of, tiny  # noqa: E402
from hf_models import save_model  # noqa: E402
from test_pretrained import RECALL  # noqa: E402

from lottery.structured.hf_folder import ExportError, export, main  # noqa: E402

STUDY = [
    "pruning.strategy=structured",
    "structured.procedure=no_retrain",
    "structured.grid=[0.25,0.5]",
    "structured.random_draws=1",
    "structured.score_examples=8",
    "structured.grid_units=[heads,mlp_units,mlp_blocks,layers]",
    "structured.grid_scores=[gradient,random]",
    "structured.bootstrap=100",
]


def run_study(root, folder):
    from lottery.cli import run_config

    overrides = tiny(root, "model=hf", f"model.path={folder}", *RECALL, *STUDY)
    run_config(compose_config(overrides))
    return seed_dir_of(overrides)


@pytest.fixture(scope="module")
def llama_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    folder = save_model(root / "llama", "llama", kv_heads=2)  # 2 layers x 4 heads, 2 key/value groups, 24 FFN units
    return folder, run_study(root / "out", folder)


def with_kept(seed_dir, tmp_path, kind, kept):
    """A copy of the study whose gradient point at 0.5 keeps `kept` (a constructed removal, to test each shape)."""
    copy = tmp_path / "seed_0"
    shutil.copytree(seed_dir, copy)
    path = copy / "no_retrain" / "results.json"
    results = json.loads(path.read_text())
    results["curves"][kind]["gradient"][1]["kept"] = kept
    path.write_text(json.dumps(results))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["fetched"] = "a_preset"  # as a model=<preset> run records it: a key, not a constructor argument
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


def gated_logits(folder, seed_dir, kind, kept, n=32):
    """The study's model with the units gated off (what the study measured), on the test prompts."""
    from lottery.structured.probe import gates_of, skipped
    from lottery.structured.rebuild import network_of, run_config, splits_of

    config = run_config(seed_dir)
    splits = splits_of(config)
    network = network_of(config, splits).eval()
    removed = {kind: ~torch.tensor(kept, dtype=torch.bool)}
    x = splits.x_test[:n]
    with torch.no_grad():
        logits = network(x, gates=gates_of(removed, torch.device("cpu")) or None, skip=skipped(removed))
    return logits, (x if network.identity else network.token_ids[x]), network.token_ids


def loaded_logits(out, ids, classes):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    return model, logits[..., classes]


def test_removed_layers_are_gone_from_the_folder_and_its_config(llama_study, tmp_path):
    folder, seed_dir = llama_study
    seed = with_kept(seed_dir, tmp_path, "layers", [False, True])
    out = tmp_path / "cut"
    record = export(seed, "layers", "gradient", "0.5", out)
    reference, ids, classes = gated_logits(folder, seed, "layers", [False, True])
    model, logits = loaded_logits(out, ids, classes)
    assert model.config.num_hidden_layers == 1 and len(model.model.layers) == 1
    assert model.model.layers[0].self_attn.layer_idx == 0
    # generation reads its key/value cache by each kept layer's renumbered index: cached and uncached agree
    prompt = ids[:1, :6]
    cached = model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True)
    uncached = model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    assert torch.equal(logits, reference)  # a skipped layer is exactly the cut model
    assert record["parameters"]["exported"] < record["parameters"]["dense"]
    assert record["shrunk"] == {"layers": [2, 1]} and record["max_abs_logit_difference"] == 0.0
    saved = json.loads((out / "lottery_export.json").read_text())
    assert saved["kind"] == "layers" and saved["fraction"] == 0.5
    assert not (tmp_path / "cut.tmp").exists() and not (tmp_path / "cut.dense.tmp").exists()
    assert record["file_bytes"] < record["dense_file_bytes"]  # both written by transformers, the cut one smaller


def test_whole_key_value_groups_are_cut_under_grouped_query_attention(llama_study, tmp_path):
    folder, seed_dir = llama_study
    # layer 0 keeps heads 0, 1 (group 0) and layer 1 keeps head 2 (group 1): one group per layer is left
    kept = [[True, True, False, False], [False, False, True, False]]
    seed = with_kept(seed_dir, tmp_path, "heads", kept)
    out = tmp_path / "cut"
    record = export(seed, "heads", "gradient", "0.5", out)
    reference, ids, classes = gated_logits(folder, seed, "heads", kept)
    model, logits = loaded_logits(out, ids, classes)
    assert model.config.num_key_value_heads == 1 and model.config.num_attention_heads == 2
    assert model.model.layers[0].self_attn.k_proj.weight.shape[0] == model.config.head_dim
    assert torch.allclose(logits, reference, atol=1e-5, rtol=0)
    assert record["shrunk"]["kv_heads_per_layer"] == [2, 1]
    assert "1 of 5 removed heads are zeros" in record["zeroed_not_cut"]  # head 3 of layer 1 stays, zeroed


def test_ffn_units_are_cut_to_the_most_any_layer_keeps(llama_study, tmp_path):
    folder, seed_dir = llama_study
    kept = [[j % 3 == 0 for j in range(24)], [j < 5 for j in range(24)]]  # 8 and 5 units
    seed = with_kept(seed_dir, tmp_path, "mlp_units", kept)
    out = tmp_path / "cut"
    record = export(seed, "mlp_units", "gradient", "0.5", out)
    reference, ids, classes = gated_logits(folder, seed, "mlp_units", kept)
    model, logits = loaded_logits(out, ids, classes)
    assert model.config.intermediate_size == 8
    assert model.model.layers[1].mlp.down_proj.weight.shape == (model.config.hidden_size, 8)
    assert torch.allclose(logits, reference, atol=1e-5, rtol=0)
    assert record["shrunk"] == {"ffn_width": [24, 8]}


def test_gemma3_layers_keep_their_attention_types(tmp_path):
    from test_gemma import LAYER_TYPES, save_gemma

    folder = save_gemma(tmp_path / "gemma")
    seed_dir = run_study(tmp_path / "out", folder)
    kept = [True, False, True]
    seed = with_kept(seed_dir, tmp_path / "copy", "layers", kept)
    out = tmp_path / "cut"
    export(seed, "layers", "gradient", "0.5", out)
    reference, ids, classes = gated_logits(folder, seed, "layers", kept)
    model, logits = loaded_logits(out, ids, classes)
    assert model.config.layer_types == [LAYER_TYPES[0], LAYER_TYPES[2]]
    assert torch.equal(logits, reference)


def test_what_a_family_cannot_shrink_and_a_used_folder_are_refused(tmp_path, capsys):
    folder = save_model(tmp_path / "gpt2", "gpt2")
    seed_dir = run_study(tmp_path / "out", folder)
    with pytest.raises(ExportError, match="derives its head size from its number of heads"):
        export(seed_dir, "heads", "gradient", "0.5", tmp_path / "cut")
    assert not (tmp_path / "cut").exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="exists and is not an empty folder"):
        main([str(seed_dir), "--kind", "layers", "--score", "gradient", "--fraction", "0.5", "--out", str(used)])
    assert (used / "mine.txt").read_text() == "keep me" and len(list(used.iterdir())) == 1
    with pytest.raises(ExportError, match=r"at the fractions \[0.25, 0.5\]"):
        export(seed_dir, "layers", "gradient", "0.3", tmp_path / "cut")
    with pytest.raises(ExportError, match="ranked layers by"):
        export(seed_dir, "layers", "angular", "0.5", tmp_path / "cut")
    # GPT-2's layers do shrink
    assert (
        main(
            [str(seed_dir), "--kind", "layers", "--score", "random", "--fraction", "0.5", "--out", str(tmp_path / "g")]
        )
        == 0
    )
    assert "parameters" in capsys.readouterr().out


def test_a_study_whose_model_has_gone_is_named_without_a_traceback(llama_study, tmp_path):
    folder, seed_dir = llama_study
    seed = with_kept(seed_dir, tmp_path, "layers", [False, True])
    config = yaml.safe_load((seed / "config.yaml").read_text())
    config["model"]["path"] = str(tmp_path / "gone")
    (seed / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit, match="lottery-export: model.path=.*does not exist"):
        main([str(seed), "--kind", "layers", "--score", "gradient", "--fraction", "0.5", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
