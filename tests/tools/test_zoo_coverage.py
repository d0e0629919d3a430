"""tools/zoo_coverage.py on three cheap families: the table rows, the resume, a time-out."""
import json
import os
import os.path as osp
import signal
import sys

import pytest

from tests.conftest import REPO, run

TOOL = osp.join(REPO, 'tools', 'zoo_coverage.py')
sys.path.insert(0, osp.join(REPO, 'tools'))
import zoo_coverage  # noqa: E402

# The module's fixtures are trained / written once: its tests share one xdist worker.
pytestmark = pytest.mark.xdist_group('zoo_coverage')

FAMILIES = ['retinanet', 'mmseg/segformer', 'soft_teacher']


def coverage(tmp_path, *args):
    return run([sys.executable, TOOL, '--work-dir', str(tmp_path / 'work'), '--out',
                str(tmp_path / 'zoo.md'), *args], tmp_path,
               env=dict(OMP_NUM_THREADS='1'), timeout=300).stdout


def rows(tmp_path):
    lines = (tmp_path / 'zoo.md').read_text().splitlines()
    cells = [[c.strip() for c in line.strip()[1:-1].split('|')] for line in lines
             if line.startswith('| mm')]
    return {row[0]: row for row in cells}


@pytest.fixture(scope='module')
def walked(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp('zoo')
    return tmp_path, coverage(tmp_path, '--families', *FAMILIES)


def test_each_family_gets_a_row_and_the_summary(walked):
    tmp_path, out = walked
    assert '[1/3] mmdet/retinanet: ok' in out
    table = rows(tmp_path)
    retinanet = table['mmdet/retinanet']
    assert retinanet[:5] == [
        'mmdet/retinanet', 'retinanet/retinanet_r18_fpn_1x_coco.py', 'yes', 'ok', 'ok']
    # Distilled with automatic losses: the head's logits and the neck's features, at
    # most 10x the task loss after the automatic scales; nothing left out; no reason.
    assert retinanet[5:7] == ['bbox_head.retina_cls', 'neck']
    assert 0 < float(retinanet[7].split()[0]) <= 10.0001  # auto_distill_ratio
    assert retinanet[8:] == ['-', '']
    segformer = table['mmseg/segformer']
    assert segformer[2:5] == ['yes', 'ok', 'ok'] and segformer[-1] == ''
    assert segformer[5] == 'decode_head.conv_seg' and segformer[6] == '-'
    assert segformer[1].startswith('segformer/') and 'cityscapes' in segformer[1]
    assert table['mmdet/soft_teacher'][2:5] == ['n/a', '-', '-']
    assert table['mmdet/soft_teacher'][5:9] == ['-'] * 4
    assert table['mmdet/soft_teacher'][9].startswith(
        'not single: SoftTeacher is a semi-supervised teacher-student wrapper')
    text = (tmp_path / 'zoo.md').read_text()
    assert '**2 of 2 families build and take both steps**' in text
    assert '**Distillation**: 2 of the 2 families that take both steps distil' in text
    assert '| family | config | builds | augment step | student step | distilled: logits ' \
        '| features | distill / task (unscaled) | left out (why) | reason |' in text
    results = json.loads((tmp_path / 'work' / 'results.json').read_text())
    losses = results['mmdet/retinanet']['distill']['losses']
    assert all(x['reaches_backbone'] and x['value'] > 0 for x in losses.values())


def test_a_rerun_resumes_and_force_reruns(walked):
    tmp_path, _ = walked
    cache = tmp_path / 'work' / 'results.json'
    before = json.loads(cache.read_text())
    out = coverage(tmp_path, '--families', *FAMILIES)
    assert out.count('(cached)') == 3
    assert json.loads(cache.read_text()) == before
    out = coverage(tmp_path, '--families', 'soft_teacher', '--force')
    assert '(cached)' not in out and '[1/1] mmdet/soft_teacher: not single' in out
    assert set(rows(tmp_path)) == {'mmdet/retinanet', 'mmseg/segformer',
                                   'mmdet/soft_teacher'}  # the earlier rows stay


def test_a_family_out_of_time_is_a_result(tmp_path):
    family = zoo_coverage.find_families(['retinanet'])[0]
    result = zoo_coverage.run_in_subprocess(family, [(64, 64)], timeout=0.5)
    assert result['category'] == 'timeout'
    assert result['reason'].startswith('no result within 0.5 s (in: ')


def test_a_family_killed_for_memory_says_so(monkeypatch):
    """The out-of-memory killer's SIGKILL leaves no traceback: the row names it."""
    def killed(family, sizes, send, log_file=None, scenes=2):
        send.send(('stage', dict(builds='yes', augment='ok', student='-',
                                 stage='student step')))
        os.kill(os.getpid(), signal.SIGKILL)
    monkeypatch.setattr(zoo_coverage, 'run_family', killed)
    family = zoo_coverage.find_families(['retinanet'])[0]
    result = zoo_coverage.run_in_subprocess(family, [(64, 64)], timeout=30)
    assert result['category'] == 'crash' and result['student'] == 'fails'
    assert result['reason'] == 'killed in: student step (SIGKILL: most likely out of memory)'


OUT_OF_MEMORY = dict(builds='yes', augment='ok', student='fails', category='crash',
                     reason='killed in: student step (SIGKILL: most likely out of memory)',
                     killed=True, seconds=1.0)
OUT_OF_TIME = dict(builds='yes', augment='ok', student='fails', category='timeout',
                   reason='no result within 600 s (in: student step)', seconds=600.0)


@pytest.mark.parametrize('jobs,first', [('1', OUT_OF_MEMORY), ('2', OUT_OF_MEMORY),
                                        ('2', OUT_OF_TIME)])
def test_a_family_out_of_memory_or_time_is_run_again_alone(
        tmp_path, monkeypatch, jobs, first):
    calls = []

    def fake(family, sizes, timeout, log_file=None, scenes=2):
        calls.append((family['id'], scenes, timeout))
        if len(calls) == 1:
            return dict(first)
        return dict(builds='yes', augment='ok', student='ok', category='ok', reason='',
                    seconds=2.0)
    monkeypatch.setattr(zoo_coverage, 'run_in_subprocess', fake)
    monkeypatch.setattr(zoo_coverage, 'import_once', lambda: None)
    zoo_coverage.main(['--families', 'retinanet', '--jobs', jobs, '--work-dir',
                       str(tmp_path / 'work'), '--out', str(tmp_path / 'zoo.md')])
    retry = ('mmdet/retinanet', 1, 600) if first is OUT_OF_MEMORY else \
        ('mmdet/retinanet', 2, 1200)  # out of time: both scenes, twice the time
    assert calls == [('mmdet/retinanet', 2, 600), retry]
    row = rows(tmp_path)['mmdet/retinanet']
    assert row[2:5] == ['yes', 'ok', 'ok']
    assert ('on one scene' if first is OUT_OF_MEMORY else 'with 1200 s') in row[-1]


def test_sizes_double_up_to_the_limit():
    assert zoo_coverage.step_sizes((128, 128), 512) == [(128, 128), (256, 256), (512, 512)]
    assert zoo_coverage.step_sizes((128, 256), 300) == [(128, 256)]


def test_a_fixed_training_size_joins_the_sizes():
    """SSD300's pipeline resizes every image to 300 x 300 (its anchors, PISA's sampling
    assume it); a pipeline that keeps the aspect ratio adds nothing."""
    from mmengine.config import Config
    ladder = [(128, 128), (256, 256), (512, 512)]

    def cfg(*steps):
        return Config(dict(train_dataloader=dict(dataset=dict(pipeline=list(steps)))))

    ssd = cfg(dict(type='LoadImageFromFile'),
              dict(type='Resize', scale=(300, 200), keep_ratio=False))
    assert zoo_coverage.with_fixed_train_size(ssd, ladder) == [
        (128, 128), (256, 256), (200, 300), (512, 512)]  # (h, w) from mmdet's (w, h)
    keep = cfg(dict(type='Resize', scale=(1333, 800), keep_ratio=True))
    assert zoo_coverage.with_fixed_train_size(keep, ladder) == ladder
    large = cfg(dict(type='Resize', scale=(550, 550), keep_ratio=False))
    assert zoo_coverage.with_fixed_train_size(large, ladder) == ladder


def test_weights_left_to_a_checkpoint_are_initialised():
    """TridentConv's weight is allocated uninitialised: the tool fills it."""
    import torch
    from mmdet.models.backbones.trident_resnet import TridentConv
    conv = TridentConv(16, 8, kernel_size=3, trident_dilations=(1, 2, 3))
    conv.weight.data.fill_(float('nan'))
    zoo_coverage.init_left_to_checkpoint(torch.nn.Sequential(conv))
    bound = (6 / (16 * 9)) ** 0.5  # Kaiming-uniform, fan-in, ReLU gain
    assert torch.isfinite(conv.weight).all() and conv.weight.abs().max() <= bound
    assert conv.weight.std() > bound / 3


def test_segmentation_batches_have_ignored_pixels_as_cityscapes_does():
    batch = zoo_coverage.digit_batch('mmseg', (64, 96), 19, False, True)
    label = batch['data_samples'][0].gt_sem_seg.data[0]
    assert (label[-4:] == 255).all() and (label[:-4] != 255).all()
    assert set(label[:-4].unique().tolist()) - {10} <= set(range(10))


def test_a_plain_model_that_cannot_initialise_fails_as_a_plain_model():
    """mmseg 1.2's SAN, without its CLIP checkpoint, calls a missing
    super().init_weights(): the Runner could not train it either."""
    class Broken:
        def init_weights(self):
            raise AttributeError("'super' object has no attribute 'init_weights'")

    with pytest.raises(RuntimeError, match="init_weights.*without its pretrained "
                       "checkpoint: AttributeError") as error:
        zoo_coverage._init_plain(Broken())
    assert error.value.tst_plain_fails


def test_configs_are_picked_by_dataset_then_cost():
    pick = zoo_coverage.pick_config
    assert pick('mmdet', ['a_voc.py', 'b_r101_coco.py', 'c_r50_coco-panoptic.py',
                          'd_r50_1x_coco.py', 'd_r50_fpn_1x_coco.py']) == 'd_r50_1x_coco.py'
    assert pick('mmseg', ['x_ade20k.py', 'y_cityscapes.py']) == 'y_cityscapes.py'
    assert pick('mmseg', ['x_voc.py', 'y_ade20k.py']) == 'y_ade20k.py'
    assert pick('mmseg', ['b.py', 'a.py']) == 'a.py'


def test_model_configs_go_offline_and_small():
    model = dict(type='X', backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://r50'),
        norm_cfg=dict(type='SyncBN')), pretrained='x.pth',
        train_cfg=dict(rcnn=[dict(sampler=dict(type='RandomSampler', num=512)),
                             dict(sampler=dict(type='RandomSampler', num=32))]),
        data_preprocessor=dict(size=(512, 1024), batch_augments=[
            dict(type='BatchFixedSizePad', size=(1024, 1024))]))
    out = zoo_coverage.offline_model_cfg(model, (128, 128))
    assert out['backbone']['init_cfg'] is None and out['pretrained'] is None
    assert out['backbone']['norm_cfg']['type'] == 'BN'
    assert out['data_preprocessor']['size'] == (128, 128)
    assert out['data_preprocessor']['batch_augments'][0]['size'] == (128, 128)
    assert [stage['sampler']['num'] for stage in out['train_cfg']['rcnn']] == [64, 32]


def test_errors_are_classified():
    classify = zoo_coverage.classify
    try:
        try:
            import not_a_package_here  # noqa: F401
        except ImportError as exc:
            raise ImportError('Failed to import custom modules') from exc
    except ImportError as exc:
        assert classify(exc) == ('dependency', 'missing not_a_package_here')
    assert classify(RuntimeError('lap is not installed, please install it by: pip '
                                 'install lap')) == ('dependency', 'missing lap')
    assert classify(ModuleNotFoundError("No module named 'skimage.io'")) == \
        ('dependency', 'missing scikit-image')
    assert classify(NotImplementedError(
        'no inverse is defined for the task loss mmdet.FooLoss (mmdet.x.FooLoss); ...')) == \
        ('unsupported loss', 'no inverse for mmdet.FooLoss')
    assert classify(NotImplementedError(
        'MySSDHead derives from SSDHead, whose losses are computed inline and inverted by '
        'tst_mm.distill.inline_inverses; ...')) == \
        ('uninverted loss', 'MySSDHead derives from SSDHead, whose inline losses are inverted')

    assert classify(KeyError('Bar is not in the mmdet::model registry')) == \
        ('error', 'KeyError: Bar is not in the mmdet::model registry')


def test_families_whose_plain_model_fails_here_are_not_in_the_target():
    results = [dict(id='a', category='ok', builds='yes', reason=''),
               dict(id='b', category='plain fails', builds='yes', reason='no CPU kernel'),
               dict(id='c', category='error', builds='yes', reason='TST broke'),
               dict(id='d', category='not single', builds='n/a', reason='tracker')]
    text = '\n'.join(zoo_coverage.summary(results))
    assert text.startswith('**1 of 2 families build and take both steps** (of 4 families, '
                           '3 build in plain mmdet / mmseg here')
    assert '1 fail as plain models too' in text


def test_an_unfinished_walk_says_so():
    results = [dict(id='a', category='ok', builds='yes', reason='')]
    assert 'Incomplete' not in '\n'.join(zoo_coverage.summary(results))
    text = '\n'.join(zoo_coverage.summary(results, not_run=5))
    assert '**Incomplete**: 5 more families have no result yet' in text


def test_a_rewrite_keeps_the_hand_written_notes(tmp_path):
    path = str(tmp_path / 'zoo.md')
    results = [dict(id='mmdet/a', config='a/a.py', category='ok', builds='yes',
                    augment='ok', student='ok', reason='')]
    zoo_coverage.write_markdown(path, results, (128, 128))
    assert '#notes' not in (tmp_path / 'zoo.md').read_text()
    with open(path, 'a', encoding='utf-8') as f:
        f.write(f'\n{zoo_coverage.NOTES_HEADING}\n\nwhy a family fails\n')
    zoo_coverage.write_markdown(path, results, (128, 128))
    text = (tmp_path / 'zoo.md').read_text()
    assert '[notes](#notes) after it are hand-written' in text
    assert text.endswith('| mmdet/a | a/a.py | yes | ok | ok | - | - | - | - |  |\n\n## Notes\n\n'
                         'why a family fails\n')
