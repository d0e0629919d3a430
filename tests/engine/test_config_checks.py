"""A new user's config mistakes, caught when mmengine's Runner builds a TST loop
(issue 29): the student's single optimizer wrapper kept, two wrappers without the
constructor, a plain param_scheduler list, a loop without augment phases.

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
NO_PHASES = 'no augment phases'


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


def test_a_plain_scheduler_list_schedules_the_student_only(workspace, monkeypatch,
                                                           capsys):
    """mmengine would give each of the two wrappers the list: the augmenter's learning
    rate would follow the student's schedule. It is the student's only, said once."""
    warmup = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
    runner = tiny_runner(workspace, monkeypatch,
                         {'train_cfg.max_iters': 1, 'train_cfg.augment_iters': [0]},
                         param_scheduler=warmup)
    runner.train()
    assert [type(s).__name__ for s in runner.param_schedulers['student']] == ['LinearLR']
    assert runner.param_schedulers['augmenter'] == []
    lrs = runner.optim_wrapper.get_lr()
    assert lrs['augmenter.lr'] == [0.01]  # as configured
    assert 0.001 < lrs['student.lr'][0] < 0.01  # warming up
    out = capsys.readouterr().out
    assert out.count('param_scheduler is one list for two optimizer wrappers') == 1
    assert 'param_scheduler = dict(student=[...], augmenter=[...])' in out


def test_a_keyed_scheduler_dict_gets_the_missing_wrapper_and_names_a_wrong_key(
        workspace, monkeypatch):
    runner = tiny_runner(workspace, monkeypatch,
                         param_scheduler=dict(student=[dict(type='ConstantLR')]))
    runner.train_loop  # noqa: B018  (builds the loop, as Runner.train() does first)
    assert runner.param_schedulers == dict(student=[dict(type='ConstantLR')],
                                           augmenter=[])
    runner = tiny_runner(workspace, monkeypatch,
                         param_scheduler=dict(student=[], augmentor=[]))
    with pytest.raises(ValueError, match=r"\['augmentor'\].*student=\[\.\.\.\], "
                                         r"augmenter=\[\.\.\.\]"):
        runner.train_loop  # noqa: B018


def warnings_of(capsys) -> str:
    return '\n'.join(line for line in capsys.readouterr().out.splitlines()
                     if 'WARNING' in line)


def test_a_loop_without_augment_phases_warns_at_build(workspace, monkeypatch, capsys):
    """The augmenter would never be trained: the warning says what to set."""
    runner = tiny_runner(workspace, monkeypatch,
                         train_cfg=dict(type='TSTIterBasedTrainLoop', max_iters=4))
    runner.train_loop  # noqa: B018
    out = warnings_of(capsys)
    assert NO_PHASES in out and 'train_cfg.augment_iters' in out
    assert 'augment_interval' in out and 'augment_iters=[]' in out
    runner = tiny_runner(workspace, monkeypatch,
                         train_cfg=dict(type='TSTEpochBasedTrainLoop', max_epochs=2))
    runner.train_loop  # noqa: B018
    assert 'train_cfg.augment_epochs' in warnings_of(capsys)


@pytest.mark.parametrize('options', [
    {'train_cfg.augment_iters': []},  # said on purpose: the initial policy, frozen
    {'train_cfg.augment_interval': 2},  # iteration-level alternation
    {'model.student_views': ('clean',)},  # plain KD: the augmenter is unused
    {'model.teacher': None, 'model.distill_losses': None},  # nothing to train it with
    None,  # the tiny config, with its phases
], ids=['explicitly-none', 'interval', 'clean-views', 'no-teacher', 'phases'])
def test_setups_without_phases_on_purpose_do_not_warn(workspace, monkeypatch, capsys,
                                                      options):
    replaced = {} if options is None else \
        dict(train_cfg=dict(type='TSTIterBasedTrainLoop', max_iters=4))
    runner = tiny_runner(workspace, monkeypatch, options, **replaced)
    runner.train_loop  # noqa: B018
    assert NO_PHASES not in warnings_of(capsys)
