"""The teacher's loss mode: heads in train mode, layers in inference mode."""
import torch
import torch.nn as nn

from tst_mm.distill.freeze import loss_mode


class Head(nn.Module):
    """Computes something else in train mode, as DINO's denoising queries do."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = self.drop(self.attn(x, x, x)[0])
        return x + 100 if self.training else x


def toy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(4), Head())
    model[1].running_mean.fill_(0.5)
    return model


def test_heads_train_layers_infer_and_modes_are_put_back():
    model = toy().eval()
    model[2].drop.train()  # a mixed state must come back as it was
    before = {name: m.training for name, m in model.named_modules()}
    stats = model[1].running_mean.clone()
    x = torch.randn(3, 4, 8)
    with loss_mode(model):
        assert model.training and model[2].training and model[0].training
        layers = (model[1], model[2].attn, model[2].drop)
        assert not any(m.training for m in layers)
        first, second = model(x), model(x)
    torch.testing.assert_close(first, second)  # no dropout: deterministic
    assert first.mean() > 50  # the head took its train-mode branch
    torch.testing.assert_close(model[1].running_mean, stats)  # BatchNorm untouched
    assert {name: m.training for name, m in model.named_modules()} == before
    eval_out = toy().eval()(x)
    torch.testing.assert_close(first - 100, eval_out)  # the layers computed as in eval


def test_modes_are_put_back_after_an_error():
    model = toy().eval()
    try:
        with loss_mode(model):
            raise ValueError
    except ValueError:
        pass
    assert not any(m.training for m in model.modules())


class Branches(nn.Module):
    """A layer that computes more in training, as TridentNet's TridentConv does."""

    def forward(self, x):
        return torch.cat([x, 2 * x, 3 * x]) if self.training else x


def test_layers_that_only_change_what_they_compute_stay_in_train_mode():
    model = nn.Sequential(Branches(), nn.BatchNorm1d(4), nn.Dropout(0.5)).eval()
    with loss_mode(model):
        out = model(torch.ones(2, 4))
        assert out.shape == (6, 4)  # all three branches, as the head expects
        torch.testing.assert_close(model(torch.ones(2, 4)), out)  # no noise, no stats
