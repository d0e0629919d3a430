"""tools/extract_student.py: a TST checkpoint in, a plain mmdet checkpoint out."""
import importlib.util
import os.path as osp
import re
import subprocess
import sys
import warnings

import torch

from tests.conftest import REPO, TEST_CONFIGS, run, train

TOOL = osp.join(REPO, 'tools', 'extract_student.py')
TST_TINY = osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py')
STUDENT_CONFIG = osp.join(TEST_CONFIGS, 'retinanet_tiny_digits.py')
# What mmengine's load_checkpoint and mmdet's init_detector say when a checkpoint does
# not fit the model or lacks the class names.
MISMATCH = re.compile(r'missing keys|unexpected key|do not match|dataset_meta',
                      re.IGNORECASE)


def _tool_module():
    spec = importlib.util.spec_from_file_location('extract_student', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_extract_keeps_student_and_dataset_meta_only():
    """Both key layouts (single process, and ``student.module.`` from DDP runs)."""
    tool = _tool_module()
    weight, bias = torch.randn(2, 3), torch.randn(2)
    meta = dict(dataset_meta=dict(classes=('a', 'b')), epoch=3, iter=30,
                cfg='model = dict(type="TSTDistiller")')
    for prefix in ('student.', 'student.module.'):
        checkpoint = dict(
            state_dict={f'{prefix}head.weight': weight, f'{prefix}head.bias': bias,
                        'augmenter.magnitude_logits': torch.zeros(11),
                        'distill_losses.loss_mimic.adapter.weight': torch.ones(1)},
            meta=meta, optimizer=dict(student={}, augmenter={}), message_hub={})
        out, dropped = tool.extract_student(checkpoint)
        assert set(out) == {'state_dict', 'meta'}
        assert out['state_dict'] == {'head.weight': weight, 'head.bias': bias}
        assert out['meta'] == dict(dataset_meta=dict(classes=('a', 'b')), epoch=3,
                                   iter=30)
        assert dropped == {'augmenter': 1, 'distill_losses': 1}


def test_extract_rejects_a_plain_checkpoint():
    tool = _tool_module()
    plain = dict(state_dict={'backbone.conv.weight': torch.zeros(1)}, meta={})
    try:
        tool.extract_student(plain)
    except ValueError as err:
        assert 'not a TSTDistiller checkpoint' in str(err) and 'backbone.' in str(err)
    else:
        raise AssertionError('a checkpoint without student weights was accepted')


def test_extracted_student_loads_in_mmdet(workspace, tmp_path, capfd, monkeypatch):
    work_dir = tmp_path / 'tst'
    train(TST_TINY, work_dir, workspace, '--cfg-options', 'train_cfg.max_iters=2',
          'train_cfg.augment_iters=[0]')
    distiller_ckpt, out = str(work_dir / 'iter_2.pth'), str(tmp_path / 'student.pth')
    printed = run([sys.executable, TOOL, distiller_ckpt, out], workspace).stdout
    assert re.search(r'Wrote .*student\.pth: \d+ student tensors', printed), printed

    expected = {key[len('student.'):]: value for key, value in
                torch.load(distiller_ckpt, map_location='cpu')['state_dict'].items()
                if key.startswith('student.')}
    # Plain tensors and Python values: torch's safe loader reads it without tst_mm.
    probe = subprocess.run(
        [sys.executable, '-c', 'import sys, torch; '
         'torch.load(sys.argv[1], map_location="cpu", weights_only=True)', out],
        capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr

    # (a) mmdet's own API loads it, with no warning about keys or class names.
    from mmdet.apis import init_detector
    monkeypatch.chdir(workspace)  # the config's data root is relative
    with warnings.catch_warnings():
        # The first build imports mmdet's modules, whose import-time warnings
        # (mmcv's moved ops) have nothing to do with the checkpoint.
        warnings.simplefilter('ignore')
        init_detector(STUDENT_CONFIG, None, device='cpu')
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        model = init_detector(STUDENT_CONFIG, out, device='cpu')
    logged = capfd.readouterr()
    # mmengine imports pkg_resources on each mmdet:: config lookup; that is the
    # environment's setuptools, not the checkpoint.
    caught = [str(w.message) for w in caught
              if not str(w.message).startswith('pkg_resources is deprecated')]
    assert not caught, caught
    assert not MISMATCH.search(logged.out + logged.err), logged
    assert model.dataset_meta['classes'] == tuple(str(d) for d in range(10))
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key

    # (b) mmdet-style testing with the plain student config.
    tested = run([sys.executable, osp.join(REPO, 'tools', 'test.py'), STUDENT_CONFIG, out,
                  '--work-dir', str(tmp_path / 'test')], workspace).stdout
    assert 'coco/bbox_mAP:' in tested
    assert not MISMATCH.search(tested), tested[-3000:]

    # A file that is not a TST checkpoint: a clear error, not a traceback.
    again = subprocess.run([sys.executable, TOOL, out, str(tmp_path / 'again.pth')],
                           cwd=str(workspace), capture_output=True, text=True)
    assert again.returncode != 0
    assert 'not a TSTDistiller checkpoint' in again.stderr
    assert 'Traceback' not in again.stderr
