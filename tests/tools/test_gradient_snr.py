"""tools/analysis/augmenter_gradient_snr.py: its statistics, and one measurement of a
tiny TST pair through the real augment-phase objective."""
import json
import os.path as osp
import sys

import pytest
import torch

from tests.conftest import REPO, TEST_CONFIGS, run

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis'))
import augmenter_gradient_snr as snr  # noqa: E402

TOOL = osp.join(REPO, 'tools', 'analysis', 'augmenter_gradient_snr.py')


def test_cosine_and_snr_of_signal_plus_noise():
    torch.manual_seed(0)
    mean = torch.ones(400)
    # noise of the same norm as the mean: SNR 1, cosine of two estimates 1/2
    estimates = [mean + torch.randn(400) for _ in range(16)]
    stats = snr.statistics(estimates)
    assert stats['snr'] == pytest.approx(1.0, abs=0.15)
    assert stats['cos'] == pytest.approx(0.5, abs=0.05)
    noise = snr.statistics([torch.randn(400) for _ in range(16)])
    assert abs(noise['cos']) < 0.05 and abs(noise['snr']) < 0.05
    assert snr.statistics([mean, mean * 1.01, mean * 0.99])['cos'] == pytest.approx(1.0)


def test_measures_a_tiny_pair_and_reports(tmp_path, coco_digits):
    out = tmp_path / 'snr.jsonl'
    printed = run([sys.executable, TOOL, osp.join(TEST_CONFIGS, 'tst_retinanet_tiny.py'),
                   '--images', '2', '4', '--estimates', '3', '--label', 'tiny',
                   '--json', str(out), '--cfg-options',
                   f'train_dataloader.dataset.data_root={coco_digits}'], tmp_path).stdout
    rows = json.loads(out.read_text())['rows']
    assert {(r['images'], r['term'], r['group']) for r in rows} == {
        (n, t, g) for n in (2, 4) for t in ('teacher', 'student_inverse', 'total')
        for g in ('magnitude', 'probability')}
    assert all(-1 <= r['cos'] <= 1 and r['norm'] > 0 for r in rows)
    probability = next(r for r in rows if r['group'] == 'probability')
    assert len(probability['descent']) == 14  # every op, [step, z]
    assert 'tiny images    4 total' in printed
    table = run([sys.executable, TOOL, '--report', str(out)], tmp_path).stdout
    assert '| tiny | total | probability |' in table


def test_descent_says_where_a_step_moves_each_parameter():
    torch.manual_seed(0)
    # parameter a: gradient +1 with noise 0.1 (a step lowers it); b: pure noise
    estimates = [torch.tensor([1.0, 0.0]) + 0.1 * torch.randn(2) for _ in range(16)]
    moves = snr.descent(estimates, ['a', 'b'])
    assert moves['a'][0] == pytest.approx(-1.0, abs=0.05) and moves['a'][1] < -20
    assert abs(moves['b'][1]) < 4
