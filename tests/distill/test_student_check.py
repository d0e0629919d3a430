"""check_single_model: single detectors / segmentors pass, wrappers are named and refused."""
import copy
import os.path as osp

import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tst_mm.distill.student_check import check_single_model
from tests.distill.tiny_models import tiny_faster_rcnn, tiny_retinanet, tiny_segmentor


def test_single_detectors_and_segmentors_pass():
    for model in (tiny_retinanet(), tiny_faster_rcnn(), tiny_segmentor()):
        check_single_model(model)
        check_single_model(type(model))


def test_soft_teacher_is_refused_with_what_to_distil():
    import mmdet
    from mmdet.registry import MODELS
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'soft_teacher',
                    'soft-teacher_faster-rcnn_r50-caffe_fpn_180k_semi-0.1-coco.py')
    cfg = Config.fromfile(path)
    cfg.model.detector.backbone.init_cfg = None  # no download
    with DefaultScope.overwrite_default_scope('mmdet'):
        soft_teacher = MODELS.build(copy.deepcopy(cfg.model))
    check_single_model(soft_teacher.student)  # what to distil instead
    for model in (soft_teacher, type(soft_teacher)):  # also the class, before building
        with pytest.raises(TypeError, match=r'^SoftTeacher is a semi-supervised teacher-'
                                            r'student wrapper, not a single detector: '
                                            r'distil its student config instead'):
            check_single_model(model)


def _named(name: str, *bases: type) -> nn.Module:
    def loss(self, inputs, data_samples):
        return {}

    return type(name, bases or (nn.Module, ), dict(loss=loss, predict=loss))()


@pytest.mark.parametrize('base, subclass, message', [
    ('BaseMOTModel', 'ByteTrack', 'ByteTrack is a multi-object tracker or video instance '
     'segmentor, not a single detector'),
    ('BaseMOTModel', 'Mask2FormerVideo', 'Mask2FormerVideo is a multi-object tracker'),
    ('BaseReID', 'BaseReID', 'BaseReID is a re-identification'),
    ('KnowledgeDistillationSingleStageDetector', 'LAD',
     'LAD is itself a knowledge-distillation detector with its own teacher'),
    ('BaseTTAModel', 'DetTTAModel', 'DetTTAModel is a test-time augmentation wrapper'),
    ('DepthEstimator', 'DepthEstimator', 'DepthEstimator is a depth estimator'),
    ('TSTDistiller', 'TSTDistiller', 'TSTDistiller is already a TSTDistiller'),
])
def test_wrappers_are_refused_by_class_name(base, subclass, message):
    """By name along the MRO: trackers, re-id and TTA need no optional package here."""
    base_cls = type(_named(base))
    model = _named(subclass, base_cls) if subclass != base else base_cls()
    with pytest.raises(TypeError, match='^' + message):
        check_single_model(model)


def test_a_model_without_loss_and_predict_is_refused():
    with pytest.raises(TypeError, match=r'^Linear has no loss / predict method'):
        check_single_model(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r'^Half has no predict method'):
        check_single_model(type('Half', (nn.Module, ), dict(loss=lambda self: 0))())
