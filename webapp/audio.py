"""Decode, validate and encode audio with PyAV.

Plain values in and out: this module knows nothing of the database or the domain. Everything here is synchronous CPU
work; callers run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from webapp.errors import AudioTooLong, NoSpeechDetected, UnsupportedAudio

if TYPE_CHECKING:
    import av

# Our short format names -> (file extension, content type).
FORMATS: dict[str, tuple[str, str]] = {
    "webm": (".webm", "audio/webm"),
    "ogg": (".ogg", "audio/ogg"),
    "wav": (".wav", "audio/wav"),
    "mp3": (".mp3", "audio/mpeg"),
    "mp4": (".m4a", "audio/mp4"),
    "flac": (".flac", "audio/flac"),
    "opus": (".opus", "audio/ogg"),
    "aac": (".aac", "audio/aac"),
    "pcm": (".pcm", "audio/pcm"),
}
UPLOAD_FORMATS = ("webm", "ogg", "wav", "mp3", "mp4", "flac")
"""What `load_clip` accepts, sniffed from the bytes."""
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
"""What `encode_pcm` produces: OpenAI's speech `response_format` values."""

SAMPLE_RATE = 16_000
"""The rate of `AudioClip.pcm16k`, what speech recognisers expect."""
PCM_RATE = 24_000
"""The rate of the raw "pcm" output format (16-bit signed little-endian mono), as OpenAI's."""
SILENCE_DBFS = -50.0

_ACCEPTED = f"{', '.join(UPLOAD_FORMATS[:-1])} or {UPLOAD_FORMATS[-1]}"
# FFmpeg demuxer names -> our short names. Matroska and WebM share a demuxer, as do MP4, M4A and QuickTime.
_CONTAINERS = {
    "matroska,webm": "webm",
    "ogg": "ogg",
    "wav": "wav",
    "mp3": "mp3",
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "flac": "flac",
}
# Output format -> (FFmpeg muxer, encoder, sample rate or None to keep the input's).
_ENCODERS: dict[str, tuple[str, str, int | None]] = {
    "mp3": ("mp3", "libmp3lame", None),
    "opus": ("ogg", "libopus", 48_000),
    "aac": ("adts", "aac", None),
    "flac": ("flac", "flac", None),
    "wav": ("wav", "pcm_s16le", None),
}


@dataclass(frozen=True)
class AudioClip:
    """A validated upload: where it is stored, what it is, and its speech-ready PCM."""

    path: Path
    format: str
    content_type: str
    duration_s: float
    pcm16k: bytes
    """16 kHz mono signed 16-bit little-endian PCM."""
    peak_dbfs: float


def content_type_for(fmt: str) -> str:
    """The content type of one of our short format names."""
    return _format(fmt)[1]


def extension_for(fmt: str) -> str:
    """The file extension (with its dot) of one of our short format names."""
    return _format(fmt)[0]


def _format(fmt: str) -> tuple[str, str]:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ValueError(f"Unknown audio format {fmt!r}") from None


def load_clip(path: Path, *, max_seconds: float) -> AudioClip:
    """Sniff, decode and validate an uploaded recording.

    Raises `NoSpeechDetected` for an empty, sample-less or silent file, `UnsupportedAudio` for anything that is not
    audio in an accepted container or whose header or frames declare impossible parameters (see `_Budget`), and
    `AudioTooLong` (without decoding the rest) once `max_seconds` is passed, by the header's word or by decoded samples.
    """
    import numpy as np  # imported on first use (as av is): start-up and idle memory need neither

    size = path.stat().st_size
    if size == 0:
        raise NoSpeechDetected("The upload is empty")
    # A file object, not the path: FFmpeg would otherwise let the file name sway its guess of the container.
    with path.open("rb") as file, _open(file) as container:
        fmt = _CONTAINERS.get(container.format.name)
        if fmt is None:
            raise UnsupportedAudio(f"Unsupported file type ({container.format.long_name}); send {_ACCEPTED} audio")
        if not container.streams.audio:
            raise UnsupportedAudio(f"The {fmt} file has no audio track")
        pcm = _decode(container, max_seconds)

    samples = np.frombuffer(pcm, dtype="<i2")
    if samples.size == 0:
        raise NoSpeechDetected("The recording contains no audio samples")
    peak = max(int(samples.max()), -int(samples.min()))  # no int32 copy: 4 bytes a sample of a 300 s clip is 19 MB
    peak_dbfs = 20 * math.log10(peak / 32768) if peak else -math.inf
    if peak_dbfs <= SILENCE_DBFS:
        raise NoSpeechDetected(f"The recording is silent (peak {peak_dbfs:.1f} dBFS, below {SILENCE_DBFS:g} dBFS)")
    return AudioClip(
        path=path,
        format=fmt,
        content_type=content_type_for(fmt),
        duration_s=samples.size / SAMPLE_RATE,
        pcm16k=pcm,
        peak_dbfs=peak_dbfs,
    )


# The audio budget (DESIGN §9): what a header or a frame may declare before any work is done on its word.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
MAX_FRAME_SAMPLES = 65_536
"""FLAC's largest block (65,535); every other accepted codec's frames are at most 8,192 samples."""
MAX_PACKET_BYTES = 2 * 1024 * 1024
"""A 65,535-sample FLAC frame of 8 channels at 32 bits, uncompressed, is just under this."""
_PROBE_BYTES = 32 * 1024
"""How much FFmpeg may read to identify the container and its stream (its own default is 5 MB). Probing a WAV decodes
as much of it as it reads, so this is a tenth of the cost of 256 KiB; the hostile corpus is identified the same either
way, and tags and metadata far larger than this are skipped, not probed (tests/test_audio.py)."""
_STEPS_PER_SECOND = 500
"""Packets and frames allowed per second of the limit: Opus's shortest frame is 2.5 ms (400 a second)."""
_STEPS_FLOOR = 2_000


def _open(file: BinaryIO) -> av.container.InputContainer:
    """The file opened as a container. PyAV decodes tags on opening: one that is not UTF-8 must not fail the upload
    (strict decoding raised a 500)."""
    import av

    try:
        return av.open(file, "r", container_options={"probesize": str(_PROBE_BYTES)}, metadata_errors="replace")
    except av.FFmpegError as exc:
        raise UnsupportedAudio("The upload is not a recognised audio file") from exc


def _decode(container: av.container.InputContainer, max_seconds: float) -> bytes:
    """Decode the first audio stream to 16 kHz mono s16le, within the audio budget.

    Every limit is checked before the work it guards: the stream header's rate, channels and duration before
    decoding; each frame's rate, channels, size and running duration before it is resampled (resampling a 1 Hz frame
    to 16 kHz multiplies it 16,000-fold); each packet's size before it is decoded; and the number of packets and
    frames, so that a stream of empty ones cannot spin for ever.
    """
    import av

    stream = container.streams.audio[0]
    codec = stream.codec_context
    if codec is None:  # FFmpeg knows no decoder for the stream's codec tag
        raise UnsupportedAudio("The audio track is in an unknown codec")
    _check_rate(codec.sample_rate, "stream header")
    _check_channels(codec.channels, "stream header", allow_unknown=True)
    header_s = _header_seconds(container, stream)
    if header_s > max_seconds:
        raise AudioTooLong(f"The recording lasts {header_s:.1f} s, the limit is {max_seconds:g} s")

    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    max_steps = _STEPS_FLOOR + int(_STEPS_PER_SECOND * max_seconds)
    steps = 0
    decoded_s = 0.0
    pcm = bytearray()
    try:
        for packet in container.demux(stream):
            steps += 1
            if packet.size > MAX_PACKET_BYTES:
                raise UnsupportedAudio(f"An audio packet of {packet.size} bytes is larger than any real recording's")
            for frame in packet.decode():
                steps += 1
                _check_frame(frame)
                decoded_s += frame.samples / frame.sample_rate
                if decoded_s > max_seconds + 1e-6:  # a microsecond's slack for the float sum
                    # Browsers' WebM has no duration in its header; when there is one, it gives a better message.
                    raise AudioTooLong(f"The recording is longer than the {max_seconds:g} s limit")
                for out in resampler.resample(frame):
                    pcm += _s16_bytes(out)
            if steps > max_steps:
                raise UnsupportedAudio("The audio has far more packets or frames than its length allows")
        for out in resampler.resample(None):
            pcm += _s16_bytes(out)
    except (av.FFmpegError, ValueError) as exc:  # ValueError: the resampler refuses a frame whose layout changed
        raise UnsupportedAudio("The audio is corrupt and could not be decoded") from exc
    return bytes(pcm)


def _header_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    """The longest duration the container or the stream header declares (0 when neither does)."""
    import av

    declared = [0.0]
    if container.duration is not None and container.duration > 0:
        declared.append(container.duration / av.time_base)
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        declared.append(float(stream.duration * stream.time_base))
    return max(declared)


def _check_rate(rate: int, where: str) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UnsupportedAudio(
            f"The {where} declares a sample rate of {rate} Hz; "
            f"recordings must be {MIN_SAMPLE_RATE // 1000}-{MAX_SAMPLE_RATE // 1000} kHz"
        )


def _check_channels(channels: int, where: str, *, allow_unknown: bool = False) -> None:
    if channels > MAX_CHANNELS or (channels < 1 and not allow_unknown):
        raise UnsupportedAudio(
            f"The {where} declares {channels} audio channels; recordings may have 1 to {MAX_CHANNELS}"
        )


def _check_frame(frame: av.AudioFrame) -> None:
    _check_rate(frame.sample_rate, "audio frame")
    _check_channels(frame.layout.nb_channels, "audio frame")
    if frame.samples > MAX_FRAME_SAMPLES:
        raise UnsupportedAudio(f"An audio frame declares {frame.samples} samples, more than any real recording's")


def _s16_bytes(frame: av.AudioFrame) -> bytes:
    # A plane can carry padding past the last sample.
    return bytes(frame.planes[0])[: frame.samples * 2]


def encode_pcm(pcm: bytes, *, sample_rate: int, fmt: str) -> bytes:
    """Encode 16-bit signed little-endian mono PCM as one of `SPEECH_FORMATS`.

    "pcm" is the raw samples resampled to `PCM_RATE`; "opus" is Ogg Opus at 48 kHz; "aac" is ADTS. Empty PCM gives
    a file with no samples (only a header, in the formats that have one).
    """
    import av

    if len(pcm) % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    if fmt == "pcm":
        return _resample(pcm, sample_rate, PCM_RATE)
    try:
        muxer, codec, rate = _ENCODERS[fmt]
    except KeyError:
        raise ValueError(f"Cannot encode speech as {fmt!r}; choose one of {', '.join(SPEECH_FORMATS)}") from None
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer) as output:
        stream = cast(av.AudioStream, output.add_stream(codec, rate=rate or sample_rate, layout="mono"))
        output.start_encoding()  # write the header even when there are no samples
        if pcm:
            # PyAV converts the sample format and rate and cuts the frame to the encoder's frame size.
            output.mux(stream.encode(_frame(pcm, sample_rate)))
        output.mux(stream.encode(None))
    return buffer.getvalue()


_REMUXERS = {"mp3": "mp3", "aac": "adts"}
"""Formats whose segments are joined by copying their packets: the MP3 muxer writes a header with the whole length,
and ADTS has none. (FLAC and Ogg Opus keep per-file headers that a copy would get wrong: they are encoded again.)"""


def join_speech(parts: list[bytes], *, fmt: str) -> bytes:
    """Spoken segments in `fmt` joined into one file of that format, whose header states the whole duration.

    Concatenated files would play, but players would read the duration (and seek) from the first part's header. MP3
    and AAC packets are copied into a new file (no decoding: ~1 ms a segment); other formats, or parts whose stream
    parameters differ, are decoded and encoded again. Raises `ValueError` for a part that cannot be decoded.
    """
    if fmt == "pcm" or len(parts) == 1:  # raw samples at PCM_RATE have no header; one part's is right already
        return b"".join(parts)
    if fmt in _REMUXERS:
        try:
            return _remux(parts, _REMUXERS[fmt])
        except _Mismatch:
            pass
    return _reencode(parts, fmt)


class _Mismatch(Exception):
    """The parts' streams cannot share one header."""


def _remux(parts: list[bytes], muxer: str) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer) as output:
        target: av.AudioStream | None = None
        offset = 0
        for part in parts:
            with _opened_speech(part) as container:
                stream = container.streams.audio[0]
                if target is None:
                    target = output.add_stream_from_template(stream)
                elif (stream.rate, stream.channels, stream.codec_context.name) != (
                    target.rate,
                    target.channels,
                    target.codec_context.name,
                ):
                    raise _Mismatch
                end = offset
                try:
                    for packet in container.demux(stream):
                        if packet.dts is None or packet.pts is None:  # the demuxer's flush packet
                            continue
                        packet.pts += offset
                        packet.dts += offset
                        end = max(end, packet.pts + (packet.duration or 0))
                        packet.stream = target
                        output.mux(packet)
                except av.FFmpegError as exc:
                    raise ValueError(f"a spoken segment could not be read: {exc}") from exc
                offset = end
    return buffer.getvalue()


def _reencode(parts: list[bytes], fmt: str) -> bytes:
    import av

    pcm: list[bytes] = []
    rate: int | None = None
    for part in parts:
        with _opened_speech(part) as container:
            stream = container.streams.audio[0]
            rate = rate or stream.rate
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            try:
                for frame in container.decode(stream):
                    pcm.extend(_s16_bytes(out) for out in resampler.resample(frame))
            except av.FFmpegError as exc:
                raise ValueError(f"a spoken segment could not be decoded: {exc}") from exc
            pcm.extend(_s16_bytes(out) for out in resampler.resample(None))
    return encode_pcm(b"".join(pcm), sample_rate=rate or PCM_RATE, fmt=fmt)


@contextlib.contextmanager
def _opened_speech(part: bytes) -> Iterator[av.container.InputContainer]:
    """A spoken segment opened for reading, with one audio stream; `ValueError` if it is not audio."""
    import av

    try:
        container = av.open(io.BytesIO(part), "r")
    except av.FFmpegError as exc:
        raise ValueError(f"a spoken segment could not be opened: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise ValueError("a spoken segment has no audio stream")
        yield container


def _frame(pcm: bytes, sample_rate: int) -> av.AudioFrame:
    import av
    import numpy as np

    frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = sample_rate
    return frame


def _resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    import av

    if from_rate == to_rate or not pcm:
        return pcm
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
    frames = [*resampler.resample(_frame(pcm, from_rate)), *resampler.resample(None)]
    return b"".join(_s16_bytes(frame) for frame in frames)
