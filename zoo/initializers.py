"""Weight initializations of the zoo, each a registry entry `f(model) -> None` that re-initializes
the kernels of conv and linear layers in place (biases to zero); norm layers and embeddings keep
PyTorch's defaults."""

from typing import Callable

from torch import nn

from weightcast.zoo.registry import Registry

__all__ = ["INITIALIZERS", "initialize"]

Initializer = Callable[[nn.Module], None]
INITIALIZERS: Registry[Initializer] = Registry("initialization")

_KERNEL_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@INITIALIZERS.register("default", description="PyTorch's default init of each layer")
def default(model: nn.Module) -> None:
    pass


@INITIALIZERS.register("xavier", description="Glorot-uniform kernels, zero biases")
def xavier(model: nn.Module) -> None:
    _reinit_kernels(model, nn.init.xavier_uniform_)


@INITIALIZERS.register("he", description="He-normal (fan_in, ReLU) kernels, zero biases")
def he(model: nn.Module) -> None:
    _reinit_kernels(model, lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"))


def initialize(model: nn.Module, name: str) -> nn.Module:
    INITIALIZERS.get(name)(model)
    return model


def _reinit_kernels(model: nn.Module, init_kernel: Callable) -> None:
    for module in model.modules():
        if isinstance(module, _KERNEL_MODULES):
            init_kernel(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
