"""The importance scores of the pretrained study hold the values they claim: Michel et al.'s per-prompt gradient
score and Bansal et al.'s per-token head score against central finite differences on a tiny Llama with grouped-query
attention (2 key/value heads for 4 query heads), the two definitions told apart on a constructed example where a
head's terms cancel across positions, and the knock-out ranking (`single`) against removing each unit by hand."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("transformers")

from hf_models import save_model  # noqa: E402

from lottery.data.tasks import IGNORE  # noqa: E402
from lottery.data.text_task import ExactMatch  # noqa: E402
from lottery.structured.probe import Probe, Prompts  # noqa: E402

# Central differences: Llama's RMSNorm computes in float32 even in a float64 model, so the loss carries ~1e-9 of
# rounding; a step of 1e-2 keeps that near 1e-7 of the gradient, and the truncation (~EPS^2 x the third derivative)
# about as small.
EPS = 1e-2


@pytest.fixture(scope="module")
def gqa(tmp_path_factory):
    """A tiny Llama, 2 layers x 4 heads sharing 2 key/value heads, in float64, and three prompts with scored answer
    tokens of different lengths and places."""
    from lottery.models.hf import HFCausalLM

    folder = save_model(tmp_path_factory.mktemp("gqa") / "llama", "llama", kv_heads=2)
    network = HFCausalLM((9,), 12, str(folder), token_offset=5).double().eval()
    assert network.shape.n_kv_heads == 2 and network.shape.n_heads == 4
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(12, (3, 9), generator=gen)
    targets = torch.full((3, 9), IGNORE)
    targets[0, 7:9] = torch.tensor([4, 9])
    targets[1, 5] = 2
    targets[2, 6:8] = torch.tensor([11, 0])
    return network, Prompts(x, targets, None)


def prompt_loss(network, prompts: Prompts, row: int, gates: dict) -> float:
    """Prompt `row`'s mean next-token loss over its scored tokens, in float64."""
    x, t = prompts.x[row : row + 1], prompts.targets[row : row + 1]
    at = t != IGNORE
    with torch.no_grad():
        logits = network(x, gates=gates, at=at).double()
    return float(F.cross_entropy(logits, t[at], reduction="mean"))


def test_gradient_scores_equal_finite_differences_under_grouped_query_attention(gqa):
    """Michel et al. 2019: I_h = mean over prompts of |dL(x)/dg_h|, L(x) the prompt's mean loss."""
    network, prompts = gqa
    probe = Probe(network, ExactMatch(12), torch.device("cpu"), batch_size=2)  # batches of 2: a 2 + 1 split
    grid = network.layout().grids["heads"]
    scores = probe.gradient_scores(prompts, {"heads": grid})["heads"]
    expected = torch.zeros(grid, dtype=torch.float64)
    for row in range(len(prompts)):
        for layer in range(grid[0]):
            for head in range(grid[1]):
                terms = []
                for sign in (1.0, -1.0):
                    g = torch.ones(1, *grid, dtype=torch.float64)
                    g[0, layer, head] += sign * EPS
                    terms.append(prompt_loss(network, prompts, row, {"heads": g}))
                expected[layer, head] += abs((terms[0] - terms[1]) / (2 * EPS)) / len(prompts)
    assert expected.min() > 1e-4  # every head matters a little: the comparison is not of zeros
    torch.testing.assert_close(scores, expected, rtol=5e-4, atol=1e-7)


def test_per_token_head_scores_equal_finite_differences_and_the_released_normalisation(gqa):
    """Bansal et al. (llm-interpret calculate_importance, run at batch size 1): sum over prompts and positions of
    |<dL_p/dA_h(t), A_h(t)>|, L_p prompt p's mean loss over its scored tokens, layers but the last divided by the
    positions with a gradient, the last layer by the scored tokens; our batches of 2 give the same."""
    network, prompts = gqa
    probe = Probe(network, ExactMatch(12), torch.device("cpu"), batch_size=2)
    grid = network.layout().grids["heads"]
    scores = probe.token_head_scores(prompts, grid)
    scored = int((prompts.targets != IGNORE).sum())  # 5
    positions = 0
    expected = torch.zeros(grid, dtype=torch.float64)
    for row in range(len(prompts)):
        at = prompts.targets[row] != IGNORE
        used = int(at.nonzero().max()) + 1  # the batch is cut after its last scored position
        positions += used
        x, t = prompts.x[row : row + 1, :used], prompts.targets[row : row + 1, :used]
        for layer in range(grid[0]):
            for pos in range(used):
                for head in range(grid[1]):
                    terms = []
                    for sign in (1.0, -1.0):
                        g = torch.ones(1, grid[0], used, grid[1], dtype=torch.float64)
                        g[0, layer, pos, head] += sign * EPS
                        with torch.no_grad():
                            logits = network(x, gates={"heads": g}, at=t != IGNORE).double()
                        terms.append(float(F.cross_entropy(logits, t[t != IGNORE], reduction="mean")))
                    expected[layer, head] += abs((terms[0] - terms[1]) / (2 * EPS))
    expected[:-1] /= positions
    expected[-1] /= scored
    assert positions == 9 + 6 + 8 and scored == 5
    torch.testing.assert_close(scores, expected, rtol=5e-4, atol=1e-8)


class Cancelling(torch.nn.Module):
    """One layer, two heads, two positions, a vocabulary of two: the scored logit z = sum over positions t and heads
    h of g(t, h) * c(t, h) with c = [[+1, 0.5], [-1, 0.5]]. Head 0's terms cancel (+1 - 1): per prompt its gradient is
    0; per token it is twice head 1's."""

    scores_positions = True
    c = torch.tensor([[1.0, 0.5], [-1.0, 0.5]])

    def forward(self, x, gates=None, at=None, skip=()):
        g = gates["heads"][:, 0] if gates else torch.ones(len(x), 2)
        z = (g[:, None, :] * self.c).sum((1, 2)) if g.dim() == 2 else (g * self.c).sum((1, 2))
        return torch.stack([z, torch.zeros_like(z)], -1)  # one scored position per prompt


def test_per_token_and_per_prompt_head_scores_are_told_apart():
    prompts = Prompts(torch.zeros(1, 2, dtype=torch.int64), torch.tensor([[IGNORE, 0]]), None)
    probe = Probe(Cancelling(), ExactMatch(2), torch.device("cpu"), batch_size=1)
    dz = torch.sigmoid(torch.tensor(-1.0)).item()  # |dL/dz| at z = 0 + 1 (head 1's 0.5 + 0.5)
    per_prompt = probe.gradient_scores(prompts, {"heads": (1, 2)})["heads"]
    per_token = probe.token_head_scores(prompts, (1, 2))
    torch.testing.assert_close(per_prompt, torch.tensor([[0.0, dz]], dtype=torch.float64))
    # one layer, which is the last: divided by the one scored token
    torch.testing.assert_close(per_token, torch.tensor([[2 * dz, dz]], dtype=torch.float64))
    assert per_prompt.argmax() == 1 and per_token.argmax() == 0  # the two definitions rank the heads oppositely


def test_knockout_scores_rank_by_accuracy_drop_then_loss_rise(gqa):
    network, prompts = gqa
    probe = Probe(network, ExactMatch(12), torch.device("cpu"), batch_size=3)
    out = probe.knockout_scores(prompts, (2,), "mlp_blocks")
    base = probe.evaluate(prompts)
    for block in range(2):
        alone = probe.evaluate(prompts, {"mlp_blocks": torch.arange(2) == block})
        assert out["acc_drop"][block] == pytest.approx(base["acc"] - alone["acc"])
        assert out["loss_rise"][block] == pytest.approx(alone["loss"] - base["loss"])
    key = [(float(out["acc_drop"][i]), float(out["loss_rise"][i])) for i in range(2)]
    assert out["score"].tolist() == [float(sorted(key).index(k)) for k in key]
    layers = probe.knockout_scores(prompts, (2,), "layers")  # removed as the identity (skipped)
    skipped = probe.evaluate(prompts, {"layers": torch.tensor([True, False])})
    assert layers["loss_rise"][0] == pytest.approx(skipped["loss"] - base["loss"])
