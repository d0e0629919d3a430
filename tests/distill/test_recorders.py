import pytest
import torch
import torch.nn as nn

from tests.distill.tiny_models import tiny_retinanet
from tst_mm.distill.recorders import ModuleOutputRecorder


class Toy(nn.Module):
    """A shared head conv called once per level and a 'neck' returning a tuple."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.neck = Pyramid()
        self.head = nn.Module()
        self.head.cls = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        levels = self.neck(self.stem(x))
        return [self.head.cls(f) for f in levels]


class Pyramid(nn.Module):

    def forward(self, x):
        return x, nn.functional.max_pool2d(x, 2), nn.functional.max_pool2d(x, 4)


def test_records_single_repeated_and_tuple_outputs():
    model = Toy()
    rec = ModuleOutputRecorder(model, ['stem', 'neck', 'head.cls'])
    x = torch.randn(2, 3, 8, 8)
    with rec:
        out = model(x)
    assert isinstance(rec.get('stem'), torch.Tensor)
    assert rec['stem'].shape == (2, 4, 8, 8)
    neck = rec['neck']
    assert isinstance(neck, list) and [f.shape[-1] for f in neck] == [8, 4, 2]
    cls = rec['head.cls']
    # One entry per call, in call order, and the very tensors the model returned.
    assert isinstance(cls, list) and len(cls) == 3
    assert all(a is b for a, b in zip(cls, out))
    # The graph is kept: the caller decides what to detach.
    cls[0].sum().backward()
    assert model.stem.weight.grad is not None


def test_buffers_only_inside_with_and_reentry_clears():
    model = Toy()
    rec = ModuleOutputRecorder(model, ['stem', 'head.cls'])
    model(torch.randn(1, 3, 8, 8))
    with pytest.raises(KeyError, match='not called inside the last `with`'):
        rec.get('stem')
    with rec:
        model(torch.randn(1, 3, 8, 8))
    model(torch.randn(5, 3, 8, 8))  # outside: not recorded
    assert rec['stem'].size(0) == 1 and len(rec['head.cls']) == 3
    with rec:
        model.stem(torch.randn(4, 3, 8, 8))  # only the stem runs this time
    assert rec['stem'].size(0) == 4
    with pytest.raises(KeyError, match="'head.cls' .*not called"):
        rec.get('head.cls')


def test_unknown_paths():
    model = Toy()
    with pytest.raises(ValueError, match="'head.clss' is not a module of the student; "
                       "did you mean 'head.cls'"):
        ModuleOutputRecorder(model, ['head.clss'], name='student')
    with pytest.raises(ValueError, match="top-level modules are.*'neck'"):
        ModuleOutputRecorder(model, ['zzz'])
    rec = ModuleOutputRecorder(model, ['stem'])
    with pytest.raises(KeyError, match="'neck' is not recorded"):
        rec.get('neck')
    with pytest.raises(TypeError, match='string'):
        ModuleOutputRecorder(model, 'stem')


def test_remove_detaches_the_hooks():
    model = Toy()
    rec = ModuleOutputRecorder(model, ['stem', 'head.cls'])
    assert len(model.stem._forward_hooks) == 1
    rec.remove()
    assert not model.stem._forward_hooks and not model.head.cls._forward_hooks
    with pytest.raises(RuntimeError, match='removed'):
        with rec:
            pass


def test_recording_stops_on_exceptions_and_nesting_is_refused():
    model = Toy()
    rec = ModuleOutputRecorder(model, ['stem'])
    with pytest.raises(ZeroDivisionError):
        with rec:
            model(torch.randn(1, 3, 8, 8))
            1 / 0
    model(torch.randn(7, 3, 8, 8))
    assert rec['stem'].size(0) == 1
    with rec:
        with pytest.raises(RuntimeError, match='already recording'):
            rec.__enter__()


def test_real_retinanet_levels():
    torch.manual_seed(0)
    model = tiny_retinanet().eval()
    rec = ModuleOutputRecorder(model, ['neck', 'bbox_head.retina_cls'], name='student')
    with rec, torch.no_grad():
        cls_scores, _ = model._forward(torch.randn(1, 3, 64, 96))
    neck, cls = rec['neck'], rec['bbox_head.retina_cls']
    assert len(neck) == 5 and all(f.shape[:2] == (1, 32) for f in neck)
    assert len(cls) == 5
    assert [c.shape for c in cls] == [c.shape for c in cls_scores]
    assert all(torch.equal(a, b) for a, b in zip(cls, cls_scores))
    with pytest.raises(ValueError, match="did you mean 'bbox_head.retina_cls'"):
        ModuleOutputRecorder(model, ['bbox_head.retina_clss'], name='student')
