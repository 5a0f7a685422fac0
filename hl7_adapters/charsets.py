"""MSH-18 character sets (HL7 table 0211) to Python codecs, and a decode that never raises.

Why a module of its own: real feeds declare one character set and send another (a Latin-1
byte in a message that says ASCII, U+FFFD mojibake, UTF-8 from a sender that declares
8859/1). A feed must not die on such a byte, but it must not silently lose it either, so the
decode here falls back byte by byte to Latin-1 (every byte maps to exactly one character, so
nothing is lost) and reports what it did as a warning that the caller keeps with the message.
"""

from __future__ import annotations

import codecs

# HL7 table 0211 (alternate character sets), upper-cased, to Python codec names. ISO 2022
# based code-switching sets (ISO IR87, ISO IR159, JAS2020, CNS 11643) need the \C..\ and
# \M..\ escapes to switch sets mid-text; they are mapped to their nearest single codec.
_TABLE_0211: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "ISO IR101": "iso8859-2",
    "8859/3": "iso8859-3",
    "ISO IR109": "iso8859-3",
    "8859/4": "iso8859-4",
    "ISO IR110": "iso8859-4",
    "8859/5": "iso8859-5",
    "ISO IR144": "iso8859-5",
    "8859/6": "iso8859-6",
    "ISO IR127": "iso8859-6",
    "8859/7": "iso8859-7",
    "ISO IR126": "iso8859-7",
    "8859/8": "iso8859-8",
    "ISO IR138": "iso8859-8",
    "8859/9": "iso8859-9",
    "ISO IR148": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    # "UNICODE" (deprecated, no encoding form named) is sent in practice as UTF-8 bytes.
    "UNICODE": "utf-8",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc-kr",
    "BIG-5": "big5",
    "JAS2020": "iso2022-jp",
    "JIS X 0202": "iso2022-jp",
    "ISO IR87": "iso2022-jp",
    "ISO IR159": "iso2022-jp-2",
}

# UTF-16/32 put NUL bytes around every delimiter: a byte-level tokenizer cannot split them.
UNSUPPORTED = frozenset({"UNICODE UTF-16", "UNICODE UTF-32"})

FALLBACK_ERRORS = "hl7-latin1-fallback"


def _latin1_fallback(error: UnicodeError) -> tuple[str, int]:
    """Decode each undecodable byte as the Latin-1 character of the same value (lossless)."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return bytes(bad).decode("latin-1"), error.end


codecs.register_error(FALLBACK_ERRORS, _latin1_fallback)


def codec_for(charset: str) -> str | None:
    """The Python codec for an MSH-18 value, or None when the value is empty or unknown."""
    return _TABLE_0211.get(" ".join(charset.split()).upper())


def choose_codec(data: bytes, charset: str, warnings: list[str]) -> tuple[str, str]:
    """Pick (codec, errors) for a message's bytes per its MSH-18 value. Never raises.

    Empty MSH-18 means ASCII by the standard, but undeclared UTF-8 is common, so an empty or
    ASCII declaration is read as UTF-8 (a superset of ASCII). When the bytes do not fit the
    codec, errors is the Latin-1 fallback handler and a warning is appended to ``warnings``.
    The whole message is checked once here so that its segments can then be decoded one by
    one with the same result.
    """
    declared = " ".join(charset.split()).upper()
    codec = codec_for(declared) if declared else "ascii"
    if codec is None or declared in UNSUPPORTED:
        what = "not supported" if declared in UNSUPPORTED else "unknown"
        warnings.append(f"MSH-18 {charset.strip()!r} is {what}; decoded as UTF-8/Latin-1")
        codec = "utf-8"
    elif codec == "ascii":
        if data.isascii():
            return "ascii", "strict"
        codec = "utf-8"
        said = f"declared {charset.strip()!r}" if declared else "without MSH-18"
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            warnings.append(f"non-ASCII bytes in a message {said}")
        else:
            warnings.append(f"non-ASCII bytes in a message {said}; read as UTF-8")
            return codec, "strict"
    try:
        data.decode(codec)
    except UnicodeDecodeError as exc:
        warnings.append(
            f"bytes not valid in {codec} (first at offset {exc.start}); "
            "those bytes were decoded as Latin-1"
        )
        return codec, FALLBACK_ERRORS
    if codec.startswith(("latin", "iso8859")) and _looks_like_utf8(data):
        # A single-byte set decodes any bytes, so UTF-8 sent as 8859/1 comes out as mojibake
        # ("MÃ¼ller") without an error: the declaration is honoured, but not silently.
        warnings.append(
            f"bytes look like UTF-8 although MSH-18 declares {charset.strip()!r}; "
            f"decoded as {codec}"
        )
    return codec, "strict"


def _looks_like_utf8(data: bytes) -> bool:
    """Non-ASCII bytes that are all valid UTF-8 sequences: rare by chance in 8-bit text."""
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode(data: bytes, charset: str, warnings: list[str]) -> tuple[str, str]:
    """Decode bytes per an MSH-18 value; return (text, codec). Never raises."""
    codec, errors = choose_codec(data, charset, warnings)
    return data.decode(codec, errors=errors), codec


def encode(text: str, codec: str) -> bytes:
    """Encode an outbound message (e.g. an ACK) in the peer's character set; '?' for misses."""
    try:
        return text.encode(codec, errors="replace")
    except LookupError:
        return text.encode("utf-8", errors="replace")
