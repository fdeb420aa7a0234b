"""model=hf with structured.procedure=no_retrain scores the pretrained weights as loaded (Bansal et al.'s protocol):
nothing trains and nothing but scores and results is written; removal by gates and layer skipping equals removal by
zeroed weights exactly; a removed layer is the identity; logits only at scored positions keep memory bounded; a
removable fraction is claimed only above chance."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("transformers")

from hf_models import save_model  # noqa: E402

from lottery.core import masks as M  # noqa: E402
from lottery.core.units import expand  # noqa: E402
from lottery.data.tasks import IGNORE, TokenRecall  # noqa: E402
from lottery.structured.grid import GridSettings, run_grid  # noqa: E402
from lottery.structured.probe import Probe, Prompts  # noqa: E402

RECALL = [
    "data=icl_recall",
    "data.num_train=200",
    "data.num_test=40",
    "data.val_size=40",
    "data.n_pairs=6",
    "data.n_keys=3",
    "data.n_values=3",
]
GRID = [
    "pruning.strategy=structured",
    "structured.procedure=no_retrain",
    "structured.grid=[0.5]",
    "structured.random_draws=2",
    "structured.score_examples=16",
    "structured.grid_units=[heads,mlp_blocks,layers]",
]


def network_of(folder, **kwargs):
    from lottery.models.hf import HFCausalLM

    return HFCausalLM((11,), 12, str(folder), token_offset=5, **kwargs).eval()


def recall_prompts(n: int = 6, length: int = 11, seed: int = 0) -> Prompts:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(12, (n, length), generator=gen)
    y = torch.where(torch.arange(length) % 2 == 0, torch.randint(3, 12, (n, length), generator=gen), IGNORE)
    return Prompts(x, y, None)


@pytest.fixture(scope="module", params=["llama", "opt", "gpt2"])
def family_model(request, tmp_path_factory):
    return request.param, save_model(tmp_path_factory.mktemp("pre") / request.param, request.param)


def test_scoring_as_loaded_trains_nothing_and_writes_only_scores_and_results(run_tiny, tmp_path):
    from conftest import compose_config, tiny

    from lottery.cli import prepare_job

    folder = save_model(tmp_path / "llama", "llama")
    rows, seed_dir = run_tiny("model=hf", f"model.path={folder}", *RECALL, *GRID)
    assert rows == []
    written = sorted(str(p.relative_to(seed_dir)) for p in seed_dir.rglob("*") if p.is_file())
    assert written == [
        ".lock",
        "config.yaml",
        "heads_curve.png",
        "heads_survival.png",
        "layers.png",
        "no_retrain/results.json",
        "no_retrain/run.json",
        "structured.json",
    ]
    assert not list(seed_dir.parent.rglob("*.pt")) and not list(seed_dir.parent.rglob("*.ckpt"))
    results = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    assert [r["layer"] for r in results["layer_removal"]] == [0, 1]
    assert set(results["curves"]["layers"]) == {"gradient", "angular", "single", "random"}
    assert results["census"]["units_total"] == 48
    # the network the run scored still holds the saved weights, bit for bit
    setup, _, _ = prepare_job(
        compose_config(tiny(tmp_path / "again", "model=hf", f"model.path={folder}", *RECALL, *GRID))
    )
    loaded = setup.pretrained()
    from lottery.structured.pretrained import run_pretrained

    run_pretrained(setup)
    fresh = network_of(folder)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_removal_by_gates_equals_removal_by_zeroed_weights(family_model):
    family, folder = family_model
    network = network_of(folder)
    layout, prompts = network.layout(), recall_prompts()
    shapes = {n: tuple(w.shape) for n, w in M.prunable_weights(network).items()}
    weights = {k: v.clone() for k, v in network.state_dict().items()}
    probe = Probe(network, TokenRecall(3), torch.device("cpu"), batch_size=4)
    cases = {
        "heads": torch.tensor([[True, False, False, True], [False, False, True, False]]),
        "mlp_units": torch.arange(48).reshape(2, 24) % 5 == 0,
        "mlp_blocks": torch.tensor([False, True]),
        "layers": torch.tensor([True, False]),
    }
    for kind, removed in cases.items():
        by_gates = probe.evaluate(prompts, {kind: removed})
        masked = network_of(folder)
        masked.load_state_dict(M.masked_state_dict(weights, expand({kind: ~removed}, layout, shapes)))
        by_weights = Probe(masked, TokenRecall(3), torch.device("cpu"), batch_size=4).evaluate(prompts)
        assert by_gates["acc"] == by_weights["acc"], kind
        assert by_gates["loss"] == pytest.approx(by_weights["loss"], abs=1e-6), kind
        assert by_gates["loss"] != pytest.approx(probe.evaluate(prompts)["loss"], abs=1e-6), kind  # it did something


def test_a_removed_layer_is_exactly_the_identity(family_model):
    family, folder = family_model
    network = network_of(folder)
    seen = {}
    layers = network.decoder_layers()
    hooks = [
        layers[0].register_forward_hook(lambda m, a, out: seen.__setitem__("out0", out)),
        layers[1].register_forward_hook(lambda m, a, out: seen.__setitem__("in2", out)),
    ]
    x = recall_prompts().x
    with torch.no_grad():
        network(x, skip=[1])
    for hook in hooks:
        hook.remove()
    assert "in2" not in seen  # the removed layer is not even computed
    # with layer 1 skipped, the final norm sees layer 0's output unchanged: compare with a model cut to one layer
    cut = network_of(folder)
    del cut.decoder_layers()[1]
    cut.lm.config.num_hidden_layers = 1
    with torch.no_grad():
        assert torch.equal(network(x, skip=[1]), cut(x))
        assert not torch.equal(network(x, skip=[1]), network(x))


def test_logits_at_scored_positions_are_the_full_logits_there(family_model):
    _, folder = family_model
    network = network_of(folder)
    prompts = recall_prompts()
    at = prompts.targets != IGNORE
    with torch.no_grad():
        assert torch.allclose(network(prompts.x, at=at), network(prompts.x)[at], atol=1e-6)


def test_angular_distance_is_the_mean_angle_between_a_layers_input_and_output(tmp_path):
    network = network_of(save_model(tmp_path / "llama", "llama"))
    prompts = recall_prompts()
    at = prompts.targets != IGNORE
    probe = Probe(network, TokenRecall(3), torch.device("cpu"), batch_size=4)
    measured = probe.angular_distances(prompts, list(network.decoder_layers()))
    states = network.lm.base_model(input_ids=network.token_ids[prompts.x], output_hidden_states=True).hidden_states
    for i in range(2):
        a, b = states[i][at].double(), states[i + 1][at].double()
        if i == 1:  # the last hidden state is after the final norm; recompute the layer's raw output instead
            continue
        expected = torch.arccos(torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)).mean() / torch.pi
        assert float(measured[i]) == pytest.approx(float(expected), rel=1e-5)
    assert all(0.0 < float(d) < 1.0 for d in measured)


class StepProbe:
    """A stand-in probe: accuracy falls by 0.1 per removed unit of any kind, so every curve is known exactly; every
    prompt scores that accuracy, so every resample of the queries does too (intervals of zero width)."""

    token_accuracy = False

    def __init__(self, dense: float = 0.9) -> None:
        self.dense = dense

    def evaluate(self, prompts, removed=None):
        gone = sum(int(r.sum()) for r in (removed or {}).values())
        acc = self.dense - 0.1 * gone
        hits = [acc] * len(prompts)
        return {"acc": acc, "loss": 1.0 + gone, "by_context": None, "hits": hits, "tokens": [1] * len(prompts)}

    def gradient_scores(self, prompts, grids, removed=None):
        return {k: torch.arange(torch.Size(g).numel(), dtype=torch.float64).reshape(g) for k, g in grids.items()}


def _grid(tolerance: float, margin: float = 0.1) -> GridSettings:
    return GridSettings(
        grid=(0.25, 0.5, 0.75),
        units=("heads", "mlp_blocks"),
        scores=("gradient", "random"),
        random_draws=2,
        tolerance=tolerance,
        min_above_chance=margin,
    )


def test_removable_fractions_are_claimed_only_above_chance(tmp_path):
    from lottery.core.units import UnitLayout

    layout = UnitLayout(
        grids={"heads": (2, 2), "mlp_blocks": (4,)}, slices={"heads": ((),) * 4, "mlp_blocks": ((),) * 4}
    )
    prompts = recall_prompts()
    # 4 heads: 25% removes 1 (acc 0.8), 50% removes 2 (0.7); tolerance 0.15 keeps 25% only
    results, _ = run_grid(StepProbe(), prompts, prompts, layout, {}, _grid(0.15), 0, chance=0.5)
    assert results["meaningful"] and results["removable"]["heads"]["gradient"] == 0.25
    assert results["removable"]["mlp_blocks"]["random"] == 0.25
    assert [p["removed"] for p in results["curves"]["heads"]["gradient"]] == [1, 2, 3]
    # heads then FFN blocks: 1 head stays removed, then blocks on top
    combined = results["combined"]
    assert combined["heads_fraction"] == 0.25 and combined["heads_only"]["acc"] == pytest.approx(0.8)
    assert [round(p["acc"], 6) for p in combined["curve"]] == [0.7, 0.6, 0.5]
    # a dense model at chance claims nothing, and the report says why
    at_chance, _ = run_grid(StepProbe(dense=0.55), prompts, prompts, layout, {}, _grid(0.15), 0, chance=0.5)
    assert not at_chance["meaningful"]
    assert all(v is None for by in at_chance["removable"].values() for v in by.values())


def test_scoring_memory_stays_bounded_with_a_large_vocabulary(tmp_path):
    """A 50k-token vocabulary and 400 prompts of 60 tokens: every position's logits would be 400 x 60 x 50,000 floats
    (4.8 GB); the probe keeps the scored positions' only, in batches, so the whole process stays under 1.5 GB."""
    folder = save_model(tmp_path / "wide", "llama", vocab=50_000)
    script = textwrap.dedent(
        f"""
        import resource, torch
        from lottery.models.hf import HFCausalLM
        from lottery.data.tasks import IGNORE
        from lottery.data.text_task import ExactMatch
        from lottery.structured.budget import batch_size_for
        from lottery.structured.probe import Probe, Prompts
        net = HFCausalLM((60,), 50_000, {str(folder)!r})
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(50_000, (400, 60), generator=gen)
        y = torch.full((400, 61), IGNORE)
        y[:, 57:59] = x[:, 58:60]
        y[:, 60] = 4
        batch = batch_size_for(net, 60, 0.5, backward=True)
        probe = Probe(net, ExactMatch(50), torch.device("cpu"), batch)
        prompts = Prompts.of(probe.task, x, y)
        probe.evaluate(prompts)
        probe.gradient_scores(prompts, {{k: net.layout().grids[k] for k in ("heads", "layers")}})
        print(batch, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    batch, peak_mb = map(int, out.stdout.split()[-2:])
    assert batch >= 1 and peak_mb < 1536, (batch, peak_mb)


def test_fine_tuning_first_is_an_explicit_named_option(run_tiny, tmp_path):
    """structured.finetune=true trains level 0, then measures it with the Probe of the study as loaded (one evaluator:
    intervals, drop bounds, the same dense accuracy as a Probe on the tuned weights)."""
    from conftest import compose_config, tiny

    from lottery.cli import prepare_job

    folder = save_model(tmp_path / "llama", "llama")
    grid = [g for g in GRID if not g.startswith("structured.grid_units")]
    overrides = ["model=hf", f"model.path={folder}", *RECALL, *grid, "structured.finetune=true"]
    rows, seed_dir = run_tiny(*overrides)
    assert [r["level"] for r in rows] == [0]  # level 0 fine-tuned, then the grid on its weights
    weights = torch.load(seed_dir / "level_0" / "weights.pt", weights_only=True)
    results = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    assert results["settings"]["weights"] == "level_0 (trained)" and results["settings"]["evaluator"] == "probe"
    assert "acc_ci" in results["dense"] and all("drop_bound" in p for p in results["curves"]["heads"]["gradient"])
    setup, _, _ = prepare_job(compose_config(tiny(tmp_path, *overrides)))
    dm, network = setup.datamodule, setup.network()
    network.load_state_dict(weights)
    batch = json.loads((seed_dir / "no_retrain" / "run.json").read_text())["batch_size"]
    tuned = Probe(network, dm.task, torch.device("cpu"), batch).evaluate(Prompts.of(dm.task, dm.x_test, dm.y_test))
    assert tuned["acc"] == results["dense"]["acc"] and tuned["loss"] == results["dense"]["loss"]
    assert json.loads((seed_dir / "structured.json").read_text())["dense"]["test_acc"] == results["dense"]["acc"]


def test_a_branch_beside_scoring_as_loaded_is_refused(run_tiny, tmp_path):
    from lottery.config import ConfigError

    folder = save_model(tmp_path / "llama", "llama")
    with pytest.raises(ConfigError, match="trains nothing"):
        run_tiny("model=hf", f"model.path={folder}", *RECALL, *GRID, "branch=random_prune")


def test_the_layer_scan_equals_removing_each_layer_alone_bit_for_bit(family_model):
    """Probe.layer_scan starts each pass at the removed layer from the dense pass's kept input: its results are those
    of the separate full passes exactly, in batches that split the prompts unevenly."""
    _, folder = family_model
    network = network_of(folder)
    prompts = recall_prompts(n=7)
    probe = Probe(network, TokenRecall(3), torch.device("cpu"), batch_size=3)
    scan = probe.layer_scan(prompts)
    n = network.shape.n_layers
    assert sorted(scan) == list(range(n))
    for i in range(n):
        alone = probe.evaluate(prompts, {"layers": torch.arange(n) == i})
        assert scan[i] == alone, i
    assert scan[0]["loss"] != scan[1]["loss"]  # each pass removed a different layer
    assert list(probe.layer_scan(prompts, [1])) == [1]
    # the network is whole again: its dense evaluation is unchanged by the scan
    assert all(type(layer).__name__ not in ("_Pass", "_Kept") for layer in network.decoder_layers())


def test_a_study_as_loaded_ignores_what_only_training_uses(tmp_path):
    """Nothing trains: a text with fewer training windows than train.batch_size runs, settings torch's optimizer or
    the trainer would refuse pass, and none of them changes the study's hash (its folder); fine-tuning first hashes
    them as before."""
    from conftest import compose_config, seed_dir_of, tiny
    from hf_models import save_tokenizer

    from lottery.cli import run_config
    from lottery.data.lm_text import SAMPLE, read_documents

    folder = save_model(tmp_path / "llama", "llama")
    docs = read_documents(str(SAMPLE))[:12]
    save_tokenizer(folder, list(dict.fromkeys(w for d in docs for w in d.split()))[:300])
    text = tmp_path / "short.txt"
    text.write_text("\n\n".join(docs))
    study = [
        "model=hf",
        f"model.path={folder}",
        "data=lm_text",
        f"data.path={text}",
        "data.val_size=2",
        "pruning.strategy=structured",
        "structured.procedure=no_retrain",
        "structured.grid=[0.5]",
        "structured.random_draws=1",
        "structured.grid_units=[heads]",
        "structured.grid_scores=[magnitude,random]",
        "structured.bootstrap=100",
    ]
    overrides = tiny(tmp_path / "out", *study, "train.batch_size=100")
    run_config(compose_config(overrides))
    assert (seed_dir_of(overrides) / "no_retrain" / "results.json").is_file()
    ignored = ["optim.lr=-1", "train.batch_size=7", "train.duration=0it", "rewind.step=900it", "schedule.name=cosine"]
    assert seed_dir_of(tiny(tmp_path / "out", *study, *ignored)) == seed_dir_of(tiny(tmp_path / "out", *study))
    run_config(compose_config(tiny(tmp_path / "out", *study, *ignored)))  # refused by nothing: it trains nothing
    finetune = [*study, "structured.finetune=true"]
    assert seed_dir_of(tiny(tmp_path / "out", *finetune, "optim.lr=0.1")) != seed_dir_of(
        tiny(tmp_path / "out", *finetune)
    )


def test_long_passes_print_progress_with_the_time_left(tmp_path):
    network = network_of(save_model(tmp_path / "llama", "llama"))
    lines = []
    probe = Probe(network, TokenRecall(3), torch.device("cpu"), batch_size=2, say=lines.append)
    probe.progress_every = 0.0  # a line before every batch but the first
    prompts = recall_prompts(n=7)
    probe.gradient_scores(prompts, {"heads": network.layout().grids["heads"]})
    assert [line.split(",")[0] for line in lines] == [f"gradient scores of heads: {i}/4 batches" for i in (1, 2, 3)]
    assert all("left" in line for line in lines)
    lines.clear()
    probe.knockout_scores(prompts, (2,), "layers")  # one layer scan
    assert [line.split(",")[0] for line in lines] == [
        f"layer scan (2 layers removed one at a time): {i}/4 batches" for i in (1, 2, 3)
    ]
    lines.clear()
    probe.knockout_scores(prompts, (2,), "mlp_blocks")  # one evaluation per block
    assert [line.split(",")[0] for line in lines] == ["knock-outs of mlp_blocks: 1/2 mlp_blocks"]
    probe.say = None
    lines.clear()
    probe.layer_scan(prompts)
    assert lines == []  # quiet without `say`
