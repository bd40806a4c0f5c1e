"""`webapp.audio` on real audio: every upload format, hostile inputs, and every speech output format."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from tests.audio_samples import (
    UPLOAD_ENCODERS,
    duration_s,
    encode_clip,
    question_pcm,
    silence,
    speech_pcm,
    tone,
    tone_pcm,
)
from webapp.audio import (
    FORMATS,
    PCM_RATE,
    SPEECH_FORMATS,
    AudioClip,
    content_type_for,
    encode_pcm,
    extension_for,
    join_speech,
    load_clip,
)
from webapp.errors import AudioTooLong, NoSpeechDetected, UnsupportedAudio

SENTENCE = "Please book a table for two people at seven o'clock tonight."
SNIFFED = {fmt: "mp4" if fmt == "m4a" else fmt for fmt in UPLOAD_ENCODERS}


def _save(tmp_path: Path, data: bytes, name: str = "clip.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("fmt", list(UPLOAD_ENCODERS))
def test_load_clip_decodes_speech_in_every_upload_format(tmp_path: Path, fmt: str) -> None:
    pcm, rate = speech_pcm(SENTENCE)
    truth = duration_s(pcm, rate)
    path = _save(tmp_path, encode_clip(pcm, rate, fmt))

    clip = load_clip(path, max_seconds=30)

    assert isinstance(clip, AudioClip)
    assert clip.path == path
    assert clip.format == SNIFFED[fmt]
    assert clip.content_type == FORMATS[SNIFFED[fmt]][1]
    assert clip.duration_s == pytest.approx(truth, abs=0.15)
    assert len(clip.pcm16k) == round(clip.duration_s * 16_000) * 2
    assert len(clip.pcm16k) / 32_000 == pytest.approx(truth, abs=0.15)
    assert -50 < clip.peak_dbfs <= 0


@pytest.mark.parametrize(
    ("fmt", "name"), [("webm", "clip.wav"), ("mp3", "clip.webm"), ("wav", "clip.mp3"), ("mp4", "x.ogg")]
)
def test_load_clip_sniffs_the_bytes_not_the_extension(tmp_path: Path, fmt: str, name: str) -> None:
    pcm, rate = speech_pcm(SENTENCE)
    assert load_clip(_save(tmp_path, encode_clip(pcm, rate, fmt), name), max_seconds=30).format == fmt


def test_browser_webm_without_a_duration_is_measured_by_decoding(tmp_path: Path) -> None:
    pcm, rate = speech_pcm(SENTENCE)
    data = encode_clip(pcm, rate, "webm")
    with av.open(io.BytesIO(data)) as container:
        assert container.duration is None  # like MediaRecorder's output

    clip = load_clip(_save(tmp_path, data), max_seconds=30)

    assert clip.duration_s == pytest.approx(duration_s(pcm, rate), abs=0.15)


def _with_big_metadata(data: bytes, fmt: str, size: int) -> bytes:
    """`data` remuxed with a `size`-byte comment in its container's own tags (an MP3's as an ID3v2 tag in front)."""
    buffer = io.BytesIO()
    with av.open(io.BytesIO(data)) as source, av.open(buffer, "w", format=source.format.name.split(",")[0]) as out:
        out.metadata["comment"] = "x" * size
        stream = out.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(source.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["webm", "ogg", "wav", "mp3", "m4a", "flac"])
def test_tags_far_larger_than_the_probe_do_not_hide_the_audio(tmp_path: Path, fmt: str) -> None:
    """The probe reads 32 KiB; a recording whose tags take 200 KB (cover art, a long comment) still loads whole."""
    plain = tone(fmt, 2.0)
    tagged = _with_big_metadata(plain, fmt, 200_000)
    assert len(tagged) > len(plain) + 200_000
    clip = load_clip(_save(tmp_path, tagged), max_seconds=30)
    assert clip.format == SNIFFED[fmt]
    assert clip.duration_s == pytest.approx(2.0, abs=0.1)


def test_empty_upload_is_no_speech(tmp_path: Path) -> None:
    with pytest.raises(NoSpeechDetected, match="empty"):
        load_clip(_save(tmp_path, b""), max_seconds=30)


def _video_only_webm() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as output:
        stream = output.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(5):
            output.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        output.mux(stream.encode(None))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda: np.random.default_rng(0).bytes(40_000), "not a recognised audio file", id="random-bytes"),
        pytest.param(lambda: b"Hello, this is a text file and not a recording.\n" * 40, "not a recognised", id="text"),
        pytest.param(lambda: b'{"audio": "none"}', "not a recognised", id="json"),
        pytest.param(lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(500), "Unsupported file type", id="png"),
        pytest.param(_video_only_webm, "no audio track", id="video-only-webm"),
        pytest.param(lambda: encode_pcm(tone_pcm(1.0), sample_rate=22_050, fmt="aac"), "Unsupported file", id="adts"),
    ],
)
def test_non_audio_is_unsupported(tmp_path: Path, make: Callable[[], bytes], reason: str) -> None:
    with pytest.raises(UnsupportedAudio, match=reason):
        load_clip(_save(tmp_path, make(), "clip.mp3"), max_seconds=30)


@pytest.mark.parametrize("fmt", list(UPLOAD_ENCODERS))
def test_silence_is_no_speech(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(NoSpeechDetected, match="silent"):
        load_clip(_save(tmp_path, silence(fmt, 1.0)), max_seconds=30)


def test_silence_threshold_is_minus_50_dbfs(tmp_path: Path) -> None:
    with pytest.raises(NoSpeechDetected, match=r"peak -55\.0 dBFS, below -50 dBFS"):
        load_clip(_save(tmp_path, tone("wav", 1.0, dbfs=-55)), max_seconds=30)
    assert load_clip(_save(tmp_path, tone("wav", 1.0, dbfs=-45)), max_seconds=30).peak_dbfs == pytest.approx(
        -45, abs=0.1
    )


def test_audio_file_with_no_samples_is_no_speech(tmp_path: Path) -> None:
    with pytest.raises(NoSpeechDetected, match="no audio samples"):
        load_clip(_save(tmp_path, encode_clip(b"", 22_050, "wav", lead_silence_s=0)), max_seconds=30)


@pytest.mark.parametrize("fmt", list(UPLOAD_ENCODERS))
def test_too_long_is_refused(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(AudioTooLong, match=r"(4\.0 s, the limit is 2 s|longer than the 2 s limit)"):
        load_clip(_save(tmp_path, tone(fmt, 4.0)), max_seconds=2)


@pytest.mark.parametrize("fmt", ["mp3", "mp4"])
def test_too_long_stops_decoding_at_the_limit(tmp_path: Path, fmt: str) -> None:
    # The last part of the file is garbage: decoding it all fails, so refusing as too long proves we stopped early.
    data = bytearray(tone(fmt, 4.0))
    start, end = int(len(data) * 0.6), int(len(data) * 0.9)
    data[start:end] = np.random.default_rng(7).bytes(end - start)
    path = _save(tmp_path, bytes(data))
    with pytest.raises(UnsupportedAudio, match="corrupt"):
        load_clip(path, max_seconds=60)
    with pytest.raises(AudioTooLong):
        load_clip(path, max_seconds=1)


# What each damaged upload of the kept recording (1.49 s of speech after 0.3 s of silence) gives: the seconds decoded
# from its good part, or None where it is refused as unsupported (415): an MP4/M4A index or a FLAC frame cut off.
DAMAGED = {
    ("webm", "truncated"): 0.99,
    ("ogg", "truncated"): 0.99,
    ("wav", "truncated"): 0.89,
    ("mp3", "truncated"): 0.86,
    ("mp4", "truncated"): None,
    ("m4a", "truncated"): None,
    ("flac", "truncated"): None,
    ("webm", "bytes-flipped"): None,
    ("ogg", "bytes-flipped"): None,
    ("wav", "bytes-flipped"): 1.79,
    ("mp3", "bytes-flipped"): None,
    ("mp4", "bytes-flipped"): None,
    ("m4a", "bytes-flipped"): None,
    ("flac", "bytes-flipped"): None,
}


@pytest.mark.parametrize(("fmt", "damage"), list(DAMAGED))
def test_damaged_files_decode_their_good_part_or_are_unsupported(tmp_path: Path, fmt: str, damage: str) -> None:
    pcm, rate = question_pcm()  # a kept recording: the same bytes every run
    data = bytearray(encode_clip(pcm, rate, fmt))
    if damage == "truncated":
        del data[len(data) // 2 :]
    else:
        rng = np.random.default_rng(1)
        for index in rng.integers(200, len(data), 300):
            data[index] = int(rng.integers(0, 256))
    path = _save(tmp_path, bytes(data))
    expected = DAMAGED[(fmt, damage)]
    if expected is None:
        with pytest.raises(UnsupportedAudio):
            load_clip(path, max_seconds=30)
        return
    clip = load_clip(path, max_seconds=30)
    assert clip.format == SNIFFED[fmt]
    assert clip.duration_s == pytest.approx(expected, abs=0.05)


# --- encoding speech --------------------------------------------------------------------------------------------------

# Speech format -> (FFmpeg demuxer, decoder) that should read it back.
DEMUXED = {
    "mp3": ("mp3", "mp3float"),
    "opus": ("ogg", "opus"),
    "aac": ("aac", "aac"),
    "flac": ("flac", "flac"),
    "wav": ("wav", "pcm_s16le"),
}


@pytest.mark.parametrize("fmt", [fmt for fmt in SPEECH_FORMATS if fmt != "pcm"])
def test_encode_pcm_round_trips(fmt: str) -> None:
    pcm, rate = speech_pcm(SENTENCE)

    data = encode_pcm(pcm, sample_rate=rate, fmt=fmt)

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert (container.format.name, stream.codec_context.name) == DEMUXED[fmt]
        frames = list(container.decode(stream))
    decoded_s = sum(frame.samples for frame in frames) / frames[0].sample_rate
    assert decoded_s == pytest.approx(len(pcm) / 2 / rate, abs=0.1)
    assert frames[0].sample_rate == (48_000 if fmt == "opus" else rate)


def test_encode_pcm_raw_is_24khz_s16le() -> None:
    pcm, rate = speech_pcm(SENTENCE)

    data = encode_pcm(pcm, sample_rate=rate, fmt="pcm")

    assert len(data) % 2 == 0
    assert len(data) / 2 / PCM_RATE == pytest.approx(len(pcm) / 2 / rate, abs=0.01)
    original = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32)).max()
    assert np.abs(np.frombuffer(data, "<i2").astype(np.int32)).max() == pytest.approx(original, rel=0.1)
    assert encode_pcm(data, sample_rate=PCM_RATE, fmt="pcm") == data


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_encode_pcm_of_nothing_is_a_valid_empty_file(fmt: str) -> None:
    with av.open(io.BytesIO(encode_pcm(b"", sample_rate=22_050, fmt=fmt))) as container:
        assert sum(frame.samples for frame in container.decode(audio=0)) == 0


def test_encode_pcm_refuses_unknown_formats_and_odd_lengths() -> None:
    with pytest.raises(ValueError, match="vorbis"):
        encode_pcm(tone_pcm(0.1), sample_rate=22_050, fmt="vorbis")
    with pytest.raises(ValueError, match="even"):
        encode_pcm(b"\x00\x01\x02", sample_rate=22_050, fmt="wav")


def test_format_lookups() -> None:
    assert content_type_for("mp3") == "audio/mpeg"
    assert content_type_for("opus") == "audio/ogg"
    assert extension_for("mp4") == ".m4a"
    assert extension_for("pcm") == ".pcm"
    with pytest.raises(ValueError, match="Unknown audio format"):
        content_type_for("aiff")


@pytest.mark.parametrize("fmt", ["mp3", "aac", "flac", "opus", "wav"])
def test_joined_speech_states_the_duration_of_all_its_parts(fmt: str) -> None:
    rate = 24_000
    parts = [encode_pcm(bytes(2 * rate * n // 10), sample_rate=rate, fmt=fmt) for n in (3, 5, 7)]
    joined = join_speech(parts, fmt=fmt)
    with av.open(io.BytesIO(joined)) as container:
        stream = container.streams.audio[0]
        declared = container.duration / 1_000_000 if container.duration else None
        decoded = sum(frame.samples for frame in container.decode(stream)) / stream.rate
    # Each part may carry its codec's padding (tens of ms), but nothing is lost, and the header tells the truth.
    assert 1.5 <= decoded <= 1.5 + 3 * 0.1
    if declared is not None:
        assert declared == pytest.approx(decoded, abs=0.1)


def test_joining_speech_that_is_not_audio_is_a_value_error() -> None:
    good = encode_pcm(bytes(4800), sample_rate=24_000, fmt="mp3")
    with pytest.raises(ValueError, match="spoken segment"):
        join_speech([good, b"not audio at all" * 10], fmt="mp3")
    assert join_speech([good], fmt="mp3") == good  # one part is its own whole
