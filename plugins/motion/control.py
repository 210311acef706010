"""Control at sampling time: editing through known values and STMC's multi-track timelines.

Both work with any text-to-motion model of the plugin, with no retraining.

**Editing** (MDM, Tevet et al. 2023) fixes part of the motion and lets the model fill in the rest
through the core's known-values mask (:class:`polydiff.samplers.KnownValues`, ``replace`` mode:
the known entries are re-noised to the current level after every step): in-betweening fixes the
first and last frames, body-part editing fixes the feature channels of some joints in every
frame. :func:`feature_channels` says which of the 263 channels belong to which joints; the
root's channels and the foot contacts go with the legs.

**Timelines** (STMC, Petrovich et al. 2024) are several tracks of text prompts on a time axis,
each interval driving some body parts; intervals may overlap when they drive different body
parts. At every denoising step :class:`TimelineComposer` (a per-step callback of the core's
samplers) crops the current noisy motion to each interval (widened by a margin for the
transitions), denoises every crop with its own prompt (one batched call, with classifier-free
guidance), and stitches the clean estimates back by time and body part: in each frame every
body part takes the estimate of the interval driving it, blended linearly across the margins
where consecutive intervals meet; body parts that no interval drives at that frame take the
estimates of the intervals active at that frame that drive the legs (all active ones if none
does), blended with their ramps; frames no interval covers keep the sampler's own estimate (of
the whole timeline's prompts joined), and a margin next to such frames blends into it. The
sampler then continues from the stitched estimate.

Timeline files are JSON::

    {"duration": 6.0,
     "intervals": [
        {"text": "a person walks forward", "start": 0.0, "end": 6.0, "body_parts": ["legs"]},
        {"text": "a person waves with the right hand", "start": 1.0, "end": 4.0, "body_parts": ["right_arm"]},
        {"text": "a person raises both arms", "start": 4.0, "end": 6.0, "body_parts": ["upper_body"]}]}

Times are in seconds; ``body_parts`` names parts of :data:`TIMELINE_PARTS` or the groups
``upper_body``, ``lower_body`` and ``full_body`` (the default).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .features import FEATURE_DIM, FOOT_CONTACT, RIC, ROOT_LIN_VEL, ROOT_ROT_VEL, ROOT_Y, ROT, VEL

__all__ = ["TIMELINE_PARTS", "PART_GROUPS", "feature_channels", "part_channels", "inbetween_known",
           "body_part_known", "Interval", "Timeline", "TimelineError", "read_timeline", "parse_timeline",
           "TimelineComposer"]

#: STMC's body parts, a partition of the 22 SMPL joints (the pelvis, with the root's channels, goes
#: with the legs).
TIMELINE_PARTS: dict[str, tuple[int, ...]] = {
    "head": (12, 15),
    "left_arm": (13, 16, 18, 20),
    "right_arm": (14, 17, 19, 21),
    "spine": (3, 6, 9),
    "legs": (0, 1, 2, 4, 5, 7, 8, 10, 11),
}
#: Names for several parts at once.
PART_GROUPS: dict[str, tuple[str, ...]] = {
    "upper_body": ("head", "left_arm", "right_arm", "spine"),
    "lower_body": ("legs",),
    "full_body": tuple(TIMELINE_PARTS),
    "arms": ("left_arm", "right_arm"),
}


def feature_channels(joints: Sequence[int]) -> list[int]:
    """The indices of the 263 feature channels that describe ``joints`` (sorted).

    Joint ``j >= 1`` owns its 3 root-relative position channels and 6 rotation channels; every
    joint owns its 3 velocity channels; the pelvis (joint 0) owns the root's rotation velocity,
    linear velocity and height; the ankles and feet (7, 10, 8, 11) own their contact channel.
    """
    channels: list[int] = []
    contact_joints = (7, 10, 8, 11)
    for j in sorted(set(int(j) for j in joints)):
        if not 0 <= j < 22:
            raise ValueError(f"joint index {j} is outside the 22 SMPL joints")
        if j == 0:
            channels += [ROOT_ROT_VEL.start, ROOT_LIN_VEL.start, ROOT_LIN_VEL.start + 1, ROOT_Y.start]
        else:
            channels += list(range(RIC.start + 3 * (j - 1), RIC.start + 3 * j))
            channels += list(range(ROT.start + 6 * (j - 1), ROT.start + 6 * j))
        channels += list(range(VEL.start + 3 * j, VEL.start + 3 * j + 3))
        if j in contact_joints:
            channels.append(FOOT_CONTACT.start + contact_joints.index(j))
    return sorted(channels)


def _expand_parts(parts: Sequence[str], where: str) -> tuple[str, ...]:
    out: list[str] = []
    for name in parts:
        if name in TIMELINE_PARTS:
            out.append(name)
        elif name in PART_GROUPS:
            out += PART_GROUPS[name]
        else:
            valid = ", ".join([*TIMELINE_PARTS, *PART_GROUPS])
            raise TimelineError(f"{where}: unknown body part {name!r}; valid: {valid}")
    return tuple(dict.fromkeys(out))


def part_channels(parts: Sequence[str]) -> list[int]:
    """The feature channels of some body parts (names of :data:`TIMELINE_PARTS` or :data:`PART_GROUPS`)."""
    names = _expand_parts(parts, "body parts")
    return feature_channels([j for name in names for j in TIMELINE_PARTS[name]])


# --- editing -------------------------------------------------------------------------------------
def inbetween_known(source: Tensor, lengths: Tensor, keep_start: int, keep_end: int) -> tuple[Tensor, Tensor]:
    """Values and mask for in-betweening: the first ``keep_start`` and last ``keep_end`` valid frames.

    Shapes:
        source: (B, T, 263) (normalised, as the model samples); lengths: (B,); returns the
        values (B, T, 263) and the mask (B, T, 1) bool.
    """
    if keep_start < 0 or keep_end < 0:
        raise ValueError("the numbers of kept frames must be non-negative")
    frames = torch.arange(source.shape[1], device=source.device)[None]
    lengths = lengths.to(source.device).reshape(-1, 1)
    if bool(((keep_start + keep_end) >= lengths).any()):
        raise ValueError(f"keeping {keep_start} + {keep_end} frames leaves nothing to generate in a motion of "
                         f"{int(lengths.min())} frames")
    mask = (frames < keep_start) | ((frames >= lengths - keep_end) & (frames < lengths))
    return source, mask[..., None]


def body_part_known(source: Tensor, lengths: Tensor, parts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Values and mask that keep the channels of ``parts`` in every valid frame (body-part editing).

    Shapes:
        source: (B, T, 263); lengths: (B,); returns (B, T, 263) values and a (B, T, 263) mask.
    """
    channels = torch.zeros(FEATURE_DIM, dtype=torch.bool, device=source.device)
    channels[part_channels(parts)] = True
    valid = torch.arange(source.shape[1], device=source.device)[None] < lengths.to(source.device).reshape(-1, 1)
    return source, valid[..., None] & channels


# --- timelines -----------------------------------------------------------------------------------
class TimelineError(ValueError):
    """A timeline that cannot be used; the message names the file and the interval at fault."""


@dataclass(frozen=True)
class Interval:
    """One prompt of a timeline: ``text`` drives ``parts`` from ``start`` to ``end`` seconds."""

    text: str
    start: float
    end: float
    parts: tuple[str, ...]


@dataclass(frozen=True)
class Timeline:
    """A checked multi-track timeline (module docstring)."""

    duration: float
    intervals: tuple[Interval, ...]

    def frames(self, fps: float) -> int:
        return int(round(self.duration * fps))

    def frame_range(self, interval: Interval, fps: float) -> tuple[int, int]:
        total = self.frames(fps)
        return min(total - 1, int(round(interval.start * fps))), min(total, max(int(round(interval.end * fps)),
                                                                                int(round(interval.start * fps)) + 1))

    @property
    def joined_text(self) -> str:
        """The intervals' prompts in order of start, joined (the prompt of uncovered frames)."""
        texts = [i.text for i in sorted(self.intervals, key=lambda i: (i.start, i.end))]
        return " and ".join(dict.fromkeys(texts))


def parse_timeline(data: Any, source: str = "timeline", *, max_seconds: float | None = None) -> Timeline:
    """A timeline from its JSON data, checked.

    Raises:
        TimelineError: naming ``source`` and the interval for a missing or wrong field, an empty
            text, an interval outside ``[0, duration]`` or of no length, an unknown body part, a
            body part driven by two intervals at once, or a duration above ``max_seconds``.
    """
    if not isinstance(data, Mapping):
        raise TimelineError(f"{source}: a timeline is a JSON object with 'intervals' (and optionally 'duration')")
    raw = data.get("intervals")
    if not isinstance(raw, list) or not raw:
        raise TimelineError(f"{source}: field 'intervals' must be a non-empty list")
    intervals = []
    for k, item in enumerate(raw):
        where = f"{source}: intervals[{k}]"
        if not isinstance(item, Mapping):
            raise TimelineError(f"{where} must be an object with text, start and end")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise TimelineError(f"{where}: field 'text' must be a non-empty string")
        try:
            start, end = float(item["start"]), float(item["end"])
        except KeyError as exc:
            raise TimelineError(f"{where}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError):
            raise TimelineError(f"{where}: fields 'start' and 'end' must be numbers (seconds)") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise TimelineError(f"{where}: need 0 <= start < end; got start={start}, end={end}")
        parts = item.get("body_parts", ["full_body"])
        if isinstance(parts, str):
            parts = [parts]
        if not isinstance(parts, list) or not parts:
            raise TimelineError(f"{where}: field 'body_parts' must be a non-empty list of names")
        intervals.append(Interval(text.strip(), start, end, _expand_parts(parts, where)))
    latest = max(i.end for i in intervals)
    duration = data.get("duration", latest)
    try:
        duration = float(duration)
    except (TypeError, ValueError):
        raise TimelineError(f"{source}: field 'duration' must be a number (seconds)") from None
    if not math.isfinite(duration) or duration <= 0:
        raise TimelineError(f"{source}: field 'duration' must be positive; got {duration}")
    for k, interval in enumerate(intervals):
        if interval.end > duration + 1e-9:
            raise TimelineError(f"{source}: intervals[{k}] ends at {interval.end} s, after the duration {duration} s")
    if max_seconds is not None and duration > max_seconds + 1e-9:
        raise TimelineError(f"{source}: the duration {duration} s is longer than the model's {max_seconds} s")
    for a in range(len(intervals)):
        for b in range(a + 1, len(intervals)):
            x, y = intervals[a], intervals[b]
            shared = set(x.parts) & set(y.parts)
            if shared and x.start < y.end and y.start < x.end:
                raise TimelineError(
                    f"{source}: intervals[{a}] and intervals[{b}] both drive {', '.join(sorted(shared))} between "
                    f"{max(x.start, y.start)} s and {min(x.end, y.end)} s; a body part follows one prompt at a time")
    return Timeline(duration, tuple(intervals))


def read_timeline(path: str | Path, *, max_seconds: float | None = None) -> Timeline:
    """A timeline from a JSON file (module docstring); errors name the file (see :func:`parse_timeline`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise TimelineError(f"{path}: cannot read the timeline: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise TimelineError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    return parse_timeline(data, str(path), max_seconds=max_seconds)


class TimelineComposer:
    """STMC's per-step composition of a timeline, as a callback of the core's samplers.

    Args:
        denoiser: the model's (x0-predicting or any other) network, ``denoiser(x, t, cond)`` with
            the motion condition ``{"text", "mask"}``; ``drop_cond`` is used for guidance.
        schedule: the model's schedule (to turn other predictions into clean estimates).
        timeline: the checked timeline.
        text_embeddings: (n_intervals, D) embeddings of the intervals' prompts, in order.
        fps: frames per second of the model.
        guidance: the classifier-free guidance scale of the interval calls.
        margin: seconds each interval's crop is widened by on either side, blended linearly.
        batch: how many copies of the timeline are being sampled (the state's batch size).

    Attributes:
        weights: (n_intervals, T, 263) the stitching weights (summing to at most 1 per entry).
        rest: (T, 263) the weight of the sampler's own estimate, ``1 - weights.sum(0)``.
        calls: denoiser calls made (one per step, two with guidance).
    """

    def __init__(self, denoiser: Callable[..., Tensor], schedule: Any, timeline: Timeline, text_embeddings: Tensor,
                 fps: float, *, guidance: float = 2.5, margin: float = 0.25, batch: int = 1):
        if text_embeddings.ndim != 2 or text_embeddings.shape[0] != len(timeline.intervals):
            raise ValueError(f"need one text embedding per interval ({len(timeline.intervals)}); got "
                             f"{tuple(text_embeddings.shape)}")
        self.denoiser, self.schedule, self.timeline = denoiser, schedule, timeline
        self.guidance, self.batch, self.calls = float(guidance), int(batch), 0
        total = timeline.frames(fps)
        pad = int(round(margin * fps))
        crops, ramps = [], torch.zeros(len(timeline.intervals), total)
        weights = torch.zeros(len(timeline.intervals), total, FEATURE_DIM)
        for k, interval in enumerate(timeline.intervals):
            first, stop = timeline.frame_range(interval, fps)
            lo, hi = max(0, first - pad), min(total, stop + pad)
            crops.append((lo, hi))
            ramps[k, first:stop] = 1.0
            for j in range(1, pad + 1):  # linear ramps over the margins
                ramp = 1.0 - j / (pad + 1)
                if first - j >= lo:
                    ramps[k, first - j] = ramp
                if stop - 1 + j < hi:
                    ramps[k, stop - 1 + j] = ramp
            weights[k][:, part_channels(interval.parts)] = ramps[k][:, None]
        # What the explicit prompts leave of each channel at a frame (all of it where none drives
        # the channel, part of it in a prompt's margin) follows the intervals active there that
        # drive the legs (all active ones if none does), in proportion to their ramps, so it
        # blends across seams like the legs do. Overlapping margins are normalised; what is left
        # after that (a margin next to frames no interval covers) is the sampler's own estimate.
        legs = torch.tensor(["legs" in i.parts for i in timeline.intervals])
        active = ramps > 0  # (n, T)
        chosen = torch.where((active & legs[:, None]).any(0, keepdim=True), active & legs[:, None], active)
        drives = weights.amax(dim=1) > 0  # (n, 263): the channels each interval drives itself
        share = (ramps * chosen)[..., None] * ~drives[:, None, :]  # (n, T, 263)
        share = share / share.sum(0, keepdim=True).clamp_min(1.0)
        norm = weights.sum(0, keepdim=True)
        weights = torch.where(norm > 1, weights / norm.clamp_min(1e-12), weights)
        weights = weights + (1.0 - weights.sum(0, keepdim=True)).clamp_min(0.0) * share
        self.weights = weights
        self.rest = (1.0 - self.weights.sum(0)).clamp_min(0.0)  # (T, 263)
        self.crops = crops
        self.text = text_embeddings
        self.frames = total

    def __call__(self, info: Any) -> Tensor:
        from polydiff.denoiser import drop_condition, prediction_of
        from polydiff.parameterization import convert

        x = info.x
        batch, frames = x.shape[:2]
        if frames != self.frames:
            raise ValueError(f"the state has {frames} frames; the timeline has {self.frames}")
        n, longest = len(self.crops), max(hi - lo for lo, hi in self.crops)
        device, dtype = x.device, x.dtype
        crop_x = torch.zeros(batch, n, longest, x.shape[-1], device=device, dtype=dtype)
        crop_mask = torch.zeros(batch, n, longest, dtype=torch.bool, device=device)
        for k, (lo, hi) in enumerate(self.crops):
            crop_x[:, k, : hi - lo] = x[:, lo:hi]
            crop_mask[:, k, : hi - lo] = True
        flat_x = crop_x.reshape(batch * n, longest, -1)
        cond = {"text": self.text.to(device=device, dtype=torch.float32).repeat(batch, 1),
                "mask": crop_mask.reshape(batch * n, longest)}
        t = info.t.reshape(-1)
        t = (t[:1].expand(batch) if t.numel() == 1 else t[:batch]).to(dtype)
        t_flat = t.repeat_interleave(n)
        out = self.denoiser(flat_x, t_flat, cond)
        self.calls += 1
        if self.guidance != 1.0:
            everyone = torch.ones(batch * n, dtype=torch.bool, device=device)
            drop = getattr(self.denoiser, "drop_cond", None)
            uncond = drop(cond, everyone) if drop is not None else drop_condition(cond, everyone)
            out_u = self.denoiser(flat_x, t_flat, uncond)
            self.calls += 1
            out = out_u + self.guidance * (out - out_u)
        kind = prediction_of(self.denoiser)
        if kind != "x0":
            out = convert(out, kind, "x0", flat_x, t_flat.reshape(-1, 1, 1), self.schedule, None)
        out = out.reshape(batch, n, longest, -1)
        weights = self.weights.to(device=device, dtype=dtype)
        stitched = self.rest.to(device=device, dtype=dtype) * info.denoised
        for k, (lo, hi) in enumerate(self.crops):
            stitched[:, lo:hi] += weights[k, lo:hi] * out[:, k, : hi - lo]
        return stitched
