"""Vectorised random layouts shared by the tasks. Every draw goes through the caller's generator, on its device."""

from __future__ import annotations

import torch


def randint(low: int, high: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniform ids in [low, high)."""
    return torch.randint(low, high, shape, generator=generator, device=generator.device)


def uniform(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device)


def random_subset(batch: int, n: int, k: int, generator: torch.Generator, *, ordered: bool = True) -> torch.Tensor:
    """k distinct indices in [0, n) per row, uniform over subsets: (batch, k) long.

    Increasing along k when `ordered`, else in uniformly random order.
    """
    picks = uniform((batch, n), generator).topk(k, dim=1).indices  # (batch, k), random order
    return picks.sort(dim=1).values if ordered else picks


def random_permutation(batch: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return uniform((batch, n), generator).argsort(dim=1)  # (batch, n)


def place_blocks(batch: int, length: int, num_blocks: int, block_len: int, generator: torch.Generator) -> torch.Tensor:
    """Start positions of `num_blocks` non-overlapping blocks of `block_len` tokens in `length`: (batch, m), increasing.

    Uniform over all arrangements: see the line as `length - m * block_len` free tokens plus m blocks, i.e. n units
    of which a uniform m-subset are blocks; block i (the i-th chosen unit c_i) starts at c_i + (block_len - 1) * i.
    """
    units = length - num_blocks * (block_len - 1)
    chosen = random_subset(batch, units, num_blocks, generator)  # (batch, m)
    shift = torch.arange(num_blocks, device=chosen.device) * (block_len - 1)  # (m,)
    return chosen + shift


def write_blocks(tokens: torch.Tensor, starts: torch.Tensor, blocks: torch.Tensor) -> None:
    """tokens[i, starts[i, j] + w] = blocks[i, j, w], in place. tokens (b, l), starts (b, m), blocks (b, m, w)."""
    width = blocks.shape[-1]
    index = starts.unsqueeze(-1) + torch.arange(width, device=starts.device)  # (b, m, w)
    tokens.scatter_(1, index.flatten(1), blocks.flatten(1))


def filler_text(
    batch: int,
    length: int,
    first_word: int,
    num_words: int,
    period: int,
    mean_sentence_len: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Sentences of uniform filler words ids [first_word, first_word + num_words) ended by `period`: (batch, length).

    Each token is a period with probability 1 / mean_sentence_len (sentence lengths about geometric), except right
    after a period: no empty sentences.
    """
    words = randint(first_word, first_word + num_words, (batch, length), generator)  # (batch, length)
    ends = uniform((batch, length), generator) < 1.0 / mean_sentence_len  # (batch, length)
    ends[:, 1:] &= ~ends[:, :-1]
    return words.masked_fill(ends, period)


def end_sentences_before(tokens: torch.Tensor, starts: torch.Tensor, period: int) -> None:
    """Put a period just before each block start, in place, so a block inserted into filler text begins a sentence.

    Call before `write_blocks`: the blocks then overwrite any period that lands inside one (at position 0, or at the
    last token of a block right before another).
    """
    before = (starts - 1).clamp(min=0)
    tokens.scatter_(1, before, torch.full_like(before, period))
