import math

import pytest
import torch

from course_lib.perplexity import general_text, perplexity


class Uniform(torch.nn.Module):
    """Every next token equally likely: perplexity must equal the vocabulary size."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.p = vocab, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab) + self.p})()


class CharTokenizer:
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + (ord(c) % 50) for c in text]}


def test_a_uniform_model_scores_the_vocabulary_size():
    assert perplexity(Uniform(64), CharTokenizer(), ["こんにちは世界", "短い", "もう少し長い文です"]) == pytest.approx(64)


def test_a_model_that_knows_the_next_token_scores_near_one():
    class Oracle(Uniform):
        def forward(self, input_ids, attention_mask=None):
            logits = torch.full((*input_ids.shape, self.vocab), -50.0)
            nxt = torch.roll(input_ids, -1, dims=1)
            logits.scatter_(-1, nxt.unsqueeze(-1), 50.0)
            return type("Out", (), {"logits": logits})()

    assert perplexity(Oracle(64), CharTokenizer(), ["abcdef", "xyz"]) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="two or more tokens"):
        perplexity(Oracle(64), CharTokenizer(), ["a"])
    with pytest.raises(TypeError):
        perplexity(Oracle(64), CharTokenizer(), "a single string")


def test_general_text_is_a_fixed_slice_of_the_corpus():
    from course_lib.tiny_model import read_corpus

    corpus = read_corpus()
    assert general_text() == corpus[::10] and len(general_text()) == math.ceil(len(corpus) / 10)
