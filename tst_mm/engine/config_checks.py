"""What a TST train loop checks of the Runner's configs when it is built.

mmengine's ``Runner.train()`` builds the train loop first, then the optimizer wrappers,
then the parameter schedulers: while the loop is built, ``runner.optim_wrapper`` and
``runner.param_schedulers`` are still configs. A mistake a student's own config brings
along (its single ``optim_wrapper``, its plain ``param_scheduler`` list) is reported or
corrected here, before anything is built or trained, instead of surfacing as a raw
mmengine error at the first step.
"""
import logging
from typing import Optional, Sequence

from mmengine.logging import print_log
from mmengine.optim import OptimWrapper, OptimWrapperDict

from .optim_constructor import PHASES, unwrap

TST_OPTIM_WRAPPER = """\
optim_wrapper = dict(constructor='TSTOptimWrapperConstructor',
                     student=dict(type='OptimWrapper',  # the student's own wrapper
                                  optimizer=dict(type='SGD', lr=0.01)),
                     augmenter=dict(type='OptimWrapper',
                                    optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
                                    clip_grad=dict(max_norm=20)))
(add `_delete_=True` where a base config defines optim_wrapper)"""


def check_optim_wrapper(optim_wrapper) -> None:
    """Raises if ``optim_wrapper`` (a config, or built) cannot give TST its two
    wrappers, ``student`` and ``augmenter``.

    Raises:
        ValueError: A single wrapper (a config with ``optimizer``, or built), one
            merged with ``student`` / ``augmenter`` keys, or wrapper configs keyed by
            name without a ``constructor``.
    """
    if isinstance(optim_wrapper, OptimWrapperDict):
        problem = None if set(PHASES) <= set(optim_wrapper.keys()) else \
            f'is an OptimWrapperDict with keys {sorted(optim_wrapper.keys())}'
    elif isinstance(optim_wrapper, OptimWrapper):
        problem = 'is one optimizer wrapper'
    elif not isinstance(optim_wrapper, dict):
        problem = None  # mmengine's Runner says what it accepts
    elif set(PHASES) & set(optim_wrapper) and 'optimizer' in optim_wrapper:
        single = sorted(set(optim_wrapper) - set(PHASES) - {'constructor'})
        problem = (f'mixes a single wrapper\'s keys {single} (merged from a base '
                   'config) with student / augmenter')
    elif 'optimizer' in optim_wrapper:
        problem = ('has one optimizer (`optimizer=...`: a single wrapper, e.g. the '
                   "student's config's own)")
    elif 'constructor' not in optim_wrapper and not all(
            isinstance(v, OptimWrapper) for v in optim_wrapper.values()):
        # mmengine accepts only built wrappers here ("each item mush be ...").
        problem = 'has no `constructor`, which mmengine needs to build two wrappers'
    else:
        problem = None  # TSTOptimWrapperConstructor (or the user's own) checks the rest
    if problem:
        raise ValueError(f'optim_wrapper {problem}; TSTDistiller trains two, the '
                         f'student and the augmenter. Write:\n{TST_OPTIM_WRAPPER}')


def schedulers_per_wrapper(param_scheduler):
    """``param_scheduler`` keyed by wrapper: a plain list (or one scheduler) is the
    student's, said in one log line; a keyed dict gets ``[]`` for a wrapper it leaves
    out.

    mmengine gives a plain list to *every* wrapper of an ``OptimWrapperDict``: the
    augmenter's learning rate would follow the student's schedule (warm-up, steps).

    Raises:
        ValueError: A keyed dict with a key other than ``student`` / ``augmenter``.
    """
    if param_scheduler is None:
        return None
    keyed = isinstance(param_scheduler, dict) and 'type' not in param_scheduler
    if not keyed:  # mmengine's test for a keyed dict, in Runner.build_param_scheduler
        print_log('TST: param_scheduler is one list for two optimizer wrappers; it '
                  "schedules the student's only, the augmenter keeps its learning rate "
                  '(write param_scheduler = dict(student=[...], augmenter=[...]) to '
                  'schedule both)', logger='current')
        return dict(student=param_scheduler, augmenter=[])
    unknown = sorted(set(param_scheduler) - set(PHASES))
    if unknown:
        raise ValueError(f'param_scheduler has keys {unknown}; TST has two optimizer '
                         'wrappers: param_scheduler = dict(student=[...], '
                         'augmenter=[...]) (or one plain list: the student\'s)')
    return {phase: param_scheduler.get(phase, []) for phase in PHASES}


def warn_if_augmenter_untrained(model, loop_name: str, phases_name: str,
                                phases: Optional[Sequence[int]],
                                augment_interval: Optional[int]) -> None:
    """Warns when nothing would ever train an augmenter the student learns from.

    ``phases`` is None when the config does not set them; an explicit ``[]`` is a
    deliberate frozen initial policy (the study's "KD + random policy" control).
    Plain KD (``student_views=('clean',)``) and ``teacher=None`` need no phases.
    """
    model = unwrap(model)
    if phases is not None or augment_interval or getattr(model, 'teacher', None) is None \
            or tuple(getattr(model, 'student_views', ())) == ('clean',):
        return
    unit = phases_name.replace('augment_', '')  # epochs / iters
    print_log(
        f'TST: {loop_name} has no augment phases: the augmenter is never trained and '
        'the student learns from its initial, random policy. Set '
        f'train_cfg.{phases_name}=[0, ...] (the 0-based {unit} before which '
        'the augmenter trains) or train_cfg.augment_interval=K (one augmenter step '
        f'every K student steps); train_cfg.{phases_name}=[] keeps the initial policy '
        "on purpose; model.student_views=('clean',) is plain KD.",
        logger='current', level=logging.WARNING)
