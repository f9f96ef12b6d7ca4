"""Time one encoder pass (batch of 1, warm) the way `lolnerf invert` runs it: wall and process CPU time.

    python examples/encoder_speed.py [RESOLUTION] [LATENT_DIM] [MEMBERS]   (default 64 64 3: the `cpu` preset,
                                                                           train-encoder's default ensemble)

The network's weights do not change its cost, so a freshly built encoder of the run's shape is timed."""

import sys
import time

import numpy as np
import torch

from lolnerf_cli.encoder import EncoderConfig, ImageEncoder, encode


def main() -> None:
    res = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    dim = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    members = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    enc = ImageEncoder(EncoderConfig(resolution=res, latent_dim=dim, members=members)).eval()
    n_params = sum(p.numel() for p in enc.parameters())
    macs = 0
    for member in enc.members:
        side = res
        for m in member.features:
            if isinstance(m, torch.nn.Conv2d):
                side = (side + 2 - 3) // m.stride[0] + 1
                macs += side * side * m.in_channels * m.out_channels * 9
        macs += sum(m.in_features * m.out_features for m in member.head if isinstance(m, torch.nn.Linear))
    img = (np.random.default_rng(0).random((res, res, 3)) * 255).astype(np.uint8)
    encode(enc, [img])                                   # warm-up
    wall, cpu = [], []
    for _ in range(50):
        t0, c0 = time.perf_counter(), time.process_time()
        encode(enc, [img])
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(f"{res} px, {members} member(s), {n_params / 1e6:.2f} M parameters, {macs / 1e6:.0f} M multiply-adds per photo; "
          f"wall median {np.median(wall) * 1000:.1f} ms (min {np.min(wall) * 1000:.1f}), "
          f"CPU median {np.median(cpu) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
