"""Synthetic pose scenes and pose-edit pairs with exact ground truth.

A scene is an articulated, front-facing figure (15 body parts: shaded anti-aliased
capsules for limbs, a polygon torso, a spherical head with hair, eyes and mouth) on a
background from :mod:`.backgrounds`, with the 18 keypoints of :mod:`.skeleton`.

Everything is a pure function of the seed: ``numpy.random.default_rng([seed, stream])``,
never global state. The photographs a scene's background may come from are those of the
seed's split (see :mod:`.splits` and :mod:`.backgrounds`).

Keypoint visibility rule
------------------------
A keypoint is visible iff (1) its pixel ``(round(y), round(x))`` is inside the image, (2)
the front-most part covering that pixel with coverage >= 0.5 is one of the keypoint's own
parts (``skeleton.KEYPOINT_PARTS``; e.g. a wrist lies on its forearm or hand), so a
keypoint hidden behind another part (an arm in front of the other wrist, the head over
the neck) is invisible, and (3) for face keypoints, the point faces the camera (the far
ear and eye disappear when the head turns). Invisible keypoints are ``(-1, -1, 0)``.

Edit pairs
----------
Source and target share figure, clothing, light and background; 1-3 limbs (arms, legs,
head) get new joint angles. Moving a proximal joint (shoulder/hip) moves the whole limb;
moving only the distal joint (elbow/knee) moves the forearm+hand / shin+foot. Parts are
drawn in the fixed depth order ``skeleton.PART_NAMES`` and unmoved parts have bit-identical
geometry, so they render to identical bytes. The edit mask is the union of the moved
parts' footprints (coverage > 0) in both poses, dilated by ``dilation`` pixels (default
``resolution / 40``): every pixel that differs between source and target is inside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from napari_ilat.data.backgrounds import random_background
from napari_ilat.data.splits import SPLIT_SEED_RANGES, STREAM_POSE_SCENE, rng_for
from napari_ilat.engine import skeleton as sk
from napari_ilat.engine.render import bbox_slices, coverage, lambert, pixel_grid, polygon_sdf, segment_offset

# ----------------------------------------------------------------------------- parameters

#: Lengths as fractions of the figure height (jittered per figure).
_LENGTHS = {
    "head_r": 0.068,
    "neck": 0.045,
    "torso": 0.30,
    "shoulder_w": 0.23,
    "hip_w": 0.15,
    "upper_arm": 0.165,
    "forearm": 0.15,
    "thigh": 0.235,
    "shin": 0.22,
    "foot": 0.055,
}
#: Part radii as fractions of the figure height (jittered per figure).
_RADII = {
    "neck": 0.03,
    "upper_arm": 0.036,
    "forearm": 0.029,
    "hand": 0.029,
    "thigh": 0.05,
    "shin": 0.038,
    "foot": 0.026,
}

_SKIN_LIGHT = np.array([0.96, 0.80, 0.69], np.float32)
_SKIN_DARK = np.array([0.33, 0.21, 0.14], np.float32)
_HAIR = np.array(
    [
        [0.08, 0.06, 0.05],
        [0.30, 0.18, 0.09],
        [0.55, 0.38, 0.20],
        [0.85, 0.72, 0.45],
        [0.60, 0.25, 0.10],
        [0.70, 0.70, 0.70],
    ],
    np.float32,
)
_HAIR_P = np.array([0.35, 0.25, 0.12, 0.12, 0.08, 0.08])

# Face feature directions on the unit head sphere, head frame: X = the head's image-right
# (the person's left), Y down, Z towards the camera.
_FACE_DIRS = {
    sk.NOSE: (0.0, 0.22, 1.0),
    sk.R_EYE: (-0.36, -0.08, 0.93),
    sk.L_EYE: (0.36, -0.08, 0.93),
    sk.R_EAR: (-0.86, 0.05, 0.5),
    sk.L_EAR: (0.86, 0.05, 0.5),
}
_FACE_DIRS = {k: np.array(v) / np.linalg.norm(v) for k, v in _FACE_DIRS.items()}
_MOUTH_DIR = np.array([0.0, 0.5, 0.86]) / np.linalg.norm([0.0, 0.5, 0.86])
_FACE_RADIUS = 0.93  # face keypoints sit slightly inside the head outline
_FACE_MIN_Z = 0.1  # face keypoints with a smaller camera-facing component are hidden


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the scene generator (defaults are what the datasets use)."""

    resolution: int = 128
    height_range: tuple[float, float] = (0.6, 0.95)  # figure height / image height
    closeup_prob: float = 0.2
    closeup_height_range: tuple[float, float] = (0.95, 1.5)
    max_moved_limbs: int = 3
    min_angle_change: float = 25.0  # degrees, per changed joint
    dilation: float | None = None  # edit-mask dilation in pixels; None = resolution / 40
    min_changed_fraction: float = 0.004  # re-draw the edit if it changes fewer pixels than this


@dataclass(frozen=True)
class Figure:
    """Proportions (pixels), clothing colours and light of one person; fixed within a pair."""

    lengths: dict
    radii: dict
    colours: dict  # part name -> float32 RGB in [0, 1]
    hair: np.ndarray
    stripes: tuple | None  # (period px, second colour) for a striped shirt, or None
    hairline: float
    light: np.ndarray  # unit (3,) light direction, image axes (x right, y down, z to camera)


@dataclass(frozen=True)
class Articulation:
    """Placement and joint angles (degrees). Angle 0 = straight down the image; the
    proximal angles (shoulder/hip) are abduction away from the body, the distal ones
    (elbow/knee) bend towards the body midline."""

    neck_x: float
    neck_y: float
    torso: float
    r_shoulder: float
    r_elbow: float
    l_shoulder: float
    l_elbow: float
    r_hip: float
    r_knee: float
    l_hip: float
    l_knee: float
    r_foot: float
    l_foot: float
    head_roll: float
    head_yaw: float
    head_pitch: float


@dataclass
class Scene:
    """One rendered scene: uint8 HxWx3 image, float32 (18,3) pose, int8 part-label map
    (-1 = background, else index into ``skeleton.PART_NAMES`` of the front-most part with
    coverage >= 0.5)."""

    image: np.ndarray
    pose: np.ndarray
    labels: np.ndarray
    seed: int | None = None
    figure: Figure | None = field(default=None, repr=False)
    articulation: Articulation | None = field(default=None, repr=False)


@dataclass
class EditPair:
    """A pose edit: same person and background, 1-3 limbs moved.

    ``mask`` (bool HxW) is the dilated union of the moved parts' footprints in both poses;
    ``source == target`` everywhere outside it.
    """

    source: np.ndarray
    target: np.ndarray
    source_pose: np.ndarray
    target_pose: np.ndarray
    mask: np.ndarray
    moved_limbs: tuple[str, ...]
    moved_parts: tuple[str, ...]
    seed: int | None = None
    source_labels: np.ndarray | None = field(default=None, repr=False)
    target_labels: np.ndarray | None = field(default=None, repr=False)


# ----------------------------------------------------------------------------- sampling


def _deg(a: float) -> np.ndarray:
    """Unit direction (x, y) of angle ``a`` degrees, 0 = down (+y), positive towards +x."""
    r = np.deg2rad(a)
    return np.array([np.sin(r), np.cos(r)])


def sample_figure(rng: np.random.Generator, height: float) -> Figure:
    """Random proportions, clothing and light for a figure ``height`` pixels tall."""
    build = rng.uniform(0.8, 1.25)
    lengths = {k: v * height * rng.uniform(0.9, 1.1) for k, v in _LENGTHS.items()}
    radii = {k: max(v * height * build * rng.uniform(0.88, 1.12), 1.0) for k, v in _RADII.items()}
    lengths["torso_round"] = max(0.012 * height, 0.5)
    lengths["waist"] = rng.uniform(0.72, 1.0)  # waist width relative to shoulders/hips

    skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * np.float32(rng.beta(1.3, 1.6))
    hair = _HAIR[int(rng.choice(len(_HAIR), p=_HAIR_P))]
    shirt = rng.random(3).astype(np.float32) * 0.9 + 0.05
    pants = (rng.random(3).astype(np.float32) * 0.7 + 0.05) * (0.5 if rng.random() < 0.4 else 1.0)
    shoes = rng.random(3).astype(np.float32) * (0.3 if rng.random() < 0.7 else 0.9)
    sleeves = rng.choice(3, p=[0.45, 0.4, 0.15])  # 0 long, 1 short, 2 sleeveless
    legs = rng.choice(2, p=[0.75, 0.25])  # 0 trousers, 1 shorts
    colours = {
        "torso": shirt,
        "neck": skin,
        "head": skin,
        "r_upper_arm": shirt if sleeves < 2 else skin,
        "l_upper_arm": shirt if sleeves < 2 else skin,
        "r_forearm": shirt if sleeves == 0 else skin,
        "l_forearm": shirt if sleeves == 0 else skin,
        "r_hand": skin,
        "l_hand": skin,
        "r_thigh": pants,
        "l_thigh": pants,
        "r_shin": pants if legs == 0 else skin,
        "l_shin": pants if legs == 0 else skin,
        "r_foot": shoes,
        "l_foot": shoes,
    }
    stripes = None
    if rng.random() < 0.3:
        stripes = (float(rng.uniform(0.03, 0.08) * height), rng.random(3).astype(np.float32))
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, -0.2), rng.uniform(0.6, 1.0)])
    light /= np.linalg.norm(light)
    return Figure(
        lengths=lengths,
        radii=radii,
        colours={k: np.asarray(v, np.float32) for k, v in colours.items()},
        hair=hair,
        stripes=stripes,
        hairline=float(rng.uniform(-0.55, -0.2)),
        light=light,
    )


def _sample_shoulder(rng):
    u = rng.random()
    if u < 0.1:
        return rng.uniform(-25, 5)
    if u < 0.5:
        return rng.uniform(5, 40)
    if u < 0.82:
        return rng.uniform(40, 110)
    return rng.uniform(110, 175)


def _sample_elbow(rng):
    return rng.uniform(-15, 40) if rng.random() < 0.5 else rng.uniform(-110, 150)


def _sample_hip(rng):
    return rng.uniform(-8, 12) if rng.random() < 0.6 else rng.uniform(12, 55)


def _sample_knee(rng):
    return rng.uniform(-10, 15) if rng.random() < 0.6 else rng.uniform(15, 95)


def _sample_yaw(rng):
    return float(np.clip(rng.normal(0, 12), -45, 45)) if rng.random() < 0.6 else rng.uniform(-50, 50)


def _sample_roll(rng):
    return float(np.clip(rng.normal(0, 9), -28, 28))


_JOINT_SAMPLERS = {
    "r_shoulder": _sample_shoulder,
    "l_shoulder": _sample_shoulder,
    "r_elbow": _sample_elbow,
    "l_elbow": _sample_elbow,
    "r_hip": _sample_hip,
    "l_hip": _sample_hip,
    "r_knee": _sample_knee,
    "l_knee": _sample_knee,
    "head_yaw": _sample_yaw,
    "head_roll": _sample_roll,
}
_LIMB_JOINTS = {  # (proximal joint, distal joint)
    "r_arm": ("r_shoulder", "r_elbow"),
    "l_arm": ("l_shoulder", "l_elbow"),
    "r_leg": ("r_hip", "r_knee"),
    "l_leg": ("l_hip", "l_knee"),
    "head": ("head_yaw", "head_roll"),
}
_LIMB_WEIGHTS = {"r_arm": 0.3, "l_arm": 0.3, "r_leg": 0.15, "l_leg": 0.15, "head": 0.1}


def sample_articulation(
    rng: np.random.Generator, figure: Figure, resolution: int, height: float, closeup: bool
) -> Articulation:
    """Random placement and plausible joint angles for ``figure``."""
    L = figure.lengths
    head_extent = 2 * L["head_r"] + L["neck"]
    if closeup:
        top = rng.uniform(0.02, 0.1) * resolution
    else:
        top = rng.uniform(0.02, max(0.02, 1 - height / resolution - 0.02)) * resolution
    return Articulation(
        neck_x=float(rng.uniform(0.35, 0.65) * resolution),
        neck_y=float(top + head_extent),
        torso=float(np.clip(rng.normal(0, 5), -12, 12)),
        r_shoulder=_sample_shoulder(rng),
        r_elbow=_sample_elbow(rng),
        l_shoulder=_sample_shoulder(rng),
        l_elbow=_sample_elbow(rng),
        r_hip=_sample_hip(rng),
        r_knee=_sample_knee(rng),
        l_hip=_sample_hip(rng),
        l_knee=_sample_knee(rng),
        r_foot=rng.uniform(45, 100),
        l_foot=rng.uniform(45, 100),
        head_roll=_sample_roll(rng),
        head_yaw=_sample_yaw(rng),
        head_pitch=rng.uniform(-12, 12),
    )


def perturb_articulation(
    rng: np.random.Generator, art: Articulation, limbs: tuple[str, ...], min_change: float = 25.0
) -> tuple[Articulation, tuple[str, ...]]:
    """New angles for ``limbs``; returns the new articulation and the names of the moved parts.

    Each limb changes its proximal joint (whole limb moves; the distal joint may change
    too) or, with probability 0.35, only its distal joint. Each changed angle moves by at
    least ``min_change`` degrees (``min_change / 2`` for the head).
    """
    changes = {}
    moved: list[str] = []
    for limb in limbs:
        prox, dist = _LIMB_JOINTS[limb]
        if limb == "head":
            which = [j for j in (prox, dist) if rng.random() < 0.6] or [prox]
            need = min_change / 2
        elif rng.random() < 0.35:
            which = [dist]
            need = min_change
        else:
            which = [prox] + ([dist] if rng.random() < 0.5 else [])
            need = min_change
        for j in which:
            old = getattr(art, j)
            new = old
            for _ in range(30):
                new = _JOINT_SAMPLERS[j](rng)
                if abs(new - old) >= need:
                    break
            else:
                new = old + need * (1 if rng.random() < 0.5 else -1)
            changes[j] = float(new)
        parts = sk.LIMB_PARTS[limb] if (limb == "head" or prox in which) else sk.LIMB_DISTAL_PARTS[limb]
        moved.extend(parts)
    return dataclasses.replace(art, **changes), tuple(p for p in sk.PART_NAMES if p in moved)


# ----------------------------------------------------------------------------- geometry


@dataclass
class _Geometry:
    keypoints: np.ndarray  # (18, 2) float64 x, y
    face_z: dict  # face keypoint index -> camera-facing component
    shapes: dict  # part name -> shape tuple


def _head_rotation(art: Articulation) -> np.ndarray:
    """3x3 rotation from head frame to camera frame (x right, y down, z to camera)."""
    y, p, r = np.deg2rad([art.head_yaw, art.head_pitch, art.head_roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def forward_kinematics(figure: Figure, art: Articulation) -> _Geometry:
    """Keypoint positions and part shapes of a figure in an articulation.

    Each part's geometry is computed only from its own kinematic chain, so changing one
    limb's angles leaves every other part's numbers bit-identical.
    """
    L, R = figure.lengths, figure.radii
    kp = np.zeros((sk.NUM_KEYPOINTS, 2))
    neck = np.array([art.neck_x, art.neck_y])
    down = _deg(art.torso)
    side = _deg(art.torso + 90)  # towards image +x (the person's left)
    kp[sk.NECK] = neck
    kp[sk.R_SHOULDER] = neck - side * L["shoulder_w"] / 2
    kp[sk.L_SHOULDER] = neck + side * L["shoulder_w"] / 2
    pelvis = neck + down * L["torso"]
    kp[sk.R_HIP] = pelvis - side * L["hip_w"] / 2
    kp[sk.L_HIP] = pelvis + side * L["hip_w"] / 2

    shapes = {}
    # arms: right arm abducts towards -x, left towards +x; elbows bend towards the midline
    for s, sign in (("r", -1.0), ("l", 1.0)):
        sh = kp[sk.KP[f"{s}_shoulder"]]
        a_up = art.torso + sign * getattr(art, f"{s}_shoulder")
        elbow = sh + _deg(a_up) * L["upper_arm"]
        a_fore = a_up - sign * getattr(art, f"{s}_elbow")
        wrist = elbow + _deg(a_fore) * L["forearm"]
        kp[sk.KP[f"{s}_elbow"]] = elbow
        kp[sk.KP[f"{s}_wrist"]] = wrist
        shapes[f"{s}_upper_arm"] = ("capsule", sh, elbow, R["upper_arm"])
        shapes[f"{s}_forearm"] = ("capsule", elbow, wrist, R["forearm"])
        shapes[f"{s}_hand"] = ("disc", wrist + _deg(a_fore) * R["hand"] * 0.9, R["hand"])
        hip = kp[sk.KP[f"{s}_hip"]]
        a_th = art.torso + sign * getattr(art, f"{s}_hip")
        knee = hip + _deg(a_th) * L["thigh"]
        a_sh = a_th - sign * getattr(art, f"{s}_knee")
        ankle = knee + _deg(a_sh) * L["shin"]
        kp[sk.KP[f"{s}_knee"]] = knee
        kp[sk.KP[f"{s}_ankle"]] = ankle
        shapes[f"{s}_thigh"] = ("capsule", hip, knee, R["thigh"])
        shapes[f"{s}_shin"] = ("capsule", knee, ankle, R["shin"])
        toe = ankle + _deg(a_sh + sign * getattr(art, f"{s}_foot")) * L["foot"]
        shapes[f"{s}_foot"] = ("capsule", ankle, toe, R["foot"])

    # torso: shoulders widened to the arm's outer edge, a waist, hips widened to the thighs
    ra, rt = R["upper_arm"], R["thigh"]
    w = L["waist"]
    sh_r = kp[sk.R_SHOULDER] - side * ra * 0.6 - down * ra * 0.5
    sh_l = kp[sk.L_SHOULDER] + side * ra * 0.6 - down * ra * 0.5
    hip_r = kp[sk.R_HIP] - side * rt * 0.8 + down * rt * 0.3
    hip_l = kp[sk.L_HIP] + side * rt * 0.8 + down * rt * 0.3
    waist_c = neck + down * L["torso"] * 0.62
    half = (0.38 * (L["shoulder_w"] / 2 + ra * 0.6) + 0.62 * (L["hip_w"] / 2 + rt * 0.8)) * w
    waist_r = waist_c - side * half
    waist_l = waist_c + side * half
    torso_half = 0.5 * (L["shoulder_w"] / 2 + ra * 0.6 + L["hip_w"] / 2 + rt * 0.8)
    shapes["torso"] = (
        "poly",
        np.array([sh_r, sh_l, waist_l, hip_l, hip_r, waist_r]),
        L["torso_round"],
        neck,
        down,
        side,
        torso_half,
    )

    neck_top = neck - down * L["neck"]
    shapes["neck"] = ("capsule", neck, neck_top, R["neck"])
    rot = _head_rotation(art)
    head_up = _deg(art.torso + art.head_roll + 180)
    centre = neck_top + head_up * L["head_r"] * 0.85
    shapes["head"] = ("head", centre, L["head_r"], rot)
    face_z = {}
    for k, d in _FACE_DIRS.items():
        v = rot @ d
        kp[k] = centre + _FACE_RADIUS * L["head_r"] * v[:2]
        face_z[k] = float(v[2])
    return _Geometry(keypoints=kp, face_z=face_z, shapes=shapes)


# ----------------------------------------------------------------------------- rendering

_AMBIENT, _DIFFUSE = 0.42, 0.62


def _part_bbox(shape, pad):
    kind = shape[0]
    if kind == "capsule":
        _, a, b, r = shape
        return min(a[0], b[0]) - r, min(a[1], b[1]) - r, max(a[0], b[0]) + r, max(a[1], b[1]) + r
    if kind in ("disc", "head"):
        c, r = shape[1], shape[2]
        return c[0] - r, c[1] - r, c[0] + r, c[1] + r
    pts, rnd = shape[1], shape[2]
    return pts[:, 0].min() - rnd, pts[:, 1].min() - rnd, pts[:, 0].max() + rnd, pts[:, 1].max() + rnd


def _render_part(name: str, shape, figure: Figure, grid, hw):
    """(slices, coverage float32, colour float32 h x w x 3) of one part, or None."""
    sl = bbox_slices(*_part_bbox(shape, 1.0), hw, pad=1.0)
    if sl is None:
        return None
    yy, xx = grid[0][sl], grid[1][sl]
    light = figure.light
    kind = shape[0]
    base = figure.colours[name]
    if kind in ("capsule", "disc"):
        if kind == "capsule":
            _, a, b, r = shape
            qx, qy = segment_offset(xx, yy, a, b)
        else:
            _, c, r = shape
            qx, qy = xx - float(c[0]), yy - float(c[1])
        dist = np.sqrt(qx * qx + qy * qy)
        cov = coverage(dist - r)
        nx = np.clip(qx * (1.0 / r), -1, 1)
        ny = np.clip(qy * (1.0 / r), -1, 1)
        nz = np.sqrt(np.maximum(1.0 - nx * nx - ny * ny, 0.0))
        shade = lambert(nx, ny, nz, light, _AMBIENT, _DIFFUSE)
        col = shade[..., None] * base
    elif kind == "poly":
        _, pts, rnd, origin, down, side, half = shape
        d, _, _ = polygon_sdf(xx, yy, pts)
        d = d - rnd
        cov = coverage(d)
        # shaded like a slightly flattened cylinder around the torso's long axis
        u = ((xx - float(origin[0])) * float(side[0]) + (yy - float(origin[1])) * float(side[1])) * (0.85 / half)
        u = np.clip(u, -1.0, 1.0)
        nz = np.sqrt(1.0 - u * u)
        shade = lambert(u * float(side[0]), u * float(side[1]), nz, light, _AMBIENT, _DIFFUSE)
        col = shade[..., None] * base
        if figure.stripes is not None:
            period, c2 = figure.stripes
            v = ((xx - float(origin[0])) * float(down[0]) + (yy - float(origin[1])) * float(down[1])) / period
            t = np.clip((np.abs((v % 1.0) - 0.5) - 0.25) * period + 0.5, 0, 1)[..., None]
            col = col * (1 - t) + (shade[..., None] * c2) * t
    else:  # head: sphere with hair, eyes, mouth
        _, c, r, rot = shape
        u = (xx - float(c[0])) * (1.0 / r)
        v = (yy - float(c[1])) * (1.0 / r)
        dist = np.sqrt(u * u + v * v)
        cov = coverage((dist - 1.0) * r)
        z = np.sqrt(np.maximum(1.0 - u * u - v * v, 0.0))
        shade = lambert(u, v, z, light, _AMBIENT, _DIFFUSE)
        # camera frame -> head frame: rot^T
        hx = rot[0, 0] * u + rot[1, 0] * v + rot[2, 0] * z
        hy = rot[0, 1] * u + rot[1, 1] * v + rot[2, 1] * z
        hz = rot[0, 2] * u + rot[1, 2] * v + rot[2, 2] * z
        aa = 1.0 / r  # ~one pixel in sphere units, for anti-aliased feature edges
        hair = np.clip((figure.hairline - hy) / aa + 0.5, 0, 1)
        hair = np.maximum(hair, np.clip((0.15 - hz) / aa + 0.5, 0, 1) * np.clip((0.35 - hy) / aa + 0.5, 0, 1))
        col = shade[..., None] * (base * (1 - hair[..., None]) + figure.hair * hair[..., None])
        feature = np.zeros_like(u)
        eye_r = max(0.11, 0.9 / r)
        for k in (sk.R_EYE, sk.L_EYE):
            e = _FACE_DIRS[k]
            ang = np.sqrt((hx - e[0]) ** 2 + (hy - e[1]) ** 2 + (hz - e[2]) ** 2)
            feature = np.maximum(feature, np.clip((eye_r - ang) / aa + 0.5, 0, 1))
        m = _MOUTH_DIR
        mouth = (
            np.clip((0.16 - np.abs(hx - m[0])) / aa + 0.5, 0, 1)
            * np.clip((max(0.05, 0.6 / r) - np.abs(hy - m[1])) / aa + 0.5, 0, 1)
            * (hz > 0.3)
        )
        eye_col = np.array([0.08, 0.06, 0.06], np.float32)
        mouth_col = np.array([0.55, 0.18, 0.18], np.float32)
        col = col * (1 - feature[..., None]) + eye_col * feature[..., None]
        col = col * (1 - mouth[..., None]) + (shade[..., None] * mouth_col) * mouth[..., None]
    return sl, cov.astype(np.float32, copy=False), col.astype(np.float32, copy=False)


def render_figure(figure: Figure, art: Articulation, background: np.ndarray, keep_coverage: tuple[str, ...] = ()):
    """Render a figure over a uint8 HxWx3 background.

    Returns ``(image uint8, pose float32 (18,3), labels int8, coverages)`` where
    ``coverages`` maps each name in ``keep_coverage`` to a full-frame bool footprint
    (coverage > 0).
    """
    hw = background.shape[:2]
    grid = pixel_grid(*hw)
    geo = forward_kinematics(figure, art)
    img = background.astype(np.float32) * np.float32(1 / 255)
    labels = np.full(hw, -1, np.int8)
    cov_out = {}
    for pid, name in enumerate(sk.PART_NAMES):
        res = _render_part(name, geo.shapes[name], figure, grid, hw)
        if name in keep_coverage:
            foot = np.zeros(hw, bool)
            if res is not None:
                foot[res[0]] = res[1] > 0
            cov_out[name] = foot
        if res is None:
            continue
        sl, cov, col = res
        region = img[sl]
        region += (col - region) * cov[..., None]
        labels[sl][cov >= 0.5] = pid
    image = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    pose = _visible_pose(geo, labels)
    return image, pose, labels, cov_out


def _visible_pose(geo: _Geometry, labels: np.ndarray) -> np.ndarray:
    h, w = labels.shape
    pose = np.tile(sk.INVISIBLE, (sk.NUM_KEYPOINTS, 1))
    for k in range(sk.NUM_KEYPOINTS):
        x, y = geo.keypoints[k]
        c, r = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        if not (0 <= r < h and 0 <= c < w):
            continue
        if int(labels[r, c]) not in sk.KEYPOINT_PART_IDS[k]:
            continue
        if k in geo.face_z and geo.face_z[k] < _FACE_MIN_Z:
            continue
        pose[k] = (x, y, 1.0)
    return pose.astype(np.float32)


# ----------------------------------------------------------------------------- public API


def _background_split(seed: int) -> str:
    for name, r in SPLIT_SEED_RANGES.items():
        if seed in r:
            return name
    return "train"


def _sample_scene(seed: int, config: SceneConfig):
    rng = rng_for(seed, STREAM_POSE_SCENE)
    res = config.resolution
    closeup = rng.random() < config.closeup_prob
    lo, hi = config.closeup_height_range if closeup else config.height_range
    height = rng.uniform(lo, hi) * res
    figure = sample_figure(rng, height)
    art = sample_articulation(rng, figure, res, height, closeup)
    background = random_background(rng, (res, res), _background_split(seed))
    return rng, figure, art, background


def make_scene(seed: int, resolution: int | None = None, config: SceneConfig | None = None) -> Scene:
    """The scene of ``seed`` (default 128 px): identical to ``make_edit_pair(seed, ...).source``.

    ``resolution`` overrides ``config.resolution`` when given.
    """
    config = _config(config, resolution)
    _, figure, art, background = _sample_scene(int(seed), config)
    image, pose, labels, _ = render_figure(figure, art, background)
    return Scene(image=image, pose=pose, labels=labels, seed=int(seed), figure=figure, articulation=art)


def _config(config: SceneConfig | None, resolution: int | None) -> SceneConfig:
    """``config`` (default SceneConfig()) with ``resolution`` when one is given."""
    config = SceneConfig() if config is None else config
    if resolution is not None and int(resolution) != config.resolution:
        config = dataclasses.replace(config, resolution=int(resolution))
    return config


def make_edit_pair(seed: int, resolution: int | None = None, config: SceneConfig | None = None) -> EditPair:
    """The pose-edit pair of ``seed`` (pure function of seed, resolution and config; default
    128 px; ``resolution`` overrides ``config.resolution`` when given)."""
    config = _config(config, resolution)
    seed = int(seed)
    rng, figure, art, background = _sample_scene(seed, config)
    res = config.resolution
    src, src_pose, src_labels, cov_src = render_figure(figure, art, background, keep_coverage=sk.PART_NAMES)
    radius = config.dilation if config.dilation is not None else res / 40.0
    # limbs that are at least partly in view are the candidates
    in_view = [lb for lb in sk.LIMB_NAMES if any(cov_src[p].any() for p in sk.LIMB_PARTS[lb])]
    if not in_view:
        in_view = list(sk.LIMB_NAMES)
    best = None
    for _attempt in range(8):
        k = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        k = min(k, config.max_moved_limbs, len(in_view))
        w = np.array([_LIMB_WEIGHTS[lb] for lb in in_view])
        limbs = tuple(sorted(rng.choice(len(in_view), size=k, replace=False, p=w / w.sum())))
        limbs = tuple(in_view[i] for i in limbs)
        tgt_art, moved = perturb_articulation(rng, art, limbs, config.min_angle_change)
        tgt, tgt_pose, tgt_labels, cov_tgt = render_figure(figure, tgt_art, background, keep_coverage=moved)
        best = (limbs, moved, tgt, tgt_pose, tgt_labels, cov_tgt)
        changed = np.any(tgt != src, axis=-1).mean()
        if changed >= config.min_changed_fraction:
            break
    limbs, moved, tgt, tgt_pose, tgt_labels, cov_tgt = best
    foot = np.zeros((res, res), bool)
    for p in moved:
        foot |= cov_src[p] | cov_tgt[p]
    mask = dilate(foot, radius)
    return EditPair(
        source=src,
        target=tgt,
        source_pose=src_pose,
        target_pose=tgt_pose,
        mask=mask,
        moved_limbs=limbs,
        moved_parts=moved,
        seed=seed,
        source_labels=src_labels,
        target_labels=tgt_labels,
    )


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilate a bool mask by a disc of ``radius`` pixels (Euclidean)."""
    mask = np.asarray(mask, bool)
    if radius <= 0 or not mask.any():
        return mask.copy()
    r = int(np.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    struct = (yy * yy + xx * xx) <= radius * radius
    return ndimage.binary_dilation(mask, structure=struct)


def limb_footprint(figure: Figure, art: Articulation, parts: tuple[str, ...], shape: tuple[int, int]) -> np.ndarray:
    """Bool footprint (coverage > 0) of the given parts of a figure, for automatic masks."""
    bg = np.zeros((*shape, 3), np.uint8)
    _, _, _, cov = render_figure(figure, art, bg, keep_coverage=tuple(parts))
    out = np.zeros(shape, bool)
    for p in parts:
        out |= cov[p]
    return out
