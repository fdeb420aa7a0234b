"""What else breaks (structured.transfer): the units a study removes for its own task, evaluated on another task and on
held-out text. transfer.json holds, at each grid fraction, exactly what removing those units (for random: the same
draws) gives on each target, with intervals; the claims follow the drop bounds; bad targets are refused before
anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from conftest import compose_config, tiny  # noqa: E402
from hf_models import VOCAB, save_model, save_tokenizer  # noqa: E402

from lottery.config import ConfigError  # noqa: E402
from lottery.data.lm_text import SAMPLE, read_documents  # noqa: E402

STUDY = [
    "data=icl_text",
    "data.task=antonyms",
    "data.num_train=120",
    "data.num_test=30",
    "data.val_size=30",
    "data.shots=[2]",
    "pruning.strategy=structured",
    "structured.procedure=no_retrain",
    "structured.grid=[0.25,0.5]",
    "structured.random_draws=2",
    "structured.score_examples=8",
    "structured.grid_units=[heads,layers]",
    "structured.grid_scores=[gradient,random]",
    "structured.bootstrap=200",
    "structured.min_above_chance=0.0",
    "structured.transfer_windows=12",
    "structured.transfer_context=24",
    "structured.batch_size=7",  # the test measures again in batches of 7: the same sums in the same order
]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from lottery.cli import run_config
    from lottery.data.text_icl import read_pairs

    root = tmp_path_factory.mktemp("transfer")
    folder = save_model(root / "llama", "llama", kv_heads=2)
    words = [
        "->",
        *(w for task in ("antonyms", "plural") for pair in read_pairs(task) for x in pair for w in x.split()),
    ]
    common = [w for doc in read_documents(str(SAMPLE)) for w in doc.split()]
    extra = [w for w in dict.fromkeys(common) if w not in words]
    save_tokenizer(folder, [*words, *extra][: VOCAB - 2])
    overrides = tiny(
        root / "out", "model=hf", f"model.path={folder}", *STUDY, f"structured.transfer=[plural,lm:{SAMPLE}]"
    )
    cfg = compose_config(overrides)
    run_config(cfg)
    from conftest import seed_dir_of

    return folder, cfg, seed_dir_of(overrides)


def test_transfer_holds_what_the_removed_units_give_on_each_target(study):
    from lottery.cli import prepare_job
    from lottery.structured.probe import Probe
    from lottery.structured.transfer import parse, target_prompts

    folder, cfg, seed_dir = study
    results = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    transfer = json.loads((seed_dir / "no_retrain" / "transfer.json").read_text())
    text = f"lm:{SAMPLE}"
    assert transfer["source"] == "antonyms"
    assert [t["name"] for t in transfer["targets"]] == ["plural", "lm:stories"]
    assert [t["kind"] for t in transfer["targets"]] == ["task", "text"]
    assert set(transfer["curves"]) == {"heads", "layers"}
    assert set(transfer["curves"]["heads"]) == {"gradient", "random"}
    setup, _, _ = prepare_job(cfg)
    network = setup.pretrained().eval()
    for target in parse(["plural", text]):
        prompts, task = target_prompts(setup.cfg, target)
        probe = Probe(network, task, torch.device("cpu"), 7)
        dense = probe.evaluate(prompts)
        assert transfer["dense"][target.name]["acc"] == dense["acc"]
        assert transfer["dense"][target.name]["loss"] == dense["loss"]
        for kind in ("heads", "layers"):
            own = results["curves"][kind]["gradient"]
            for i, point in enumerate(transfer["curves"][kind]["gradient"]):
                kept = torch.tensor(own[i]["kept"], dtype=torch.bool)
                measured = probe.evaluate(prompts, {kind: ~kept})
                on = point["on"][target.name]
                assert point["fraction"] == own[i]["fraction"]
                assert on["acc"] == measured["acc"] and on["loss"] == measured["loss"], (target, kind, i)
                assert on["acc_ci"][0] <= on["acc"] <= on["acc_ci"][1]
                assert on["loss_ci"][0] <= on["loss"] <= on["loss_ci"][1]
                assert "drop_bound" in on and "loss_rise_bound" in on
                if target.kind == "text":
                    assert on["perplexity"] == pytest.approx(torch.tensor(on["loss"]).exp().item())
            # random: the grid's own draws, the first of which the study shows
            first = torch.tensor(results["curves"][kind]["random"][0]["kept"], dtype=torch.bool)
            draw = probe.evaluate(prompts, {kind: ~first})
            assert transfer["curves"][kind]["random"][0]["on"][target.name]["draws_acc"][0] == draw["acc"]
    assert (seed_dir / "no_retrain" / "transfer.png").is_file()
    assert not (seed_dir / "no_retrain" / "transfer.partial.json").exists()


def test_the_claims_follow_the_drop_bounds():
    """A constructed study: own task removable to 0.5; on task b the drop bound breaks the tolerance at 0.5; task c is
    one the model does not do (no claim); the text's perplexity is read at the own task's fraction."""
    from lottery.structured.grid import GridSettings
    from lottery.structured.transfer import summary

    s = GridSettings((0.25, 0.5, 0.75), ("heads",), ("gradient", "random"), 2, 0.05, 0.1)
    results = {
        "removable": {"heads": {"gradient": 0.5, "random": 0.25}},
        "curves": {
            "heads": {
                "gradient": [{"drop_bound": b} for b in (0.0, 0.04, 0.2)],
                "random": [{"drop_bound": b} for b in (0.0, 0.07, 0.2)],
            }
        },
    }

    def point(f, b_bound, ppl):
        return {"fraction": f, "on": {"b": {"drop_bound": b_bound}, "c": {"drop_bound": 0.9}, "t": {"perplexity": ppl}}}

    gradient = [point(0.25, 0.01, 11.0), point(0.5, 0.06, 12.0), point(0.75, 0.5, 30.0)]
    random = [point(0.25, 0.02, 15.0), point(0.5, 0.03, 20.0), point(0.75, 0.5, 60.0)]
    out = {
        "targets": [
            {"name": "b", "kind": "task", "meaningful": True},
            {"name": "c", "kind": "task", "meaningful": False},
            {"name": "t", "kind": "text"},
        ],
        "dense": {"t": {"perplexity": 10.0}},
        "curves": {"heads": {"gradient": gradient, "random": random}},
    }
    claims = summary(out, results, s)["heads"]
    assert claims["gradient"]["own"] == 0.5
    assert claims["gradient"]["tasks"] == {"b": 0.25, "c": None}
    assert claims["gradient"]["all"] == 0.25  # b fails at 0.5; c is not counted
    assert claims["random"]["tasks"]["b"] == 0.5 and claims["random"]["all"] == 0.25  # the own drop breaks at 0.5
    assert claims["gradient"]["text_at_own"]["t"] == {
        "fraction": 0.5,
        "perplexity": 12.0,
        "dense_perplexity": 10.0,
        "random_perplexity": 20.0,
    }


def test_a_rerun_reuses_the_transfer_and_a_changed_target_list_measures_again(study, capsys):
    from lottery.cli import run_config

    _, cfg, seed_dir = study
    path = seed_dir / "no_retrain" / "transfer.json"
    before = path.read_bytes()
    run_config(cfg)
    assert "the transfer study is done" in capsys.readouterr().out
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "entry, words",
    [
        ("[nonsense]", "not a shipped word list"),
        ("[lm:/no/such/text.txt]", "is not a file"),
        ("[plural,plural]", "lists a target twice"),
    ],
)
def test_bad_targets_are_refused_before_anything_is_written(tmp_path, entry, words):
    from lottery.cli import run_config

    folder = save_model(tmp_path / "llama", "llama")
    save_tokenizer(folder, ["->", "a", "b"])
    overrides = tiny(tmp_path / "out", "model=hf", f"model.path={folder}", *STUDY, f"structured.transfer={entry}")
    with pytest.raises(ConfigError, match=words):
        run_config(compose_config(overrides))
    assert not (tmp_path / "out").exists()


def test_transfer_needs_a_study_of_the_model_as_loaded(tmp_path):
    from lottery.cli import run_config

    overrides = tiny(
        tmp_path / "out",
        "model=transformer",
        "data=icl_recall",
        "pruning.strategy=structured",
        "structured.transfer=[plural]",
    )
    with pytest.raises(ConfigError, match="as loaded"):
        run_config(compose_config(overrides))
    assert not Path(tmp_path / "out").exists()
