"""model=hf end to end, offline, on tiny random-initialised models saved with save_pretrained and loaded through
model.path: the no-retrain grid and its reports on recall and on a text task (lottery-compare reads them), clear
errors before any weights load, deterministic prompts, the gradient importance against a finite difference, and
structured IMP rewinding to the pretrained weights, two levels, resumed after a kill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from conftest import TINY_RECALL  # noqa: E402
from hf_models import save_model, save_tokenizer  # noqa: E402

from lottery.config import ConfigError  # noqa: E402

KILL_SCRIPT = Path(__file__).with_name("kill_run.py")
RECALL = TINY_RECALL
TEXT = ["data=icl_text", "data.task=antonyms", "data.num_train=120", "data.num_test=40", "data.val_size=40"]
GRID = [
    "pruning.strategy=structured",
    "structured.grid=[0.25,0.5,0.75]",
    "structured.random_draws=2",
    "structured.score_examples=32",
]


@pytest.fixture(scope="module")
def opt(tmp_path_factory):
    """A tiny OPT with a word-level tokenizer for the antonyms task saved beside it."""
    from lottery.data.text_icl import read_pairs

    folder = save_model(tmp_path_factory.mktemp("hf") / "opt", "opt")
    save_tokenizer(folder, ["->", *(w for pair in read_pairs("antonyms") for x in pair for w in x.split())])
    return folder


def hf(folder) -> list[str]:
    return ["model=hf", f"model.path={folder}"]


def test_no_retrain_on_recall_writes_the_structured_reports_and_compare_reads_them(run_tiny, opt, tmp_path):
    from lottery.reports.compare import main

    rows, seed_dir = run_tiny(*hf(opt), *RECALL, *GRID, "structured.procedure=no_retrain")
    assert rows == []  # the pretrained model is scored as loaded: no level trains
    results = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    assert results["totals"] == {"heads": 8, "mlp_blocks": 2, "mlp_units": 48}  # 2 layers x 4 heads, FFN width 24
    report = json.loads((seed_dir / "structured.json").read_text())
    assert set(report["no_retrain"]) == {"heads", "mlp_blocks", "mlp_units"}
    for figure in ("heads_curve.png", "heads_survival.png"):
        assert (seed_dir / figure).stat().st_size > 0
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0


def test_a_text_task_scores_exact_matches_per_number_of_shots(run_tiny, opt):
    overrides = [*hf(opt), *TEXT, *GRID, "structured.procedure=no_retrain", "structured.grid_units=[heads]"]
    _, seed_dir = run_tiny(*overrides)
    results = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    assert results["dense"]["by_context"]["examples"] == [0, 1, 2, 4]  # data.shots
    assert results["dense"]["by_context"]["count"] == [10, 10, 10, 10]
    assert (seed_dir / "structured.json").is_file()


def refuse_loading(monkeypatch):
    import transformers

    def never(*args, **kwargs):
        raise AssertionError("weights were loaded before the configuration was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)


def test_bad_input_is_refused_before_any_weights_load(run_tiny, tmp_path, monkeypatch):
    refuse_loading(monkeypatch)
    with pytest.raises(ConfigError, match="does not exist"):
        run_tiny(*hf(tmp_path / "missing"), *RECALL)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="gpt2, opt, gpt_neox, llama, mistral"):
        run_tiny(*hf(bert), *RECALL)
    bare = save_model(tmp_path / "bare", "gpt2")  # no tokenizer beside it
    with pytest.raises(ConfigError, match="tokenizer"):
        run_tiny(*hf(bare), *TEXT)
    with pytest.raises(ConfigError, match="data=lm_text needs the model's tokenizer"):
        run_tiny(*hf(bare), "data=lm_text", "data.path=lottery/data/samples/stories.txt")


def test_text_prompts_are_a_function_of_the_seed_and_keep_test_queries_out_of_training(opt):
    from lottery.config import TextDataConfig
    from lottery.data.text_icl import load_text, read_pairs

    settings = TextDataConfig(tokenizer=str(opt), num_train=60, num_test=20)
    a, b = load_text(settings), load_text(settings)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    other = load_text(TextDataConfig(tokenizer=str(opt), num_train=60, num_test=20, data_seed=7))
    assert not torch.equal(a.x_test, other.x_test)
    from lottery.data.text_icl import load_tokenizer

    tok = load_tokenizer(str(opt))
    pairs = dict(read_pairs("antonyms"))
    test_answers = [tok.decode([int(t) for t in row[row >= 0]]).strip() for row in a.y_test[:, :-1]]
    assert set(test_answers) <= set(pairs.values())
    held_out = {x for x, y in pairs.items() if y in test_answers}
    for row in a.x_train:
        words = tok.decode([int(t) for t in row if t != tok.pad_token_id]).split()
        assert words[-1] == "->" and words[-2] not in held_out  # a training query is never a test query
        shown = {words[i - 1] for i, w in enumerate(words[:-1]) if w == "->"}
        assert not shown & held_out  # nor is it among any prompt's demonstrations


# GPT-2 and OPT run wholly in float64 after .double(); Llama's RMSNorm computes in float32 whatever the dtype
@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_gradient_importance_equals_a_finite_difference(tmp_path, family):
    from lottery.data.tasks import TokenRecall
    from lottery.models.hf import HFCausalLM
    from lottery.structured.probe import Probe, Prompts

    net = HFCausalLM((10,), 12, str(save_model(tmp_path / family, family)), token_offset=5).double().eval()
    task = TokenRecall(3)
    x = torch.randint(12, (1, 10), generator=torch.Generator().manual_seed(1))
    y = torch.where(torch.arange(10) % 2 == 0, torch.randint(3, 12, (1, 10)), torch.tensor(-100))
    kinds = ("heads", "mlp_blocks")
    grids = {k: net.layout().grids[k] for k in kinds}
    scores = Probe(net, task, torch.device("cpu"), 1).gradient_scores(Prompts.of(task, x, y), grids)
    # a central difference in the gate
    eps = 1e-3

    def loss_at(kind, grid, unit, g):
        gates = torch.ones((1, *grid), dtype=torch.float64)
        gates[(0, *unit)] = g
        with torch.no_grad():
            return float(task.per_example_loss(net(x, gates={kind: gates}), y))

    for kind, grid in (("heads", (2, 4)), ("mlp_blocks", (2,))):
        for unit in [(1, 2), (0, 0)] if kind == "heads" else [(0,), (1,)]:
            estimate = abs(loss_at(kind, grid, unit, 1 + eps) - loss_at(kind, grid, unit, 1 - eps)) / (2 * eps)
            assert scores[kind][unit] == pytest.approx(estimate, rel=1e-5, abs=1e-12)
            assert estimate > 1e-5  # the unit matters, so the check is not 0 == 0


IMP = [*RECALL, "pruning.strategy=structured", "structured.procedure=imp", "pruning.fraction=0.5", "rewind=reset"]


def test_structured_imp_rewinds_to_the_pretrained_weights_and_resumes_after_a_kill(opt, tmp_path, tmp_path_factory):
    from conftest import compose_config, seed_dir_of, tiny
    from test_resume import artifacts_of, assert_identical

    from lottery.cli import run_config
    from lottery.models.hf import HFCausalLM

    whole = tiny(tmp_path_factory.mktemp("whole"), *hf(opt), *IMP)
    run_config(compose_config(whole))
    seed_dir = seed_dir_of(whole)
    expected = artifacts_of(seed_dir)
    assert sorted(expected["levels"]) == ["level_0", "level_1", "level_2"]
    init = torch.load(seed_dir / "init.pt", weights_only=True)
    pretrained = HFCausalLM((11,), 12, str(opt)).state_dict()
    assert all(torch.equal(init[k], v) for k, v in pretrained.items())  # theta_0 is the pretrained model
    heads = [int(expected["levels"][f"level_{i}"]["sparsity"]["units"]["heads"]["remaining"]) for i in range(3)]
    assert heads == [8, 4, 2]
    killed = tiny(tmp_path, *hf(opt), *IMP)
    proc = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), "step", "1", "30", *killed], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    run_config(compose_config(killed))
    assert_identical(artifacts_of(seed_dir_of(killed)), expected)


def test_the_random_pruning_control_removes_as_many_heads_as_the_ticket(run_tiny, opt):
    rows, seed_dir = run_tiny(*hf(opt), *IMP, "branch=random_prune", "levels=1")
    trunk = json.loads((seed_dir / "level_1" / "sparsity.json").read_text())["units"]["heads"]
    control = json.loads((seed_dir / "branch_random_prune" / "level_1" / "sparsity.json").read_text())["units"]
    assert control["heads"]["remaining"] == trunk["remaining"] == 4
    report = json.loads((seed_dir / "structured.json").read_text())
    assert "random_prune" in report["imp"]["branches"]
