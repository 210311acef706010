"""Editing masks and STMC timelines: channel ownership, timeline checks, per-step composition.

The channel lists are checked against the feature layout by hand (joint ``j >= 1`` at
``4 + 3 (j - 1)``, ``67 + 6 (j - 1)``, velocities at ``193 + 3 j``, contacts at 259..262). The
composer is driven by fake x0-denoisers whose output is known in closed form (the crop times
the prompt's first embedding value), so the stitched estimate can be computed by hand frame by
frame and channel by channel.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from polydiff.schedules import VPCosine  # noqa: E402
from polydiff_motion.control import (  # noqa: E402
    PART_GROUPS,
    TIMELINE_PARTS,
    TimelineComposer,
    TimelineError,
    body_part_known,
    feature_channels,
    inbetween_known,
    parse_timeline,
    part_channels,
    read_timeline,
)
from polydiff_motion.features import FEATURE_DIM  # noqa: E402

ALL = list(range(FEATURE_DIM))


# --- channels ------------------------------------------------------------------------------------
def test_feature_channels_of_the_pelvis_by_hand():
    # Root rotation velocity, linear velocity (x, z), height and the pelvis's own velocity.
    assert feature_channels([0]) == [0, 1, 2, 3, 193, 194, 195]


def test_feature_channels_of_a_knee_by_hand():
    # Joint 5 (right knee): positions 4 + 12, rotations 67 + 24, velocities 193 + 15; no contact.
    assert feature_channels([5]) == [16, 17, 18, *range(91, 97), 208, 209, 210]


def test_feature_channels_of_the_feet_include_their_contacts():
    assert feature_channels([7]) == [22, 23, 24, *range(103, 109), 214, 215, 216, 259]
    assert feature_channels([10])[-1] == 260
    assert feature_channels([8])[-1] == 261
    assert feature_channels([11]) == [*range(34, 37), *range(127, 133), 226, 227, 228, 262]


def test_feature_channels_of_the_last_wrist_and_order():
    assert feature_channels([21]) == [64, 65, 66, *range(187, 193), 256, 257, 258]
    assert feature_channels([21, 0, 21]) == sorted(feature_channels([0]) + feature_channels([21]))


@pytest.mark.parametrize("joint", [-1, 22])
def test_feature_channels_refuses_joints_outside_the_skeleton(joint):
    with pytest.raises(ValueError, match="22 SMPL joints"):
        feature_channels([joint])


def test_all_joints_own_every_channel_once():
    assert feature_channels(range(22)) == ALL


def test_timeline_parts_partition_the_joints_and_the_channels():
    joints = sorted(j for part in TIMELINE_PARTS.values() for j in part)
    assert joints == list(range(22))
    seen: list[int] = []
    for name in TIMELINE_PARTS:
        seen += part_channels([name])
    assert sorted(seen) == ALL  # disjoint and complete


def test_part_groups_expand():
    upper, lower = part_channels(["upper_body"]), part_channels(["lower_body"])
    assert not set(upper) & set(lower)
    assert sorted(upper + lower) == ALL
    assert part_channels(["full_body"]) == ALL
    assert part_channels(["arms"]) == sorted(part_channels(["left_arm"]) + part_channels(["right_arm"]))
    assert part_channels(["legs", "lower_body"]) == lower
    assert set(PART_GROUPS["full_body"]) == set(TIMELINE_PARTS)


def test_part_channels_names_the_valid_parts_when_one_is_wrong():
    with pytest.raises(TimelineError, match="unknown body part 'tail'.*legs.*upper_body"):
        part_channels(["tail"])


# --- editing masks -------------------------------------------------------------------------------
def test_inbetween_known_keeps_the_first_and_last_valid_frames():
    source = torch.randn(2, 10, FEATURE_DIM)
    values, mask = inbetween_known(source, torch.tensor([10, 7]), 2, 3)
    assert values is source
    assert mask.shape == (2, 10, 1) and mask.dtype == torch.bool
    assert mask[0, :, 0].tolist() == [True, True, False, False, False, False, False, True, True, True]
    assert mask[1, :, 0].tolist() == [True, True, False, False, True, True, True, False, False, False]


def test_inbetween_known_with_nothing_kept_at_one_end():
    _, mask = inbetween_known(torch.zeros(1, 6, FEATURE_DIM), torch.tensor([6]), 0, 1)
    assert mask[0, :, 0].tolist() == [False] * 5 + [True]


def test_inbetween_known_refuses_to_keep_everything():
    with pytest.raises(ValueError, match="leaves nothing to generate.*7 frames"):
        inbetween_known(torch.zeros(2, 10, FEATURE_DIM), torch.tensor([10, 7]), 4, 3)
    with pytest.raises(ValueError, match="non-negative"):
        inbetween_known(torch.zeros(1, 10, FEATURE_DIM), torch.tensor([10]), -1, 3)


def test_body_part_known_keeps_the_parts_channels_on_valid_frames():
    source = torch.randn(2, 5, FEATURE_DIM)
    values, mask = body_part_known(source, torch.tensor([5, 3]), ["lower_body"])
    assert values is source and mask.shape == (2, 5, FEATURE_DIM) and mask.dtype == torch.bool
    legs = part_channels(["legs"])
    expected = torch.zeros(FEATURE_DIM, dtype=torch.bool)
    expected[legs] = True
    assert torch.equal(mask[0], expected.expand(5, -1))
    assert torch.equal(mask[1, :3], expected.expand(3, -1))
    assert not mask[1, 3:].any()


def test_body_part_known_refuses_unknown_parts():
    with pytest.raises(TimelineError, match="unknown body part"):
        body_part_known(torch.zeros(1, 4, FEATURE_DIM), torch.tensor([4]), ["wings"])


# --- timelines -----------------------------------------------------------------------------------
def _timeline(*intervals, **extra):
    return {"intervals": [dict(i) for i in intervals], **extra}


WALK = {"text": "a person walks forward", "start": 0.0, "end": 6.0, "body_parts": ["legs"]}
WAVE = {"text": "a person waves", "start": 1.0, "end": 4.0, "body_parts": ["right_arm"]}
RAISE = {"text": "a person raises both arms", "start": 4.0, "end": 6.0, "body_parts": ["upper_body"]}


def test_parse_timeline_reads_the_documented_example():
    timeline = parse_timeline(_timeline(WALK, WAVE, RAISE, duration=6.0))
    assert timeline.duration == 6.0
    assert [i.parts for i in timeline.intervals] == [("legs",), ("right_arm",),
                                                      ("head", "left_arm", "right_arm", "spine")]
    assert timeline.frames(20) == 120
    assert timeline.frame_range(timeline.intervals[1], 20) == (20, 80)
    assert timeline.joined_text == "a person walks forward and a person waves and a person raises both arms"


def test_parse_timeline_defaults():
    timeline = parse_timeline(_timeline({"text": " jump ", "start": 0, "end": 2.5},
                                        {"text": "jump", "start": 2.5, "end": 3, "body_parts": "legs"}))
    assert timeline.duration == 3.0  # the latest end
    assert timeline.intervals[0].parts == tuple(TIMELINE_PARTS)  # full body
    assert timeline.intervals[0].text == "jump"
    assert timeline.intervals[1].parts == ("legs",)
    assert timeline.joined_text == "jump"  # repeated prompts once


def test_touching_intervals_and_overlaps_on_other_parts_are_allowed():
    a = {"text": "a", "start": 0, "end": 2, "body_parts": ["legs"]}
    b = {"text": "b", "start": 2, "end": 4, "body_parts": ["legs"]}
    c = {"text": "c", "start": 1, "end": 3, "body_parts": ["arms"]}
    assert len(parse_timeline(_timeline(a, b, c)).intervals) == 3


@pytest.mark.parametrize(
    "data, pattern",
    [
        ([], r"JSON object with 'intervals'"),
        ({"intervals": []}, r"'intervals' must be a non-empty list"),
        ({"intervals": ["walk"]}, r"intervals\[0\] must be an object"),
        (_timeline(WALK, {"text": "  ", "start": 0, "end": 1}), r"intervals\[1\]: field 'text' must be a non-empty"),
        (_timeline({"text": "x", "end": 1}), r"intervals\[0\]: missing field 'start'"),
        (_timeline({"text": "x", "start": "soon", "end": 1}),
         r"intervals\[0\]: fields 'start' and 'end' must be numbers"),
        (_timeline({"text": "x", "start": -1, "end": 1}), r"intervals\[0\]: need 0 <= start < end"),
        (_timeline(WALK, {"text": "x", "start": 2, "end": 2}),
         r"intervals\[1\]: need 0 <= start < end.*start=2.0, end=2.0"),
        (_timeline(WALK, {"text": "x", "start": 3, "end": 1}), r"intervals\[1\]: need 0 <= start < end"),
        (_timeline({"text": "x", "start": 0, "end": 1, "body_parts": []}), r"intervals\[0\]: field 'body_parts'"),
        (_timeline(WALK, {"text": "x", "start": 0, "end": 1, "body_parts": ["tail"]}),
         r"intervals\[1\]: unknown body part 'tail'"),
        (_timeline(WALK, WAVE, duration=5.0), r"intervals\[0\] ends at 6.0 s, after the duration 5.0 s"),
        (_timeline(WALK, duration="long"), r"field 'duration' must be a number"),
        (_timeline(WALK, duration=0), r"field 'duration' must be positive"),
        (_timeline(WALK, {"text": "x", "start": 5.5, "end": 7, "body_parts": ["lower_body"]}),
         r"intervals\[0\] and intervals\[1\] both drive legs between 5.5 s and 6.0 s"),
        (_timeline(WAVE, RAISE, {"text": "y", "start": 3, "end": 5, "body_parts": ["arms"]}),
         r"intervals\[0\] and intervals\[2\] both drive right_arm between 3.0 s and 4.0 s"),
    ],
)
def test_parse_timeline_errors_name_the_source_and_interval(data, pattern):
    with pytest.raises(TimelineError, match=r"^walk\.json: " + ".*" + pattern):
        parse_timeline(data, "walk.json")


def test_parse_timeline_refuses_durations_beyond_the_model():
    with pytest.raises(TimelineError, match=r"t\.json: the duration 6.0 s is longer than the model's 5.0 s"):
        parse_timeline(_timeline(WALK), "t.json", max_seconds=5.0)
    assert parse_timeline(_timeline(WALK), max_seconds=6.0).duration == 6.0


def test_read_timeline_names_the_file(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_timeline(WALK, WAVE)))
    assert len(read_timeline(good).intervals) == 2

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_timeline(WALK, {"text": "", "start": 0, "end": 1})))
    with pytest.raises(TimelineError, match=rf"^{bad}: intervals\[1\]: field 'text'"):
        read_timeline(bad)

    late = tmp_path / "late.json"
    late.write_text(json.dumps(_timeline(WAVE, duration=3.0)))
    with pytest.raises(TimelineError, match=rf"^{late}: intervals\[0\] ends at 4.0 s"):
        read_timeline(late)

    long = tmp_path / "long.json"
    long.write_text(json.dumps(_timeline(WALK)))
    with pytest.raises(TimelineError, match=rf"^{long}: the duration 6.0 s is longer"):
        read_timeline(long, max_seconds=4.9)

    text = tmp_path / "notes.json"
    text.write_text("walk, then wave\n")
    with pytest.raises(TimelineError, match=rf"^{text}: not valid JSON \(line 1"):
        read_timeline(text)

    with pytest.raises(TimelineError, match=rf"^{tmp_path / 'missing.json'}: cannot read"):
        read_timeline(tmp_path / "missing.json")


# --- the composer --------------------------------------------------------------------------------
class ScaleByPrompt:
    """A fake x0-denoiser: each crop times the first value of its prompt's embedding.

    The unconditional call (text zeroed by the core's ``drop_condition``) returns zeros, so
    with guidance ``g`` the composed estimate of a crop is ``g * crop * value``.
    """

    prediction = "x0"

    def __init__(self):
        self.seen = []

    def __call__(self, x, t, cond):
        self.seen.append({"x": x.clone(), "t": t.clone(), "text": cond["text"].clone(), "mask": cond["mask"].clone()})
        return x * cond["text"][:, :1, None]


def _legs_timeline():
    """Two legs-only prompts back to back (0-1 s, 1-2 s) and a right-arm prompt over the seam
    (0.5-1.5 s), in a 3 s timeline (the last second covered by nothing)."""
    return parse_timeline(_timeline({"text": "a", "start": 0.0, "end": 1.0, "body_parts": ["legs"]},
                                    {"text": "b", "start": 1.0, "end": 2.0, "body_parts": ["legs"]},
                                    {"text": "c", "start": 0.5, "end": 1.5, "body_parts": ["right_arm"]},
                                    duration=3.0))


FPS, MARGIN = 10.0, 0.2  # 30 frames; margins of 2 frames
VALUES = torch.tensor([1.0, 2.0, 3.0])  # the prompts' first embedding values


def _composer(denoiser, guidance=1.0, batch=1):
    embeddings = torch.cat((VALUES[:, None], torch.zeros(3, 3)), dim=1)
    return TimelineComposer(denoiser, None, _legs_timeline(), embeddings, FPS, guidance=guidance, margin=MARGIN,
                            batch=batch)


def _info(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 30, FEATURE_DIM, generator=g) + 0.5
    denoised = torch.full_like(x, -7.0)
    return SimpleNamespace(index=0, steps=5, t=torch.full((1, 1, 1), 0.6), t_next=torch.full((1, 1, 1), 0.4),
                           x=x, denoised=denoised)


def _frame_weights():
    """Hand-computed per-frame weights (before normalisation) of each interval, 2-frame margins."""
    a = [1.0] * 10 + [2 / 3, 1 / 3] + [0.0] * 18
    b = [0.0] * 8 + [1 / 3, 2 / 3] + [1.0] * 10 + [2 / 3, 1 / 3] + [0.0] * 8
    c = [0.0] * 3 + [1 / 3, 2 / 3] + [1.0] * 10 + [2 / 3, 1 / 3] + [0.0] * 13
    return torch.tensor([a, b, c])


def test_composer_crops_and_prompt_batching():
    fake = ScaleByPrompt()
    composer = _composer(fake)
    assert composer.crops == [(0, 12), (8, 22), (3, 17)]
    info = _info(batch=2)
    composer(info)
    (call,) = fake.seen
    assert call["x"].shape == (6, 14, FEATURE_DIM)  # 2 samples x 3 intervals, the longest crop
    assert call["text"][:, 0].tolist() == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    assert call["mask"].sum(1).tolist() == [12, 14, 14, 12, 14, 14]
    assert torch.equal(call["x"][4, :14], info.x[1, 8:22])
    assert not call["x"][0, 12:].any()  # padding of the shorter crop
    assert torch.allclose(call["t"], torch.full((6,), 0.6))


def _expected_weights():
    """Hand-computed stitching weights of intervals a, b, c and of the sampler's own estimate,
    for the legs, the right arm and the parts no prompt drives (head, left arm, spine)."""
    third = 1 / 3
    legs_a = [1.0] * 8 + [3 / 4, 3 / 5, 2 / 5, 1 / 4] + [0.0] * 18  # a's ramp out against b's ramp in
    legs_b = [0.0] * 8 + [1 / 4, 2 / 5, 3 / 5, 3 / 4] + [1.0] * 8 + [2 * third, third] + [0.0] * 8
    rest = [0.0] * 20 + [third, 2 * third] + [1.0] * 8  # b's outer margin blends into the sampler's estimate
    zero = [0.0] * 30
    # The right arm: c with its ramps; what c's margins leave follows the legs' prompt (a, then b).
    arm_a = [1.0, 1.0, 1.0, 2 * third, third] + [0.0] * 25
    arm_b = [0.0] * 15 + [third, 2 * third, 1.0, 1.0, 1.0, 2 * third, third] + [0.0] * 8
    arm_c = [0.0] * 3 + [third, 2 * third] + [1.0] * 10 + [2 * third, third] + [0.0] * 13
    return {"legs": (torch.tensor([legs_a, legs_b, zero]), torch.tensor(rest)),
            "right_arm": (torch.tensor([arm_a, arm_b, arm_c]), torch.tensor(rest)),
            "free": (torch.tensor([legs_a, legs_b, zero]), torch.tensor(rest))}


def test_composer_stitches_by_time_and_body_part():
    composer = _composer(ScaleByPrompt())
    info = _info()
    out = composer(info)
    assert out.shape == info.x.shape
    x, denoised = info.x[0], info.denoised[0]
    for name, (w, rest) in _expected_weights().items():
        channels = part_channels(["head", "left_arm", "spine"] if name == "free" else [name])
        scale = (w * VALUES[:, None]).sum(0)  # (T,): each interval's estimate is its prompt's value times x
        expected = x[:, channels] * scale[:, None] + rest[:, None] * denoised[:, channels]
        assert torch.allclose(out[0, :, channels], expected, atol=1e-6), name
    # By hand at the seam: frame 9's legs mix a (weight 1) and b (ramp 2/3), normalised.
    legs = part_channels(["legs"])
    assert torch.allclose(out[0, 9, legs], x[9, legs] * (1 * 1 + 2 / 3 * 2) / (1 + 2 / 3))
    # Frames 22-29 are covered by no crop: the sampler's own estimate is kept.
    assert torch.equal(out[0, 22:], denoised[22:])


def test_composer_weights_sum_to_one_with_the_samplers_estimate():
    composer = _composer(ScaleByPrompt())
    total = composer.weights.sum(0) + composer.rest
    assert torch.allclose(total, torch.ones(30, FEATURE_DIM))
    assert torch.equal(composer.rest[22:], torch.ones(8, FEATURE_DIM)) and not composer.rest[:20].any()
    assert composer.weights.shape == (3, 30, FEATURE_DIM)
    for name, (w, _) in _expected_weights().items():
        channel = part_channels(["head"] if name == "free" else [name])[0]
        assert torch.allclose(composer.weights[:, :, channel], w, atol=1e-6), name


def test_composer_guidance_and_call_counts():
    fake = ScaleByPrompt()
    composer = _composer(fake, guidance=2.5)
    info = _info()
    out = composer(info)
    out = composer(info)
    assert composer.calls == 4 and len(fake.seen) == 4  # conditional and unconditional per step
    assert not fake.seen[1]["text"].any()  # the unconditional call has the prompts dropped
    arm = part_channels(["right_arm"])
    assert torch.allclose(out[0, 5, arm], 2.5 * 3.0 * info.x[0, 5, arm])

    plain = ScaleByPrompt()
    composer = _composer(plain, guidance=1.0)
    composer(info)
    composer(info)
    assert composer.calls == 2 and len(plain.seen) == 2


def test_composer_uses_the_denoisers_own_drop_cond():
    class WithDrop(ScaleByPrompt):
        def drop_cond(self, cond, mask):
            return {**cond, "text": torch.where(mask[:, None], torch.full_like(cond["text"], 10.0), cond["text"])}

    fake = WithDrop()
    composer = _composer(fake, guidance=2.0)
    info = _info()
    out = composer(info)
    assert fake.seen[1]["mask"].sum() == 12 + 14 + 14  # the frame mask is the denoiser's business
    arm = part_channels(["right_arm"])
    # out_u + g (out_c - out_u) with out_c = 3 x, out_u = 10 x.
    assert torch.allclose(out[0, 5, arm], (10.0 + 2.0 * (3.0 - 10.0)) * info.x[0, 5, arm])


def test_composer_converts_other_predictions_to_clean_estimates():
    class Eps(ScaleByPrompt):
        prediction = "eps"

        def __call__(self, x, t, cond):
            return torch.zeros_like(x)

    schedule = VPCosine()
    composer = _composer(Eps(), guidance=1.0)
    composer.schedule = schedule
    info = _info()
    out = composer(info)
    alpha = schedule.alpha(torch.tensor(0.6))
    # eps = 0: x0 = x / alpha wherever the crops cover the frame fully (the last two frames of
    # b's margin blend into the sampler's estimate).
    assert torch.allclose(out[0, :20], info.x[0, :20] / alpha, atol=1e-5)


def test_composer_checks_its_inputs():
    with pytest.raises(ValueError, match="one text embedding per interval"):
        TimelineComposer(ScaleByPrompt(), None, _legs_timeline(), torch.zeros(2, 4), FPS)
    composer = _composer(ScaleByPrompt())
    info = _info()
    info.x = info.x[:, :20]
    with pytest.raises(ValueError, match="20 frames; the timeline has 30"):
        composer(info)


def test_composer_blends_undriven_parts_across_the_seam():
    composer = _composer(ScaleByPrompt())
    info = _info()
    info.x = torch.ones_like(info.x)
    out = composer(info)
    free = part_channels(["head", "left_arm", "spine"])
    legs = part_channels(["legs"])[0]
    # The undriven parts should follow the legs' blend over the seam (frames 8-11), not jump
    # from prompt a (1.0) to prompt b (2.0) between frames 11 and 12.
    for t in range(8, 12):
        assert torch.allclose(out[0, t, free], out[0, t, legs].expand(len(free))), t
