"""Recurrent nets over sequences (RNN, LSTM or GRU by `cell`), and an LSTM encoder-decoder with attention."""

import torch
import torch.nn.functional as F
from torch import nn

_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class Recurrent(nn.Module):
    """Sequences (batch, length, in_features) -> (batch, out_features) read from the last step.

    A (batch, length) input is taken as one feature per step. The same net forecasts (out=1)
    or classifies whole sequences (out=num_classes).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        cell: str = "lstm",
        hidden: int = 64,
        layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ):
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell={cell!r}: choose one of {sorted(_CELLS)}")
        self.rnn = _CELLS[cell](
            in_features, hidden, num_layers=layers, batch_first=True,
            dropout=dropout if layers > 1 else 0.0, bidirectional=bidirectional,
        )
        width = hidden * (2 if bidirectional else 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        outputs, _ = self.rnn(x)
        if self.rnn.bidirectional:
            # The backward direction has read the whole sequence at step 0, the forward one at the end.
            half = outputs.shape[-1] // 2
            last = torch.cat([outputs[:, -1, :half], outputs[:, 0, half:]], dim=-1)
        else:
            last = outputs[:, -1]
        return self.head(last)


class Seq2SeqLSTM(nn.Module):
    """Encoder-decoder LSTM with Luong (dot-product) attention over the encoder's states.

    `forward(tokens, source)`: source (batch, S) and decoder inputs (batch, T) -> logits
    (batch, T, vocab_size), the interface the seq2seq task shares with the encoder-decoder
    transformer. The attention output is not fed back as input, so teacher-forced training runs
    the decoder over the whole target at once.
    """

    def __init__(self, vocab_size: int, hidden: int = 128, embed_dim: int = 64, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.encoder = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.decoder = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.combine = nn.Linear(2 * hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def encode(self, source: torch.Tensor):
        return self.encoder(self.dropout(self.embed(source)))

    def forward(self, tokens: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        memory, state = self.encode(source)
        decoded, _ = self.decoder(self.dropout(self.embed(tokens)), state)
        weights = F.softmax(decoded @ memory.transpose(1, 2) / memory.shape[-1] ** 0.5, dim=-1)
        context = weights @ memory
        return self.head(self.dropout(torch.tanh(self.combine(torch.cat([decoded, context], dim=-1)))))
