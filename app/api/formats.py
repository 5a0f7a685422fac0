"""Content negotiation: which format a request body is in, and which one the client wants back."""

from __future__ import annotations

from typing import Any

from app.errors import InvalidRequest, NotAcceptable, UnsupportedMediaType
from app.fhir import jsonio, xml

JSON_TYPE = "application/fhir+json; charset=utf-8"
XML_TYPE = "application/fhir+xml; charset=utf-8"
JSON_PATCH = "application/json-patch+json"

_JSON_NAMES = {"json", "application/json", "application/fhir+json", "text/json"}
_XML_NAMES = {"xml", "application/xml", "application/fhir+xml", "text/xml"}
FORM_TYPE = "application/x-www-form-urlencoded"
UTF_8_NAMES = frozenset({"utf-8", "utf8"})


def _media(value: str) -> str:
    return value.split(";")[0].strip().lower()


def _other_fhir_version(params: list[str]) -> str | None:
    """The fhirVersion a media type's parameters ask for, when it is not R4 (4.0, 4.0.1):
    R4 versioning.html, a server does not answer in (or read) a version it does not serve."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "fhirversion":
            version = value.strip().strip('"')
            if version != "4.0" and not version.startswith("4.0."):
                return version
    return None


def response_format(accept: str | None, format_param: str | None) -> str:
    """'json' or 'xml': _format wins over Accept; anything unknown asked for explicitly is 406."""
    if format_param:
        name = _media(format_param.replace(" ", "+"))  # '+' arrives as ' ' in a query string
        if _other_fhir_version(format_param.split(";")[1:]) is not None:
            raise NotAcceptable(f"_format '{format_param}': this server is R4 (4.0)")
        if name in _JSON_NAMES:
            return "json"
        if name in _XML_NAMES:
            return "xml"
        raise NotAcceptable(f"_format '{format_param}' is not supported (json, xml)")
    if not accept:
        return "json"
    offered = _by_preference(accept)
    for media in offered:
        if media in _JSON_NAMES or media in ("*/*", "application/*"):
            return "json"
        if media in _XML_NAMES:
            return "xml"
    if any(m.startswith("text/html") for m in offered):
        return "json"  # a browser: show JSON rather than refuse
    raise NotAcceptable(f"none of the accepted types ({accept}) can be produced")


def native_binary_ranges(accept: str | None, format_param: str | None) -> list[str] | None:
    """The media ranges a read of a Binary asks for in its native form, most preferred first,
    or None when a FHIR format is wanted (R4 binary.html: a read that does not ask for a FHIR
    content type gets the content itself). No Accept, _format, or a range a FHIR format
    satisfies (*/*, application/*, application/json ...) keeps the Binary resource."""
    if format_param or not accept:
        return None
    offered = _by_preference(accept)
    fhir = _JSON_NAMES | _XML_NAMES | {"*/*", "application/*"}
    if not offered or any(media in fhir for media in offered):
        return None
    return offered


def media_matches(media_type: str, ranges: list[str]) -> bool:
    """Does a content type (text/plain; charset=...) fall in one of the media ranges?"""
    main, _, sub = _media(media_type).partition("/")
    return any(r in (f"{main}/{sub}", f"{main}/*") for r in ranges)


def _by_preference(accept: str) -> list[str]:
    """The media ranges of an Accept header, most preferred first (RFC 9110 12.5.1: by
    quality value, ties in the order given); q=0 means "not acceptable" and is dropped."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = part.split(";")
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0  # an unreadable weight: do not guess a preference
        if _other_fhir_version(params) is not None:
            continue  # this range is one we cannot produce
        if quality > 0 and media.strip():
            ranked.append((-quality, index, media.strip().lower()))
    return [media for _, _, media in sorted(ranked)]


def parse_body(content_type: str | None, raw: bytes, *, method: str) -> Any:
    """The request body as JSON values (resource dict, JSON Patch list, or form pairs)."""
    if not raw:
        return None
    media = _media(content_type or "application/fhir+json")
    version = _other_fhir_version((content_type or "").split(";")[1:])
    if version is not None:
        raise UnsupportedMediaType(
            f"fhirVersion {version} is not supported (this server is R4, 4.0)"
        )
    charset = _charset(content_type)
    if charset is not None and charset not in UTF_8_NAMES:
        # R4 http.html: "FHIR uses UTF-8 for all request and response bodies". Decoding
        # another charset would accept what no conformant client sends, and could not keep
        # the client's bytes as they came (what a read returns).
        raise UnsupportedMediaType(
            f"charset '{charset}' is not supported: FHIR bodies are UTF-8 (charset=utf-8)"
        )
    if method == "PATCH" and media != JSON_PATCH:
        # With a FHIR media type the body would be a FHIRPath Patch (a Parameters resource),
        # which this server does not take; a bare array there is not a FHIR body either.
        raise UnsupportedMediaType(
            f"PATCH takes a JSON Patch as {JSON_PATCH}, not '{content_type or 'none'}' "
            "(FHIRPath Patch is not supported)"
        )
    try:
        if media in _JSON_NAMES or media == JSON_PATCH:
            return jsonio.loads(raw)
        if media in _XML_NAMES:
            return xml.xml_to_json(raw)
    except jsonio.FhirJsonError as exc:
        raise InvalidRequest(str(exc)) from exc
    except xml.FhirXmlError as exc:
        raise InvalidRequest(
            f"invalid FHIR XML: {exc}", expression=getattr(exc, "path", None)
        ) from exc
    if media == FORM_TYPE and method == "POST":
        from urllib.parse import parse_qsl

        return parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    raise UnsupportedMediaType(f"Content-Type '{content_type}' is not supported")


def is_fhir_body_type(content_type: str) -> bool:
    """Is a body of this Content-Type read as FHIR (JSON, XML), a JSON Patch or a form?"""
    media = _media(content_type)
    return media in _JSON_NAMES or media in _XML_NAMES or media in (JSON_PATCH, FORM_TYPE)


def _charset(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type, lower-cased and unquoted, or None."""
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def check_search_form(content_type: str | None) -> None:
    """POST _search takes its parameters as a form (R4 http.html#search): a body of any other
    type would be silently ignored, so it is refused."""
    if _media(content_type or "") != FORM_TYPE:
        raise UnsupportedMediaType(
            f"POST _search takes its parameters as {FORM_TYPE}, not '{content_type or 'none'}'"
        )


def refuse_form(content_type: str | None) -> None:
    """A form is the body of POST _search only: a resource, Bundle or patch sent as one was
    read as search parameters and refused as "not a JSON object" (400); the media type is
    what is wrong (415)."""
    if content_type is not None and _media(content_type) == FORM_TYPE:
        raise UnsupportedMediaType(
            f"{FORM_TYPE} is taken only by POST _search; send FHIR JSON or XML"
        )


def render(body: Any, fmt: str, *, pretty: bool) -> tuple[bytes, str]:
    if fmt == "xml":
        try:
            return xml.json_to_xml(jsonio.materialize(body), pretty=pretty), XML_TYPE
        except xml.FhirXmlError as exc:
            # Content JSON holds and XML cannot (U+FFFE in a resource stored before writes
            # refused it): the server cannot produce the format asked for, JSON it can.
            raise NotAcceptable(
                f"the answer cannot be written as FHIR XML ({exc}); ask for JSON",
                expression=exc.path or None,
            ) from exc
    return jsonio.dumps(body, pretty=pretty), JSON_TYPE
