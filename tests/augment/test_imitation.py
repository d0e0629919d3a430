"""TSTImitationAugmenter: the shipped imitator nets, gradients through them, exact
geometry, checkpoints, and one augmenter and one student step in the distiller."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.structures import InstanceData, PixelData
from mmseg.structures import SegDataSample

from tst_mm.augment import OPS, TSTAugmenter, TSTImitationAugmenter
from tst_mm.augment.imitation import DEFAULT_WEIGHTS
from tst_mm.augment.imitators import load_imitators
from tst_mm.augment.ops import OpContext
from tst_mm.datasets import render_scene

H, W = 40, 56
IMITATED = list(load_imitators(DEFAULT_WEIGHTS))
MAGNITUDE_OPS = [n for n in IMITATED if OPS[n].magnitude_range is not None]
# Mean absolute error allowed against the exact op on unseen images, as a fraction of
# the op's own mean change (+ half a grey level); the shipped nets' held-out errors are
# in docs/benchmarks.md. Posterize's per-pixel change is a sawtooth (x mod 2^v) no small
# net draws: its net gives the mean darkening, checked apart.
TOLERANCE = {'Brightness': 0.05, 'Color': 0.1, 'Contrast': 0.1, 'Sharpness': 0.1,
             'Solarize': 0.35, 'Invert': 0.01, 'Posterize': 1.0}


def unseen_images(seed=0):
    """Scenes of validation digits (never in the pre-training pool) and a smooth random
    image with noise, at a size the nets were not trained at."""
    rng = np.random.default_rng(seed + 12345)
    scenes = [render_scene(rng, (H, W), (10, 20), (1, 3), 'val').image for _ in range(3)]
    img = torch.from_numpy(np.stack(scenes)).permute(0, 3, 1, 2).float()
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(1, 3, 5, 7, generator=g), (H, W), mode='bicubic',
                           align_corners=False) * 255 + torch.randn(1, 3, H, W, generator=g) * 8
    return torch.cat([img, smooth.round().clamp(0, 255)])


def test_the_shipped_nets_cover_the_pixel_ops_but_cutout():
    pixel_ops = {n for n, s in OPS.items() if not s.geometric}
    assert set(IMITATED) <= pixel_ops - {'Cutout'}
    assert {'Brightness', 'Color', 'Contrast', 'Sharpness', 'Posterize',
            'Solarize'} <= set(IMITATED)
    aug = TSTImitationAugmenter()
    assert list(aug.imitators) == [n for n in aug.op_names if n in IMITATED]


@pytest.mark.parametrize('name', IMITATED)
def test_each_net_reproduces_its_op_on_unseen_images(name):
    img = unseen_images()
    n = len(img)
    ctx = OpContext(torch.ones(n, 1, H, W), torch.tensor([[H, W]] * n).float(),
                    torch.zeros(n, 2), padded=False)
    net = load_imitators(DEFAULT_WEIGHTS)[name].eval()
    rng = OPS[name].magnitude_range
    for fraction in (0.25, 0.6, 1.0):
        value = torch.ones(n) if rng is None else torch.full((n,), rng[1] * fraction)
        if OPS[name].signed:
            value[::2] *= -1
        with torch.no_grad():
            exact = (img + OPS[name].fn(img, value, ctx)).clamp(0, 255)
            imitated = (img + net(img, value, ctx)).clamp(0, 255)
        mae, own = (exact - imitated).abs().mean(), (exact - img).abs().mean()
        assert mae <= TOLERANCE[name] * own + 0.5, (name, fraction, mae, own)
        if name == 'Posterize':
            assert abs(imitated.mean() - exact.mean()) <= 0.5
    if rng is not None:  # and the net is the identity at value 0
        assert not net(img, torch.zeros(n), ctx).any()


def forced(cls, ops, **kwargs):
    cfgs = {n: dict(probability=1 - 1e-6) for n in ops}
    for n in ops:
        if OPS[n].magnitude_range is not None:
            cfgs[n]['magnitude'] = 0.6
    return cls(ops=ops, num_ops=len(ops), op_cfgs=cfgs, temperature=1.0, **kwargs)


def test_gradients_reach_magnitudes_and_probabilities_through_the_nets():
    """Every magnitude and probability logit gets a gradient, and it is the derivative of
    the imitation augmenter itself (central differences, float64)."""
    ops = MAGNITUDE_OPS
    aug = forced(TSTImitationAugmenter, ops).double()
    img = unseen_images().double()
    weight = torch.randn(img.shape, generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64)

    def loss():
        torch.manual_seed(3)
        return (aug(img)[0] * weight).sum()

    loss().backward()
    for param in (aug.magnitude_logits, aug.probability_logits):
        assert param.grad is not None and (param.grad != 0).all()
        with torch.no_grad():
            for i in range(len(param)):
                param[i] += 1e-5
                up = loss()
                param[i] -= 2e-5
                down = loss()
                param[i] += 1e-5
                fd = (up - down) / 2e-5
                assert torch.allclose(param.grad[i], fd, rtol=1e-3,
                                      atol=1e-3 * param.grad.abs().max()), (param, i)
    # A different gradient path from the exact augmenter's, on the same draw.
    exact = forced(TSTAugmenter, ops).double()
    torch.manual_seed(3)
    (exact(img)[0] * weight).sum().backward()
    assert not torch.allclose(exact.magnitude_logits.grad, aug.magnitude_logits.grad)


def test_nets_are_frozen_buffers_outside_parameters_and_checkpoints():
    aug = TSTImitationAugmenter()
    assert [name for name, _ in aug.named_parameters()] == [
        'magnitude_logits', 'probability_logits']
    buffers = {k: v.clone() for k, v in aug.imitators.named_buffers()}
    assert buffers and not any(v.requires_grad for v in buffers.values())
    exact = TSTAugmenter()
    assert aug.state_dict().keys() == exact.state_dict().keys()
    optim = torch.optim.SGD(aug.parameters(), lr=1.0)
    img = unseen_images()
    for seed in range(3):
        torch.manual_seed(seed)
        (aug(img)[0] * torch.randn(img.shape)).sum().backward()
        optim.step()
    for name, value in aug.imitators.named_buffers():
        assert torch.equal(value, buffers[name]) and value.grad is None, name
    # checkpoints load either way
    exact.load_state_dict(aug.state_dict(), strict=True)
    TSTImitationAugmenter().load_state_dict(exact.state_dict(), strict=True)
    torch.testing.assert_close(exact.magnitude_logits, aug.magnitude_logits)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="imitated_ops.*'Cutout'"):
        TSTImitationAugmenter(imitated_ops=['Cutout'])
    with pytest.raises(ValueError, match='trained for values up to 0.9'):
        TSTImitationAugmenter(op_cfgs={'Brightness': dict(range=(0.0, 1.5))})
    with pytest.raises(FileNotFoundError, match='train_imitators'):
        TSTImitationAugmenter(imitator_weights=str(tmp_path / 'none.pth'))
    only = TSTImitationAugmenter(imitated_ops=['Solarize'])
    assert list(only.imitators) == ['Solarize']


def samples_with_geometry(n):
    g = torch.Generator().manual_seed(5)
    dets, segs = [], []
    for _ in range(n):
        xy = torch.rand(4, 2, generator=g) * torch.tensor([W * .6, H * .6])
        boxes = torch.cat([xy, xy + 6 + torch.rand(4, 2, generator=g) * 10], 1)
        det = DetDataSample(metainfo=dict(img_shape=(H, W - 4), pad_shape=(H, W)))
        det.gt_instances = InstanceData(bboxes=HorizontalBoxes(boxes),
                                        labels=torch.arange(4))
        dets.append(det)
        seg = SegDataSample(metainfo=dict(img_shape=(H, W), pad_shape=(H, W)))
        seg.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, H, W), generator=g))
        segs.append(seg)
    return dets, segs


def test_boxes_and_label_maps_follow_the_exact_geometry():
    """Same seed, same draw: the warp, hence every box and label, is the exact
    augmenter's, bit for bit."""
    img = unseen_images()
    dets, segs = samples_with_geometry(len(img))
    exact, imitation = TSTAugmenter(), TSTImitationAugmenter()
    warped = 0
    for seed in range(6):
        outs = []
        for aug in (exact, imitation):
            torch.manual_seed(seed)
            _, det_out = aug(img, dets)
            torch.manual_seed(seed)
            _, seg_out = aug(img, segs)
            outs.append((det_out, seg_out))
        (det_e, seg_e), (det_i, seg_i) = outs
        for a, b, before in zip(det_e, det_i, dets):
            assert torch.equal(a.gt_instances.bboxes.tensor, b.gt_instances.bboxes.tensor)
            assert torch.equal(a.gt_instances.labels, b.gt_instances.labels)
            warped += not torch.equal(a.gt_instances.bboxes.tensor,
                                      before.gt_instances.bboxes.tensor)
        for a, b in zip(seg_e, seg_i):
            assert torch.equal(a.gt_sem_seg.data, b.gt_sem_seg.data)
    assert warped > 0


def test_one_augmenter_step_and_one_student_step_in_the_distiller(coco_digits):
    from tests.distill.test_distiller import build, one_batch, tiny_cfg
    from tst_mm.engine.optim_constructor import TSTOptimWrapperConstructor
    cfg = tiny_cfg()
    cfg.model.augmenter = dict(type='TSTImitationAugmenter', num_ops=4,
                               ops=[*MAGNITUDE_OPS, 'Rotate', 'Cutout'])
    model = build(cfg.model)
    assert isinstance(model.augmenter, TSTImitationAugmenter)
    calls = []
    for net in model.augmenter.imitators.values():
        net.register_forward_hook(lambda *args: calls.append(1))
    optim = TSTOptimWrapperConstructor(dict(student=cfg.optim_wrapper.student,
                                            augmenter=cfg.optim_wrapper.augmenter))(model)
    optimised = {id(p) for group in optim['augmenter'].optimizer.param_groups
                 for p in group['params']}
    assert optimised == {id(model.augmenter.magnitude_logits),
                         id(model.augmenter.probability_logits)}
    nets = {k: v.clone() for k, v in model.augmenter.imitators.named_buffers()}
    logits = model.augmenter.magnitude_logits.detach().clone()
    model.train()
    torch.manual_seed(0)
    log = model.augment_step(one_batch(coco_digits), optim)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in log.values())
    assert calls and not torch.equal(model.augmenter.magnitude_logits, logits)
    log = model.train_step(one_batch(coco_digits), optim)
    assert 'loss' not in log or torch.isfinite(torch.as_tensor(log['loss']))
    for name, value in model.augmenter.imitators.named_buffers():
        assert torch.equal(value, nets[name]), name
    state = model.state_dict()
    assert not any('imitators' in key for key in state)
    assert build(cfg.model).load_state_dict(state, strict=True)
