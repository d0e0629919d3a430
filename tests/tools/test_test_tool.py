"""tools/test.py as a user runs it: checkpoints that do not fit the config are refused;
mmdet's / mmseg's --out, --show-dir and --tta."""
import glob
import importlib.util
import os
import os.path as osp
import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from tests.conftest import REPO, TEST_CONFIGS, run, train

# The tests share trained checkpoints (a module fixture): keep them on one xdist worker.
pytestmark = pytest.mark.xdist_group('test_tool')

TEST_TOOL = osp.join(REPO, 'tools', 'test.py')
TST_DET = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py')
DET = osp.join(TEST_CONFIGS, 'retinanet_tiny_digits.py')
TST_SEG = osp.join(TEST_CONFIGS, 'tst_pspnet_tiny.py')
ONE_ITER = ('--cfg-options', 'train_cfg.max_iters=1', 'train_cfg.augment_iters=[0]',
            'default_hooks.checkpoint.interval=1')


@pytest.fixture(scope='module')
def module_workspace(tmp_path_factory, coco_digits, cityscapes_digits):
    """conftest's ``workspace``, shared by the module's tests."""
    workspace = tmp_path_factory.mktemp('workspace')
    os.makedirs(workspace / 'data' / 'demo')
    os.symlink(coco_digits, workspace / 'data' / 'demo' / 'coco')
    os.symlink(cityscapes_digits, workspace / 'data' / 'demo' / 'cityscapes')
    return workspace


@pytest.fixture(scope='module')
def det_checkpoints(module_workspace):
    """A workspace, a 1-iteration TST checkpoint of the tiny RetinaNet pair and its
    extracted student."""
    workspace = module_workspace
    train(TST_DET, workspace / 'tst', workspace, *ONE_ITER)
    tst = str(workspace / 'tst' / 'iter_1.pth')
    student = str(workspace / 'student.pth')
    run([sys.executable, osp.join(REPO, 'tools', 'extract_student.py'), tst, student],
        workspace)
    return workspace, tst, student


def _test(workspace, *args):
    return run([sys.executable, TEST_TOOL, *map(str, args)], workspace, check=False)


def _tool():
    spec = importlib.util.spec_from_file_location('test_tool', TEST_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refuses_a_tst_checkpoint_with_the_students_config(det_checkpoints):
    workspace, tst, _ = det_checkpoints
    proc = _test(workspace, DET, tst, '--work-dir', workspace / 'wrong1')
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert 'is a TST checkpoint' in proc.stdout
    assert f'python tools/extract_student.py {tst} student.pth' in proc.stdout
    assert 'Traceback' not in proc.stdout and 'bbox_mAP' not in proc.stdout


def test_refuses_a_student_checkpoint_with_the_tst_config(det_checkpoints):
    workspace, _, student = det_checkpoints
    proc = _test(workspace, TST_DET, student, '--work-dir', workspace / 'wrong2')
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "is a plain model checkpoint (no 'student.' weights)" in proc.stdout
    assert "the student's own config" in proc.stdout
    assert 'Traceback' not in proc.stdout and 'bbox_mAP' not in proc.stdout


def test_refuses_a_checkpoint_missing_most_weights(det_checkpoints, tmp_path):
    _, _, student = det_checkpoints
    state = torch.load(student, map_location='cpu')['state_dict']
    kept = dict(list(state.items())[:len(state) // 3])
    partial = str(tmp_path / 'partial.pth')
    torch.save(dict(state_dict=kept, meta={}), partial)
    init_default_scope('mmdet')
    model = MODELS.build(Config.fromfile(DET).model)
    tool = _tool()
    with pytest.raises(SystemExit, match=r"does not fit .*: \d+ of the model's \d+ "
                       r'weight tensors are missing from the checkpoint or of another '
                       r'shape'):
        tool.check_checkpoint_fits(model, partial, DET)
    tool.check_checkpoint_fits(model, student, DET)  # the full one is fine


def test_mmdet_out_and_show_dir(det_checkpoints):
    """--out: mmdet's DumpDetResults pickle; --show-dir: one drawing per image under
    WORK_DIR/TIMESTAMP/DIR, as mmdet's test.py."""
    workspace, _, student = det_checkpoints
    work_dir, out = workspace / 'det_test', workspace / 'det_preds.pkl'
    printed = run([sys.executable, TEST_TOOL, DET, student, '--work-dir', str(work_dir),
                   '--out', str(out), '--show-dir', 'shown'], workspace).stdout
    assert 'coco/bbox_mAP:' in printed
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 4  # the 4 validation images
    assert 'pred_instances' in predictions[0] and 'gt_instances' not in predictions[0]
    drawn = glob.glob(str(work_dir / '*' / 'shown' / '*.png'))
    assert sorted(map(osp.basename, drawn)) == sorted(
        osp.basename(p['img_path']) for p in predictions)


def test_mmseg_out_and_show_dir(module_workspace):
    """--out: mmseg's directory of label-id PNGs; --show-dir: the visualizer's save_dir,
    as mmseg's test.py. A TST checkpoint with its TST config tests the student."""
    workspace = module_workspace
    train(TST_SEG, workspace / 'tst_seg', workspace, *ONE_ITER)
    out, shown = workspace / 'seg_out', workspace / 'seg_shown'
    printed = run([sys.executable, TEST_TOOL, TST_SEG, str(workspace / 'tst_seg' /
                   'iter_1.pth'), '--work-dir', str(workspace / 'seg_test'), '--out',
                   str(out), '--show-dir', str(shown),
                   # mmseg's hook draws every 50th batch by default
                   '--cfg-options', 'default_hooks.visualization.interval=1'],
                  workspace).stdout
    assert 'mIoU:' in printed
    predictions = sorted(glob.glob(str(out / '*.png')))
    assert len(predictions) == 4
    labels = np.asarray(Image.open(predictions[0]))
    assert labels.shape == (64, 128) and labels.max() < 19  # Cityscapes' 19 trainIds
    assert len(glob.glob(str(shown / 'vis_data' / 'vis_image' / '*.png'))) == 4


def test_tta_uses_the_configs_tta_model(det_checkpoints, tmp_path):
    """mmdet's RetinaNet configs carry tta_model / tta_pipeline (flips, 3 scales); a TST
    model tests its student under it. A config without them is refused."""
    workspace, tst, student = det_checkpoints
    out = workspace / 'tta_preds.pkl'
    run([sys.executable, TEST_TOOL, TST_DET, tst, '--work-dir', str(workspace / 'tta'),
         '--tta', '--out', str(out)], workspace)
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 4 and 'flip' in predictions[0]  # the TTA pipeline's keys

    no_tta = tmp_path / 'no_tta.py'
    no_tta.write_text(f'_base_ = {DET!r}\ntta_model = None\n')
    proc = _test(workspace, no_tta, student, '--tta')
    assert proc.returncode != 0
    assert f'--tta needs tta_model in {no_tta}' in proc.stdout
    assert "'mmdet::retinanet/retinanet_tta.py'" in proc.stdout
    assert 'Traceback' not in proc.stdout
