"""Shared fixtures: tiny generated datasets and a way to run the tools as a user would.

Tools run in a subprocess whose working directory is a fresh workspace holding
``data/demo/coco`` and ``data/demo/cityscapes`` (links to small generated sets), so the
shipped configs' relative data roots resolve without overrides.
"""
import os
import os.path as osp
import random
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from tst_mm.datasets import make_cityscapes_digits, make_coco_digits

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEST_CONFIGS = osp.join(REPO, 'tests', 'configs')
# The seed every test starts from, and of the trained fixtures whose outcome tests
# assert (the direction test's pair, the objective's balance). Another one
# (`TST_MM_TEST_SEED=3 make test`) checks that those outcomes do not hang on one seed.
TEST_SEED = int(os.environ.get('TST_MM_TEST_SEED', '0'))


@pytest.fixture(autouse=True)
def seeded():
    """Each test starts from the same random state whatever ran before it in its
    process (pytest-xdist workers run the tests in other orders)."""
    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    torch.manual_seed(TEST_SEED)


@pytest.fixture
def logged():
    """The messages mmengine's current logger (``print_log(..., logger='current')``)
    emits during the test, as a list of strings."""
    import logging

    from mmengine.logging import MMLogger

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    messages, handler = [], Keep()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


@pytest.fixture(scope='session')
def coco_digits(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    return make_coco_digits(str(root), num_train=8, num_val=4, image_size=(96, 128),
                            seed=0, digits_per_image=(1, 3), digit_size=(24, 40))


@pytest.fixture(scope='session')
def cityscapes_digits(tmp_path_factory):
    root = tmp_path_factory.mktemp('cityscapes')
    return make_cityscapes_digits(str(root), num_train=8, num_val=4, image_size=(64, 128),
                                  seed=0, digits_per_image=(1, 3), digit_size=(20, 32))


@pytest.fixture
def workspace(tmp_path, coco_digits, cityscapes_digits):
    """A working directory where ``data/demo/{coco,cityscapes}`` are the tiny sets."""
    os.makedirs(tmp_path / 'data' / 'demo')
    os.symlink(coco_digits, tmp_path / 'data' / 'demo' / 'coco')
    os.symlink(cityscapes_digits, tmp_path / 'data' / 'demo' / 'cityscapes')
    return tmp_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run(cmd, cwd, env=None, timeout=900, check=True) -> subprocess.CompletedProcess:
    """Run a command like a user in ``cwd``; fail the test with its output on error
    (with ``check=False``, return whatever it did)."""
    full_env = dict(os.environ)
    # The venv's python first, so `python` in the shell scripts is the test's python.
    full_env['PATH'] = osp.dirname(sys.executable) + os.pathsep + full_env['PATH']
    full_env['PYTHONPATH'] = os.pathsep.join(
        [osp.join(REPO, 'tests', 'plugins'), full_env.get('PYTHONPATH', '')])
    full_env.update(env or {})
    proc = subprocess.run(cmd, cwd=str(cwd), env=full_env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(map(str, cmd))} exited {proc.returncode}:\n'
                    f'{proc.stdout[-6000:]}')
    return proc


def train(config, work_dir, cwd, *extra, env=None,
          check=True) -> subprocess.CompletedProcess:
    """``python tools/train.py CONFIG --work-dir WORK_DIR EXTRA...``"""
    return run([sys.executable, osp.join(REPO, 'tools', 'train.py'), config,
                '--work-dir', str(work_dir), *extra], cwd, env, check=check)
