import pytest
from mmengine.registry import DefaultScope

import tst_mm.losses  # noqa: F401  (registers the losses)
from tst_mm.losses import (BinaryKLDivergence, ChannelWiseDivergence, FeatureMimic,
                           KLDivergence)

CLASSES = [KLDivergence, BinaryKLDivergence, FeatureMimic, ChannelWiseDivergence]


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('cls', CLASSES)
def test_builds_from_the_downstream_default_scope(scope, cls):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        loss = MODELS.build(dict(type=cls.__name__, loss_weight=0.5))
    assert type(loss) is cls and loss.loss_weight == 0.5
