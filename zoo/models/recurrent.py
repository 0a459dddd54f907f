"""Recurrent classifiers of the zoo (`zoo.models`): a GRU or LSTM reads a signal (C, L) as L time
steps of C features and a linear layer classifies from the last layer's final hidden state.

Signals only: a token-classification task would need its vocabulary size, which `TaskSpec` does
not carry (its `num_outputs` is the vocabulary only for language modelling)."""

from __future__ import annotations

import torch
from torch import nn

from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.models.common import check_min, signal_steps
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["RecurrentClassifier", "gru", "lstm"]


class RecurrentClassifier(nn.Module):
    def __init__(self, rnn: nn.GRU | nn.LSTM, num_outputs: int):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, L) -> (N, L, C); h_n: (layers, N, hidden), the LSTM's is the first of (h_n, c_n)
        _, state = self.rnn(signal_steps(x))
        h_n = state[0] if isinstance(state, tuple) else state
        return self.head(h_n[-1])


@ARCHITECTURES.register("gru", inputs=("signal",), default_task="mnist1d")
def gru(spec: TaskSpec, hidden: int = 64, layers: int = 1) -> RecurrentClassifier:
    """GRU classifier with `layers` layers of `hidden` units."""
    check_min("gru", hidden=(hidden, 1), layers=(layers, 1))
    rnn = nn.GRU(spec.input_shape[0], hidden, layers, batch_first=True)
    return RecurrentClassifier(rnn, spec.num_outputs)


@ARCHITECTURES.register("lstm", inputs=("signal",), default_task="mnist1d")
def lstm(spec: TaskSpec, hidden: int = 64, layers: int = 1) -> RecurrentClassifier:
    """LSTM classifier with `layers` layers of `hidden` units."""
    check_min("lstm", hidden=(hidden, 1), layers=(layers, 1))
    rnn = nn.LSTM(spec.input_shape[0], hidden, layers, batch_first=True)
    return RecurrentClassifier(rnn, spec.num_outputs)
