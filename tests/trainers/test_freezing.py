"""ParameterFreezer: frozen parameters are skipped by the optimizer, even with momentum and decay."""

from __future__ import annotations

import torch

from nnunet_genesis.trainers.freezing import ParameterFreezer


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.LeakyReLU())
        self.decoder = torch.nn.Conv3d(4, 2, 1)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def _train(net, opt, steps, gen):
    for _ in range(steps):
        x = torch.randn(2, 1, 6, 6, 6, generator=gen)
        opt.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()


def test_frozen_encoder_stays_bitwise_identical_then_trains():
    gen = torch.Generator().manual_seed(0)
    net = _Tiny()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.99, nesterov=True, weight_decay=0.1)
    state = {"epoch": 0}
    ParameterFreezer(net.encoder.parameters(), lambda: state["epoch"] < 2).attach(opt)
    enc0 = [p.detach().clone() for p in net.encoder.parameters()]
    dec0 = [p.detach().clone() for p in net.decoder.parameters()]

    for epoch in range(2):  # frozen epochs
        state["epoch"] = epoch
        _train(net, opt, 3, gen)
    assert all(torch.equal(a, b) for a, b in zip(enc0, net.encoder.parameters()))
    assert not any(torch.equal(a, b) for a, b in zip(dec0, net.decoder.parameters()))
    assert all("momentum_buffer" not in opt.state[p] for p in net.encoder.parameters())

    state["epoch"] = 2  # unfrozen
    _train(net, opt, 1, gen)
    assert not any(torch.equal(a, b) for a, b in zip(enc0, net.encoder.parameters()))


def test_zeroed_gradients_alone_would_not_freeze():
    """Why the freezer drops gradients instead of zeroing them: decay and momentum still move."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    p.grad = torch.zeros(3)
    opt.step()
    assert not torch.equal(p.detach(), torch.ones(3))

