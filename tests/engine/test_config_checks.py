"""A new user's config mistakes, caught when mmengine's Runner builds a TST loop
(issue 29): the student's single optimizer wrapper kept, two wrappers without the
constructor.

Real builds through ``Runner.from_cfg`` of the tiny TST RetinaNet; the loop is built
first in ``Runner.train()``, so a rejected config stops before any training."""
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from tests.conftest import TEST_CONFIGS

TINY = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py')
SHOWN = "optim_wrapper = dict(constructor='TSTOptimWrapperConstructor'"
STUDENT = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01))
AUGMENTER = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))


def tiny_runner(workspace, monkeypatch, options=None, **replaced) -> Runner:
    """The tiny TST RetinaNet's Runner in ``workspace``: ``replaced`` top-level keys
    are replaced whole, then ``options`` merged as ``--cfg-options`` would."""
    monkeypatch.chdir(workspace)
    cfg = Config.fromfile(TINY)
    for key, value in replaced.items():
        cfg[key] = value
    cfg.merge_from_dict(options or {})
    cfg.work_dir = str(workspace / 'run')
    return Runner.from_cfg(cfg)


@pytest.mark.parametrize('optim_wrapper, problem', [
    (dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01)), 'one optimizer'),
    (dict(student=STUDENT, augmenter=AUGMENTER), 'no `constructor`'),
    (dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01),
          constructor='TSTOptimWrapperConstructor', student=STUDENT, augmenter=AUGMENTER),
     "single wrapper's keys ['optimizer', 'type']"),
], ids=['single-wrapper', 'no-constructor', 'merged-into-a-base'])
def test_an_optim_wrapper_that_is_not_tsts_fails_at_build(workspace, monkeypatch,
                                                          optim_wrapper, problem):
    """The student's own optim_wrapper kept, or two wrappers without the constructor:
    an error that shows the right config, before any training step."""
    runner = tiny_runner(workspace, monkeypatch, optim_wrapper=optim_wrapper,
                         param_scheduler=[dict(type='ConstantLR', by_epoch=False)])
    with pytest.raises(ValueError) as error:
        runner.train()
    message = str(error.value)
    assert problem in message and SHOWN in message
    assert 'student=dict(' in message and 'augmenter=dict(' in message
    assert isinstance(runner.optim_wrapper, dict)  # a config still: nothing was built
