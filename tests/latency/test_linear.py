"""The qoserve-a100 step model against values computed by hand from the published coefficients."""

from __future__ import annotations

import numpy as np
import pytest

from slidingserve.latency import BatchShape, features_of_many, load_latency_model
from slidingserve.latency.linear import QOSERVE_A100, BinnedLinearConfig, BinnedLinearModel

# tokens_0_512 and tokens_513_plus of Niyama's DeadlineScheduler._predict_batch_time
SMALL = (0.014936, 5.882475e-05, 2.247956e-05, 3.634519e-05, 1.111258e-07, 7.554773e-07)
LARGE = (0.005004, 2.719050e-05, 6.863043e-05, -4.143993e-05, 1.663409e-07, 2.727223e-06)


def by_hand(P: int, D: int, DC: int, PC: int) -> float:
    T = P + D
    c = SMALL if T <= 512 else LARGE
    return c[0] + c[1] * T + c[2] * P + c[3] * D + c[4] * DC + c[5] * PC


@pytest.mark.parametrize(
    ("prefill", "decode_kv"),
    [
        (((256, 1000),), ()),  # one chunk after 1000 computed tokens
        ((), (100, 200, 300)),  # decode only (contexts = tokens in KV before the step)
        (((100, 0),), (50,) * 412),  # T = 512: still the small bin
        (((101, 0),), (50,) * 412),  # T = 513: the large bin
        (((2048, 3000),), tuple(range(1, 65))),
    ],
)
def test_matches_the_published_coefficients(prefill, decode_kv) -> None:
    model = load_latency_model("qoserve-a100")
    # The feature schema counts the token a decode writes: its context is KV + 1.
    shape = BatchShape(prefill=prefill, decode_ctx=tuple(c + 1 for c in decode_kv))
    P = sum(c for c, _ in prefill)
    PC = sum(d for _, d in prefill)
    expected = by_hand(P, len(decode_kv), sum(decode_kv), PC)
    assert model.predict(shape) == pytest.approx(expected, rel=1e-12)
    assert model.predict_many([shape, shape]) == pytest.approx([expected, expected], rel=1e-12)


def test_several_chunks_read_as_equal_chunks() -> None:
    # Exact for equal chunks; otherwise PC is recovered as if the chunks were equal.
    model = BinnedLinearModel(QOSERVE_A100)
    equal = BatchShape(prefill=((128, 500), (128, 700)))
    assert model.predict(equal) == pytest.approx(by_hand(256, 0, 0, 1200), rel=1e-12)
    X = features_of_many([BatchShape(prefill=((200, 1000), (56, 0)))])
    work = 200 * (1000 + 100) + 56 * 28
    assert model.terms(X)[0, 5] == pytest.approx(2 * work / 256 - 128)  # exact PC: 1000
    whole = features_of_many([BatchShape(prefill=((2000, 0), (500, 0)))])
    assert model.terms(whole)[0, 5] >= 0.0


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="only the last bin may be unbounded"):
        BinnedLinearConfig(bins=(QOSERVE_A100.bins[1], QOSERVE_A100.bins[0]))
    with pytest.raises(ValueError, match="neither a known name"):
        load_latency_model("no-such-model")
    assert np.all(BinnedLinearModel().predict_features(np.zeros((2, 7))) > 0)
