"""TST on instance segmentation, end to end through the tools: a tiny Mask R-CNN pair
trains with augment phases (the masks follow every warp), resumes exactly, and its
extracted student is tested with bbox and segm metrics."""
import os.path as osp
import sys

import pytest

from tests.conftest import REPO, TEST_CONFIGS, run, train
from tests.tools.test_train_tools import logged_losses

# The module's fixtures are trained / written once: its tests share one xdist worker.
pytestmark = pytest.mark.xdist_group('mask_rcnn_e2e')

TST_MASK_RCNN = osp.join(TEST_CONFIGS, 'tst_mask_rcnn_tiny.py')
STUDENT_CONFIG = osp.join(TEST_CONFIGS, 'mask_rcnn_tiny_digits.py')


@pytest.fixture(scope='module')
def mask_workspace(tmp_path_factory, coco_digits):
    import os
    root = tmp_path_factory.mktemp('mask_workspace')
    os.makedirs(root / 'data' / 'demo')
    os.symlink(coco_digits, root / 'data' / 'demo' / 'coco')
    return root


@pytest.fixture(scope='module')
def straight(mask_workspace):
    work_dir = mask_workspace / 'straight'
    out = train(TST_MASK_RCNN, work_dir, mask_workspace).stdout
    return work_dir, out


def test_masks_reach_both_phases_and_validation(straight):
    _, out = straight
    assert 'TST augment phase before iteration 1: step 1/1' in out
    assert 'TST augment phase before iteration 3: step 1/1' in out
    # the mask head's loss in the student step, its inverse in the augmenter's
    assert 'student.loss_mask: ' in out and 'augment.student_inverse.loss_mask: ' in out
    assert 'coco/bbox_mAP:' in out and 'coco/segm_mAP:' in out


def test_resume_continues_exactly(straight, mask_workspace):
    work_dir, _ = straight
    resumed = mask_workspace / 'resumed'
    out = train(TST_MASK_RCNN, resumed, mask_workspace, '--resume',
                str(work_dir / 'iter_2.pth')).stdout
    assert 'TST augment phase before iteration 3' in out
    reference, continued = logged_losses(work_dir), logged_losses(resumed)
    assert sorted(continued) == [3, 4]
    for it in (3, 4):
        assert continued[it] == pytest.approx(reference[it], rel=1e-5, abs=1e-6)


def test_extracted_student_tests_with_bbox_and_segm(straight, mask_workspace):
    work_dir, _ = straight
    student = mask_workspace / 'student.pth'
    run([sys.executable, osp.join(REPO, 'tools', 'extract_student.py'),
         str(work_dir / 'iter_4.pth'), str(student)], mask_workspace)
    tested = run([sys.executable, osp.join(REPO, 'tools', 'test.py'), STUDENT_CONFIG,
                  str(student), '--work-dir', str(mask_workspace / 'test')],
                 mask_workspace).stdout
    assert 'coco/bbox_mAP:' in tested and 'coco/segm_mAP:' in tested
    assert 'missing keys' not in tested and 'unexpected key' not in tested
