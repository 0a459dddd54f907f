"""Data augmentations of the zoo: batch transforms `f(x, generator) -> x` applied by the training
loop to float inputs (standardized by the task), each a registry entry with the input kinds it suits."""

from typing import Callable

import torch

from weightcast.zoo.registry import Registry

__all__ = ["AUGMENTATIONS", "augmentation_inputs"]

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

# metadata: inputs (the input kinds it applies to)
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")

_NOISE_STD = 0.1  # inputs are standardized, so this is 10% of a feature's spread
_MAX_SHIFT = 2  # pixels / time steps


def augmentation_inputs(name: str) -> tuple[str, ...]:
    return AUGMENTATIONS.metadata(name)["inputs"]


@AUGMENTATIONS.register("none", inputs=("image", "signal", "tabular", "tokens"))
def none(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x


@AUGMENTATIONS.register("noise", inputs=("image", "signal", "tabular"))
def noise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise."""
    return x + _NOISE_STD * torch.randn(x.shape, generator=generator).to(x.device)


@AUGMENTATIONS.register("shift", inputs=("image", "signal"))
def shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random circular shift of the whole batch by up to 2 steps along each spatial/time axis."""
    dims = tuple(range(2, x.dim()))  # (N, C, L) -> (2,); (N, C, H, W) -> (2, 3)
    shifts = torch.randint(-_MAX_SHIFT, _MAX_SHIFT + 1, (len(dims),), generator=generator).tolist()
    return torch.roll(x, shifts=shifts, dims=dims)


@AUGMENTATIONS.register("flip", inputs=("image",))
def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal flip of each image with probability 1/2."""
    mask = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)  # (N,)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


@AUGMENTATIONS.register("shift-flip", inputs=("image",))
def shift_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shift, then random horizontal flip (the usual CIFAR recipe at small scale)."""
    return flip(shift(x, generator), generator)
