"""Small, deterministic media writers for demo data and tests.

Three writers, each a pure function of its arguments (same arguments, same bytes):

* :func:`write_shape_video` -- an mp4 of one coloured shape moving across a plain background;
* :func:`write_image` -- a PNG of one coloured shape at a given position;
* :func:`write_tone_wav` -- a 16-bit mono wav of a simple sound (hum, beeps, noise, sweeps, silence).

How the bytes stay reproducible:

* frames are drawn with integer numpy masks and converted to YUV 4:2:0 here, in integer
  arithmetic, so no pixel-format converter with CPU-specific code paths is involved;
* the encoder runs on one thread with the ``bitexact`` codec flag and, for H.264, x264's
  ``cpu-independent`` mode (without it, libx264 picks algorithms by the CPU's SIMD extensions and
  another CPU model writes other bytes); the mp4 muxer gets
  ``fflags=+bitexact`` (no library version string) and no creation time;
* PNGs carry no text chunks or timestamps; wav noise comes from a seeded PCG64 generator.

All writers create missing parent folders and raise ``ValueError`` naming the bad value for an
unknown shape, colour, direction or sound kind.
"""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 230),
    "green": (40, 190, 70),
    "yellow": (235, 215, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")
SOUND_KINDS: tuple[str, ...] = ("low_hum", "high_beeps", "noise_bursts", "rising_tone", "falling_tone", "silence")

# x264's canonical algorithms instead of those it picks by the CPU's SIMD extensions: another CPU model
# writes the same bytes (tests/test_demo_data.py encodes with SIMD off and on and compares).
X264_PARAMS = "cpu-independent=1"

# The shape's half-extent as a fraction of the frame side (a 56-pixel frame gives a 9-pixel radius).
_SHAPE_SCALE = 0.16
_AMPLITUDE = 0.5  # peak of tonal sounds, as a fraction of full scale


def _check(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(allowed)}")


def shape_radius(size: int) -> int:
    """Half-extent in pixels of a shape drawn in a ``size`` x ``size`` frame."""
    return max(2, round(size * _SHAPE_SCALE))


def shape_mask(shape: str, size: int, centre: tuple[float, float], radius: int | None = None) -> np.ndarray:
    """Boolean ``(size, size)`` mask of ``shape`` centred at ``centre`` = ``(x, y)`` in pixels.

    ``circle``: disc of the given radius; ``square``: axis-aligned square of side ``2 * radius``;
    ``triangle``: upward-pointing isosceles triangle inscribed in that square.
    """
    _check("shape", shape, SHAPES)
    r = shape_radius(size) if radius is None else radius
    cx, cy = centre
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    inside_box = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "square":
        return inside_box
    # triangle: apex at (cx, cy - r), base from (cx - r, cy + r) to (cx + r, cy + r)
    return inside_box & (np.abs(dx) * 2.0 <= (dy + r))


def shape_bbox(shape: str, size: int, centre: tuple[float, float]) -> list[int]:
    """Pixel bounding box ``[x0, y0, x1, y1]`` (x1, y1 exclusive) of the drawn shape."""
    ys, xs = np.nonzero(shape_mask(shape, size, centre))
    if len(xs) == 0:
        raise ValueError(f"shape {shape!r} at {centre!r} lies outside a {size}x{size} frame")
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def draw_shape(
    shape: str,
    colour: str,
    size: int,
    centre: tuple[float, float],
    background: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """RGB ``uint8`` array ``(size, size, 3)``: ``background`` with one filled ``colour`` shape."""
    _check("colour", colour, COLOURS)
    mask = shape_mask(shape, size, centre)
    frame = np.empty((size, size, 3), dtype=np.uint8)
    frame[:] = np.asarray(background, dtype=np.uint8)
    frame[mask] = COLOURS[colour]
    return frame


def _path_centres(direction: str, size: int, n_frames: int) -> list[tuple[float, float]]:
    """Centres of the shape along a straight path across the frame, edge margin to edge margin."""
    _check("direction", direction, DIRECTIONS)
    r = shape_radius(size)
    lo, hi, mid = r + 1.0, size - r - 1.0, size / 2.0
    steps = np.linspace(lo, hi, n_frames) if n_frames > 1 else np.array([mid])
    if direction in ("right_to_left", "bottom_to_top"):
        steps = steps[::-1]
    if direction in ("left_to_right", "right_to_left"):
        return [(float(s), mid) for s in steps]
    return [(mid, float(s)) for s in steps]


def _rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range RGB -> planar YUV 4:2:0 in integer arithmetic, as an ``(h*3/2, w)`` array."""
    rgb = frame.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128
    v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128
    h, w = y.shape

    def sub(c: np.ndarray) -> np.ndarray:  # 2x2 average with rounding
        return (c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3)) + 2) // 4

    planes = [y.reshape(-1), sub(u).reshape(-1), sub(v).reshape(-1)]
    return np.clip(np.concatenate(planes), 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def video_codec_name() -> str:
    """``libx264`` when this PyAV build has the encoder, else ``mpeg4``."""
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - any failure means the encoder is unavailable
        return "mpeg4"


def write_shape_video(
    path,
    *,
    shape: str,
    colour: str,
    direction: str,
    seconds: float = 2.0,
    fps: int = 8,
    size: int = 56,
    background: tuple[int, int, int] = (0, 0, 0),
) -> Path:
    """Write an mp4 of one ``colour`` ``shape`` moving across the frame in ``direction``.

    The video has ``round(seconds * fps)`` frames of ``size`` x ``size`` pixels (``size`` must be
    even, as 4:2:0 chroma needs), H.264 (libx264) or MPEG-4 part 2 in yuv420p. The shape starts
    touching one edge's margin and ends at the opposite one. Returns the path.
    """
    _check("shape", shape, SHAPES)
    _check("colour", colour, COLOURS)
    _check("direction", direction, DIRECTIONS)
    if size < 8 or size % 2:
        raise ValueError(f"size must be an even number >= 8, got {size!r}")
    n_frames = round(seconds * fps)
    if n_frames < 1:
        raise ValueError(f"seconds * fps must give at least one frame, got seconds={seconds!r} fps={fps!r}")
    frames = [draw_shape(shape, colour, size, centre, background) for centre in _path_centres(direction, size, n_frames)]
    return write_frames_video(path, frames, fps=fps)


def write_frames_video(path, frames, *, fps: int = 8) -> Path:
    """Write RGB ``uint8`` frames (each ``(h, w, 3)``, even sides) as a bit-exact mp4. Returns the path.

    The encoding of :func:`write_shape_video`: H.264 (libx264, ``cpu-independent``) or MPEG-4
    part 2 in yuv420p, one thread, ``bitexact`` flags, one GOP, no creation time.
    """
    import av

    frames = list(frames)
    if not frames:
        raise ValueError("frames must hold at least one frame")
    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"frame sides must be even (4:2:0 chroma), got {width}x{height}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = video_codec_name()
    with av.open(str(path), "w", format="mp4", container_options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=Fraction(int(fps), 1))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.time_base = Fraction(1, int(fps))
        ctx.thread_count = 1
        ctx.thread_type = "SLICE"
        ctx.flags |= av.codec.context.Flags.bitexact
        ctx.gop_size = len(frames)
        if codec == "libx264":
            ctx.options = {"crf": "18", "preset": "medium", "threads": "1", "x264-params": X264_PARAMS}
        else:
            ctx.options = {"qscale": "3"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(_rgb_to_yuv420p(rgb), format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, int(fps))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_image(
    path,
    *,
    shape: str,
    colour: str,
    size: int = 56,
    position: tuple[float, float] | None = None,
    background: tuple[int, int, int] = (0, 0, 0),
) -> Path:
    """Write a ``size`` x ``size`` RGB PNG of one ``colour`` ``shape`` centred at ``position``.

    ``position`` is ``(x, y)`` in pixels; ``None`` means the centre of the image. Returns the path.
    """
    _check("shape", shape, SHAPES)
    _check("colour", colour, COLOURS)
    centre = (size / 2.0, size / 2.0) if position is None else (float(position[0]), float(position[1]))
    return write_png(path, draw_shape(shape, colour, size, centre, background))


def write_png(path, pixels: np.ndarray) -> Path:
    """Write an RGB ``uint8`` array as a PNG with no metadata chunks. Returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(path, format="PNG", compress_level=9)
    return path


def _ramp(n: int, sample_rate: int) -> np.ndarray:
    """Envelope of ``n`` samples with 5 ms linear fade-in/out (avoids clicks)."""
    env = np.ones(n)
    k = min(n // 2, max(1, int(0.005 * sample_rate)))
    fade = np.linspace(0.0, 1.0, k, endpoint=False)
    env[:k] = fade
    env[n - k :] = fade[::-1]
    return env


def tone_samples(kind: str, *, seconds: float = 2.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Float samples in ``[-1, 1]`` for ``kind`` (see :data:`SOUND_KINDS`); used by :func:`write_tone_wav`.

    * ``low_hum``: steady 220 Hz tone with a weak 440 Hz overtone;
    * ``high_beeps``: three (two if shorter than 0.9 s) 1 kHz beeps, evenly spaced;
    * ``noise_bursts``: three bursts of white noise drawn from ``numpy.random.default_rng(seed)``;
    * ``rising_tone`` / ``falling_tone``: linear sweep 300 -> 1200 Hz / 1200 -> 300 Hz;
    * ``silence``: zeros.
    """
    _check("sound kind", kind, SOUND_KINDS)
    n = round(seconds * sample_rate)
    if n < 1:
        raise ValueError(f"seconds * sample_rate must give at least one sample, got seconds={seconds!r}")
    t = np.arange(n, dtype=np.float64) / sample_rate
    out = np.zeros(n, dtype=np.float64)
    if kind == "low_hum":
        out = _AMPLITUDE * (0.8 * np.sin(2 * np.pi * 220.0 * t) + 0.2 * np.sin(2 * np.pi * 440.0 * t))
        out *= _ramp(n, sample_rate)
    elif kind in ("high_beeps", "noise_bursts"):
        count = 3 if seconds >= 0.9 else 2
        slot = n // count
        length = max(1, min(int(0.12 * sample_rate), slot // 2))
        rng = np.random.default_rng(seed)
        for i in range(count):
            start = i * slot + (slot - length) // 2
            if kind == "high_beeps":
                burst = _AMPLITUDE * np.sin(2 * np.pi * 1000.0 * t[:length])
            else:
                burst = np.clip(rng.standard_normal(length) * 0.25, -0.9, 0.9)
            out[start : start + length] = burst * _ramp(length, sample_rate)
    elif kind in ("rising_tone", "falling_tone"):
        f0, f1 = (300.0, 1200.0) if kind == "rising_tone" else (1200.0, 300.0)
        duration = n / sample_rate
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * duration))
        out = _AMPLITUDE * np.sin(phase) * _ramp(n, sample_rate)
    return out


def write_tone_wav(path, *, kind: str, seconds: float = 2.0, sample_rate: int = 16000, seed: int = 0) -> Path:
    """Write a 16-bit mono PCM wav of ``kind`` (see :func:`tone_samples`). Returns the path."""
    samples = tone_samples(kind, seconds=seconds, sample_rate=sample_rate, seed=seed)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(int(sample_rate))
        wav.writeframes(pcm.tobytes())
    return path
