"""TSTPolicyHook: the learned augmentation policy in the logs, checkpoints and a plot."""
import os.path as osp
from typing import Dict, List

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from .utils import get_distiller

CHECKPOINT_KEY = 'tst_policy_history'
PLOT_FILE = 'policy.png'
TITLES = dict(magnitude="magnitude (fraction of each op's range)",
              probability='probability')

Policy = Dict[str, Dict[str, float]]  # op -> {'magnitude': m, 'probability': p}


@HOOKS.register_module()
class TSTPolicyHook(Hook):
    """Logs the augmenter's policy as scalars and plots it over training.

    Each op's learned magnitude (``sigmoid(theta_m)`` in (0, 1); ops without one are
    left out) and probability go to every visualizer backend (``scalars.json``,
    TensorBoard, W&B) as ``policy/<Op>.magnitude`` and ``policy/<Op>.probability``,
    and as one line to the text log. The policy changes only in augmenter steps, which
    fire no hooks, so it is recorded:

    1. before training (the initial policy, at the current iteration);
    2. after the first student iteration that follows an augment phase of the TST
       loops (``augment_iters`` / ``augment_epochs``);
    3. every ``interval`` iterations (for iteration-level alternation);
    4. at the end of training.

    The records are kept in checkpoints, so the plot of a resumed run continues. The
    plot, ``policy.png`` in the work dir (magnitudes and probabilities per op over
    iterations), is redrawn every ``plot_interval`` records and at the end.

    Example:
        ``custom_hooks = [dict(type='TSTPolicyHook', interval=50)]``

    Args:
        interval (int): Record every this many student iterations. Defaults to 50.
        plot (bool): Write ``policy.png``. Defaults to True.
        plot_interval (int): Redraw the plot every this many records.
            Defaults to 10.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 50, plot: bool = True,
                 plot_interval: int = 10) -> None:
        for name, value in (('interval', interval), ('plot_interval', plot_interval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be an int >= 1, got {value!r}')
        self.interval, self.plot, self.plot_interval = interval, plot, plot_interval
        self.history: List[dict] = []  # [{'step': iteration, 'policy': Policy}]
        self.augmenter = None
        self.magnitude_ops: set = set()

    def before_run(self, runner) -> None:
        """Checks that the model has a policy to log."""
        augmenter = get_distiller(runner, type(self).__name__, 'augmenter').augmenter
        if not callable(getattr(augmenter, 'policy', None)):
            raise TypeError(f'{type(self).__name__} needs an augmenter with a policy() '
                            f'method (TSTAugmenter), got {type(augmenter).__name__}')
        self.augmenter = augmenter
        self.magnitude_ops = set(getattr(augmenter, 'magnitude_names',
                                         augmenter.policy()))

    def before_train(self, runner) -> None:
        """Records the policy training starts from."""
        self._record(runner, runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Records the policy after an augment phase and every ``interval`` iterations."""
        if self.every_n_train_iters(runner, self.interval) or \
                self._after_augment_phase(runner, batch_idx):
            self._record(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        """Records the final policy and draws the plot."""
        if not self.history or self.history[-1]['step'] != runner.iter:
            self._record(runner, runner.iter, draw=False)
        self._draw(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Saves the records (plain lists and floats: loadable with weights_only)."""
        checkpoint[CHECKPOINT_KEY] = self.history

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restores the records of a resumed run."""
        # Only a resume continues the curve: a run that merely loads weights restarts
        # its iteration count at 0.
        if runner._resume and CHECKPOINT_KEY in checkpoint:
            self.history = list(checkpoint[CHECKPOINT_KEY])

    @staticmethod
    def _after_augment_phase(runner, batch_idx: int) -> bool:
        """Whether the iteration just done was the first after an augment phase."""
        loop = runner.train_loop
        if runner.iter in getattr(loop, 'augment_iters', ()):
            return True
        return batch_idx == 0 and runner.epoch in getattr(loop, 'augment_epochs', ())

    def _record(self, runner, step: int, draw: bool = True) -> None:
        policy = self.augmenter.policy()
        # Same step twice (a resumed run re-records its first one): keep the newer.
        if self.history and self.history[-1]['step'] >= step:
            self.history = [r for r in self.history if r['step'] < step]
        self.history.append(dict(step=step, policy=policy))
        runner.visualizer.add_scalars(self._scalars(policy), step=step)
        print_log(f'TST policy at iter {step}: ' + ', '.join(
            f'{op} m={v["magnitude"]:.3f} p={v["probability"]:.3f}'
            if op in self.magnitude_ops else f'{op} p={v["probability"]:.3f}'
            for op, v in policy.items()), logger='current')
        if draw and len(self.history) % self.plot_interval == 0:
            self._draw(runner)

    def _scalars(self, policy: Policy) -> Dict[str, float]:
        scalars = {}
        for op, values in policy.items():
            if op in self.magnitude_ops:
                scalars[f'policy/{op}.magnitude'] = values['magnitude']
            scalars[f'policy/{op}.probability'] = values['probability']
        return scalars

    def _draw(self, runner) -> None:
        if self.plot and self.history and is_main_process():
            plot_policy(self.history, self.magnitude_ops,
                        osp.join(runner.work_dir, PLOT_FILE))


def plot_policy(history: List[dict], magnitude_ops, path: str) -> None:
    """Writes a PNG: magnitude (left) and probability (right) of each op over steps.

    Args:
        history (list[dict]): Records ``{'step': int, 'policy': Policy}``, in order.
        magnitude_ops (Container[str]): Ops whose magnitude is learned (others are
            left out of the magnitude panel).
        path (str): Where to write the PNG.
    """
    # Imported here so that importing tst_mm stays light. The object API with its own
    # Agg canvas needs no pyplot state and switches no global backend.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r['step'] for r in history]
    ops = list(history[-1]['policy'])
    fig = Figure(figsize=(13, 4.8), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharex=True)
    # One colour per op, the same in both panels (the default cycle has only 10).
    cmap = colormaps['tab20']
    colors = {op: cmap(i % cmap.N) for i, op in enumerate(ops)}
    for ax, key in zip(axes, ('magnitude', 'probability')):
        for op in ops:
            if key == 'magnitude' and op not in magnitude_ops:
                continue
            values = [r['policy'].get(op, {}).get(key, float('nan')) for r in history]
            ax.plot(steps, values, marker='.', color=colors[op], label=op)
        ax.set(title=TITLES[key], xlabel='iteration', ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[1].legend(loc='center left', bbox_to_anchor=(1.02, 0.5), fontsize='small')
    fig.savefig(path, dpi=80)
