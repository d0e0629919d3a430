"""NormalizedSGD: each step has length lr along the negative gradient, at any scale."""
import pytest
import torch
from mmengine.optim import build_optim_wrapper

from tst_mm.engine import NormalizedSGD


@pytest.mark.parametrize('scale', [1e-4, 1.0, 1e4])
def test_a_step_has_length_lr_along_the_negative_gradient_at_any_scale(scale):
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = NormalizedSGD([a, b], lr=0.3)
    a.grad = scale * torch.tensor([1.0, -2.0, 0.5])
    b.grad = scale * torch.tensor([[3.0, 0.0], [0.0, -1.0]])
    optimizer.step()
    step = torch.cat([a.detach().flatten(), b.detach().flatten()])
    gradient = torch.cat([a.grad.flatten(), b.grad.flatten()])
    torch.testing.assert_close(step.norm(), torch.tensor(0.3))
    torch.testing.assert_close(step / step.norm(), -gradient / gradient.norm())


def test_a_zero_gradient_and_a_parameter_without_one_do_not_move():
    a = torch.nn.Parameter(torch.ones(2))
    b = torch.nn.Parameter(torch.ones(2))
    optimizer = NormalizedSGD([a, b], lr=1.0)
    a.grad = torch.zeros(2)
    optimizer.step()
    assert torch.equal(a.detach(), torch.ones(2)) and torch.equal(b.detach(), torch.ones(2))


def test_momentum_accumulates_the_unit_directions():
    theta = torch.nn.Parameter(torch.zeros(1))
    optimizer = NormalizedSGD([theta], lr=1.0, momentum=0.5)
    for gradient in (10.0, 0.01):  # the same direction at any scale: steps 1, then 1.5
        theta.grad = torch.tensor([gradient])
        optimizer.step()
    torch.testing.assert_close(theta.detach(), torch.tensor([-2.5]))


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match='momentum'):
        NormalizedSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match='lr'):
        NormalizedSGD([torch.nn.Parameter(torch.zeros(1))], lr=-0.1)


def test_it_builds_from_a_config_and_applies_the_mean_of_accumulated_batches():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', accumulative_counts=2,
        optimizer=dict(type='NormalizedSGD', lr=0.5)))
    assert isinstance(wrapper.optimizer, NormalizedSGD)
    wrapper.initialize_count_status(model, 0, 10)
    for inputs in (torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])):
        wrapper.update_params(model(inputs).sum())
    # Mean gradient (0.5, 0.5): one step of length 0.5 against it.
    expected = -0.5 * torch.tensor([[1.0, 1.0]]) / 2 ** 0.5
    torch.testing.assert_close(model.weight.detach(), expected)
