"""model/field.py: the split-latent LatentField is the textbook network that concatenates the latent to
every sample (and again at each skip layer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lolnerf_cli.config import ModelConfig
from lolnerf_cli.model.encoding import posenc
from lolnerf_cli.model.field import LatentField


def _plain_forward(field: LatentField, x: torch.Tensor, z: torch.Tensor, skips: tuple[int, ...]):
    """The textbook network: [enc(x), z] concatenated to every sample, and again at each skip layer."""
    xe = posenc(x / field.cfg.scene_radius, field.freqs)
    zs = z[:, None, :].expand(*x.shape[:-1], z.shape[-1])
    inp = torch.cat([xe, zs], -1)
    h = F.relu(F.linear(inp, torch.cat([field.in_x.weight, field.in_z.weight], 1), field.in_x.bias))
    for i, layer in enumerate(field.hidden, start=1):
        if i in skips:
            w = torch.cat([layer.weight, field.skip_x[str(i)].weight, field.skip_z[str(i)].weight], 1)
            h = F.relu(F.linear(torch.cat([h, inp], -1), w, layer.bias))
        else:
            h = F.relu(layer(h))
    raw = field.out(h)
    return F.softplus(raw[..., 0] + field.cfg.density_bias), torch.sigmoid(raw[..., 1:])


def _small_field() -> tuple[LatentField, torch.Tensor, torch.Tensor]:
    """A seeded field (5-d latent, 4 x 16, skip at 2), 3 rays x 7 points and their latents."""
    torch.manual_seed(0)
    field = LatentField(ModelConfig(latent_dim=5, width=16, depth=4, skips=(2,), pos_freqs=3))
    return field, torch.rand(3, 7, 3) * 2 - 1, torch.randn(3, 5)


def test_latent_field_equals_the_plain_concatenating_network():
    field, x, z = _small_field()
    cfg = field.cfg
    with torch.no_grad():
        sigma, rgb = field(x, z)
        sigma_ref, rgb_ref = _plain_forward(field, x, z, cfg.skips)
    assert torch.allclose(sigma, sigma_ref, atol=1e-5) and torch.allclose(rgb, rgb_ref, atol=1e-5)


def test_logits_are_the_output_layer_before_the_activations():
    field, x, z = _small_field()
    cfg = field.cfg
    with torch.no_grad():
        raw = field.logits(x, z)
        sigma, rgb = field(x, z)
    assert raw.shape == (3, 7, 4) and raw.dtype == torch.float32
    assert torch.equal(sigma, F.softplus(raw[..., 0] + cfg.density_bias)) and torch.equal(rgb, torch.sigmoid(raw[..., 1:]))


def test_latent_field_gradients_equal_the_plain_networks():
    field, x, z = _small_field()
    z = z.requires_grad_()
    sigma, rgb = field(x, z)
    (sigma.sum() + rgb.square().sum()).backward()
    got = [p.grad.clone() for p in field.parameters()] + [z.grad.clone()]
    field.zero_grad()
    z.grad = None
    sigma_ref, rgb_ref = _plain_forward(field, x, z, field.cfg.skips)
    (sigma_ref.sum() + rgb_ref.square().sum()).backward()
    want = [p.grad for p in field.parameters()] + [z.grad]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))


def _graph_nodes(root) -> set[str]:
    seen, stack, names = set(), [root], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return names


def test_the_field_makes_no_copy_back_of_views_in_its_backward_pass():
    """An in-place op on a view (a linear layer's 3-D output) makes autograd copy the whole base tensor
    back in the backward pass (CopySlices / AsStridedBackward): a third of a `cpu` training step on an
    fp32 CPU. The field's graph must hold none."""
    field, x, z = _small_field()
    z = z.requires_grad_()
    names = _graph_nodes(field.logits(x, z).grad_fn)
    assert "AddmmBackward0" in names        # the walk reached the layers
    assert not {"CopySlices", "AsStridedBackward0"} & names, names
