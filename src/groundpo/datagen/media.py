"""Media for the pipelines, all through PyAV (FFmpeg): frames at a frame rate, audio tracks as
wav, a clip's video muxed with another clip's audio, and atomic writes of output files.

Errors name the file: a missing file raises :class:`~groundpo.datagen.errors.InputError`; a file
that cannot be decoded, or a clip without an audio track, raises
:class:`~groundpo.datagen.errors.MediaError` (the item that needs it is rejected, the build goes on).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import wave
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import InputError, MediaError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@contextmanager
def atomic_path(dst: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``dst`` that becomes ``dst`` when the block ends without error.

    A build killed while writing never leaves a half-written media file under its final name.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=dst.suffix, dir=dst.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically (skipped when ``dst`` already holds a file of the same size)."""
    dst = Path(dst)
    if dst.exists() and dst.stat().st_size == Path(src).stat().st_size:
        return dst
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def _open(path: str | os.PathLike):
    import av

    if not Path(path).is_file():
        raise InputError(f"media file not found: {path}")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:  # type: ignore[attr-defined]
        raise MediaError(f"cannot read media file {path}: {e}") from None


def video_duration(path: str | os.PathLike) -> float:
    """Seconds of the first video stream (of the container when the stream does not say)."""
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"no video stream in {path}")
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / 1_000_000
        frames = sum(1 for _ in container.decode(stream))
        rate = float(stream.average_rate or 1)
        return frames / rate


def sample_frames(path: str | os.PathLike, fps: float = 1.0, max_frames: int | None = None) -> list[Any]:
    """RGB PIL frames at ``fps`` (the first frame at or after each 1/fps step), evenly thinned to ``max_frames``."""
    import av

    frames = []
    step = 1.0 / fps
    next_time = 0.0
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"no video stream in {path}")
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else next_time
                if t + 1e-6 >= next_time:
                    frames.append(frame.to_image())
                    while next_time <= t + 1e-6:
                        next_time += step
        except av.error.FFmpegError as e:  # type: ignore[attr-defined]
            raise MediaError(f"cannot decode video {path}: {e}") from None
    if not frames:
        raise MediaError(f"no frames decoded from {path}")
    if max_frames and len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in keep]
    return frames


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """The first audio stream of a file (video or audio) as mono int16 samples at ``sample_rate``."""
    import av

    chunks = []
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"no audio track in {path}")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:  # type: ignore[attr-defined]
            raise MediaError(f"cannot decode audio of {path}: {e}") from None
    return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, dtype=np.int16)


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> Path:
    """A 16-bit mono PCM wav, written atomically."""
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(int(sample_rate))
            wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return Path(path)


def extract_audio(src: str | os.PathLike, dst: str | os.PathLike, sample_rate: int = 16000, seconds: float | None = None) -> Path:
    """The audio of ``src`` (a video's track or an audio file) as a wav, cut to ``seconds`` when given."""
    samples = read_audio(src, sample_rate)
    if seconds is not None:
        samples = samples[: int(round(seconds * sample_rate))]
    if samples.size == 0:
        raise MediaError(f"the audio track of {src} is empty")
    return write_wav(dst, samples, sample_rate)


def trim_wav(src: str | os.PathLike, dst: str | os.PathLike, seconds: float) -> Path:
    """A copy of a wav cut to ``seconds``."""
    with wave.open(str(src), "rb") as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(min(wav.getnframes(), int(round(seconds * rate)))), dtype="<i2")
    return write_wav(dst, samples, rate)


def mux(video_src: str | os.PathLike, audio_wav: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """An mp4 with the video stream of ``video_src`` (copied, not re-encoded) and ``audio_wav`` as AAC.

    The audio is cut to the video's duration. Used for mismatched audiovisual contexts: the video
    of one clip with the audio of another.
    """
    import av

    with wave.open(str(audio_wav), "rb") as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    duration = video_duration(video_src)
    samples = samples[: int(round(duration * rate))]
    with atomic_path(dst) as tmp:
        with _open(video_src) as vin, av.open(str(tmp), "w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
            vstream = vin.streams.video[0]
            ovideo = out.add_stream_from_template(vstream)
            oaudio = out.add_stream("aac", rate=rate, layout="mono")
            for packet in vin.demux(vstream):
                if packet.dts is None:
                    continue
                packet.stream = ovideo
                out.mux(packet)
            if samples.size:
                frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).copy(), format="s16", layout="mono")
                frame.sample_rate = rate
                frame.pts = 0
                for packet in oaudio.encode(frame):
                    out.mux(packet)
            for packet in oaudio.encode(None):
                out.mux(packet)
    return Path(dst)


def list_files(folder: str | os.PathLike, extensions: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` (recursive) with one of ``extensions``, in a stable sorted order."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"folder not found: {folder}")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


def load_image(path: str | os.PathLike) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise InputError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(f"cannot read image {path}: {e}") from None


def save_png(path: str | os.PathLike, pixels: np.ndarray) -> Path:
    """A lossless PNG without metadata, written atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(tmp, format="PNG", compress_level=6)
    return Path(path)
