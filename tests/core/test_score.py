"""``polydiff.score.Score``: a float that keeps the reason it is NaN."""

from __future__ import annotations

import json
import math
import pickle

from polydiff.score import Score


def test_a_defined_score_is_a_plain_float():
    s = Score(1.25)
    assert s == 1.25 and s + 1 == 2.25 and s.reason is None
    assert repr(s) == "1.25" and f"{s:.1f}" == "1.2" and json.dumps(s) == "1.25"


def test_an_undefined_score_keeps_its_reason_through_pickle():
    s = Score.undefined("only one class present")
    assert math.isnan(s) and s.reason == "only one class present"
    assert "only one class present" in repr(s)
    back = pickle.loads(pickle.dumps(s))
    assert math.isnan(back) and back.reason == s.reason and isinstance(back, Score)
