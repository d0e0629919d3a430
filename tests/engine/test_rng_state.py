"""RNGStateHook: every rank's generators, CUDA's included, go into the checkpoint and
come back to the same rank. (Multi-process runs: tests/distill/test_distiller_e2e.py.)"""
from types import SimpleNamespace

import torch

from tst_mm.engine import rng_state
from tst_mm.engine.rng_state import CHECKPOINT_KEY, RNGStateHook


def fake_runner(resume=True):
    saved = []

    def save_checkpoint(checkpoint):
        hook.before_save_checkpoint(runner, checkpoint)  # what Runner.save_checkpoint does
        saved.append(checkpoint)

    runner = SimpleNamespace(save_checkpoint=save_checkpoint, _resume=resume)
    hook = RNGStateHook(runner)
    return runner, hook, saved


def fake_cuda(monkeypatch) -> torch.Generator:
    """A CUDA generator stood in for by a CPU one (this machine has no GPU): the hook
    reads and writes it through torch.cuda's functions."""
    generator = torch.Generator().manual_seed(7)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_rng_state', generator.get_state)
    monkeypatch.setattr(torch.cuda, 'set_rng_state', generator.set_state)
    return generator


def test_cuda_and_cpu_generators_continue_after_a_resume(monkeypatch):
    cuda = fake_cuda(monkeypatch)
    runner, _, saved = fake_runner()
    torch.rand(3), torch.rand(3, generator=cuda)
    runner.save_checkpoint({})
    expected = torch.rand(4), torch.rand(4, generator=cuda)
    assert 'cuda' in saved[0][CHECKPOINT_KEY]['ranks'][0]

    torch.rand(10), torch.rand(10, generator=cuda)  # the interrupted run went on ...
    _, resumed, _ = fake_runner()
    resumed.after_load_checkpoint(runner, saved[0])
    resumed.restore()  # ... the resumed one continues from the checkpoint
    torch.testing.assert_close((torch.rand(4), torch.rand(4, generator=cuda)), expected,
                               rtol=0, atol=0)


def test_each_rank_takes_back_its_own_state(monkeypatch):
    states = [dict(python=None, numpy=None, torch=torch.tensor([rank])) for rank in (0, 1)]
    checkpoint = {CHECKPOINT_KEY: dict(ranks=states)}
    for rank in (0, 1):
        monkeypatch.setattr(rng_state, 'get_rank', lambda: rank)
        runner, hook, _ = fake_runner()
        hook.after_load_checkpoint(runner, checkpoint)
        assert hook.pending is states[rank]
    # A checkpoint from before per-rank states holds rank 0's; rank 1 keeps its own.
    monkeypatch.setattr(rng_state, 'get_rank', lambda: 1)
    hook.pending = None
    hook.after_load_checkpoint(runner, {CHECKPOINT_KEY: states[0]})
    assert hook.pending is None
    # `load_from` without --resume starts a new random stream.
    monkeypatch.setattr(rng_state, 'get_rank', lambda: 0)
    runner, hook, _ = fake_runner(resume=False)
    hook.after_load_checkpoint(runner, checkpoint)
    assert hook.pending is None
