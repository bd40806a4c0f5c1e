"""A corpus of hostile audio uploads, built in code (no committed binaries), for the tests and `bench.hostile_audio`.

Each `Hostile` is a small file whose headers or frames lie: sample rates of 1 Hz, 0 Hz or 10 MHz, 65,535-sample
FLAC frames, thousands of channels, durations of days, truncated or garbage headers. Files are built from scratch
with `struct` (FLAC, WAV, Ogg pages) or by patching a small PyAV-encoded file (WebM, MP3, MP4), recomputing every
checksum a demuxer verifies, so that the lie reaches the decoder instead of being dropped as corruption.

`expected` is what `webapp.audio.load_clip` must answer (with its default 300 s limit): the HTTP status and the
problem `code`.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from tests.audio_samples import encode_clip, tone, tone_pcm

UNSUPPORTED = (415, "unsupported_audio")
TOO_LONG = (422, "audio_too_long")
NO_SPEECH = (422, "no_speech_detected")
MAX_SECONDS = 300.0
"""The limit the corpus is judged against (the server's default `MAX_AUDIO_SECONDS`)."""


@dataclass(frozen=True)
class Hostile:
    name: str
    container: str
    make: Callable[[], bytes]
    expected: tuple[int, str]
    why: str
    detail: str = ""
    """A fragment of the refusal's detail, where it matters which check fired."""

    @functools.cached_property
    def data(self) -> bytes:
        return self.make()


# --- checksums -------------------------------------------------------------------------------------------------------


def _crc_table(poly: int, width: int) -> list[int]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
        table.append(crc)
    return table


_CRC8 = _crc_table(0x07, 8)  # FLAC frame header
_CRC16 = _crc_table(0x8005, 16)  # FLAC frame
_CRC32 = _crc_table(0x04C11DB7, 32)  # Ogg page (not reflected, unlike zlib's)


def _crc(data: bytes, table: list[int], width: int) -> int:
    crc, shift, mask = 0, width - 8, (1 << width) - 1
    for byte in data:
        crc = ((crc << 8) & mask) ^ table[((crc >> shift) ^ byte) & 0xFF]
    return crc


# --- FLAC, written by hand -------------------------------------------------------------------------------------------


def _utf8_number(n: int) -> bytes:
    """FLAC's "UTF-8" coding of a frame number (up to 31 bits)."""
    if n < 0x80:
        return bytes([n])
    limits = ((2, 0xC0, 0x800), (3, 0xE0, 0x10000), (4, 0xF0, 0x200000), (5, 0xF8, 0x4000000), (6, 0xFC, 1 << 31))
    length, first = next((length, first) for length, first, limit in limits if n < limit)
    tail = [0x80 | (n >> 6 * i) & 0x3F for i in reversed(range(length - 1))]
    return bytes([first | n >> 6 * (length - 1), *tail])


def flac_streaminfo(
    *, rate: int, channels: int = 1, bits: int = 16, block: int = 4096, total_samples: int = 0, last: bool = True
) -> bytes:
    """The `fLaC` marker and a STREAMINFO block (no MD5)."""
    packed = (rate & 0xFFFFF) << 44 | (channels - 1) << 41 | (bits - 1) << 36 | (total_samples & (1 << 36) - 1)
    body = struct.pack(">HH3s3sQ", block, block, b"\0\0\0", b"\0\0\0", packed) + bytes(16)
    return b"fLaC" + bytes([0x80 if last else 0x00]) + len(body).to_bytes(3, "big") + body


def flac_frame(
    number: int,
    *,
    block: int,
    value: int = 12_000,
    channels: int = 1,
    rate_hz: int | None = None,
    bits: int = 16,
    verbatim: bool = False,
) -> bytes:
    """One fixed-blocksize frame of `block` samples, each channel a constant subframe of `value` (or, `verbatim`, a
    stored 16-bit square wave of that amplitude: bulky, as a probe-defeating prefix must be).

    `rate_hz` writes the rate into the frame header (in Hz, or in tens of Hz above 65,535); None defers to STREAMINFO.
    """
    if rate_hz is None:
        rate_code, rate_tail = 0b0000, b""
    elif rate_hz <= 0xFFFF:
        rate_code, rate_tail = 0b1101, struct.pack(">H", rate_hz)
    else:
        rate_code, rate_tail = 0b1110, struct.pack(">H", rate_hz // 10)
    size_code = {8: 0b001, 16: 0b100, 24: 0b110}[bits]
    header = bytes([0xFF, 0xF8, 0b0111 << 4 | rate_code, (channels - 1) << 4 | size_code << 1])
    header += _utf8_number(number) + struct.pack(">H", block - 1) + rate_tail
    header += bytes([_crc(header, _CRC8, 8)])
    if verbatim:
        assert bits == 16
        wave = np.where(np.arange(block) // 20 % 2, value, -value).astype(">i2")
        subframe = b"\x02" + wave.tobytes()
    else:
        subframe = b"\x00" + (value & (1 << bits) - 1).to_bytes(bits // 8, "big")
    frame = header + subframe * channels
    return frame + struct.pack(">H", _crc(frame, _CRC16, 16))


def _flac_rate_switch(rate_hz: int, *, good_frames: int = 40) -> bytes:
    """~10 s of good 16 kHz frames (more than stream probing reads, so the stream header says 16 kHz), then 4,096-sample
    frames whose headers say `rate_hz`: at 1 Hz each would be 65 million samples once resampled to 16 kHz."""
    head = flac_streaminfo(rate=16_000, block=4096)
    good = b"".join(flac_frame(n, block=4096, verbatim=True) for n in range(good_frames))
    bad = b"".join(flac_frame(n, block=4096, rate_hz=rate_hz) for n in range(good_frames, good_frames + 2000))
    return head + good + bad


def flac_file(
    *,
    rate: int,
    block: int = 65_535,
    size: int = 24_000,
    frame_rate_hz: int | None = None,
    total_samples: int = 0,
    channels: int = 1,
) -> bytes:
    """About `size` bytes of FLAC: a STREAMINFO and as many constant frames as fit."""
    out = bytearray(flac_streaminfo(rate=rate, block=block, total_samples=total_samples, channels=channels))
    number = 0
    while len(out) < size:
        out += flac_frame(number, block=block, rate_hz=frame_rate_hz, channels=channels)
        number += 1
    return bytes(out)


# --- WAV, written by hand --------------------------------------------------------------------------------------------


def wav_file(
    *,
    rate: int = 16_000,
    channels: int = 1,
    bits: int = 16,
    data: bytes | None = None,
    data_size: int | None = None,
    block_align: int | None = None,
    fmt_tag: int = 1,
) -> bytes:
    """A RIFF/WAVE file whose fmt fields and data size can lie about `data`."""
    if data is None:
        data = tone_pcm(1.0, rate=16_000) * max(1, channels)
    align = block_align if block_align is not None else channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * align) & 0xFFFFFFFF, align & 0xFFFF, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", min(len(body), 0xFFFFFFFF)) + body


# --- Ogg pages -------------------------------------------------------------------------------------------------------


def ogg_pages(data: bytes) -> list[bytearray]:
    pages, at = [], 0
    while at < len(data):
        assert data[at : at + 4] == b"OggS", at
        count = data[at + 26]
        length = 27 + count + sum(data[at + 27 : at + 27 + count])
        pages.append(bytearray(data[at : at + length]))
        at += length
    return pages


def ogg_join(pages: Iterable[bytearray]) -> bytes:
    """Pages with their CRC recomputed."""
    out = bytearray()
    for page in pages:
        page[22:26] = b"\0\0\0\0"
        page[22:26] = struct.pack("<I", _crc(bytes(page), _CRC32, 32))
        out += page
    return bytes(out)


def _ogg_patch(patch: Callable[[list[bytearray]], None]) -> bytes:
    pages = ogg_pages(tone("ogg", 1.0))
    patch(pages)
    return ogg_join(pages)


def _opus_head(pages: list[bytearray]) -> tuple[bytearray, int]:
    page = pages[0]
    at = page.index(b"OpusHead")
    return page, at


def _ogg_channels(channels: int, family: int) -> bytes:
    def patch(pages: list[bytearray]) -> None:
        page, at = _opus_head(pages)
        page[at + 9] = channels
        page[at + 18] = family

    return _ogg_patch(patch)


def _ogg_granule(granule: int) -> bytes:
    def patch(pages: list[bytearray]) -> None:
        pages[-1][6:14] = struct.pack("<q", granule)

    return _ogg_patch(patch)


# --- patching encoded files ------------------------------------------------------------------------------------------


def _replace(data: bytes, old: bytes, new: bytes, *, count: int = 1) -> bytes:
    assert data.count(old) >= count, (old, data.count(old))
    return data.replace(old, new, count)


def _webm_float(element_id: bytes, value: float, *, live: bool = True) -> bytes:
    """A WebM whose float element (8-byte) `element_id` says `value`."""
    data = tone("webm", 1.0) if live else _webm_with_duration()
    at = data.index(element_id + b"\x88")
    return data[: at + len(element_id) + 1] + struct.pack(">d", value) + data[at + len(element_id) + 9 :]


def _one_second(muxer: str, codec: str, rate: int) -> bytes:
    """A second of tone, encoded by PyAV."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer) as output:
        stream = output.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(tone_pcm(1.0, rate=rate), "<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        output.mux(stream.encode(frame))  # type: ignore[attr-defined]
        output.mux(stream.encode(None))  # type: ignore[attr-defined]
    return buffer.getvalue()


def _webm_with_duration() -> bytes:
    return _one_second("webm", "libopus", 48_000)


def _mkv_pcm(*, rate: float | None = None, channels: int | None = None) -> bytes:
    """Matroska (the WebM demuxer's other half) holding 16 kHz PCM, whose header then lies about rate or channels.

    Unlike Opus, PCM takes its rate and channel count from the container, so the lie reaches the decoder.
    """
    data = _one_second("matroska", "pcm_s16le", 16_000)
    if rate is not None:
        at = data.index(b"\xb5\x88") + 2
        data = data[:at] + struct.pack(">d", rate) + data[at + 8 :]
    if channels is not None:
        at = data.index(b"\x9f\x81\x01") + 2
        data = data[:at] + bytes([channels]) + data[at + 1 :]
    return data


def _webm_channels(channels: int) -> bytes:
    data = tone("webm", 1.0)
    at = data.index(b"\x9f\x81\x01")  # Channels: 1
    # The OpusHead in CodecPrivate carries the decoder's channel count too.
    opus = data.index(b"OpusHead")
    patched = bytearray(data[:at] + b"\x9f\x81" + bytes([channels & 0xFF]) + data[at + 3 :])
    patched[opus + 9] = channels & 0xFF
    return bytes(patched)


def _mp3_xing_frames(frames: int) -> bytes:
    data = bytearray(tone("mp3", 1.0))
    for tag in (b"Info", b"Xing"):
        at = data.find(tag)
        if at >= 0:
            data[at + 8 : at + 12] = struct.pack(">I", frames)
            return bytes(data)
    raise AssertionError("no Xing/Info header")


def _mp3_rate_index(index: int) -> bytes:
    """Every MPEG audio frame header's sample-rate index set to `index` (3 is reserved)."""
    data = bytearray(tone("mp3", 1.0))
    for at in range(len(data) - 3):
        if data[at] == 0xFF and data[at + 1] & 0xE0 == 0xE0 and data[at + 2] >> 4 not in (0, 15):
            data[at + 2] = (data[at + 2] & 0xF3) | index << 2
    return bytes(data)


def _mp4_box(data: bytes, name: bytes) -> int:
    """The offset of box `name`'s payload (after its size and type)."""
    return data.index(name) + 4


def _mp4_stts_delta(delta: int) -> bytes:
    """Every sample lasts `delta` ticks of the track's timescale, by the time-to-sample table."""
    data = bytearray(tone("mp4", 1.0))
    at = _mp4_box(bytes(data), b"stts")
    (entries,) = struct.unpack(">I", data[at + 4 : at + 8])
    for i in range(entries):
        data[at + 12 + 8 * i : at + 16 + 8 * i] = struct.pack(">I", delta)
    return bytes(data)


def _mp4_declares_days() -> bytes:
    """Every duration an MP4 carries (mvhd, tkhd, mdhd, the edit list and the time-to-sample table) made huge:
    FFmpeg trusts the edit list over the others, and the sample table over the media header."""
    data = bytearray(_mp4_stts_delta(0x7FFFFFF))
    for box, offset in ((b"mvhd", 16), (b"tkhd", 20), (b"mdhd", 16), (b"elst", 8)):
        at = _mp4_box(bytes(data), box)
        assert data[at] == 0  # version 0: 32-bit times
        data[at + offset : at + offset + 4] = struct.pack(">I", 0x7FFFFFFF)
    return bytes(data)


def _mp4_asc_rate_index(index: int) -> bytes:
    """The AAC AudioSpecificConfig's sampling-frequency index (12 is 7,350 Hz, below the 8 kHz floor)."""
    data = bytearray(tone("mp4", 1.0))
    esds = _mp4_box(bytes(data), b"esds")
    at = data.index(b"\x05", esds + 4)  # DecoderSpecificInfo tag
    while data[at + 1] & 0x80:  # skip the descriptor's size bytes
        at += 1
    asc = at + 2
    object_type = data[asc] >> 3
    channels = (data[asc + 1] >> 3) & 0x0F
    value = object_type << 11 | index << 7 | channels << 3
    data[asc : asc + 2] = struct.pack(">H", value)
    return bytes(data)


def _mp4_stsz_count(count: int) -> bytes:
    data = bytearray(tone("mp4", 1.0))
    at = _mp4_box(bytes(data), b"stsz")
    data[at + 8 : at + 12] = struct.pack(">I", count)
    return bytes(data)


def _truncated(fmt: str, keep: int) -> bytes:
    return tone(fmt, 1.0)[:keep]


def _garbage_after(fmt: str, keep: int, seed: int) -> bytes:
    data = tone(fmt, 1.0)
    return data[:keep] + np.random.default_rng(seed).bytes(len(data) - keep)


# --- the corpus ------------------------------------------------------------------------------------------------------


def corpus() -> list[Hostile]:
    """Every hostile file, by container. Build each with `.data` (cached)."""
    return [
        # FLAC: the reported attack and its variants.
        Hostile(
            "flac-1hz-65535", "flac", lambda: flac_file(rate=1), UNSUPPORTED, "1 Hz STREAMINFO, 65,535-sample frames"
        ),
        Hostile(
            "flac-frames-1hz",
            "flac",
            lambda: flac_file(rate=16_000, frame_rate_hz=1),
            UNSUPPORTED,
            "16 kHz STREAMINFO, frame headers saying 1 Hz",
        ),
        Hostile(
            "flac-frames-655khz",
            "flac",
            lambda: flac_file(rate=16_000, frame_rate_hz=655_350),
            UNSUPPORTED,
            "frame headers saying 655,350 Hz",
        ),
        Hostile(
            "flac-later-frames-1hz",
            "flac",
            lambda: _flac_rate_switch(1),
            UNSUPPORTED,
            "10 s of good 16 kHz frames, then frames saying 1 Hz: caught frame by frame, before resampling",
            detail="audio frame declares a sample rate of 1 Hz",
        ),
        Hostile(
            "flac-later-frames-655khz",
            "flac",
            lambda: _flac_rate_switch(655_350),
            UNSUPPORTED,
            "10 s of good 16 kHz frames, then frames saying 655,350 Hz",
            detail="audio frame declares a sample rate of 655350 Hz",
        ),
        Hostile("flac-0hz", "flac", lambda: flac_file(rate=0), UNSUPPORTED, "0 Hz STREAMINFO"),
        Hostile("flac-1mhz", "flac", lambda: flac_file(rate=1_048_575), UNSUPPORTED, "1,048,575 Hz STREAMINFO"),
        Hostile(
            "flac-declares-2^36-samples",
            "flac",
            lambda: flac_file(rate=16_000, total_samples=(1 << 36) - 1),
            TOO_LONG,
            "STREAMINFO total samples of 49 days",
        ),
        Hostile(
            "flac-8khz-hours",
            "flac",
            lambda: flac_file(rate=8_000, size=60_000),
            TOO_LONG,
            "valid 8 kHz 65,535-sample frames: ~9 h of audio in 60 KB, no declared length",
        ),
        Hostile(
            "flac-100k-1-sample-frames",
            "flac",
            lambda: flac_streaminfo(rate=16_000, block=16) + b"".join(flac_frame(n, block=1) for n in range(100_000)),
            UNSUPPORTED,
            "100,000 frames of one sample each: stopped by the packet and frame count, not by duration",
            detail="far more packets or frames",
        ),
        Hostile("flac-truncated-header", "flac", lambda: flac_file(rate=16_000)[:30], UNSUPPORTED, "cut in STREAMINFO"),
        Hostile(
            "flac-garbage-frames",
            "flac",
            lambda: flac_streaminfo(rate=16_000) + np.random.default_rng(3).bytes(20_000),
            NO_SPEECH,
            "a STREAMINFO followed by noise: no frame decodes",
        ),
        # WAV: every fmt field lies.
        Hostile("wav-1hz", "wav", lambda: wav_file(rate=1), UNSUPPORTED, "1 Hz"),
        Hostile("wav-0hz", "wav", lambda: wav_file(rate=0), UNSUPPORTED, "0 Hz"),
        Hostile("wav-7999hz", "wav", lambda: wav_file(rate=7_999), UNSUPPORTED, "just under 8 kHz"),
        Hostile("wav-10mhz", "wav", lambda: wav_file(rate=10_000_000), UNSUPPORTED, "10 MHz"),
        Hostile("wav-4ghz", "wav", lambda: wav_file(rate=0xFFFFFFFF), UNSUPPORTED, "4,294,967,295 Hz"),
        Hostile("wav-9ch", "wav", lambda: wav_file(channels=9), UNSUPPORTED, "9 channels"),
        Hostile("wav-255ch", "wav", lambda: wav_file(channels=255), UNSUPPORTED, "255 channels"),
        Hostile("wav-65535ch", "wav", lambda: wav_file(channels=65_535, data=bytes(262_140)), UNSUPPORTED, "65,535 ch"),
        Hostile("wav-65535-bits", "wav", lambda: wav_file(bits=0xFFFF, block_align=2), UNSUPPORTED, "65,535-bit"),
        Hostile("wav-truncated-header", "wav", lambda: wav_file()[:30], UNSUPPORTED, "cut in the fmt chunk"),
        Hostile("wav-garbage-fmt", "wav", lambda: wav_file(fmt_tag=0xBEEF), UNSUPPORTED, "unknown format tag"),
        # Ogg Opus.
        Hostile("ogg-255ch", "ogg", lambda: _ogg_channels(255, 255), UNSUPPORTED, "OpusHead: 255 channels"),
        Hostile("ogg-0ch", "ogg", lambda: _ogg_channels(0, 0), UNSUPPORTED, "OpusHead: 0 channels"),
        Hostile(
            "ogg-granule-1e15",
            "ogg",
            lambda: _ogg_granule(10**15),
            TOO_LONG,
            "last page's granule position: 650 years at 48 kHz",
        ),
        Hostile("ogg-truncated-header", "ogg", lambda: _truncated("ogg", 40), UNSUPPORTED, "cut in the first page"),
        Hostile("ogg-garbage-pages", "ogg", lambda: _garbage_after("ogg", 200, 4), UNSUPPORTED, "noise after OpusHead"),
        # WebM (Matroska).
        Hostile("mkv-pcm-1hz", "webm", lambda: _mkv_pcm(rate=1.0), UNSUPPORTED, "Matroska PCM, 1 Hz"),
        Hostile("mkv-pcm-10mhz", "webm", lambda: _mkv_pcm(rate=1e7), UNSUPPORTED, "Matroska PCM, 10 MHz"),
        Hostile("mkv-pcm-0hz", "webm", lambda: _mkv_pcm(rate=0.0), UNSUPPORTED, "Matroska PCM, 0 Hz"),
        Hostile("mkv-pcm-255ch", "webm", lambda: _mkv_pcm(channels=255), UNSUPPORTED, "Matroska PCM, 255 channels"),
        Hostile("webm-255ch", "webm", lambda: _webm_channels(255), UNSUPPORTED, "Channels 255"),
        Hostile(
            "webm-duration-1e12",
            "webm",
            lambda: _webm_float(b"\x44\x89", 1e12, live=False),
            TOO_LONG,
            "Segment Duration 1e12 ms",
        ),
        Hostile("webm-truncated-header", "webm", lambda: _truncated("webm", 60), UNSUPPORTED, "cut in the EBML header"),
        Hostile("webm-garbage", "webm", lambda: _garbage_after("webm", 300, 5), UNSUPPORTED, "noise after the tracks"),
        # MP3.
        Hostile(
            "mp3-xing-2^31-frames",
            "mp3",
            lambda: _mp3_xing_frames(0x7FFFFFFF),
            TOO_LONG,
            "Xing header: 2^31 frames (~1.6 years)",
        ),
        Hostile("mp3-reserved-rate", "mp3", lambda: _mp3_rate_index(3), UNSUPPORTED, "reserved sample-rate index"),
        Hostile("mp3-truncated", "mp3", lambda: _truncated("mp3", 3), UNSUPPORTED, "3 bytes of a frame header"),
        Hostile("mp3-garbage", "mp3", lambda: _garbage_after("mp3", 4, 6), UNSUPPORTED, "a frame sync then noise"),
        # MP4 / M4A (AAC).
        Hostile(
            "mp4-declares-days",
            "mp4",
            _mp4_declares_days,
            TOO_LONG,
            "every duration box and the sample table: ~27 h",
        ),
        Hostile("mp4-aac-7350hz", "mp4", lambda: _mp4_asc_rate_index(12), UNSUPPORTED, "AudioSpecificConfig: 7,350 Hz"),
        Hostile("mp4-stsz-2^30", "mp4", lambda: _mp4_stsz_count(1 << 30), UNSUPPORTED, "stsz: a billion sample sizes"),
        Hostile("mp4-truncated-moov", "mp4", lambda: _truncated("mp4", 200), UNSUPPORTED, "cut in the moov box"),
        Hostile("mp4-garbage", "mp4", lambda: _garbage_after("mp4", 48, 7), UNSUPPORTED, "ftyp then noise"),
    ]


def valid_samples() -> dict[str, bytes]:
    """A small valid file per upload container: the seeds that property tests mutate."""
    return {fmt: tone(fmt, 0.5) for fmt in ("webm", "ogg", "wav", "mp3", "mp4", "flac")}


def baseline_clip(seconds: float = 5.0) -> bytes:
    """A normal upload to compare against: `seconds` of a tone in WebM/Opus, as browsers record."""
    return encode_clip(tone_pcm(seconds), 22_050, "webm", lead_silence_s=0)
