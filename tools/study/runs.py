"""Training and evaluating through the real tools, each done once: what `make demo` and
the study share.

Config paths are relative to the repository; data, work dirs and checkpoints to the
current directory, as with tools/train.py. A run is keyed by its fingerprint (the
resolved config, the command-line options, the data set's parameters and the files it
loads, e.g. the teacher): an unchanged run is reused, a changed one trains again.
Metrics are cached next to the checkpoint.
"""
import hashlib
import json
import os
import os.path as osp
import re
import resource
import subprocess
import sys
import time
from collections import deque
from typing import Dict, List, Sequence, Tuple

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# Lines of tools/train.py's output worth showing on the terminal while a run trains.
PROGRESS = ('Iter(train)', 'TST augment phase', 'Error', 'error:')
# The loops' phase summary: "TST augment phase before iteration 1 (25 steps in 12.3 s; ..."
PHASE_TIME = re.compile(r'TST augment phase .*?\(\d+ steps in ([0-9.]+) s')
STAMP = 'run.json'


def parse_options(options: Sequence[str]) -> dict:
    """``KEY=VALUE`` strings as tools/train.py's --cfg-options reads them."""
    return {key: DictAction._parse_iterable(value)
            for key, value in (option.split('=', 1) for option in options)}


def load_config(config: str, options: Sequence[str]) -> Config:
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.merge_from_dict(parse_options(options))
    return cfg


def final_checkpoint(cfg: Config, work_dir: str) -> str:
    max_iters = cfg.train_cfg.max_iters
    return osp.join(work_dir, f'iter_{max_iters}.pth')


def fingerprint(cfg: Config, data_roots: Sequence[str],
                depends: Sequence[str] = ()) -> str:
    """What a run depends on: its resolved config (bases included), the options, the
    data sets' parameters and the files it loads. An edited config, other data or a
    retrained teacher trains again."""
    text = cfg.pretty_text
    for root in data_roots:
        marker = osp.join(root, 'tst_mm_digits.json')
        text += open(marker).read() if osp.isfile(marker) else root
    text += ''.join(f'{path}:{os.stat(path).st_mtime}' for path in depends)
    return hashlib.sha1(text.encode()).hexdigest()


def train(name: str, config: str, work_dir: str, options: Sequence[str],
          data_roots: Sequence[str], depends: Sequence[str] = (),
          prefix: str = '[demo]') -> Tuple[str, Dict]:
    """Train through tools/train.py unless already done.

    Returns:
        tuple: The final checkpoint and the run's record: ``seconds`` (wall clock of
        tools/train.py), ``cpu_seconds`` (its processes' CPU time: less sensitive than
        the wall clock to other jobs on the machine), ``augment_seconds`` (wall clock in
        augment phases, from the log).
    """
    cfg = load_config(config, options)  # read once: a config with mmdet:: bases takes seconds
    ckpt = final_checkpoint(cfg, work_dir)
    stamp = osp.join(work_dir, STAMP)
    key = fingerprint(cfg, data_roots, depends)
    if osp.isfile(ckpt) and osp.isfile(stamp):
        with open(stamp) as f:
            record = json.load(f)
        if record.get('fingerprint') == key:
            print(f'{prefix} {name}: already trained ({ckpt})', flush=True)
            return ckpt, record
        print(f'{prefix} {name}: its config or data changed since {ckpt}; training again')
    print(f'{prefix} {name}: training {config}', flush=True)
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), osp.join(ROOT, config),
           '--work-dir', work_dir, '--cfg-options', *options]
    tail: deque = deque(maxlen=60)
    phase_seconds: List[float] = []
    start, cpu_start = time.time(), _children_cpu()
    # Unbuffered: progress lines as they happen, not in blocks through the pipe.
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env) as proc:
        for line in proc.stdout:
            tail.append(line)
            match = PHASE_TIME.search(line)
            if match:
                phase_seconds.append(float(match.group(1)))
            if any(k in line for k in PROGRESS):
                print(f'    {line.rstrip()[:160]}', flush=True)
    if proc.returncode != 0 or not osp.isfile(ckpt):
        sys.exit(f'{prefix} {name}: training failed:\n{"".join(tail)}')
    record = dict(fingerprint=key, seconds=round(time.time() - start, 1),
                  cpu_seconds=round(_children_cpu() - cpu_start, 1),
                  augment_seconds=round(sum(phase_seconds), 1),
                  command=' '.join(['python', 'tools/train.py', config, '--work-dir',
                                    work_dir, '--cfg-options', *options]))
    with open(stamp, 'w') as f:
        json.dump(record, f)
    print(f'{prefix} {name}: done in {record["seconds"]:.0f} s', flush=True)
    return ckpt, record


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def evaluate(name: str, config: str, ckpt: str, work_dir: str, options: Sequence[str],
             split: str = 'val', prefix: str = '[demo]') -> Dict[str, float]:
    """The test metrics of a checkpoint (the test dataloader as ``options`` set it),
    cached next to it per ``split``."""
    cache = osp.join(work_dir, f'metrics_{split}.json')
    trained = os.stat(ckpt).st_mtime  # a retrained run has a newer checkpoint
    if osp.isfile(cache):
        with open(cache) as f:
            cached = json.load(f)
        if cached.get('checkpoint') == ckpt and cached.get('mtime') == trained:
            return cached['metrics']
    print(f'{prefix} {name}: evaluating {ckpt} ({split})', flush=True)
    cfg = load_config(config, options)
    cfg.work_dir = osp.join(work_dir, f'eval_{split}')
    cfg.load_from = ckpt
    cfg.log_level = 'WARNING'  # the tables are the output; keep the console calm
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    metrics = Runner.from_cfg(cfg).test()
    metrics = {k: float(v) for k, v in metrics.items()}
    with open(cache, 'w') as f:
        json.dump(dict(checkpoint=ckpt, mtime=trained, metrics=metrics), f)
    return metrics


def latest_scalars(work_dir: str, prefix: str) -> List[Dict]:
    """The visualizer's scalars of a run's last launch whose keys start with
    ``prefix`` (e.g. ``'policy/'``), one dict per logged step."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        return []
    rows = []
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        for line in f:
            row = json.loads(line)
            picked = {k: v for k, v in row.items() if k.startswith(prefix)}
            if picked:
                rows.append(dict(step=row['step'], **picked))
    return rows
