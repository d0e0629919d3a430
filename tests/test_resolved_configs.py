"""Every shipped config resolves to the dict recorded in tests/resolved_configs/.

The configs share their settings through `_base_` snippets; this is what proves that
moving a setting into a snippet (or out of one) leaves every run as it was. A record is
``Config.fromfile(path).to_dict()`` as JSON (tuples become lists), with this checkout's
path written as ``<repo>`` (``{{fileDirname}}`` resolves to an absolute path).

Every recorded key must resolve to its recorded value. The one allowance: a config may
gain the variables a snippet defines for configs to wire in (:data:`SNIPPET_VARIABLES`),
because mmengine keeps every top-level name of a `_base_` in the resolved config; the
Runner reads none of them.

To record the configs again after an intended change, and review the diff::

    TST_MM_RECORD_CONFIGS=1 python -m pytest tests/test_resolved_configs.py
"""
import glob
import json
import os
import os.path as osp

import pytest
from mmengine.config import Config

from tests.conftest import REPO

RECORDS = osp.join(REPO, 'tests', 'resolved_configs')
RECORD = os.environ.get('TST_MM_RECORD_CONFIGS') == '1'
# Every config under configs/ but the snippets in _base_ folders, relative to configs/.
SHIPPED = sorted(osp.relpath(path, osp.join(REPO, 'configs'))
                 for path in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                                       recursive=True)
                 if '_base_' not in path.split(os.sep))
# Defined in configs/_base_/ (tst_distiller.py, tst_seg_losses.py,
# digits_from_scratch.py), read by the configs as `_base_.tst_model` etc.
SNIPPET_VARIABLES = {'tst_model', 'tst_optim_wrapper', 'tst_param_scheduler',
                     'scratch_optim_wrapper', 'scratch_warmup', 'scratch_cosine',
                     'tst_augmenter', 'tst_augmenter_optim_wrapper',
                     'tst_seg_distill_losses'}


def _portable(value):
    """``value`` with this checkout's absolute path replaced by ``<repo>``."""
    if isinstance(value, str):
        return value.replace(REPO, '<repo>')
    if isinstance(value, dict):
        return {key: _portable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_portable(item) for item in value]
    return value


def resolve(config: str) -> dict:
    """The config's resolved dict, as it is recorded (JSON types)."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    return json.loads(json.dumps(_portable(cfg.to_dict()), sort_keys=True))


def record_path(config: str) -> str:
    return osp.join(RECORDS, osp.splitext(config)[0] + '.json')


def test_every_shipped_config_has_a_record_and_no_record_is_stale():
    recorded = sorted(osp.relpath(path, RECORDS)[:-len('.json')] + '.py'
                      for path in glob.glob(osp.join(RECORDS, '**', '*.json'),
                                            recursive=True))
    assert SHIPPED and (RECORD or recorded == SHIPPED)


@pytest.mark.parametrize('config', SHIPPED)
def test_a_shipped_config_resolves_as_recorded(config):
    resolved = resolve(config)
    path = record_path(config)
    if RECORD:
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(resolved, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write('\n')
        return
    with open(path, encoding='utf-8') as f:
        recorded = json.load(f)
    added = set(resolved) - set(recorded)
    assert added <= SNIPPET_VARIABLES, f'keys not in the record: {added - SNIPPET_VARIABLES}'
    assert {key: resolved[key] for key in recorded if key in resolved} == recorded
