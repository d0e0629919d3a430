"""tools/test.py as a user runs it: checkpoints that do not fit the config are refused."""
import importlib.util
import os
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from tests.conftest import REPO, TEST_CONFIGS, run, train

# The tests share trained checkpoints (a module fixture): keep them on one xdist worker.
pytestmark = pytest.mark.xdist_group('test_tool')

TEST_TOOL = osp.join(REPO, 'tools', 'test.py')
TST_DET = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py')
DET = osp.join(TEST_CONFIGS, 'retinanet_tiny_digits.py')


@pytest.fixture(scope='module')
def det_checkpoints(tmp_path_factory, coco_digits, cityscapes_digits):
    """A workspace, a 1-iteration TST checkpoint of the tiny RetinaNet pair and its
    extracted student."""
    workspace = tmp_path_factory.mktemp('workspace')
    os.makedirs(workspace / 'data' / 'demo')
    os.symlink(coco_digits, workspace / 'data' / 'demo' / 'coco')
    os.symlink(cityscapes_digits, workspace / 'data' / 'demo' / 'cityscapes')
    train(TST_DET, workspace / 'tst', workspace, '--cfg-options', 'train_cfg.max_iters=1',
          'train_cfg.augment_iters=[0]', 'default_hooks.checkpoint.interval=1')
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
