"""FHIR R4 XML <-> FHIR JSON, driven by the element table in fhir_profiles/r4_core/elements.json.

The two formats carry the same content (http://hl7.org/fhir/R4/xml.html, json.html); what
differs is only layout, so one table of "type -> ordered elements" is enough in both directions:

* every FHIR element is in the http://hl7.org/fhir namespace; primitives carry their value in a
  ``value`` attribute, and an element id (datatypes, backbones) and ``Extension.url`` are XML
  attributes, while ``Resource.id`` is a child element like any other;
* JSON splits a primitive's id/extensions into a ``_name`` twin (arrays aligned with nulls);
* a resource nested in another (contained, Bundle.entry.resource, ...) is wrapped in an element
  named after the field, holding an element named after its resourceType;
* ``Narrative.div`` is real XHTML in XML and a string in JSON.

XML input is parsed with a hardened parser: no DTD, no entity expansion, no network.

table.py holds the element table, the parser and what both directions share; reading.py
converts XML to JSON, writing.py JSON to XML.
"""

from app.fhir.xml.reading import xml_to_json
from app.fhir.xml.table import FhirXmlError
from app.fhir.xml.writing import json_to_xml

__all__ = ["FhirXmlError", "json_to_xml", "xml_to_json"]
