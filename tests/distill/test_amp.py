"""Mixed precision (``--amp``): what runs in low precision and what must stay fp32.

mmengine's ``AmpOptimWrapper`` runs each phase inside ``autocast``; on CUDA that is fp16
with a loss scaler. These tests run the same wrapper on the CPU with bf16 autocast
(mmengine refuses the CPU only in the wrapper's constructor, and its GradScaler turns
itself off without CUDA), so the AMP code paths of both steps run in CI:

- the augmenter turns autocast off inside: its images, boxes, label maps, matrices and
  policy parameters are fp32, and its output is exactly the output without autocast;
- the student and teacher run under autocast (their convolutions in bf16), the student
  and augmenter updates apply, and their parameters stay fp32.
"""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapperDict
from mmengine.optim.optimizer import amp_optimizer_wrapper

from tst_mm.augment import TSTAugmenter
from tst_mm.engine import TSTOptimWrapperConstructor

from .test_distiller import build, one_batch, tiny_cfg
from .tiny_models import det_batch, seg_batch

CPU_AMP = torch.autocast('cpu', dtype=torch.bfloat16)


@pytest.fixture
def amp_on_cpu(monkeypatch):
    """Let mmengine build its AmpOptimWrapper here (bf16 autocast on the CPU)."""
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)


def _augment(augmenter, inputs, samples, seed):
    torch.manual_seed(seed)
    return augmenter(inputs, samples)


@pytest.mark.parametrize('batch', [det_batch, seg_batch])
def test_the_augmenter_is_fp32_and_unchanged_under_autocast(batch):
    augmenter = TSTAugmenter(num_ops=4).train()
    inputs, samples = batch(batch=4)
    inputs = inputs.mul(40).add(128).clamp(0, 255)
    for seed in range(4):  # several draws, so that warps and pixel ops both run
        plain, plain_samples = _augment(augmenter, inputs, samples, seed)
        with CPU_AMP:
            out, out_samples = _augment(augmenter, inputs, samples, seed)
            loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, plain, rtol=0, atol=0)
        for a, b in zip(out_samples, plain_samples):
            if 'gt_instances' in a:
                assert a.gt_instances.bboxes.dtype == torch.float32
                torch.testing.assert_close(a.gt_instances.bboxes, b.gt_instances.bboxes,
                                           rtol=0, atol=0)
            else:
                assert torch.equal(a.gt_sem_seg.data, b.gt_sem_seg.data)
        augmenter.zero_grad()
        loss.backward()
        for p in augmenter.parameters():
            assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
        assert augmenter.magnitude_logits.grad.abs().sum() > 0


def _amp_optim(distiller):
    wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16',
                   optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
                   clip_grad=dict(max_norm=10))
    return TSTOptimWrapperConstructor(dict(student=copy.deepcopy(wrapper),
                                           augmenter=copy.deepcopy(wrapper)))(distiller)


def _dtypes_of(module):
    """A forward hook that collects the dtypes of ``module``'s outputs."""
    seen = []
    return seen, module.register_forward_hook(lambda m, i, out: seen.append(out.dtype))


def test_both_steps_run_under_amp(amp_on_cpu, coco_digits):
    torch.manual_seed(0)
    distiller = build(tiny_cfg().model).train()
    optim = _amp_optim(distiller)
    assert isinstance(optim, OptimWrapperDict)
    assert type(optim['student']).__name__ == 'AmpOptimWrapper'
    student_conv = distiller.student.backbone.conv1
    teacher_conv = distiller.teacher.backbone.conv1
    (student_dtypes, h1), (teacher_dtypes, h2) = _dtypes_of(student_conv), \
        _dtypes_of(teacher_conv)
    augmented = []
    h3 = distiller.augmenter.register_forward_hook(
        lambda m, i, out: augmented.append(out[0].dtype))
    try:
        policy = [p.detach().clone() for p in distiller.augmenter.parameters()]
        torch.manual_seed(1)
        log = distiller.augment_step(one_batch(coco_digits), optim)
        assert torch.isfinite(log['augment.loss'])
        assert all(torch.isfinite(v) for k, v in log.items() if 'grad_norm' in k)
        moved = [not torch.equal(a, b) for a, b in zip(policy, distiller.augmenter.parameters())]
        assert any(moved), 'the augmenter step under AMP did not update the policy'

        student = [p.detach().clone() for p in distiller.student.parameters()]
        torch.manual_seed(2)
        log = distiller.train_step(one_batch(coco_digits), optim)
        assert torch.isfinite(log['loss'])
        assert any(not torch.equal(a, b) for a, b in
                   zip(student, distiller.student.parameters()))
    finally:
        for h in (h1, h2, h3):
            h.remove()
    # Networks in bf16 in both steps, the augmenter's images in fp32.
    assert student_dtypes and set(student_dtypes) == {torch.bfloat16}
    assert teacher_dtypes and set(teacher_dtypes) == {torch.bfloat16}
    assert augmented and set(augmented) == {torch.float32}
    for module in (distiller.student, distiller.augmenter, distiller.distill_losses):
        assert all(p.dtype == torch.float32 for p in module.parameters())
