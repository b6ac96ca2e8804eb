"""The OTLP protobuf encoding of recorded spans.

``encode_spans`` writes the ``ExportTraceServiceRequest`` wire format directly (the messages of
``opentelemetry/proto/trace/v1/trace.proto``); tests parse its output with opentelemetry-proto
and compare it with the SDK encoder's. Attribute key-value pairs repeat across requests (model
names, versions, operation names), so their encodings are cached.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway.telemetry.spans import UNSET, Event, RecordedSpan

__all__ = ["encode_request", "encode_span", "encode_spans"]

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
# Span.flags: "has is_remote" (0x100), plus "is remote" (0x200) for a remote parent or link.
_LOCAL_FLAGS = b"\x85\x01" + struct.pack("<I", 0x100)
_REMOTE_FLAGS = b"\x85\x01" + struct.pack("<I", 0x300)
_LOCAL_LINK = b"\x35" + struct.pack("<I", 0x100)
_REMOTE_LINK = b"\x35" + struct.pack("<I", 0x300)
_STATUS_CODES = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}
_CACHE_LIMIT = 4096
_SCALARS = frozenset({str, int, float, bool})


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` is the field number, < 16)."""
    return bytes(((tag << 3) | 2,)) + _varint(len(payload)) + payload


def _string(tag: int, text: str) -> bytes:
    return _field(tag, text.encode("utf-8", "replace"))


def _int64(value: int) -> bytes:
    return _varint(value & 0xFFFFFFFFFFFFFFFF)  # two's complement, as protobuf does


def _any_value(value: AttributeValue) -> bytes:
    if isinstance(value, str):
        return _string(1, value)
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _int64(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(6, b"".join(_field(1, _key_value(k, v)) for k, v in value.items()))
    if value is None:
        return b""
    return _string(1, str(value))


def _key_value(key: str, value: AttributeValue) -> bytes:
    return _string(1, key) + _field(2, _any_value(value))


_pairs: dict[tuple[int, str, type, AttributeValue], bytes] = {}
_names: dict[tuple[str, int], bytes] = {}
# Ids: the trace id as two big-endian 64-bit halves, then the span id (and the parent's).
_IDS = struct.Struct(">BBQQBBQ")
_IDS_PARENT = struct.Struct(">BBQQBBQBBQ")
_LINK = struct.Struct(">BBBBQQBBQ")  # field 13, length 33: the ids, then the flags (5 bytes)
_TIMES = struct.Struct("<BQBQ")
_LOW = 0xFFFFFFFFFFFFFFFF
_NO_STATUS = b"\x7a\x00"


def _new_attribute(tag: int, key: str, value: AttributeValue) -> bytes:
    encoded = _field(tag, _key_value(key, value))
    # Scalars and tuples of strings only: (0,) == (0.0,), and the key holds the type of the
    # value, not of its items.
    if type(value) in _SCALARS or (type(value) is tuple and all(type(v) is str for v in value)):
        if len(_pairs) >= _CACHE_LIMIT:
            _pairs.clear()
        _pairs[(tag, key, type(value), value)] = encoded
    return encoded


def _attributes(tag: int, attributes: Mapping[str, AttributeValue]) -> bytes:
    """``KeyValue`` fields. Pairs repeat (model names, versions, batch sizes), so each is
    encoded once; the value's type is part of the key (``True == 1 == 1.0`` in Python)."""
    get = _pairs.get
    out = []
    for key, value in attributes.items():
        try:
            encoded = get((tag, key, type(value), value))
        except TypeError:  # an unhashable value (a mapping)
            encoded = None
        out.append(_new_attribute(tag, key, value) if encoded is None else encoded)
    return b"".join(out)


def _trace_state(context: SpanContext) -> bytes:
    state = context.trace_state
    return _string(3, state.to_header()) if state else b""


def _event(event: Event) -> bytes:
    return (
        b"\x09"
        + _FIXED64.pack(event.timestamp)
        + _string(2, event.name)
        + _attributes(3, event.attributes)
    )


def _link(link: Link) -> bytes:
    """One ``Span.links`` field."""
    context = link.context
    trace_id = context.trace_id
    if not link.attributes and not context.trace_state:  # the gateway's links: one pack
        return _LINK.pack(
            0x6A, 33, 0x0A, 16, trace_id >> 64, trace_id & _LOW, 0x12, 8, context.span_id
        ) + (_REMOTE_LINK if context.is_remote else _LOCAL_LINK)
    return _field(13, _link_body(link))


def _link_body(link: Link) -> bytes:
    context = link.context
    trace_id = context.trace_id
    return (
        _IDS.pack(0x0A, 16, trace_id >> 64, trace_id & _LOW, 0x12, 8, context.span_id)
        + _trace_state(context)
        + _attributes(4, link.attributes or {})
        + (_REMOTE_LINK if context.is_remote else _LOCAL_LINK)
    )


def _name(name: str, kind: SpanKind) -> bytes:
    """The name and kind fields, cached by name and kind (by identity: enum members are
    singletons, and an enum's hash is computed in Python)."""
    if len(_names) >= _CACHE_LIMIT:
        _names.clear()
    # The API's INTERNAL is 0, the protocol's is 1.
    encoded = _names[(name, id(kind))] = _string(5, name) + b"\x30" + _varint(kind.value + 1)
    return encoded


def _status(status: Status) -> bytes:
    code = _STATUS_CODES[status.status_code]
    message = status.description or ""
    if not code and not message:
        return _NO_STATUS
    return _field(
        15, (_string(2, message) if message else b"") + (b"\x18" + _varint(code) if code else b"")
    )


def encode_span(
    span: RecordedSpan,
    ids: Callable[..., bytes] = _IDS.pack,
    ids_parent: Callable[..., bytes] = _IDS_PARENT.pack,
    times: Callable[..., bytes] = _TIMES.pack,
    cached: Callable[[Any], bytes | None] = _pairs.get,
    names: Callable[[Any], bytes | None] = _names.get,
) -> bytes:
    """One span, encoded as a ``ScopeSpans.spans`` field. Called as each span ends: helpers
    are inlined and globals bound as defaults (about 1.5 µs for a span without attributes)."""
    context, parent = span.context, span.parent
    trace_id = context.trace_id
    if parent is None:
        head = ids(0x0A, 16, trace_id >> 64, trace_id & _LOW, 0x12, 8, context.span_id)
        flags = _LOCAL_FLAGS
    else:
        head = ids_parent(
            0x0A, 16, trace_id >> 64, trace_id & _LOW, 0x12, 8, context.span_id,
            0x22, 8, parent.span_id,
        )  # fmt: skip
        flags = _REMOTE_FLAGS if parent.is_remote else _LOCAL_FLAGS
    if context.trace_state:
        head += _trace_state(context)
    kind = span.kind
    name = names((span.name, id(kind))) or _name(span.name, kind)
    parts = [head, name, times(0x39, span.start_time, 0x41, span.end_time or span.start_time)]
    for key, value in span.attributes.items():
        try:
            encoded = cached((9, key, type(value), value))
        except TypeError:  # an unhashable value (a mapping)
            encoded = None
        parts.append(encoded or _new_attribute(9, key, value))
    parts.append(_NO_STATUS if span.status is UNSET else _status(span.status))
    parts.append(flags)
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    if span.events:
        parts.extend([_field(11, _event(e)) for e in span.events])
    if span.links:
        parts.extend([_link(link) for link in span.links])
    body = b"".join(parts)
    size = len(body)
    return b"\x12" + (bytes((size,)) if size < 0x80 else _varint(size)) + body


def encode_request(
    spans: Iterable[bytes],
    resource: Mapping[str, AttributeValue],
    scope: tuple[str, str],
) -> bytes:
    """An ``ExportTraceServiceRequest`` of one resource and scope, from encoded spans."""
    name, version = scope
    body = _field(1, _string(1, name) + _string(2, version)) + b"".join(spans)
    resource_spans = _field(1, _attributes(1, resource)) + _field(2, body)
    return _field(1, resource_spans)


def encode_spans(
    spans: Iterable[RecordedSpan],
    resource: Mapping[str, AttributeValue],
    scope: tuple[str, str],
) -> bytes:
    """An ``ExportTraceServiceRequest`` holding ``spans`` of one resource and scope."""
    return encode_request([encode_span(s) for s in spans], resource, scope)
