"""Drawing the character and its scene with Skia (antialiased vector paths).

Why Skia: measured on one core of this machine (benchmarks/preview.py --compare-libs,
60 mixed ovals and 18-px round-capped strokes on a 512×512 canvas): skia-python 1.55 ms
per frame with antialiasing; Pillow 0.34 ms without antialiasing (jagged edges, no round
caps, no Bézier paths) and 4.4 ms with antialiasing by 2× supersampling. Skia gives the
look (smooth curves, round caps, clipping, text) at a third of Pillow's antialiased cost.
pycairo needs system cairo, which is not installable here.

Everything is designed on a 512-unit-high reference canvas (`REF`) and scaled, so any
output size draws the same picture. The scene behind the character is rendered once per
session into a tileable strip (`Scene`) and only blitted per frame.
"""

from __future__ import annotations

import math

import numpy as np
import skia

from .look import RGB, Look, mix

__all__ = ["REF", "Scene", "draw_character"]

REF = 512.0
GROUND_Y = 476.0
LEG = 72.0  # thigh and shin length
HIP_Y = GROUND_Y - 2 * LEG - 8.0
TORSO_H = 106.0
HEAD_R = 70.0

_WHITE: RGB = (255, 255, 255)
_BLACK: RGB = (0, 0, 0)
_INK: RGB = (52, 38, 36)


def _c(colour: RGB, alpha: float = 1.0) -> int:
    a = int(round(255 * min(max(alpha, 0.0), 1.0)))
    return skia.ColorSetARGB(a, *colour)


def _fill(colour: RGB, alpha: float = 1.0) -> skia.Paint:
    return skia.Paint(AntiAlias=True, Color=_c(colour, alpha))


def _stroke(colour: RGB, width: float, alpha: float = 1.0) -> skia.Paint:
    return skia.Paint(
        AntiAlias=True,
        Color=_c(colour, alpha),
        Style=skia.Paint.kStroke_Style,
        StrokeWidth=width,
        StrokeCap=skia.Paint.kRound_Cap,
        StrokeJoin=skia.Paint.kRound_Join,
    )


class Scene:
    """A room whose wall and floor scroll sideways when the character walks."""

    def __init__(self, look: Look, width: int, height: int, seed: int) -> None:
        self.width, self.height = width, height
        self.scale = height / REF
        self.period = int(math.ceil(max(width, 2 * height)))  # pixels before the strip repeats
        strip = np.zeros((height, self.period, 4), dtype=np.uint8)
        surface = skia.Surface(strip)
        self._paint_strip(surface.getCanvas(), look, np.random.default_rng(seed))
        self.image = surface.makeImageSnapshot()

    def _paint_strip(self, canvas: skia.Canvas, look: Look, rng: np.random.Generator) -> None:
        s, w, h = self.scale, self.period, self.height
        bg = look.background
        floor_y = (GROUND_Y - 26.0) * s
        wall = skia.GradientShader.MakeLinear(
            [skia.Point(0, 0), skia.Point(0, floor_y)], [_c(mix(bg, _WHITE, 0.35)), _c(bg)]
        )
        canvas.drawRect(skia.Rect(0, 0, w, floor_y), skia.Paint(Shader=wall))
        floor = mix(bg, (120, 96, 80), 0.45)
        canvas.drawRect(skia.Rect(0, floor_y, w, h), _fill(floor))
        canvas.drawRect(skia.Rect(0, floor_y, w, floor_y + 5 * s), _fill(mix(floor, _WHITE, 0.25)))
        for x in np.arange(0, w, 64 * s):  # floor boards
            canvas.drawLine(x, floor_y + 5 * s, x - 40 * s, h, _stroke(mix(floor, _BLACK, 0.12), 1.5 * s))
        # Wall props spaced across the strip (never across its ends, so it tiles cleanly).
        slots = max(2, int(w // (170 * s)))
        for i in range(slots):
            cx = (i + 0.5) * w / slots + rng.uniform(-20, 20) * s
            kind = i % 3
            if kind == 0:  # framed picture
                rect = skia.Rect(cx - 34 * s, 120 * s, cx + 34 * s, 176 * s)
                canvas.drawRect(rect, _fill(mix(bg, _WHITE, 0.6)))
                canvas.drawRect(rect, _stroke(mix(bg, _BLACK, 0.35), 5 * s))
                hill = skia.Path()
                hill.moveTo(rect.left(), rect.bottom())
                hill.quadTo(cx, rect.top() + 10 * s, rect.right(), rect.bottom())
                hill.close()
                canvas.drawPath(hill, _fill(mix(bg, (90, 160, 110), 0.6)))
            elif kind == 1:  # window
                rect = skia.Rect(cx - 42 * s, 90 * s, cx + 42 * s, 200 * s)
                canvas.drawRoundRect(rect, 6 * s, 6 * s, _fill(mix((170, 210, 240), _WHITE, 0.3)))
                canvas.drawRoundRect(rect, 6 * s, 6 * s, _stroke(mix(bg, _WHITE, 0.8), 7 * s))
                canvas.drawLine(cx, rect.top(), cx, rect.bottom(), _stroke(mix(bg, _WHITE, 0.8), 5 * s))
                canvas.drawLine(
                    rect.left(), 145 * s, rect.right(), 145 * s, _stroke(mix(bg, _WHITE, 0.8), 5 * s)
                )
            else:  # potted plant on the floor
                pot = skia.Rect(cx - 20 * s, floor_y - 10 * s, cx + 20 * s, floor_y + 24 * s)
                for k in range(5):
                    ang = -1.0 + 0.5 * k
                    leaf = skia.Rect(-9 * s, -44 * s, 9 * s, 0)
                    canvas.save()
                    canvas.translate(cx, floor_y - 6 * s)
                    canvas.rotate(math.degrees(ang * 0.7))
                    canvas.drawOval(leaf, _fill(mix((70, 150, 90), _BLACK, 0.1 * (k % 2))))
                    canvas.restore()
                canvas.drawRoundRect(pot, 5 * s, 5 * s, _fill((196, 110, 76)))

    def draw(self, canvas: skia.Canvas, world_x: float) -> None:
        offset = -((world_x * self.scale) % self.period)
        canvas.drawImage(self.image, offset, 0)
        if offset + self.period < self.width:
            canvas.drawImage(self.image, offset + self.period, 0)


def _limb(
    canvas: skia.Canvas, start: tuple[float, float], angle: float, length: float, side: float
) -> tuple[float, float]:
    """End point of a limb from `start` at `angle` (0 down, + outward on `side`)."""
    return start[0] + side * math.sin(angle) * length, start[1] + math.cos(angle) * length


def draw_character(
    canvas: skia.Canvas, look: Look, body: dict[str, float], face: dict[str, float], font: skia.Font | None
) -> None:
    """Draw the character in reference units; the caller has scaled and centred the canvas."""
    sit = min(max(body["sit"], 0.0), 1.0)
    turn = body["turn"]
    hip_y = HIP_Y + 0.75 * sit * LEG + body["body_y"]
    hip_x = body["body_x"]

    # Shadow and, when seated, a stool that fades in with the posture.
    canvas.drawOval(skia.Rect(hip_x - 70, GROUND_Y - 8, hip_x + 70, GROUND_Y + 10), _fill(_BLACK, 0.12))
    if sit > 0.01:
        wood = (160, 113, 79)
        seat_y = HIP_Y + 0.75 * LEG + 6
        canvas.drawLine(hip_x - 48, seat_y, hip_x - 56, GROUND_Y, _stroke(mix(wood, _BLACK, 0.25), 9, sit))
        canvas.drawLine(hip_x + 48, seat_y, hip_x + 56, GROUND_Y, _stroke(mix(wood, _BLACK, 0.25), 9, sit))
        canvas.drawRoundRect(
            skia.Rect(hip_x - 66, seat_y - 10, hip_x + 66, seat_y + 8), 6, 6, _fill(wood, sit)
        )

    _draw_legs(canvas, look, body, hip_x, hip_y, sit)

    canvas.save()
    canvas.translate(hip_x, hip_y)
    canvas.rotate(math.degrees(body["lean"]))
    _draw_upper_body(canvas, look, body, face, font, turn)
    canvas.restore()


def _draw_legs(
    canvas: skia.Canvas, look: Look, body: dict[str, float], hip_x: float, hip_y: float, sit: float
) -> None:
    trousers = _stroke(look.trousers, 27)
    shoe = _fill(mix(look.trousers, _BLACK, 0.55))
    thigh_len = LEG * (1.0 - 0.78 * sit)
    for side, thigh_key, shin_key in ((-1.0, "l_thigh", "l_shin"), (1.0, "r_thigh", "r_shin")):
        hip = (hip_x + side * (22 + 4 * sit), hip_y)
        a = body[thigh_key]
        knee = (hip[0] + math.sin(a) * thigh_len + side * 10 * sit, hip[1] + math.cos(a) * thigh_len)
        bend = body[shin_key]
        shin_len = LEG * math.cos(min(bend, 1.2))
        foot = (knee[0] + math.sin(0.5 * a) * shin_len, knee[1] + math.cos(0.5 * a) * shin_len)
        canvas.drawLine(*hip, *knee, trousers)
        canvas.drawLine(*knee, *foot, trousers)
        canvas.drawOval(
            skia.Rect(foot[0] - 18 + side * 4, foot[1] - 4, foot[0] + 18 + side * 4, foot[1] + 12), shoe
        )


def _draw_upper_body(
    canvas: skia.Canvas,
    look: Look,
    body: dict[str, float],
    face: dict[str, float],
    font: skia.Font | None,
    turn: float,
) -> None:
    bow, shrug = body["bow"], body["shrug"]
    torso_h = TORSO_H * (1.0 - 0.42 * bow)
    top = -torso_h
    half_w = 56.0 * (1.0 - 0.16 * abs(turn))
    shift = 7.0 * turn
    outfit = look.outfit
    shoulder_y = top + 16 - 9 * shrug
    neck_top = top - 14 + 10 * shrug
    head_y = neck_top - HEAD_R + 8 + 6 * body["head_pitch"] + 26 * bow
    head_roll = math.degrees(body["head_roll"] + face["face_roll"])
    yaw = 0.55 * turn + body["head_yaw"]

    canvas.save()
    canvas.translate(shift * 0.6, head_y)
    canvas.rotate(head_roll)
    _draw_hair_back(canvas, look, yaw)
    canvas.restore()

    # Torso: a rounded body shape with a collar and, optionally, a name tag.
    torso = skia.Path()
    torso.moveTo(shift - half_w + 6, 4)
    torso.lineTo(shift - half_w, top + 26)
    torso.quadTo(shift - half_w, top, shift - half_w + 28, top)
    torso.lineTo(shift + half_w - 28, top)
    torso.quadTo(shift + half_w, top, shift + half_w, top + 26)
    torso.lineTo(shift + half_w - 6, 4)
    torso.close()
    canvas.drawPath(torso, _fill(outfit))
    canvas.drawRect(
        skia.Rect(shift - half_w + 6, -10, shift + half_w - 6, 4), _fill(mix(outfit, _BLACK, 0.22))
    )
    collar = skia.Path()
    cx = shift + 10 * turn
    collar.moveTo(cx - 24, top)
    collar.lineTo(cx, top + 26)
    collar.lineTo(cx + 24, top)
    collar.close()
    canvas.drawPath(collar, _fill(look.accent))
    canvas.drawPath(collar, _stroke(mix(outfit, _BLACK, 0.25), 3))
    if look.name_tag and look.name and torso_h > 70:
        # Left of the right sleeve (drawn later, it would cover the tag's end).
        tag_x = min(cx - 4, shift + half_w - 58)
        tag = skia.Rect(tag_x, top + 38, tag_x + 40, top + 56)
        canvas.drawRoundRect(tag, 4, 4, _fill(_WHITE))
        canvas.drawRoundRect(tag, 4, 4, _stroke(mix(outfit, _BLACK, 0.3), 1.5))
        if font is not None:
            label = look.name if len(look.name) <= 8 else look.name[:7] + "…"
            width = font.measureText(label)
            scale = min(1.0, 34.0 / max(width, 1.0))
            canvas.save()
            canvas.translate(tag.centerX() - width * scale / 2, tag.bottom() - 5)
            canvas.scale(scale, scale)
            canvas.drawString(label, 0, 0, font, _fill(_INK))
            canvas.restore()

    # Neck behind the head, in front of the collar.
    canvas.drawRect(
        skia.Rect(shift - 13, head_y + 40, shift + 13, top + 8), _fill(mix(look.skin, _BLACK, 0.12))
    )

    for side, up_key, fore_key in ((-1.0, "l_upper", "l_fore"), (1.0, "r_upper", "r_fore")):
        shoulder = (shift + side * (half_w - 6), shoulder_y)
        _draw_arm(
            canvas, look, shoulder, body[up_key], body[fore_key], side, body["point"] if side > 0 else 0.0
        )

    canvas.save()
    canvas.translate(shift * 0.6, head_y)
    canvas.rotate(head_roll)
    _draw_head(canvas, look, face, yaw, body["head_pitch"] + 0.6 * bow)
    canvas.restore()


def _draw_arm(
    canvas: skia.Canvas,
    look: Look,
    shoulder: tuple[float, float],
    upper: float,
    fore: float,
    side: float,
    point: float,
) -> None:
    elbow = _limb(canvas, shoulder, upper, 58.0, side)
    hand = _limb(canvas, elbow, upper + fore, 54.0, side)
    canvas.drawLine(*elbow, *hand, _stroke(look.skin, 17))
    canvas.drawLine(*shoulder, *elbow, _stroke(look.outfit, 24))
    canvas.drawLine(
        *shoulder, *_limb(canvas, shoulder, upper, 30.0, side), _stroke(mix(look.outfit, _BLACK, 0.08), 24)
    )
    if point > 0.01:
        tip = _limb(canvas, hand, upper + fore, 20.0, side)
        canvas.drawLine(*hand, *tip, _stroke(look.skin, 7, point))
    canvas.drawCircle(*hand, 12.0, _fill(look.skin))
    canvas.drawCircle(*hand, 12.0, _stroke(mix(look.skin, _BLACK, 0.18), 1.5))


def _draw_hair_back(canvas: skia.Canvas, look: Look, yaw: float) -> None:
    """Hair that hangs behind the head and shoulders (drawn before the torso)."""
    fx = 20.0 * max(-1.0, min(1.0, yaw))
    hair = mix(look.hair, _BLACK, 0.08)
    if look.hair_style == "long":
        back = skia.Path()
        hx = -0.4 * fx
        back.moveTo(hx - 76, -20)
        back.cubicTo(hx - 84, -110, hx + 84, -110, hx + 76, -20)
        back.cubicTo(hx + 84, 60, hx + 90, 120, hx + 70, 138)
        back.lineTo(hx - 70, 138)
        back.cubicTo(hx - 90, 120, hx - 84, 60, hx - 76, -20)
        back.close()
        canvas.drawPath(back, _fill(hair))
    elif look.hair_style == "ponytail":
        canvas.save()
        canvas.translate(-0.6 * fx - 62, 4)
        canvas.rotate(22)
        canvas.drawOval(skia.Rect(-19, -10, 19, 84), _fill(hair))
        canvas.restore()
    elif look.hair_style == "bun":
        canvas.drawCircle(-0.3 * fx, -HEAD_R - 8, 27, _fill(look.hair))


def _draw_head(canvas: skia.Canvas, look: Look, face: dict[str, float], yaw: float, pitch: float) -> None:
    yaw = max(-1.0, min(1.0, yaw))
    fx = 20.0 * yaw  # features slide towards where the head faces
    fy = 9.0 * pitch
    skin, hair = look.skin, look.hair
    style = look.hair_style

    # Ears, head.
    ear = _fill(mix(skin, _BLACK, 0.05))
    canvas.drawCircle(-HEAD_R + 2 - 0.25 * fx, 12 + fy * 0.3, 13, ear)
    canvas.drawCircle(HEAD_R - 2 - 0.25 * fx, 12 + fy * 0.3, 13, ear)
    canvas.drawOval(skia.Rect(-HEAD_R, -HEAD_R - 2, HEAD_R, HEAD_R + 2), _fill(skin))

    _draw_face(canvas, look, face, fx, fy)

    # Hair on top.
    if style != "bald":
        hx = -0.35 * fx
        cap = skia.Path()
        cap.moveTo(hx - 74, 6 - 0.5 * fy)
        cap.cubicTo(hx - 82, -96, hx + 82, -96, hx + 74, 6 - 0.5 * fy)
        cap.lineTo(hx + 64, -14 - 0.3 * fy)
        cap.quadTo(hx + 34 + fx, -46 - 0.3 * fy, hx + 4 + fx, -30 - 0.3 * fy)
        cap.quadTo(hx - 28 + fx, -48 - 0.3 * fy, hx - 64, -14 - 0.3 * fy)
        cap.close()
        canvas.drawPath(cap, _fill(hair))
        if style == "curly":
            for k in range(11):
                ang = math.pi * (0.05 + 0.9 * k / 10)
                canvas.drawCircle(hx - 70 * math.cos(ang), -10 - 64 * math.sin(ang), 17, _fill(hair))
        shine = _stroke(mix(hair, _WHITE, 0.3), 4, 0.6)
        canvas.drawArc(skia.Rect(hx - 44, -58, hx + 6, -30), 205, 45, False, shine)
    else:
        canvas.drawArc(skia.Rect(-40, -62, 20, -30), 200, 50, False, _stroke(mix(skin, _WHITE, 0.5), 5))


def _draw_face(canvas: skia.Canvas, look: Look, face: dict[str, float], fx: float, fy: float) -> None:
    skin = look.skin
    ink = _INK
    happy = min(max(face["eye_happy"], 0.0), 1.0)

    # Blush.
    if face["blush"] > 0.01:
        for side in (-1.0, 1.0):
            canvas.drawOval(
                skia.Rect(side * 40 + fx * 0.8 - 13, 24 + fy, side * 40 + fx * 0.8 + 13, 36 + fy),
                _fill((240, 120, 130), 0.55 * min(face["blush"], 1.0)),
            )

    # Eyes: white, iris, pupil, highlight, clipped to the lids; a lid line when nearly shut.
    for side, key in ((-1.0, "eye_l"), (1.0, "eye_r")):
        ex = side * 26 + fx
        ey = 6 + fy
        openness = min(max(face[key], 0.0), 1.4) * (1.0 - 0.55 * happy)
        ry = 15.0 * openness
        if ry > 0.6:
            oval = skia.Rect(ex - 12, ey - ry, ex + 12, ey + ry)
            canvas.save()
            canvas.clipRRect(skia.RRect.MakeOval(oval), skia.ClipOp.kIntersect, True)
            canvas.drawOval(oval, _fill(_WHITE))
            gx = ex + 4.5 * face["gaze_x"]
            gy = ey + 5.0 * face["gaze_y"]
            canvas.drawCircle(gx, gy, 9.5, _fill(look.eyes))
            canvas.drawCircle(gx, gy, 5.0, _fill(mix(look.eyes, _BLACK, 0.75)))
            canvas.drawCircle(gx + 3.5, gy - 3.5, 2.8, _fill(_WHITE))
            canvas.restore()
            canvas.drawOval(oval, _stroke(ink, 2.2))
        lid_alpha = min(1.0, max(0.0, (0.35 - openness) / 0.35))
        if lid_alpha > 0.0:
            arc = skia.Path()
            bulge = -9.0 * happy + 4.0 * (1.0 - happy)  # happy eyes are upward arcs (^)
            arc.moveTo(ex - 12, ey)
            arc.quadTo(ex, ey + bulge, ex + 12, ey)
            canvas.drawPath(arc, _stroke(ink, 3.2, lid_alpha))

    # Brows.
    tilt = face["brow_tilt"]
    for side, key in ((-1.0, "brow_l"), (1.0, "brow_r")):
        bx = side * 26 + fx
        by = -18 + fy - 9.0 * face[key]
        inner_dy = -7.0 * tilt
        canvas.drawLine(
            bx - side * 11,
            by + inner_dy,
            bx + side * 11,
            by - 0.3 * inner_dy,
            _stroke(mix(look.hair, _BLACK, 0.2), 5),
        )

    # Nose.
    canvas.drawArc(
        skia.Rect(fx * 1.15 - 5, 18 + fy, fx * 1.15 + 5, 28 + fy),
        20,
        140,
        False,
        _stroke(mix(skin, _BLACK, 0.3), 2.5),
    )

    # Mouth: corners lift with `mouth_curve`, the lower lip drops with `mouth_open`.
    width = 32.0 * face["mouth_w"] * (1.0 - 0.45 * min(max(face["mouth_round"], 0.0), 1.0))
    half = width / 2
    curve = face["mouth_curve"]
    opening = max(face["mouth_open"], 0.0) * 26.0
    my = 42 + fy
    mx = fx * 1.05
    corner_y = my - 7.0 * curve
    mouth = skia.Path()
    mouth.moveTo(mx - half, corner_y)
    mouth.quadTo(mx, my + 5.0 * curve - 0.25 * opening, mx + half, corner_y)
    mouth.quadTo(mx, my + 5.0 * curve + 1.6 * opening, mx - half, corner_y)
    mouth.close()
    if opening > 0.3:
        canvas.drawPath(mouth, _fill((120, 40, 48)))
        canvas.save()
        canvas.clipPath(mouth, skia.ClipOp.kIntersect, True)
        canvas.drawOval(
            skia.Rect(
                mx - half * 0.6,
                my + 5.0 * curve + 0.6 * opening,
                mx + half * 0.6,
                my + 5.0 * curve + 2.0 * opening,
            ),
            _fill((226, 110, 118)),
        )
        canvas.drawRect(
            skia.Rect(mx - half, corner_y - 20, mx + half, my + 5.0 * curve - 0.25 * opening + 3.0),
            _fill(_WHITE, min(1.0, opening / 8.0)),
        )
        canvas.restore()
    canvas.drawPath(mouth, _stroke(ink, 2.6))
