"""Automatic distillation: losses chosen from the two built models, across families.

Tiny real mmdet / mmseg models (random init): what is chosen (modules, losses, what is
left out and why), that each chosen loss is finite, non-zero and reaches the student's
backbone, that cross-family pairs take both TST steps, and how the scales are set.
"""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import DefaultScope

import tst_mm  # noqa: F401  (registers the TST components)
from tests.distill.tiny_models import (det_batch, seg_batch, tiny_atss, tiny_deeplabv3,
                                       tiny_faster_rcnn, tiny_fcos, tiny_gfl, tiny_pspnet,
                                       tiny_retinanet, tiny_segformer)
from tst_mm.distill import TSTDistiller
from tst_mm.distill.auto import AutoScales, choose_distillation

pytestmark = pytest.mark.xdist_group('auto_distill')


def distiller(student: dict, teacher: dict, scope='mmdet', **kwargs) -> TSTDistiller:
    """A TSTDistiller of two model configs, built as the Runner builds it."""
    from mmengine.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(dict(type='TSTDistiller', student=student, teacher=teacher,
                                 **kwargs))


def optim(model) -> OptimWrapperDict:
    student = list(model.student.parameters()) + list(model.distill_losses.parameters())
    return OptimWrapperDict(
        student=OptimWrapper(torch.optim.SGD(student, lr=0.001)),
        augmenter=OptimWrapper(torch.optim.SGD(model.augmenter.parameters(), lr=0.01)))


def pixels(inputs):
    return [(x * 40 + 128).clamp(0, 255).to(torch.uint8) for x in inputs]


def check_distils(model, batch):
    """Both steps run; each distillation loss is finite, non-zero and its gradient
    reaches the student's backbone; together they are at most ``auto_distill_ratio``
    times the task loss."""
    inputs, samples = batch
    data = dict(inputs=pixels(inputs), data_samples=samples)
    ow = optim(model)
    model.augment_step(copy.deepcopy(data), ow)
    log = model.train_step(copy.deepcopy(data), ow)
    distill = {k: float(v) for k, v in log.items() if k.startswith('distill.')}
    task = sum(float(v) for k, v in log.items()
               if k.startswith('student.') and 'loss' in k.split('.')[-1])
    assert distill, log
    assert sum(distill.values()) <= model.auto_scales.ratio * task * 1.0001, (distill, task)
    # Each loss alone, on the same batch: its gradient reaches the backbone's stem.
    pre = model.data_preprocessor(copy.deepcopy(data), True)
    stem = next(p for p in model.student.backbone.parameters() if p.dim() > 1)
    for name in distill:
        losses = model._student_losses(model.student, pre['inputs'], pre['data_samples'])
        value = losses[name]
        assert torch.isfinite(value) and value > 0, (name, value)
        grad, = torch.autograd.grad(value, stem, allow_unused=True)
        assert grad is not None and grad.abs().sum() > 0, name
    return distill


# ------------------------------------------------------------------ choices ---
def test_same_family_dense_head_and_neck():
    choice = choose_distillation(tiny_retinanet(), tiny_retinanet())
    assert choice.losses['loss_kd_cls'] == dict(
        type='BinaryKLDivergence', reduction='batchmean', level_reduction='sum',
        student='bbox_head.retina_cls', teacher='bbox_head.retina_cls')
    assert choice.losses['loss_pkd_neck'] == dict(
        type='FeatureMimic', student='neck', teacher='neck', normalize=True,
        reduction='mean', level_reduction='sum')
    assert not choice.teacher_inputs and not choice.left_out


def test_heads_of_another_layout_are_left_out_with_the_reason():
    choice = choose_distillation(tiny_fcos(), tiny_retinanet())
    assert set(choice.losses) == {'loss_pkd_neck'}
    (what, why), = choice.left_out
    assert what == 'bbox_head class scores'
    assert '1 prior(s) x 3 sigmoid' in why and '9 prior(s) x 3 sigmoid' in why
    table = choice.table()
    assert 'loss_pkd_neck' in table and 'left out: bbox_head class scores' in table


def test_two_stage_distils_rpn_rois_on_the_students_rois_and_neck():
    choice = choose_distillation(tiny_faster_rcnn(), tiny_faster_rcnn())
    assert choice.losses['loss_kd_roi_cls']['student'] == 'roi_head.bbox_head.fc_cls'
    assert choice.losses['loss_kd_roi_cls']['type'] == 'KLDivergence'
    assert choice.losses['loss_kd_rpn']['student'] == 'rpn_head.rpn_cls'
    assert choice.teacher_inputs == [dict(student='roi_head.bbox_roi_extractor',
                                          student_arg='rois', teacher='rpn_head.predict')]


def test_segmentation_logits_resized_and_an_auxiliary_head_from_the_decode_head():
    choice = choose_distillation(tiny_pspnet(), tiny_segformer())
    decode, aux = choice.losses['loss_kd_decode'], choice.losses['loss_kd_aux']
    assert (decode['student'], decode['teacher']) == ('decode_head.conv_seg',
                                                      'decode_head.conv_seg')
    # SegFormer has no auxiliary head: the student's learns from its decode head.
    assert (aux['student'], aux['teacher']) == ('auxiliary_head.conv_seg',
                                                'decode_head.conv_seg')
    assert (decode['loss_weight'], aux['loss_weight']) == (1.5, 0.5)
    assert 'teacher resized' in choice.shapes['loss_kd_decode']


def test_segmentation_class_counts_that_differ_name_both():
    teacher = tiny_deeplabv3()
    teacher.decode_head.conv_seg = torch.nn.Conv2d(16, 150, 1)
    with pytest.raises(ValueError, match='decode_head predicts 19 classes but the '
                       "teacher's decode_head predicts 150"):
        choose_distillation(tiny_pspnet(), teacher)


# ------------------------------------------------------ cross-family pairs ---
DET_PAIRS = {  # student <- teacher
    'fcos<-retinanet': (tiny_fcos, tiny_retinanet, {'loss_pkd_neck'}),
    'retinanet<-fcos': (tiny_retinanet, tiny_fcos, {'loss_pkd_neck'}),
    'gfl<-atss': (tiny_gfl, tiny_atss, {'loss_kd_cls', 'loss_pkd_neck'}),
    'retinanet<-faster_rcnn': (tiny_retinanet, tiny_faster_rcnn, {'loss_pkd_neck'}),
}


@pytest.mark.parametrize('pair', DET_PAIRS)
def test_cross_family_detection_pairs_distil_and_take_both_steps(pair):
    student, teacher, expected = DET_PAIRS[pair]
    model = distiller(student(build=False), teacher(build=False))
    assert set(model.distill_losses) == expected
    check_distils(model, det_batch((64, 64)))


SEG_PAIRS = {
    'pspnet<-deeplabv3': (tiny_pspnet, tiny_deeplabv3),
    'pspnet<-segformer': (tiny_pspnet, tiny_segformer),
}


@pytest.mark.parametrize('pair', SEG_PAIRS)
def test_cross_family_segmentation_pairs_distil_and_take_both_steps(pair):
    student, teacher = SEG_PAIRS[pair]
    model = distiller(student(build=False), teacher(build=False), scope='mmseg')
    assert set(model.distill_losses) == {'loss_kd_decode', 'loss_kd_aux'}
    check_distils(model, seg_batch((64, 64)))


def test_two_stage_pair_takes_both_steps_on_the_students_rois():
    model = distiller(tiny_faster_rcnn(build=False), tiny_faster_rcnn(build=False))
    assert model.student_inputs is not None and model._teacher_mode == 'tensor'
    distill = check_distils(model, det_batch((64, 64)))
    assert {'distill.loss_kd_roi_cls', 'distill.loss_kd_rpn'} <= set(distill)


# ------------------------------------------------------------------ scales ---
def test_the_choice_is_logged_at_build_and_the_scales_at_the_first_step(logged):
    model = distiller(tiny_retinanet(build=False), tiny_fcos(build=False))
    build = '\n'.join(logged)
    assert 'distill_losses not set, so chosen from the two models' in build
    assert 'left out: bbox_head class scores' in build
    check_distils(model, det_batch((64, 64)))
    lines = [m for m in logged if 'automatic distillation scales' in m]
    assert len(lines) == 1 and 'loss_pkd_neck' in lines[0]
    model.train_step(dict(inputs=pixels(det_batch((64, 64))[0]),
                          data_samples=det_batch((64, 64))[1]), optim(model))
    assert len([m for m in logged if 'automatic distillation scales' in m]) == 1


def test_scales_shrink_only_what_exceeds_its_share_and_are_checkpointed():
    scales = AutoScales(['loss_a', 'loss_b'], ratio=1.0)
    task = torch.tensor(2.0)
    losses = dict(loss_a=torch.tensor(0.5), loss_b=torch.tensor(40.0))
    scaled = scales(losses, task)
    # Each at most half the task loss: a keeps its strength, b is brought to 1.0.
    assert float(scaled['loss_a']) == 0.5
    assert float(scaled['loss_b']) == pytest.approx(1.0)
    # Set once: a later batch keeps the scales.
    again = scales(dict(loss_a=torch.tensor(5.0), loss_b=torch.tensor(40.0)),
                   torch.tensor(0.1))
    assert float(again['loss_a']) == 5.0 and float(again['loss_b']) == pytest.approx(1.0)
    restored = AutoScales(['loss_a', 'loss_b'], ratio=1.0)
    restored.load_state_dict(scales.state_dict())
    assert not restored.pending
    assert torch.equal(restored.scale, scales.scale)


def test_the_ratio_bounds_the_total_and_is_checked():
    scales = AutoScales(['loss_a', 'loss_b'])  # 10x the task loss by default
    scaled = scales(dict(loss_a=torch.tensor(3.0), loss_b=torch.tensor(400.0)),
                    torch.tensor(2.0))
    assert float(scaled['loss_a']) == 3.0  # within its share, 10
    assert float(scaled['loss_b']) == pytest.approx(10.0)
    with pytest.raises(ValueError, match='auto_distill_ratio must be a finite number'):
        AutoScales(['loss_a'], ratio=0)


def test_a_zero_or_non_finite_first_value_waits_for_a_usable_step():
    scales = AutoScales(['loss_a'], ratio=1.0)
    scales(dict(loss_a=torch.tensor(0.0)), torch.tensor(1.0))  # e.g. a warm-up weight 0
    assert scales.pending
    scales(dict(loss_a=torch.tensor(float('nan'))), torch.tensor(1.0))
    assert scales.pending
    scales(dict(loss_a=torch.tensor(4.0)), torch.tensor(1.0))
    assert not scales.pending and float(scales.scale[0]) == pytest.approx(0.25)


def test_written_losses_are_kept_and_an_empty_dict_means_none():
    written = dict(loss_kd=dict(type='BinaryKLDivergence', student='bbox_head.retina_cls',
                                teacher='bbox_head.retina_cls'))
    retinanet = tiny_retinanet(build=False)
    model = distiller(retinanet, retinanet, distill_losses=written)
    assert set(model.distill_losses) == {'loss_kd'} and not model.auto_scales.names
    model = distiller(retinanet, retinanet, distill_losses=dict())
    assert not model.distill_losses


def test_a_written_loss_on_a_segmentors_backbone_passes_the_build_check():
    """The probe runs a segmentor's backbone once (its auxiliary heads reuse the
    features), so a feature loss on it sees one output per level, as in training."""
    pspnet = tiny_pspnet(build=False)
    model = distiller(pspnet, pspnet, scope='mmseg', distill_losses=dict(
        loss_backbone=dict(type='FeatureMimic', student='backbone', teacher='backbone')))
    assert set(model.distill_losses) == {'loss_backbone'}


def test_a_users_own_config_distils_through_tools_train(workspace):
    """README's recipe on a family no shipped config uses (ATSS), no module paths:
    tools/train.py logs what it chose, the first step's scales, and the losses."""
    import os.path as osp
    import sys

    from tests.conftest import REPO, TEST_CONFIGS, run
    proc = run([sys.executable, osp.join(REPO, 'tools', 'train.py'),
                osp.join(TEST_CONFIGS, 'tst_atss_tiny_auto.py'), '--work-dir',
                str(workspace / 'atss')], workspace)
    log = proc.stdout
    assert 'distill_losses not set, so chosen from the two models' in log
    assert 'BinaryKLDivergence  bbox_head.atss_cls' in log
    assert 'automatic distillation scales at the first student step' in log
    iters = [line for line in log.splitlines() if 'Iter(train)' in line]
    assert len(iters) == 2 and all('distill.loss_kd_cls' in line and
                                   'distill.loss_pkd_neck' in line for line in iters)


def _calibrate_on_rank(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=2)
    scales = AutoScales(['loss_a'], ratio=1.0)
    # Each rank sees its own batch: other values, one scale from their means.
    scales(dict(loss_a=torch.tensor([4.0, 12.0][rank])), torch.tensor([1.0, 3.0][rank]))
    torch.save(scales.scale, f'{out}.{rank}')
    dist.destroy_process_group()


def test_every_rank_gets_the_same_scales(tmp_path):
    import torch.multiprocessing as mp
    out = str(tmp_path / 'scale')
    mp.spawn(_calibrate_on_rank, args=(str(tmp_path / 'init'), out), nprocs=2)
    scales = [torch.load(f'{out}.{rank}') for rank in (0, 1)]
    # Means over the ranks: task 2, loss 8, so the scale is 2 / 8 on both.
    assert float(scales[0][0]) == float(scales[1][0]) == pytest.approx(0.25)


def test_a_model_that_cannot_be_probed_names_the_way_out(monkeypatch):
    from tst_mm.distill import probe

    def fails(model, inputs):  # e.g. an op without a CPU kernel
        raise RuntimeError('no kernel for this device')
    monkeypatch.setattr(probe, '_forward', fails)
    retinanet = tiny_retinanet(build=False)
    with pytest.raises(RuntimeError, match=r'blank image.*Write distill_losses.*'
                       r'distill_losses=dict\(\) for no distillation'):
        distiller(retinanet, retinanet)
    # Written losses are then trained without the build-time check.
    written = dict(loss_kd=dict(type='BinaryKLDivergence', student='bbox_head.retina_cls',
                                teacher='bbox_head.retina_cls'))
    assert set(distiller(retinanet, retinanet, distill_losses=written).distill_losses) \
        == {'loss_kd'}


def test_a_head_that_needs_annotations_is_left_out_and_the_backbone_distils():
    """mmseg's Mask2Former head needs the data samples in its forward and predicts per
    query: the probe runs the heads one by one, and the backbones are distilled."""
    from tests.distill.tiny_models import _mmseg_cfg
    # ResNet-18 under the config's own head (its widths are tied together).
    cfg = _mmseg_cfg('mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py',
                     **{'backbone.depth': 18,
                        'decode_head.in_channels': [64, 128, 256, 512]})
    from mmengine.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        student, teacher = MODELS.build(cfg), MODELS.build(copy.deepcopy(cfg))
    choice = choose_distillation(student, teacher)
    assert all(c['student'] == 'backbone' for c in choice.losses.values())
    assert any('Mask2FormerHead has no conv_seg classifier' in why
               for _, why in choice.left_out)
