"""A small token model for trying burden on something that is not an image network:

    burden estimate ./examples/tiny_lm.py:build --inputs 2x128:int64
    burden estimate ./examples/tiny_lm.py:build --inputs 2x128:int64 --mode training --layers --depth 1
"""

from torch import nn


class TinyLM(nn.Module):
    """Token embedding, two pre-norm transformer encoder layers, and a head tied to the embedding."""

    def __init__(self, vocab: int = 1000, width: int = 128, heads: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(self.norm(self.encoder(self.embed(tokens))))


def build() -> nn.Module:
    return TinyLM()
