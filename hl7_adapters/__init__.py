"""HL7 v2 transport and parsing: MLLP, a flat ER7 tokenizer, ACKs, structures, validation.

Layout (each module says why it is the way it is):

* ``er7``        bytes -> messages (batches, BOM, junk, glued segments, MSH-18 decoding)
* ``values``     segments, repetitions and HL7 paths ('PID-3[2].4.1'), ``""`` vs empty
* ``escapes``    delimiters and escape sequences; ``charsets`` MSH-18 -> codec; ``dates`` DTM
* ``structures`` trigger -> message structure (HL7 table 0354)
* ``validation`` optional hl7apy parse with a segment-count guard
* ``ack``        ACK/NAK building (original and enhanced mode, ERR segments)
* ``framing``    MLLP deframing; ``mllp`` the asyncio listener and a client

Into the server:

* ``mapping``    message -> the FHIR resources it asks for (pure; the v2-to-FHIR IG tables)
* ``ingest``     bytes -> ACK: duplicates, mapping, ``apply`` (through the one door), the
                 message ``store``, audit, Provenance, in one transaction; ACK after commit
                 (``outcomes``: how a message ended); reprocess and re-apply. ``apply``'s
                 A40 steps are ``merging``; what it takes and gives, ``applied``
* ``repoint``    A40: what was filed under the retired Patient moves to the survivor
* ``feeds``      the MLLP listener in ``serve``; ``router`` POST /hl7/v2; ``commands`` the CLI

docs/hl7v2.md tells the whole story.
"""

from hl7_adapters.ack import AckError, build_ack, build_nak, build_unreadable_ack
from hl7_adapters.dates import to_fhir_date, to_fhir_datetime
from hl7_adapters.er7 import (
    HD,
    Batch,
    Hl7ParseError,
    Message,
    parse_batch,
    parse_message,
    parse_messages,
)
from hl7_adapters.mllp import MLLPClient, MLLPServer, send_message
from hl7_adapters.values import Repetition, Segment

__all__ = [
    "HD",
    "AckError",
    "Batch",
    "Hl7ParseError",
    "MLLPClient",
    "MLLPServer",
    "Message",
    "Repetition",
    "Segment",
    "build_ack",
    "build_nak",
    "build_unreadable_ack",
    "parse_batch",
    "parse_message",
    "parse_messages",
    "send_message",
    "to_fhir_date",
    "to_fhir_datetime",
]
