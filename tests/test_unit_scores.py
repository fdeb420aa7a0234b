"""Unit importance of a network trained from scratch, measured by the study's one evaluator (Probe.gradient_scores,
the task's own per-prompt loss): the gradient score equals finite differences of the loss in each unit's gate and
Michel et al.'s |<dL/dA_h, A_h>|; the magnitude score is the norm of the unit's weights."""

from __future__ import annotations

import pytest
import torch

from lottery.core.unit_scores import magnitude_scores
from lottery.data.tasks import IGNORE, Regression, TokenRecall
from lottery.models import Transformer
from lottery.structured.probe import Probe, Prompts


def gradient_scores(model, task, x, y, kinds, batch):
    """Probe.gradient_scores of `kinds` on the prompts (x, y), in batches of `batch`."""
    probe = Probe(model, task, torch.device("cpu"), batch)
    assert probe.whole  # a network from scratch: measured by the task's own loss on its whole outputs
    return probe.gradient_scores(Prompts.of(task, x, y), {k: model.layout().grids[k] for k in kinds})


def tiny(task: str):
    """A float64 model, three prompts and the task's per-prompt loss."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    if task == "recall":
        model = Transformer((7,), 6, d_model=8, n_layers=2, n_heads=2, d_mlp=6).double()
        x = torch.randint(6, (3, 7), generator=gen)
        y = torch.randint(6, (3, 7), generator=gen)
        y[:, 1::2] = IGNORE
        task = TokenRecall(n_values=3)
    else:
        model = Transformer((7, 3), 1, d_model=8, n_layers=2, n_heads=2, d_mlp=6).double()
        x = torch.randn(3, 7, 3, generator=gen, dtype=torch.float64)
        y = torch.randn(3, 7, generator=gen, dtype=torch.float64)
        y[:, 1::2] = float("nan")
        task = Regression(n_dims=2, tolerance=0.1)
    with torch.no_grad():  # break the initial symmetry of the layer norms so every path carries signal
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval(), x, y, task


@pytest.mark.parametrize("task", ["recall", "regression"])
@pytest.mark.parametrize("kind", ["heads", "mlp_units", "mlp_blocks"])
def test_gradient_importance_equals_a_finite_difference_estimate(task, kind):
    model, x, y, the_task = tiny(task)
    loss = the_task.per_example_loss
    layout = model.layout()
    score = gradient_scores(model, the_task, x, y, [kind], batch=2)[kind]  # batches of 2 and 1
    eps = 1e-6
    grid = layout.grids[kind]
    estimate = torch.zeros(grid, dtype=torch.float64)
    with torch.no_grad():
        for b in range(len(x)):
            for unit in range(layout.size(kind)):
                values = []
                for sign in (1, -1):
                    gate = torch.ones((1, *grid), dtype=torch.float64)
                    gate.view(-1)[unit] += sign * eps
                    values.append(float(loss(model(x[b : b + 1], gates={kind: gate}), y[b : b + 1])))
                estimate.view(-1)[unit] += abs(values[0] - values[1]) / (2 * eps) / len(x)
    assert score.shape == grid and bool((estimate > 0).any())
    assert torch.allclose(score, estimate, rtol=1e-6, atol=1e-9)


def test_gradient_importance_of_a_head_is_the_inner_product_of_its_output_and_the_loss_gradient():
    """Michel et al. 2019: I_h = E_x |sum_t <dL/dA_h(t), A_h(t)>|, A_h the head's attention output (the input of o)."""
    model, x, y, task = tiny("recall")
    loss = task.per_example_loss
    score = gradient_scores(model, task, x, y, ["heads"], batch=3)["heads"]
    model.requires_grad_(True)  # the Probe froze the weights; the reference below differentiates through them
    expected = torch.zeros(2, 2, dtype=torch.float64)
    for layer, block in enumerate(model.blocks):
        for b in range(len(x)):
            captured = {}

            def capture(module, inputs, output, captured=captured):
                captured["a"] = inputs[0]  # returns None: a hook's return value would replace the output

            hook = block.attn.o.register_forward_hook(capture)
            value = loss(model(x[b : b + 1]), y[b : b + 1]).sum()
            hook.remove()
            (grad,) = torch.autograd.grad(value, captured["a"])
            for h in range(2):
                part = slice(4 * h, 4 * (h + 1))
                expected[layer, h] += abs(float((grad[..., part] * captured["a"][..., part]).sum().detach())) / len(x)
    assert torch.allclose(score, expected, rtol=1e-9)


def test_gradient_scores_change_no_weight_and_take_no_weight_gradient():
    model, x, y, task = tiny("recall")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradient_scores(model, task, x, y, ["heads"], batch=3)
    assert all(p.grad is None for p in model.parameters())  # gradients are taken with respect to the gates only
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_magnitude_score_is_the_norm_of_the_units_weights():
    model, *_ = tiny("recall")
    layout = model.layout()
    scores = magnitude_scores(model.state_dict(), layout, ["heads", "mlp_units", "mlp_blocks"])
    attn, mlp = model.blocks[1].attn, model.blocks[1].mlp
    head = torch.cat([attn.q.weight[4:8].flatten(), attn.k.weight[4:8].flatten(), attn.v.weight[4:8].flatten()])
    head = torch.cat([head, attn.o.weight[:, 4:8].flatten()])
    assert torch.isclose(scores["heads"][1, 1], head.norm().detach())
    unit = torch.cat([mlp.fc_in.weight[2], mlp.fc_out.weight[:, 2]])
    assert torch.isclose(scores["mlp_units"][1, 2], unit.norm().detach())
    block = torch.cat([mlp.fc_in.weight.flatten(), mlp.fc_out.weight.flatten()])
    assert torch.isclose(scores["mlp_blocks"][1], block.norm().detach())
