"""``--channels_last`` and ``--compile`` (architectures.select): the same network and parameter names, the same
outputs as the plain network (float32 round-off), only the backbone compiled (head, miners and losses eager)."""

from __future__ import annotations

import shutil

import pytest
import torch

import architectures
from architectures._base import compile_backbone


def build(make_opt, *argv: str, arch: str = "resnet18", shape=(3, 32, 32)):
    torch.manual_seed(0)
    return architectures.select(arch, make_opt("--not_pretrained", "--embed_dim", "8", *argv), input_shape=shape)


def test_channels_last_converts_weights_and_inputs_not_values(make_opt):
    plain = build(make_opt, "--channels_last", "off")
    fast = build(make_opt, "--channels_last", "on")
    assert not plain.channels_last and fast.channels_last
    assert fast.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(fast.state_dict()) == list(plain.state_dict())
    fast.load_state_dict(plain.state_dict())  # a checkpoint of either loads into the other
    assert fast.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32)
    plain.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    auto = build(make_opt)  # auto: on only where CUDA is present
    assert auto.channels_last == torch.cuda.is_available()


def test_compile_compiles_the_backbone_only_and_keeps_parameter_names(make_opt):
    plain = build(make_opt, arch="mnist_cnn", shape=(3, 16, 16))
    compiled = build(make_opt, "--compile", arch="mnist_cnn", shape=(3, 16, 16))
    assert compiled.backbone._compiled_call_impl is not None  # nn.Module.compile: in place
    assert getattr(compiled.last_linear, "_compiled_call_impl", None) is None
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no "_orig_mod." prefixes
    assert not build(make_opt, arch="mnist_cnn", shape=(3, 16, 16)).backbone._compiled_call_impl


def forward_backward(model, x):
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def test_a_compiled_backbone_traces_and_trains_like_the_eager_one(make_opt):
    """TorchDynamo's graph capture with the 'eager' backend (no C++ compiler needed): the values of eager mode."""
    torch._dynamo.reset()
    plain = build(make_opt, arch="mnist_cnn", shape=(3, 16, 16))
    traced = compile_backbone(build(make_opt, arch="mnist_cnn", shape=(3, 16, 16)), backend="eager")
    x = torch.randn(6, 3, 16, 16)
    out, grads = forward_backward(plain, x)
    out_t, grads_t = forward_backward(traced, x)
    torch.testing.assert_close(out_t, out)
    for a, b in zip(grads_t, grads):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler; none on PATH")  # fmt: skip
def test_inductor_compiled_backbone_matches_eager(make_opt):
    """The real ``--compile`` (inductor): slow on a CPU (tens of seconds), hence ``-m slow``."""
    torch._dynamo.reset()
    plain = build(make_opt, arch="mnist_cnn", shape=(3, 16, 16))
    compiled = build(make_opt, "--compile", arch="mnist_cnn", shape=(3, 16, 16))
    x = torch.randn(6, 3, 16, 16)
    out, grads = forward_backward(plain, x)
    out_c, grads_c = forward_backward(compiled, x)
    torch.testing.assert_close(out_c, out, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_c, grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
