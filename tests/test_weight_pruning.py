"""Weight-level pruning without retraining (structured.grid_units=[weights]): exact densities and N:M patterns, Wanda's
scores and its layer-by-layer calibration against a direct computation through the whole model, the dense weights
back bit for bit after every evaluation, and a study whose numbers equal a direct evaluation and whose model folder
is left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from hf_models import save_model, save_tokenizer

from lottery.core.sparsity import density, n_m_mask, parse_pattern, pruned_count, unstructured_mask, wanda_scores
from lottery.data.tasks import IGNORE
from lottery.structured.probe import Probe, Prompts
from lottery.structured.weights import Pruned

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "red", "big", "house", "and", "then", "slept"]


def test_unstructured_masks_remove_exactly_the_lowest_scores_per_matrix_or_per_row():
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 10, generator=gen, dtype=torch.float64)
    for fraction in (0.1, 0.25, 0.5, 0.9):
        whole = unstructured_mask(scores, fraction, "matrix")
        removed = pruned_count(60, fraction)
        assert int((~whole).sum()) == removed == int(60 * fraction)
        assert scores[~whole].max() < scores[whole].min()  # the lowest go, wherever they are
        rows = unstructured_mask(scores, fraction, "row")
        assert ((~rows).sum(1) == int(10 * fraction)).all()  # the same count in every row
        for r in range(6):
            if (~rows[r]).any():
                assert scores[r][~rows[r]].max() < scores[r][rows[r]].min()
    ties = torch.ones(2, 4, dtype=torch.float64)
    assert unstructured_mask(ties, 0.5, "row").tolist() == [[False, False, True, True]] * 2  # lower index first


def test_n_m_masks_keep_exactly_the_n_highest_of_every_m_consecutive_inputs():
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(5, 16, generator=gen, dtype=torch.float64)
    keep = n_m_mask(scores, 2, 4)
    groups, kept = scores.view(5, 4, 4), keep.view(5, 4, 4)
    assert (kept.sum(-1) == 2).all() and density({"w": keep}) == 0.5
    top2 = groups.topk(2, dim=-1).indices
    assert torch.equal(kept, torch.zeros_like(kept).scatter_(-1, top2, True))
    assert parse_pattern("1:8") == (1, 8)
    for bad in ("4:2", "2-4", "0:4"):
        with pytest.raises(ValueError, match="N:M pattern"):
            parse_pattern(bad)
    with pytest.raises(ValueError, match="multiple"):
        n_m_mask(torch.rand(2, 6), 2, 4)


def test_wanda_score_is_the_weight_times_the_norm_of_its_input_feature():
    w = torch.tensor([[1.0, -2.0, 3.0], [-0.5, 0.25, 4.0]])
    x = torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, -2.0]])  # two calibration tokens, three input features
    norms = [math.sqrt(float((x[:, j] ** 2).sum())) for j in range(3)]
    expected = torch.tensor([[abs(float(w[i, j])) * norms[j] for j in range(3)] for i in range(2)])
    assert torch.allclose(wanda_scores(w, (x**2).sum(0)).float(), expected)
    # compared within each row: row 0 loses feature 1 (2 x 1 = 2 against 1 x sqrt(10) and 3 x sqrt(8)), row 1 feature 1
    assert unstructured_mask(wanda_scores(w, (x**2).sum(0)), 0.34, "row").tolist() == [[True, False, True]] * 2


def _prompts(n: int, t: int, vocab: int, seed: int) -> Prompts:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(2, vocab, (n, t), generator=gen)
    targets = torch.cat([x[:, 1:], torch.full((n, 1), IGNORE)], 1)  # next tokens; the last position predicts nothing
    return Prompts(x, targets, None)


class _Task:
    token_accuracy = True


@pytest.mark.parametrize(("family", "linears"), [("llama", 7), ("gemma3", 7), ("gpt2", 4), ("opt", 6)])
def test_wanda_layer_by_layer_equals_a_direct_computation_through_the_whole_model(tmp_path, family, linears):
    """Each layer's input norms taken on the whole model with the layers below already pruned (a full forward pass per
    layer, nothing replayed) give the same masks as the study's replay of one layer at a time."""
    from lottery.models.hf import HFCausalLM

    folder = save_model(tmp_path / family, family)
    network = HFCausalLM((12,), 320, str(folder)).eval()
    calibration = _prompts(6, 12, 320, seed=3)
    dense = {n: p.detach().clone() for n, p in network.named_parameters()}
    pruned = Pruned(network)
    probe = Probe(network, _Task(), torch.device("cpu"), batch_size=4)
    for pattern, fraction in (("unstructured", 0.5), ("2:4", None)):
        masks = pruned.masks("wanda", pattern, fraction, probe, calibration)
        for n, p in network.named_parameters():  # every weight back as it was, bit for bit
            assert torch.equal(p, dense[n]), n
        direct: dict[str, torch.Tensor] = {}
        for layer in pruned.by_layer:
            sums: dict[str, torch.Tensor] = {}
            hooks = [m.register_forward_pre_hook(_square_sum(sums, name)) for name, m in layer.items()]
            with torch.no_grad():
                network.lm(input_ids=calibration.x[:, :-1], use_cache=False)  # the last token predicts nothing
            for h in hooks:
                h.remove()
            for name, m in layer.items():
                w = m.weight.detach().T if type(m).__name__ == "Conv1D" else m.weight.detach()
                score = w.abs().double() * sums[name].sqrt()[None, :]
                if pattern == "unstructured":
                    keep = torch.ones_like(score, dtype=torch.bool)
                    # ties: the lower index first
                    lowest = score.argsort(dim=1, stable=True)[:, : int(score.shape[1] * 0.5)]
                    keep.scatter_(1, lowest, False)
                else:
                    groups = score.view(score.shape[0], -1, 4)
                    lowest = groups.argsort(dim=-1, stable=True)[..., :2]  # the two lowest of each group of four go
                    keep = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, lowest, False)
                    keep = keep.view(score.shape)
                direct[name] = keep
                with torch.no_grad():
                    (m.weight.T if type(m).__name__ == "Conv1D" else m.weight).mul_(keep)
        with torch.no_grad():  # the direct computation's own zeros undone
            for n, p in network.named_parameters():
                p.copy_(dense[n])
        assert direct.keys() == masks.keys() and len(masks) == linears * len(pruned.layers)
        for name in masks:
            assert torch.equal(masks[name], direct[name]), (pattern, name)
        assert density(masks) == 0.5


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_mask_applied_in_memory_keeps_aside_only_what_it_zeroes_and_restores_every_bit(tmp_path, family):
    """Only the zeroed values are kept aside (their count, not a dense copy), GPT-2's transposed Conv1D included; a
    non-finite weight and a negative zero come back as they were; the scores read the dense weights and refuse to
    while a mask is applied; a second mask on a pruned matrix is refused."""
    from lottery.models.hf import HFCausalLM

    network = HFCausalLM((12,), 320, str(save_model(tmp_path / family, family))).eval()
    pruned = Pruned(network)
    first = next(iter(pruned.modules))
    matrix = pruned.dense()[first]
    with torch.no_grad():
        matrix[0, 0], matrix[0, 1], matrix[1, 0] = float("nan"), -0.0, float("inf")
    before = {n: p.detach().clone() for n, p in network.named_parameters()}
    masks = pruned.masks("random", "unstructured", 0.3, generator=torch.Generator().manual_seed(0))
    masks[first][0, :2] = False  # the nan and the negative zero among the zeroed
    pruned.apply(masks)
    kept_aside = sum(values.numel() for _, values in pruned._removed.values())
    assert kept_aside == sum(int((~m).sum()) for m in masks.values()) < 0.35 * pruned.total
    for name, m in pruned.modules.items():
        w = m.weight.T if family == "gpt2" else m.weight
        assert not bool(w[~masks[name]].any()), name
    with pytest.raises(RuntimeError, match="restore them before scoring"):
        pruned.dense()
    with pytest.raises(RuntimeError, match="pruned in memory already"):
        pruned.apply({first: masks[first]})
    pruned.restore()
    for n, p in network.named_parameters():
        assert torch.equal(p.isnan(), before[n].isnan()), n
        same = torch.where(p.isnan(), 0, p) == torch.where(before[n].isnan(), 0, before[n])
        assert bool(same.all()) and torch.equal(p.signbit(), before[n].signbit()), n


def _square_sum(sums: dict[str, torch.Tensor], name: str):
    def hook(module, args):
        x = args[0]  # (B, T, in), or (B * T, in) where the model flattens tokens first (OPT's FFN)
        sums[name] = sums.get(name, 0.0) + (x.reshape(-1, x.shape[-1]).double() ** 2).sum(0)

    return hook


def _tree(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_weights_study_reports_exact_densities_and_losses_equal_to_direct_evaluations_and_leaves_the_model_alone(
    run_tiny, tmp_path
):
    from lottery.models.hf import HFCausalLM

    folder = save_model(tmp_path / "llama", "llama")
    save_tokenizer(folder, WORDS)
    gen = torch.Generator().manual_seed(0)
    docs = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (40,), generator=gen)) for _ in range(12)]
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(docs))
    before = _tree(folder)
    rows, seed_dir = run_tiny(
        "model=hf", f"model.path={folder}", "data=lm_text", f"data.path={text}", "data.context=16", "data.val_size=4",
        "pruning.strategy=structured", "structured.procedure=no_retrain", "structured.grid_units=[weights]",
        "structured.grid_scores=[magnitude,wanda]", "structured.grid=[0.25,0.5]", "structured.score_examples=8",
    )  # fmt: skip
    assert _tree(folder) == before  # nothing written to the model's own files
    results = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    curves = results["curves"]["weights"]
    assert set(curves) == {"magnitude", "wanda"} and results["totals"]["weights"] == 2 * (4 * 16 * 16 + 3 * 16 * 24)
    for points in curves.values():
        assert [p["fraction"] for p in points] == [0.25, 0.5]
        for p in points:
            assert p["density"] == 1.0 - p["fraction"]  # exact: every matrix's count divides
            assert p["perplexity"] == math.exp(p["loss"]) and p["loss_ci"][0] <= p["loss"] <= p["loss_ci"][1]
    assert {sc: p["density"] for sc, p in results["weight_patterns"]["2:4"].items()} == {"magnitude": 0.5, "wanda": 0.5}
    assert (seed_dir / "weights.png").is_file()
    assert json.loads((seed_dir / "structured.json").read_text())["weights"]["weights"] == results["totals"]["weights"]

    # magnitude at 50%, done by hand: each matrix's lowest |w| zeroed, the test windows' next-token loss
    x, y = _test_windows(folder, text)
    vocab = len(WORDS) + 2  # the tokenizer's: the task scores the model's logits of those tokens
    network = HFCausalLM((16,), vocab, str(folder)).eval()
    with torch.no_grad():
        for layer in network.decoder_layers():
            for m in layer.modules():
                if isinstance(m, torch.nn.Linear):
                    w = m.weight
                    order = w.abs().flatten().argsort(stable=True)[: int(w.numel() * 0.5)]
                    w.view(-1)[order] = 0.0
        logits = network(x).float()
        at = y != IGNORE
        nll = torch.nn.functional.cross_entropy(logits[at], y[at], reduction="sum").double()
    assert math.isclose(curves["magnitude"][1]["loss"], float(nll / at.sum()), rel_tol=1e-6)


def _test_windows(folder: Path, text: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The study's test windows, rebuilt with its data settings (context 16, the defaults otherwise)."""
    from lottery.config import LMTextDataConfig
    from lottery.data import load

    splits = load("lm_text", settings=LMTextDataConfig(tokenizer=str(folder), path=str(text), context=16))
    return splits.x_test, splits.y_test


def test_bad_weight_settings_are_refused_before_anything_loads_or_is_written(run_tiny, tmp_path):
    from lottery.config import ConfigError

    folder = save_model(tmp_path / "llama", "llama")
    save_tokenizer(folder, WORDS)
    text = tmp_path / "text.txt"
    text.write_text("the cat sat\n\na dog ran")
    base = ["model=hf", f"model.path={folder}", "data=lm_text", f"data.path={text}", "pruning.strategy=structured"]
    base += ["structured.procedure=no_retrain", "structured.grid_units=[weights]"]
    root = tmp_path / "out"
    for extra, message in (
        (["structured.weight_patterns=[4:2]"], r"'4:2' is not an N:M pattern"),
        (["structured.grid_scores=[gradient]"], r"lists weights, which none of structured.grid_scores"),
        (["structured.grid_units=[heads]", "structured.grid_scores=[wanda]"], r"wanda, which ranks single weights"),
    ):
        with pytest.raises(ConfigError, match=message):
            run_tiny(*base, *extra, root=root)
        assert not root.exists()


def test_a_pretrained_model_s_own_checkpoints_are_studied_as_a_series_and_bad_ones_refused(run_tiny, tmp_path):
    from lottery.config import ConfigError

    folders = [save_model(tmp_path / f"ckpt{i}", "llama", seed=i) for i in range(3)]  # the same architecture
    for f in folders:
        save_tokenizer(f, WORDS)
    other = save_model(tmp_path / "other", "llama", kv_heads=2)
    gen = torch.Generator().manual_seed(0)
    docs = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (40,), generator=gen)) for _ in range(12)]
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(docs))
    base = [
        "model=hf", f"model.path={folders[2]}", "data=lm_text", f"data.path={text}", "data.context=16",
        "data.val_size=4", "pruning.strategy=structured", "structured.procedure=no_retrain",
        "structured.grid_units=[heads,weights]", "structured.grid_scores=[magnitude,gradient,wanda]",
        "structured.grid=[0.25,0.5]", "structured.score_examples=8", "structured.bootstrap=200",
        "structured.final_tokens=4e3",
    ]  # fmt: skip
    root = tmp_path / "refused"
    for extra, message in (
        ([f"structured.checkpoints=[{other}@1e3]"], r"not a checkpoint of model.path's architecture: .*key_value"),
        ([f"structured.checkpoints=[{folders[1]}@2e3,{folders[0]}@1e3]"], "must increase"),
        ([f"structured.checkpoints=[{folders[0]}]"], r"is not <folder>@<tokens seen>"),
        ([f"structured.checkpoints=[{tmp_path}@1e3]"], "holds no config.json"),
    ):
        with pytest.raises(ConfigError, match=message):
            run_tiny(*base, *extra, root=root)
        assert not root.exists()
    rows, seed_dir = run_tiny(*base, f"structured.checkpoints=[{folders[0]}@1e3,{folders[1]}@2e3]")
    study = json.loads((seed_dir / "over_training.json").read_text())
    points = study["points"]
    assert [p["checkpoint"] for p in points] == [str(f) for f in folders]
    assert [p["tokens"] for p in points] == [1e3, 2e3, 4e3] and [p["final"] for p in points] == [False, False, True]
    assert points[0]["tokens_per_parameter"] == 1e3 / study["model"]["parameters"]
    for p, name in zip(points[:2], ("ckpt0", "ckpt1"), strict=True):
        results = json.loads((seed_dir / "no_retrain" / "series" / name / "results.json").read_text())
        assert p["removable"] == results["removable"] and results["model"]["path"] == str(folders[int(name[-1])])
        assert p["weights"]["wanda"]["0.5"]["density"] == 0.5
    final = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    assert points[2]["dense"]["loss"] == final["dense"]["loss"]
    assert points[2]["agreement"]["heads"]["gradient"]["spearman"] == pytest.approx(1.0)
    assert (seed_dir / "over_training.png").is_file()
