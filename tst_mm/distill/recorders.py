"""Recorders: forward hooks that capture the outputs of named submodules.

A recorder is a context manager that buffers outputs only inside ``with``, so the same
model can run outside it (validation, the teacher's own predictions) without keeping
graphs alive. It owns its hook handles and can ``remove()`` them, unlike hooks that are
registered and forgotten.

Example::

    rec = ModuleOutputRecorder(model, ['neck', 'bbox_head.retina_cls'])
    with rec:
        model.loss(inputs, data_samples)
    feats = rec['neck']                     # list: one tensor per FPN level
    logits = rec.get('bbox_head.retina_cls')  # list: one call per FPN level
"""
import difflib
from functools import partial
from typing import Any, Dict, Iterable, List, Union

import torch.nn as nn
from torch import Tensor

Record = Union[Tensor, List[Any]]


class ModuleOutputRecorder:
    """Records the outputs of the submodules ``paths`` of ``model`` inside ``with``.

    What :meth:`get` returns for a path:

    - called once, returning a Tensor: that Tensor;
    - called once, returning a tuple or list (e.g. an FPN neck): a list of its items;
    - called several times in one forward (e.g. a head's conv once per FPN level): a
      list with one output per call, in call order.

    Outputs are stored as they are, graph included: the caller decides what to detach.

    Args:
        model (nn.Module): The model whose submodules to hook.
        paths (Iterable[str]): ``named_modules()`` names, e.g. ``'bbox_head.retina_cls'``.
        name (str): How the model is called in error messages. Defaults to ``'model'``.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], name: str = 'model') -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f'model must be an nn.Module, got a {type(model).__name__}')
        if isinstance(paths, str):
            raise TypeError('paths must be a list of module names, got the string '
                            f'{paths!r}')
        self.paths = list(dict.fromkeys(paths))  # drop repeats, keep the order
        if not self.paths:
            raise ValueError('paths is empty: give at least one module name to record')
        self.name = name
        modules = dict(model.named_modules())
        for path in self.paths:
            if path not in modules:
                raise ValueError(_unknown_path_message(path, name, modules))
        self._recording = False
        self._buffer: Dict[str, List[Any]] = {}
        self._handles = [
            modules[path].register_forward_hook(partial(self._hook, path))
            for path in self.paths
        ]

    def _hook(self, path: str, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._recording:
            self._buffer.setdefault(path, []).append(output)

    def __enter__(self) -> 'ModuleOutputRecorder':
        if not self._handles:
            raise RuntimeError(f'this recorder of the {self.name} was removed; '
                               'build a new one')
        if self._recording:
            raise RuntimeError(f'the recorder of the {self.name} is already recording; '
                               'nested `with` blocks are not supported')
        # Drop the previous forward's outputs (and the graphs they hold) before recording.
        self._buffer = {}
        self._recording = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._recording = False

    def get(self, path: str) -> Record:
        """Returns what ``path`` output during the last ``with`` block.

        Args:
            path (str): One of the recorded module names.

        Returns:
            Tensor | list: See the class docstring.
        """
        if path not in self.paths:
            raise KeyError(f'{path!r} is not recorded by this recorder of the {self.name}; '
                           f'it records {self.paths}')
        if path not in self._buffer:
            raise KeyError(f'{path!r} of the {self.name} was not called inside the last '
                           '`with` block of its recorder (run the forward pass inside it)')
        calls = self._buffer[path]
        if len(calls) > 1:
            return [_as_record(out) for out in calls]
        return _as_record(calls[0])

    def __getitem__(self, path: str) -> Record:
        return self.get(path)

    def clear(self) -> None:
        """Drops the buffered outputs (and the autograd graphs they keep alive)."""
        self._buffer = {}

    def remove(self) -> None:
        """Removes the forward hooks; the recorder can not be used afterwards."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name={self.name!r}, paths={self.paths})'


def _as_record(output: Any) -> Record:
    # Tuples become lists so that one FPN neck call and several head calls look alike.
    return list(output) if isinstance(output, (tuple, list)) else output


def _unknown_path_message(path: str, name: str, modules: Dict[str, nn.Module]) -> str:
    candidates = [n for n in modules if n]
    close = difflib.get_close_matches(path, candidates, n=3, cutoff=0.6)
    message = f'{path!r} is not a module of the {name}'
    if close:
        return message + '; did you mean ' + ' or '.join(repr(c) for c in close) + '?'
    top = sorted({n.split('.')[0] for n in candidates})
    return message + f'; its top-level modules are {top}'
