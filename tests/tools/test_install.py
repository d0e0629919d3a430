"""tools/install.sh, as `make test` runs it on a fresh machine."""
import os
import os.path as osp
import subprocess

from tests.conftest import REPO


def test_mmcv_builds_with_every_core_under_make_tests_one_thread():
    """`make test` exports OMP_NUM_THREADS=1 for pytest, and make passes it to the
    install prerequisite; GNU nproc honours it, which built mmcv on one core."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('MAX_JOBS', None)
    jobs = subprocess.run(['bash', osp.join(REPO, 'tools', 'install.sh'), '--jobs'],
                          env=env, text=True, capture_output=True, check=True).stdout
    assert int(jobs) == len(os.sched_getaffinity(0))
