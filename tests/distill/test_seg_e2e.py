"""TST on mmseg: generated Cityscapes-format data through mmseg's CityscapesDataset.

In-process: the distiller's SegDataPreProcessor (pad to the crop, labels with 255, pixel
space), the label-map warp and the build-time checks. End to end, as a user runs it:
tools/train.py (augment and student phases, validation mIoU), --resume,
tools/dist_train.sh on 2 gloo ranks, tools/extract_student.py -> mmseg's init_model and
tools/test.py, and a heterogeneous pair (PSPNet teacher, DeepLabV3 student with logits
of half the resolution). The training runs share one module-scoped workspace: the probe
run is also the reference for resume, and its extracted student is the teacher of the
heterogeneous pair.
"""
import copy
import os
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import Runner

import tst_mm  # noqa: F401  (registers the TST components)
from tests.conftest import REPO, TEST_CONFIGS, free_port, run, train
from tests.distill.test_distiller_e2e import assert_phases, read_probe
from tests.tools.test_train_tools import logged_losses

# The module's fixtures are trained / written once: its tests share one xdist worker.
pytestmark = pytest.mark.xdist_group('seg_e2e')

PSPNET = osp.join(TEST_CONFIGS, 'pspnet_tiny_cityscapes_digits.py')
TST = osp.join(TEST_CONFIGS, 'tst_pspnet_tiny.py')
PROBE = osp.join(TEST_CONFIGS, 'tst_pspnet_tiny_probe.py')
HETERO = osp.join(TEST_CONFIGS, 'tst_pspnet_deeplabv3_tiny.py')
IGNORE = 255
BACKGROUND = 10  # tst_mm.datasets.digits.BACKGROUND_TRAIN_ID


# ------------------------------------------------------------------- in-process ---
def build_like_runner(cfg: Config):
    """The model as mmengine's Runner builds it: a config's top-level
    ``data_preprocessor`` (every mmseg config has one) goes into the model dict."""
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(model_cfg)


def one_batch(cfg: Config, root: str) -> dict:
    dataloader = copy.deepcopy(cfg.train_dataloader)
    dataloader.dataset.data_root = root
    dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return next(iter(Runner.build_dataloader(dataloader)))


def test_seg_preprocessing_pads_to_the_crop_in_pixel_space(cityscapes_digits):
    """Pad to the crop size (labels with 255) in RGB pixel space, whatever normalising
    preprocessor the Runner hands over; then each model sees exactly what its own
    SegDataPreProcessor would give it."""
    cfg = Config.fromfile(TST)
    crop = (80, 144)  # larger than the 64 x 128 images: padding shows
    for pre in (cfg.data_preprocessor, cfg.model.student.data_preprocessor,
                cfg.model.teacher.data_preprocessor):
        pre.size = crop
    distiller = build_like_runner(cfg)
    data = one_batch(cfg, cityscapes_digits)
    out = distiller.data_preprocessor(copy.deepcopy(data), True)
    inputs, samples = out['inputs'], out['data_samples']
    assert inputs.shape == (2, 3, *crop)
    raw = torch.stack(data['inputs']).float()  # BGR as loaded
    torch.testing.assert_close(inputs[:, :, :64, :128], raw.flip(1))  # RGB, 0-255
    assert inputs[:, :, 64:].abs().sum() == 0 and inputs[..., 128:].abs().sum() == 0
    for sample, original in zip(samples, data['data_samples']):
        seg = sample.gt_sem_seg.data
        assert seg.shape == (1, *crop) and tuple(sample.img_shape) == (64, 128)
        assert torch.equal(seg[:, :64, :128], original.gt_sem_seg.data)
        assert (seg[:, 64:] == IGNORE).all() and (seg[..., 128:] == IGNORE).all()
    for model, normalizer in ((distiller.student, distiller.student_normalizer),
                              (distiller.teacher, distiller.teacher_normalizer)):
        expected = model.data_preprocessor(copy.deepcopy(data), True)['inputs']
        torch.testing.assert_close(normalizer(inputs, samples), expected, rtol=1e-5,
                                   atol=1e-4)


def test_seg_label_maps_warp_nearest_with_ignore_outside(cityscapes_digits):
    """A forced rotation moves label maps with the images: no new label values (nearest
    sampling), 255 where the source lies outside the image, padding stays 255."""
    cfg = Config.fromfile(TST)
    for pre in (cfg.data_preprocessor, cfg.model.student.data_preprocessor):
        pre.size = (80, 144)
    cfg.model.augmenter = dict(
        type='TSTAugmenter', ops=['Rotate'], num_ops=1,
        op_cfgs=dict(Rotate=dict(magnitude=0.99, probability=0.99)))
    distiller = build_like_runner(cfg).eval()  # eval: hard 0/1 gates
    torch.manual_seed(0)
    data = distiller.data_preprocessor(one_batch(cfg, cityscapes_digits), True)
    before = [s.gt_sem_seg.data for s in data['data_samples']]
    with torch.no_grad():
        images, samples = distiller.augmenter(data['inputs'], data['data_samples'])
    assert all(s.gt_sem_seg.data is old  # the caller's samples are untouched
               for s, old in zip(data['data_samples'], before))
    for sample, old, image, old_image in zip(samples, before, images, data['inputs']):
        new = sample.gt_sem_seg.data
        assert new.shape == old.shape and new.dtype == old.dtype
        assert set(new.unique().tolist()) <= set(old.unique().tolist()) | {IGNORE}
        inside, pad = new[:, :64, :128], new[:, 64:]
        assert (pad == IGNORE).all() and (new[..., 128:] == IGNORE).all()
        assert (inside == IGNORE).any() and (inside != IGNORE).float().mean() > 0.5
        assert not torch.equal(image, old_image)
        # ~30 degrees about the centre: the image's corners come from outside it.
        assert inside[0, 0, 0] == IGNORE and inside[0, -1, -1] == IGNORE


def test_unsupported_seg_task_loss_is_named_at_build():
    cfg = Config.fromfile(TST)
    cfg.model.student = copy.deepcopy(cfg.model.student)
    # mmseg's Hausdorff distance loss (its class name is spelled so): no inverse yet.
    cfg.model.student.decode_head.loss_decode = dict(type='HuasdorffDisstanceLoss')
    with pytest.raises(NotImplementedError, match='mmseg.HuasdorffDisstanceLoss.*divergence'):
        build_like_runner(cfg)


def test_heterogeneous_pair_distils_logits_of_another_resolution(cityscapes_digits):
    """PSPNet (output stride 8) teaches DeepLabV3 (output stride 16): the recorded
    logits differ in size and the distillation losses are still finite and nonzero."""
    cfg = Config.fromfile(HETERO)
    distiller = build_like_runner(cfg)
    assert type(distiller.student.decode_head).__name__ == 'ASPPHead'
    assert type(distiller.teacher.decode_head).__name__ == 'PSPHead'
    data = distiller.data_preprocessor(one_batch(cfg, cityscapes_digits), True)
    with torch.no_grad():
        s = distiller.student(distiller.student_normalizer(data['inputs']), mode='tensor')
        t = distiller.teacher(distiller.teacher_normalizer(data['inputs']), mode='tensor')
    assert s.shape == (2, 19, 4, 8) and t.shape == (2, 19, 8, 16)
    with DefaultScope.overwrite_default_scope('mmseg'):
        optim_wrapper = build_optim_wrapper(distiller, copy.deepcopy(cfg.optim_wrapper))
    distiller.train()
    log_vars = distiller.train_step(one_batch(cfg, cityscapes_digits), optim_wrapper)
    for name in ('distill.loss_cwd_decode', 'distill.loss_kd_aux'):
        assert torch.isfinite(log_vars[name]) and log_vars[name] > 0, name


# ------------------------------------------------------------------ end to end ---
@pytest.fixture(scope='module')
def seg_workspace(tmp_path_factory, cityscapes_digits):
    """A cwd where ``data/demo/cityscapes`` is the tiny set (module-wide)."""
    root = tmp_path_factory.mktemp('seg_workspace')
    os.makedirs(root / 'data' / 'demo')
    os.symlink(cityscapes_digits, root / 'data' / 'demo' / 'cityscapes')
    return root


@pytest.fixture(scope='module')
def probe_run(seg_workspace):
    """4 student iterations, augment phases before iterations 1 and 3."""
    work_dir = seg_workspace / 'probe'
    out = train(PROBE, work_dir, seg_workspace).stdout
    return work_dir, out


@pytest.fixture(scope='module')
def extracted(probe_run, seg_workspace):
    work_dir, _ = probe_run
    path = seg_workspace / 'student.pth'
    out = run([sys.executable, osp.join(REPO, 'tools', 'extract_student.py'),
               str(work_dir / 'iter_4.pth'), str(path)], seg_workspace).stdout
    assert 'Left out: augmenter' in out
    return path


def test_phases_train_the_right_parameters_and_validate(probe_run):
    work_dir, out = probe_run
    assert 'TST augment phase before iteration 1: step 1/1' in out
    assert 'TST augment phase before iteration 3: step 1/1' in out
    assert_phases(read_probe(work_dir)['records'], augment_before=[0, 2])
    assert 'mIoU:' in out  # validation evaluates the student with mmseg's IoUMetric
    losses = logged_losses(work_dir)
    assert sorted(losses) == [1, 2, 3, 4]
    # The reference's losses are all there: teacher CE and student inverse CE (decode
    # and auxiliary heads) in the augment phase; task loss + KL in the student phase.
    for key in ('augment.teacher.decode.loss_ce', 'augment.teacher.aux.loss_ce',
                'augment.student_inverse.decode.loss_ce',
                'augment.student_inverse.aux.loss_ce', 'student.decode.loss_ce',
                'student.aux.loss_ce', 'distill.loss_kd_decode', 'distill.loss_kd_aux'):
        assert f'{key}: ' in out, key
    # A task loss of an untrained 19-class model on pixels (~log 19 for the decode
    # head): the inputs are images, not doubly normalised or padded to 512 x 1024.
    first = [line for line in out.splitlines() if 'Iter(train) [1/4]' in line][0]
    decode_ce = float(first.split('student.decode.loss_ce: ')[1].split()[0])
    assert 2.0 < decode_ce < 4.0


def test_resume_reproduces_the_uninterrupted_run(probe_run, seg_workspace):
    """Resuming at iteration 2, just before an augment phase, gives the same losses."""
    straight, _ = probe_run
    resumed = seg_workspace / 'resumed'
    out = train(PROBE, resumed, seg_workspace, '--resume',
                str(straight / 'iter_2.pth')).stdout
    assert 'TST augment phase before iteration 3' in out
    reference, continued = logged_losses(straight), logged_losses(resumed)
    assert sorted(continued) == [3, 4]
    for it in (3, 4):
        assert continued[it] == pytest.approx(reference[it], rel=1e-5, abs=1e-6)


def _assert_plain_mmseg_checkpoint(path, distiller_ckpt):
    """mmseg's init_model loads it into the student's own config: every key, no more,
    the trained values and the Cityscapes class names."""
    from mmseg.apis import init_model
    from mmseg.datasets import CityscapesDataset
    plain = torch.load(str(path), map_location='cpu', weights_only=True)
    model = init_model(PSPNET, str(path), device='cpu')
    assert sorted(plain['state_dict']) == sorted(model.state_dict())
    trained = torch.load(str(distiller_ckpt), map_location='cpu')['state_dict']
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained['student.' + key]), key
    assert model.dataset_meta['classes'] == CityscapesDataset.METAINFO['classes']


def test_extracted_student_is_a_plain_mmseg_checkpoint(probe_run, extracted,
                                                       seg_workspace):
    work_dir, _ = probe_run
    _assert_plain_mmseg_checkpoint(extracted, work_dir / 'iter_4.pth')
    out = run([sys.executable, osp.join(REPO, 'tools', 'test.py'), PSPNET, str(extracted),
               '--work-dir', str(seg_workspace / 'test')], seg_workspace).stdout
    assert 'do not match exactly' not in out and 'missing keys' not in out
    assert 'mIoU:' in out


def test_ddp_two_gloo_ranks_agree(seg_workspace, tmp_path):
    work_dir = seg_workspace / 'ddp'
    run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), PROBE, '2', '--work-dir',
         str(work_dir), '--cfg-options', 'train_cfg.max_iters=2',
         'train_cfg.augment_iters=[0]'], seg_workspace, env={'PORT': str(free_port())})
    ranks = [read_probe(work_dir, rank) for rank in (0, 1)]
    for probe in ranks:
        assert_phases(probe['records'], augment_before=[0])
    assert ranks[0]['augmenter'] == ranks[1]['augmenter']
    assert any(v != 0 for v in ranks[0]['augmenter'])  # it did learn something
    assert ranks[0]['student_checksum'] == pytest.approx(ranks[1]['student_checksum'],
                                                         rel=1e-6)
    # A multi-process checkpoint has the single-process layout, and extracts alike.
    path = tmp_path / 'ddp_student.pth'
    run([sys.executable, osp.join(REPO, 'tools', 'extract_student.py'),
         str(work_dir / 'iter_2.pth'), str(path)], seg_workspace)
    _assert_plain_mmseg_checkpoint(path, work_dir / 'iter_2.pth')


def test_heterogeneous_pair_trains(extracted, seg_workspace):
    """The extracted PSPNet student, a plain mmseg checkpoint, teaches a DeepLabV3."""
    out = train(HETERO, seg_workspace / 'hetero', seg_workspace, '--cfg-options',
                f'model.teacher_ckpt={extracted}', 'train_cfg.max_iters=2',
                'train_cfg.val_interval=2', 'train_cfg.augment_iters=[0]').stdout
    assert f'from path: {extracted}' in out
    assert 'do not match exactly' not in out  # every teacher weight loaded
    assert 'TST augment phase before iteration 1: step 1/1' in out
    assert 'distill.loss_cwd_decode: ' in out and 'mIoU:' in out
    assert sorted(logged_losses(seg_workspace / 'hetero')) == [1, 2]
