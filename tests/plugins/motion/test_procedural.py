"""The procedural demo corpus: physical checks on single actions, splits, captions, the on-disk layout.

Single actions are composed on the unscaled SMPL22 body so that their expected figures (root rise
of a jump, walking speed) follow from their parameters alone.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from polydiff_motion.features import canonicalize, features_to_positions  # noqa: E402
from polydiff_motion.procedural import (  # noqa: E402
    FPS,
    HELD_OUT_PAIRS,
    TEMPLATES,
    compose,
    foot_skate,
    generate_corpus,
    pos_tag,
    sample_params,
    split_corpus,
    write_humanml3d,
)
from polydiff_motion.skeleton import SMPL22, forward_kinematics  # noqa: E402

FOOT = [7, 10, 8, 11]
#: Horizontal speed of a planted foot joint while walking; measured at most 0.003 m/s (float32
#: rounding of positions several metres from the origin).
WALK_SKATE_LIMIT = 0.01


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(40, seed=7)


def test_same_seed_same_corpus_other_seed_differs():
    a, b, c = generate_corpus(3, seed=11), generate_corpus(3, seed=11), generate_corpus(3, seed=12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.rotations, y.rotations)
        assert x.captions == y.captions and x.actions == y.actions
    assert any(x.positions.shape != z.positions.shape or not np.array_equal(x.positions, z.positions)
               for x, z in zip(a, c))


def test_shapes_lengths_and_action_spans(corpus):
    for clip in corpus:
        t = clip.positions.shape[0]
        assert clip.positions.shape == (t, 22, 3) and clip.positions.dtype == np.float32
        assert clip.rotations.shape == (t, 22, 3, 3) and clip.rotations.dtype == np.float32
        assert clip.root.shape == (t, 3) and clip.contact.shape == (t, 2) and clip.offsets.shape == (22, 3)
        assert 2.0 * FPS - 1 <= t <= 9.8 * FPS + 1
        assert len(clip.captions) == 3 and 1 <= len(clip.actions) <= 3
        spans = [(s, e) for _, _, s, e in clip.actions]
        assert spans[0][0] == 0 and spans[-1][1] == t
        assert all(e == s2 for (_, e), (s2, _) in zip(spans[:-1], spans[1:]))


def test_rotations_and_root_pose_the_clip_body(corpus):
    for clip in corpus[:10]:
        pos = forward_kinematics(torch.from_numpy(clip.rotations).double(), torch.from_numpy(clip.root).double(),
                                 clip.skeleton)
        np.testing.assert_allclose(pos.numpy(), clip.positions, atol=1e-4)
        ratio = np.linalg.norm(clip.offsets[1:], axis=1) / np.linalg.norm(SMPL22.offsets[1:], axis=1)
        assert np.all((ratio > 0.9 - 1e-9) & (ratio < 1.1 + 1e-9))
    assert len({float(c.offsets[4, 1]) for c in corpus}) > 1


def test_feet_never_below_floor_and_touch_it_when_grounded(corpus):
    for clip in corpus:
        feet_y = clip.positions[:, FOOT, 1]
        assert feet_y.min() > -0.01
        grounded = clip.contact.any(1)
        np.testing.assert_allclose(feet_y[grounded].min(1), 0.0, atol=1e-4)


def test_walk_keeps_the_stance_foot_planted_and_reaches_its_speed():
    clip = compose([("walk", {"speed": 1.4, "duration": 4.0})], seed=0, vary_shape=False, heading=0.3)
    skate = foot_skate(clip.positions, clip.contact[1:])
    assert skate.size > 100 and skate.max() < WALK_SKATE_LIMIT
    assert clip.contact[1:].sum(1).min() == 1  # always exactly one stance foot in a walk
    speed = np.linalg.norm(clip.root[-1, [0, 2]] - clip.root[0, [0, 2]]) / ((len(clip.root) - 1) / FPS)
    assert speed == pytest.approx(1.4, rel=0.05)
    step = clip.root[-1] - clip.root[0]
    assert np.arctan2(step[0], step[2]) == pytest.approx(0.3, abs=0.02)  # forward is the heading


def test_blends_between_gaits_keep_skate_low():
    clip = compose([("walk", {"speed": 1.0, "duration": 2.0}), ("jog", {"speed": 2.2, "duration": 2.0})], seed=1)
    assert np.percentile(foot_skate(clip.positions, clip.contact[1:]), 95) < 0.05


def test_jump_root_rises_by_its_height():
    clip = compose([("idle", {"duration": 1.0}), ("jump", {"height": 0.35, "count": 1})], seed=2, vary_shape=False)
    standing = clip.root[5:15, 1].mean()
    assert clip.root[:, 1].max() - standing == pytest.approx(0.35, abs=0.03)
    assert clip.positions[:, FOOT, 1].min(1).max() > 0.3  # both feet leave the floor


@pytest.mark.parametrize("side", ["left", "right"])
def test_wave_moves_the_named_wrist(side):
    clip = compose([("wave", {"side": side, "duration": 2.5})], seed=3)
    waved, other = (20, 21) if side == "left" else (21, 20)
    local = clip.positions - clip.root[:, None]
    travel = np.linalg.norm(np.diff(local, axis=0), axis=-1).sum(0)
    assert travel[waved] > 10 * travel[other]
    assert clip.positions[:, waved, 1].max() > clip.positions[:, 15, 1].max()  # hand above the head


def test_turn_turns_by_its_angle_towards_its_side():
    from polydiff_motion.features import _headings

    for side, sign in (("left", 1), ("right", -1)):
        clip = compose([("turn", {"side": side, "angle": 90})], seed=4)
        heading = _headings(torch.from_numpy(clip.positions).double(), 0.0).numpy()
        change = np.angle(np.exp(1j * (heading[-1] - heading[0])))
        assert change == pytest.approx(sign * np.pi / 2, abs=0.05)


def test_captions_name_side_speed_and_count():
    for name, params, words in (("wave", {"side": "left"}, ["left"]), ("kick", {"side": "right", "count": 2},
                                                                        ["right", "twice"]),
                                ("turn", {"side": "right"}, ["right"]), ("raise_arms", {"side": "both"}, ["both"]),
                                ("walk", {"speed": 0.85}, ["slowly"]), ("run", {"speed": 3.5}, ["quickly"]),
                                ("jump", {"count": 3}, ["three times"])):
        for seed in range(3):
            clip = compose([("idle", None), (name, params)], seed=seed)
            for caption in clip.captions:
                assert all(w in caption for w in words), (caption, words)
    clip = compose([("walk", None), ("jump", None), ("sit_down", None)], seed=0)
    assert all(any(c in caption for c in (" then ", ", after that ")) for caption in clip.captions)


def test_split_holds_out_combinations_and_templates():
    clips = generate_corpus(120, seed=5)
    split = split_corpus(clips, test_fraction=0.1, seed=0)
    assert sorted(c.id for part in (split.train, split.val, split.test) for c in part) == sorted(c.id for c in clips)
    held = set(HELD_OUT_PAIRS)

    def pairs(clip):
        names = [a[0] for a in clip.actions]
        return set(zip(names[:-1], names[1:]))

    assert all(not pairs(c) & held for c in split.train + split.val)
    assert any(pairs(c) & held for c in split.test)
    held_templates = {f"{name}/{len(t) - 1}" for name, t in TEMPLATES.items()}
    seen = {key for c in split.train + split.val for keys in c.templates for key in keys}
    assert not seen & held_templates and len(seen) > 20
    assert {key for c in split.test for keys in c.templates for key in keys} & held_templates
    # The held-out sentences themselves never appear in training captions.
    train_text = " | ".join(cap for c in split.train for cap in c.captions)
    assert "leaps upward" not in train_text and "dashes forward" not in train_text
    assert any("leaps upward" in cap or "dashes forward" in cap or "trots forward" in cap
               for c in clips for cap in c.captions)  # the input was not re-captioned


def test_unknown_action_lists_valid_names():
    with pytest.raises(ValueError, match="valid actions: idle, walk"):
        sample_params("moonwalk", np.random.default_rng(0))


def test_pos_tag():
    assert pos_tag("A person walks forward, then jumps twice") == (
        "a/DET person/NOUN walks/VERB forward/ADV then/ADV jumps/VERB twice/ADV")


def test_write_humanml3d_reads_back_and_refuses_overwrite(tmp_path):
    clips = generate_corpus(10, seed=9)
    root = tmp_path / "hml"
    split = write_humanml3d(root, clips, split=split_corpus(clips, test_fraction=0.2, seed=1))
    ids = {part: (root / f"{part}.txt").read_text().split() for part in ("train", "val", "test", "all")}
    assert sorted(ids["train"] + ids["val"] + ids["test"]) == sorted(ids["all"]) == sorted(c.id for c in clips)
    assert ids["test"] == [c.id for c in split.test]
    by_id = {c.id: c for c in clips}
    for clip_id in ids["all"]:
        joints = np.load(root / "new_joints" / f"{clip_id}.npy")
        vecs = np.load(root / "new_joint_vecs" / f"{clip_id}.npy")
        t = by_id[clip_id].positions.shape[0]
        assert joints.shape == (t, 22, 3) and vecs.shape == (t - 1, 263)
        np.testing.assert_allclose(features_to_positions(vecs), canonicalize(by_id[clip_id].positions)[:-1], atol=2e-3)
        np.testing.assert_allclose(joints, canonicalize(by_id[clip_id].positions), atol=1e-5)
        lines = (root / "texts" / f"{clip_id}.txt").read_text().splitlines()
        assert len(lines) == 3
        for line in lines:
            caption, tokens, start, end = line.split("#")
            assert (start, end) == ("0.0", "0.0") and len(tokens.split()) == len(caption.replace(",", " ").split())
    assert np.load(root / "Mean.npy").shape == (263,) and np.all(np.load(root / "Std.npy") > 0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_humanml3d(root, clips[:4])
    write_humanml3d(root, clips[:4], overwrite=True)
    assert sorted(p.stem for p in (root / "new_joints").iterdir()) == sorted(c.id for c in clips[:4])
