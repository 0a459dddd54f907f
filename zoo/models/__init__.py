"""The architectures of the zoo. Importing this package registers every family in
`ARCHITECTURES`; `create_model(name, spec, **kwargs)` builds one for a task."""

from weightcast.zoo.models import (  # noqa: F401  (imported to register their architectures)
    conv1d,
    convnets,
    densenet,
    lenet,
    mlp,
    mobilenet,
    recurrent,
    resnet,
    transformer,
    vgg,
)
from weightcast.zoo.models.base import ARCHITECTURES, count_parameters, create_model, is_compatible

__all__ = ["ARCHITECTURES", "create_model", "is_compatible", "count_parameters"]
