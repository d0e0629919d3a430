"""Several batches per augmenter update (``accumulative_counts`` on its wrapper): each
augment phase starts a fresh accumulation."""
import torch
from mmengine.optim import OptimWrapper, OptimWrapperDict

from tst_mm.engine import TSTIterBasedTrainLoop


class _Runner:

    def __init__(self, wrapper):
        self.optim_wrapper = OptimWrapperDict(augmenter=wrapper)


def _loop(wrapper):
    loop = object.__new__(TSTIterBasedTrainLoop)  # only the phase bookkeeping is used
    loop._runner = _Runner(wrapper)
    return loop


def test_a_phase_drops_the_last_phases_leftover_and_counts_from_its_start():
    theta = torch.nn.Parameter(torch.zeros(3))
    wrapper = OptimWrapper(torch.optim.SGD([theta], lr=1.0, momentum=0.9),
                           accumulative_counts=4)
    # As the Runner leaves it: counted from the student's iteration, up to max_iters.
    wrapper.initialize_count_status(torch.nn.Linear(1, 1), 7, 10)
    theta.grad = torch.ones(3)  # 3 micro-batches of the last phase, not applied
    loop = _loop(wrapper)
    loop._reset_augmenter_optimizer()
    assert theta.grad is None or not theta.grad.any()
    updates = []
    for step in range(8):
        wrapper.update_params((theta * (step + 1)).sum())  # each gradient = step + 1
        updates.append(theta.detach().clone())
    # Updates after the 4th and 8th micro-batch of the phase only; the first applies
    # the mean of the phase's own 4 gradients (1 + 2 + 3 + 4) / 4, nothing older (and
    # no forced update at the student's max_iters, 10).
    moved = [not torch.equal(a, b) for a, b in zip([torch.zeros(3)] + updates, updates)]
    assert moved == [False, False, False, True, False, False, False, True]
    torch.testing.assert_close(updates[3], torch.full((3,), -2.5))
