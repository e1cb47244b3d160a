"""ScatterNet coefficients: public, data-free features of images (Tramer & Boneh, ICLR 2021).

``embedding.base = "scatter"``: the random Fourier features of the released statistics
(common.models.embedding) are drawn on the 2-D scattering transform of each image (Mallat
2012; Oyallon & Mallat 2015) instead of its pixels: wavelet (Morlet) filters fixed by their
definition, J = 2 scales, 8 angles, so 81 coefficient maps of a quarter of the side per
channel (MNIST: 81 x 7 x 7 = 3969 values), each record's vector scaled to norm 1. The
transform reads no data and draws no random number: every site and the server compute
the same map, and it adds nothing to what a release reveals. Computed by kymatio's 2-D
torch frontend (imported from its own module: kymatio's package import pulls in its 3-D
frontend, which needs a function recent scipy removed; ../shared/notes/stack.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from common.data.types import Shape

SCALES = 2  # J: the coefficients' side is the image's / 2^J
COEFFICIENTS = 81  # maps per channel at J = 2, 8 angles: 1 + J L + L^2 J (J - 1) / 2


class Scattering:
    """(B, C, H, W) -> (B, C x 81 x H/4 x W/4), every row of norm 1. Not a module of the
    model that holds it: its fixed filters are no parameters and never travel."""

    def __init__(self, shape: Shape) -> None:
        channels, height, width = shape
        if height % 2**SCALES or width % 2**SCALES:
            raise ValueError(
                f"embedding.base='scatter' needs image sides divisible by {2**SCALES}, "
                f"got {height} x {width}"
            )
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

        self.shape = (channels, height, width)
        self.transform = ScatteringTorch2D(J=SCALES, shape=(height, width))
        self.size = channels * COEFFICIENTS * math.prod(s // 2**SCALES for s in (height, width))

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        x = x.reshape(len(x), *self.shape).float()
        self.transform.to(x.device)  # (its filters follow the input)
        out = [self.transform(x[i : i + 1000]).flatten(1) for i in range(0, len(x), 1000)]
        z = torch.cat(out) if out else x.new_zeros(0, self.size)
        return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
