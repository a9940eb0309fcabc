"""Memorization of inserted canaries: the Secret Sharer exposure metric (Carlini et al. 2019).

A random secret ("my secret is 48213") is inserted into a training corpus. After training, every
candidate secret of the same format is ranked by the model's log-perplexity of it after the
prefix; the exposure of the inserted secret is `log2(number of candidates) - log2(its rank)`.
Unmemorized, the secret's rank is uniform and its exposure about 1 bit on average; fully
memorized, it ranks first and the exposure reaches `log2(number of candidates)` (16.6 bits for
five digits).

This module has the metric (exact rank over all candidates when the space is small enough,
estimated from random candidates otherwise) and a complete small experiment: a character-level
next-character model on a generated corpus, trained with and without DP-SGD.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from pydp_r._checks import check_count, check_real

# The experiment's corpus: sentences of these words, some ending in "is" and a random number,
# so the model learns that digits follow "is " but, without memorizing, not which digits.
_WORDS = (
    "the a one two red blue old new big small data model train test sample value heart rate "
    "beat signal sensor wrist watch step walk run sit rest day night hour minute record "
    "level mean noise clip batch epoch loss"
).split()
CANARY_PREFIX = "my secret is "
DIGITS = "0123456789"
ALPHABET = " ." + "abcdefghijklmnopqrstuvwxyz" + DIGITS


def exposure_from_rank(rank: float, num_candidates: float) -> float:
    """Exposure of a secret ranked `rank` among `num_candidates` (Carlini et al. 2019, Def. 2).

    Args:
        rank: The secret's rank, 1 = most likely, in [1, num_candidates].
        num_candidates: Size of the candidate space, >= 1.

    Returns:
        `log2(num_candidates) - log2(rank)` in bits, in [0, log2(num_candidates)].

    Raises:
        ValueError: For a rank outside [1, num_candidates].
    """
    if not (num_candidates >= 1 and math.isfinite(num_candidates)):
        raise ValueError(
            f"num_candidates must be a finite number >= 1; received {num_candidates!r}."
        )
    if not 1 <= rank <= num_candidates:
        raise ValueError(
            f"rank must be in [1, num_candidates] = [1, {num_candidates:g}]; received {rank!r}."
        )
    return math.log2(num_candidates) - math.log2(rank)


def exposure(
    canary_log_perplexity: float,
    candidate_log_perplexities: Any,
    num_candidates: float | None = None,
) -> float:
    """Exposure of a canary from its log-perplexity and that of other candidate secrets.

    Args:
        canary_log_perplexity: The inserted secret's log-perplexity (bits; lower = likelier).
        candidate_log_perplexities: Log-perplexities of the other candidates: all of them
            (exact rank) or a uniform random sample of them (estimated rank).
        num_candidates: Size of the whole candidate space, canary included. None means the
            given candidates plus the canary are the whole space.

    Returns:
        Exposure in bits. With all candidates, the rank is 1 + the number with strictly lower
        log-perplexity. With a sample of m, the fraction of the space below the canary is
        estimated as (count below + 1) / (m + 1), which never claims more than log2(m + 1)
        bits (rank-based estimate of Carlini et al. 2019, Section 4.2).

    Raises:
        ValueError: For an empty candidate set or a space smaller than the candidates given.
    """
    others = np.asarray(candidate_log_perplexities, dtype=np.float64).reshape(-1)
    if others.size < 1 or not np.all(np.isfinite(others)):
        raise ValueError(
            "candidate_log_perplexities must hold at least one finite number; received "
            f"{others.size} values."
        )
    lower = int(np.sum(others < canary_log_perplexity))
    if num_candidates is None or num_candidates == others.size + 1:
        return exposure_from_rank(1 + lower, others.size + 1)
    if num_candidates < others.size + 1:
        raise ValueError(
            f"num_candidates must be at least the {others.size + 1} candidates given (the "
            f"canary included); received {num_candidates!r}."
        )
    return -math.log2((lower + 1) / (others.size + 1))


def secret_log_perplexities(
    next_token_log_probs: Callable[[np.ndarray], np.ndarray],
    prefix_tokens: Sequence[int],
    secret_tokens: Sequence[int],
    secret_length: int,
    context_length: int,
) -> np.ndarray:
    """Log-perplexity (bits) of every secret `secret_tokens ** secret_length` after a prefix.

    The candidates form a tree: all secrets sharing their first i tokens share the model's
    prediction for token i + 1, so one model call per tree level scores the whole space
    (`sum_i |secret_tokens|^i` contexts instead of `length * |secret_tokens|^length`).

    Args:
        next_token_log_probs: Maps int contexts of shape `(rows, context_length)` to natural
            log-probabilities of the next token, shape `(rows, vocabulary size)`.
        prefix_tokens: Tokens before the secret, at least `context_length` of them.
        secret_tokens: The tokens a secret is made of (e.g. the ten digits), at least 2.
        secret_length: Tokens per secret, integer >= 1.
        context_length: Tokens the model sees, integer >= 1.

    Returns:
        Array of `len(secret_tokens) ** secret_length` log-perplexities in bits, in
        lexicographic order of the secrets (index = the secret read as a base-|alphabet|
        number).

    Raises:
        ValueError: For an argument outside its range.
    """
    secret_length = check_count("secret_length", secret_length)
    context_length = check_count("context_length", context_length)
    if len(prefix_tokens) < context_length:
        raise ValueError(
            f"prefix_tokens must hold at least context_length={context_length} tokens; "
            f"received {len(prefix_tokens)}."
        )
    alphabet = np.asarray(secret_tokens, dtype=np.int64)
    if alphabet.size < 2:
        raise ValueError(f"secret_tokens must hold at least 2 tokens; received {alphabet.size}.")
    sequences = np.asarray(prefix_tokens, dtype=np.int64)[None, :]
    totals = np.zeros(1)
    for _ in range(secret_length):
        log_probs = np.asarray(next_token_log_probs(sequences[:, -context_length:]))
        step = -log_probs[:, alphabet] / math.log(2)
        totals = (totals[:, None] + step).reshape(-1)
        sequences = np.concatenate(
            [
                np.repeat(sequences, alphabet.size, axis=0),
                np.tile(alphabet, sequences.shape[0])[:, None],
            ],
            axis=1,
        )
    return totals


@dataclasses.dataclass(frozen=True)
class ExposureRun:
    """One training run of `canary_exposure_experiment`.

    Attributes:
        private: True for DP-SGD (DPAdam), False for plain Adam.
        num_insertions: Times the canary sentence was inserted into the corpus.
        exposure: The canary's exposure in bits (exact rank over all candidates).
        max_exposure: `log2(number of candidates)`, the exposure of a rank-1 secret.
        rank: The canary's rank among all candidates (1 = most likely).
        epsilon: Example-level epsilon of the private run (RDP accountant, Poisson sampling
            assumed) at `delta`, or `math.inf` for the non-private run.
        delta: The delta of `epsilon`.
        validation_accuracy: Next-character accuracy on held-out text without the canary.
        wall_seconds: Time the training took.
    """

    private: bool
    num_insertions: int
    exposure: float
    max_exposure: float
    rank: int
    epsilon: float
    delta: float
    validation_accuracy: float
    wall_seconds: float

    def summary(self) -> str:
        """One line describing the run."""
        kind = "DP-SGD" if self.private else "non-private"
        return (
            f"{kind:>11}: canary inserted {self.num_insertions}x, exposure "
            f"{self.exposure:5.2f} of {self.max_exposure:.2f} bits (rank {self.rank}), "
            f"epsilon {self.epsilon:.3g} at delta={self.delta:g}, held-out next-char accuracy "
            f"{self.validation_accuracy:.3f}, {self.wall_seconds:.0f} s"
        )


def make_canary_corpus(
    num_sentences: int, secret: str, num_insertions: int, seed: int = 0
) -> tuple[str, str]:
    """A generated training text with the canary sentence inserted, and held-out text.

    Args:
        num_sentences: Sentences of generated text (3 to 7 words, a third of them ending
            "... is NNNNN" with a random number as long as the secret), integer >= 10.
        secret: The canary's digits, e.g. "48213".
        num_insertions: Copies of "my secret is <secret>." inserted at random sentence
            boundaries, integer >= 0.
        seed: Seeds the generator.

    Returns:
        `(training_text, held_out_text)`; the held-out text has a tenth as many sentences
        and never the canary.

    Raises:
        ValueError: For an argument outside its range or a secret with non-digits.
    """
    num_sentences = check_count("num_sentences", num_sentences, 10)
    num_insertions = check_count("num_insertions", num_insertions, 0)
    if not secret or any(character not in DIGITS for character in secret):
        raise ValueError(f"secret must be a non-empty string of digits; received {secret!r}.")
    rng = np.random.default_rng(seed)

    def sentences(count: int) -> list[str]:
        result = []
        for _ in range(count):
            words = list(rng.choice(_WORDS, size=int(rng.integers(3, 8))))
            if rng.random() < 1 / 3:
                number = "".join(rng.choice(list(DIGITS), size=len(secret)))
                words += ["is", number]
            result.append(" ".join(words) + ". ")
        return result

    training = sentences(num_sentences)
    for _ in range(num_insertions):
        training.insert(int(rng.integers(0, len(training) + 1)), f"{CANARY_PREFIX}{secret}. ")
    return "".join(training), "".join(sentences(max(10, num_sentences // 10)))


def _encode(text: str) -> np.ndarray:
    index = {character: i for i, character in enumerate(ALPHABET)}
    return np.array([index[character] for character in text], dtype=np.int32)


def _windows(tokens: np.ndarray, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (previous `context_length` tokens, next token) pair of a token stream."""
    starts = np.arange(tokens.size - context_length)
    x = tokens[starts[:, None] + np.arange(context_length)[None, :]]
    return x, tokens[starts + context_length]


def character_model(context_length: int, hidden_units: int = 256) -> keras.Model:
    """Small next-character model: embedding, one hidden Dense layer, logits over `ALPHABET`."""
    return keras.Sequential(
        [
            keras.Input((context_length,), dtype="int32"),
            keras.layers.Embedding(len(ALPHABET), 16),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden_units, activation="relu"),
            keras.layers.Dense(len(ALPHABET)),
        ]
    )


def canary_exposure_experiment(
    private: bool,
    num_insertions: int = 1,
    num_sentences: int = 3000,
    epochs: int = 20,
    batch_size: int = 256,
    noise_multiplier: float = 0.7,
    l2_norm_clip: float = 1.0,
    learning_rate: float | None = None,
    secret_length: int = 5,
    context_length: int = 12,
    delta: float = 1e-5,
    seed: int = 0,
) -> ExposureRun:
    """Train a character model on a corpus with an inserted canary and measure its exposure.

    The same corpus, canary and initialization are used for the private and the non-private
    run (for one `seed`), so two calls differing only in `private` compare like with like.
    The training examples are the corpus' (context, next character) windows; DP-SGD protects
    each window, and one inserted canary sentence spans about `context_length +
    secret_length` windows, so its group-level protection is weaker than the example-level
    epsilon reported.

    Args:
        private: True trains with `pydp_r.DPAdam`, False with `keras.optimizers.Adam`.
        num_insertions: Copies of the canary sentence in the corpus, integer >= 1.
        num_sentences: Generated sentences, integer >= 10.
        epochs: Passes over the corpus, integer >= 1.
        batch_size: Windows per step, integer >= 1.
        noise_multiplier: Noise std over `l2_norm_clip` for the private run, > 0.
        l2_norm_clip: Per-example clipping bound of the private run, > 0.
        learning_rate: Adam's learning rate; None picks 1e-3 (non-private) or 1e-2 (private:
            DP training tolerates, and needs, a larger step, as the R walkthrough notes).
        secret_length: Digits in the secret, integer in [1, 6]; the candidate space is the
            `10 ** secret_length` digit strings, all scored exactly.
        context_length: Characters the model sees, integer in [1, 13] (the prefix "my secret
            is " is 13 characters, so every context stays inside the canary's own prefix).
        delta: Delta of the reported epsilon, in (0, 1).
        seed: Seeds the corpus, the secret, the weights and the noise.

    Returns:
        An `ExposureRun`.

    Raises:
        ValueError: For an argument outside its range.
    """
    from pydp_r.data.sampling import poisson_batches
    from pydp_r.optimizers import DPAdam

    num_insertions = check_count("num_insertions", num_insertions)
    epochs = check_count("epochs", epochs)
    batch_size = check_count("batch_size", batch_size)
    secret_length = check_count("secret_length", secret_length)
    context_length = check_count("context_length", context_length)
    delta = check_real("delta", delta, "a number in the open interval (0, 1)", lambda x: 0 < x < 1)
    if secret_length > 6:
        raise ValueError(f"secret_length must be an integer in [1, 6]; received {secret_length}.")
    if context_length > len(CANARY_PREFIX):
        raise ValueError(
            f"context_length must be an integer in [1, {len(CANARY_PREFIX)}]; received "
            f"{context_length}."
        )
    rng = np.random.default_rng(seed)
    secret = "".join(rng.choice(list(DIGITS), size=secret_length))
    training_text, held_out_text = make_canary_corpus(num_sentences, secret, num_insertions, seed)
    x_train, y_train = _windows(_encode(training_text), context_length)
    x_held_out, y_held_out = _windows(_encode(held_out_text), context_length)

    keras.utils.set_random_seed(seed)
    model = character_model(context_length)
    if private:
        # An experiment, not a release: the noise is seeded so that a run can be repeated.
        optimizer: keras.optimizers.Optimizer = DPAdam(
            l2_norm_clip=l2_norm_clip,
            noise_multiplier=noise_multiplier,
            learning_rate=1e-2 if learning_rate is None else learning_rate,
            noise_seed=seed,
        )
        epsilon = math.nan  # the ledger's figure for what ran, after training
    else:
        optimizer = keras.optimizers.Adam(1e-3 if learning_rate is None else learning_rate)
        epsilon = math.inf
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    if private:
        # Poisson batches, so that the epsilon (the ledger's) is the amplified one.
        rate = batch_size / x_train.shape[0]
        batches = poisson_batches((x_train, y_train), sampling_rate=rate, seed=seed)
        model.fit(batches, epochs=epochs, verbose=0)
        epsilon = optimizer.privacy_ledger.epsilon(delta)
    else:
        model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    wall_seconds = time.perf_counter() - start
    validation_accuracy = float(
        model.evaluate(x_held_out, y_held_out, verbose=0, return_dict=True)["accuracy"]
    )

    def next_token_log_probs(contexts: np.ndarray) -> np.ndarray:
        logits = model.predict(contexts.astype(np.int32), batch_size=4096, verbose=0)
        return np.asarray(keras.ops.convert_to_numpy(keras.ops.log_softmax(logits, axis=-1)))

    log_perplexities = secret_log_perplexities(
        next_token_log_probs,
        _encode(CANARY_PREFIX),
        _encode(DIGITS),
        secret_length,
        context_length,
    )
    secret_index = int(secret)
    others = np.delete(log_perplexities, secret_index)
    rank = 1 + int(np.sum(others < log_perplexities[secret_index]))
    return ExposureRun(
        private=bool(private),
        num_insertions=num_insertions,
        exposure=exposure_from_rank(rank, log_perplexities.size),
        max_exposure=math.log2(log_perplexities.size),
        rank=rank,
        epsilon=float(epsilon),
        delta=float(delta),
        validation_accuracy=validation_accuracy,
        wall_seconds=wall_seconds,
    )
