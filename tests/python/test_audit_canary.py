"""Tests of pydp_r.audit.canary: exposure, candidate scoring, and memorization with/without DP."""

import itertools
import math

import numpy as np
import pytest

from pydp_r.audit import canary

# Statistical, end-to-end or multi-process: the slow tier (`make test-fast` skips it).
pytestmark = pytest.mark.slow


def test_exposure_from_rank_spans_zero_to_log2_of_the_space():
    assert canary.exposure_from_rank(1, 1024) == pytest.approx(10.0)
    assert canary.exposure_from_rank(1024, 1024) == 0.0
    assert canary.exposure_from_rank(32, 1024) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="rank"):
        canary.exposure_from_rank(0, 1024)


def test_exposure_counts_candidates_below_the_canary():
    others = np.arange(1.0, 1024.0)  # 1023 other candidates
    assert canary.exposure(0.5, others) == pytest.approx(10.0)  # lowest of 1024: rank 1
    assert canary.exposure(5.5, others) == pytest.approx(10 - math.log2(6))  # 5 below
    # A uniformly random canary has rank uniform on 1..N: mean exposure about log2(e) bits
    # (Carlini et al. 2019); the sampled estimate from a tenth of the space agrees with the
    # exact exposure for a canary far in the tail.
    rng = np.random.default_rng(0)
    space = rng.normal(size=100_000)
    canary_value = np.quantile(space, 1e-3)
    others = space[space != canary_value]
    exact = canary.exposure(canary_value, others)
    sample = rng.choice(others, size=10_000, replace=False)
    estimated = canary.exposure(canary_value, sample, num_candidates=100_000)
    assert exact == pytest.approx(-math.log2(1e-3), abs=0.05)
    assert estimated == pytest.approx(exact, abs=0.6)
    random_ranks = [
        canary.exposure(value, np.delete(space[:2000], i)) for i, value in enumerate(space[:200])
    ]
    assert np.mean(random_ranks) == pytest.approx(math.log2(math.e), abs=0.25)
    with pytest.raises(ValueError, match="num_candidates"):
        canary.exposure(0.0, others, num_candidates=10)


def test_secret_log_perplexities_match_scoring_every_candidate_one_by_one():
    rng = np.random.default_rng(1)
    vocabulary, context_length = 6, 2
    # A fixed next-token table depending on the last two tokens: a stand-in model.
    table = np.log(rng.dirichlet(np.ones(vocabulary), size=(vocabulary, vocabulary)))

    def next_token_log_probs(contexts):
        return table[contexts[:, -2], contexts[:, -1]]

    prefix, secret_tokens, length = [4, 5, 1], [0, 2, 3], 4
    scores = canary.secret_log_perplexities(
        next_token_log_probs, prefix, secret_tokens, length, context_length
    )
    assert scores.shape == (3**4,)
    for index, secret in enumerate(itertools.product(secret_tokens, repeat=length)):
        tokens = list(prefix) + list(secret)
        expected = -sum(
            table[tokens[p - 2], tokens[p - 1], tokens[p]] for p in range(len(prefix), len(tokens))
        ) / math.log(2)
        assert scores[index] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="prefix_tokens"):
        canary.secret_log_perplexities(next_token_log_probs, [1], secret_tokens, length, 2)


def test_corpus_holds_the_canary_exactly_as_often_as_inserted():
    training, held_out = canary.make_canary_corpus(200, "48213", 3, seed=5)
    sentence = canary.CANARY_PREFIX + "48213."
    assert training.count(sentence) == 3
    assert canary.CANARY_PREFIX not in held_out
    assert set(training) <= set(canary.ALPHABET)
    assert "is " in training.replace(canary.CANARY_PREFIX, "")  # other numbers follow "is "
    with pytest.raises(ValueError, match="secret"):
        canary.make_canary_corpus(200, "48a13", 1)


def test_one_canary_is_memorized_without_dp_and_not_with_dp():
    settings = {
        "num_insertions": 1,
        "num_sentences": 800,
        "epochs": 15,
        "batch_size": 128,
        "noise_multiplier": 1.0,
        "seed": 0,
    }
    non_private = canary.canary_exposure_experiment(False, **settings)
    private = canary.canary_exposure_experiment(True, **settings)
    assert non_private.max_exposure == pytest.approx(math.log2(10**5))
    # Memorized: among the top few hundred of 100 000 candidates.
    assert non_private.exposure > 8.0
    # Not memorized: a rank like a random guess's (mean exposure about 1.4 bits).
    assert private.exposure < 4.0
    assert private.epsilon < 5.0
    assert non_private.epsilon == math.inf
    # The private model still learned the language: far above the 1/38 of guessing.
    assert private.validation_accuracy > 0.25
    with pytest.raises(ValueError, match="context_length"):
        canary.canary_exposure_experiment(False, context_length=20)
