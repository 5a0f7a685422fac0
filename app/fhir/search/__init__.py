"""Search: parse a FHIR query, run it against the current table and the index tables.

The first cut supports `_id`, `identifier` and `_lastUpdated` (enough for conditional
interactions and read-by-id searches); the search issue grows this into the data-driven engine.
"""

from app.fhir.search.engine import SearchResult, search
from app.fhir.search.params import SearchParams

__all__ = ["SearchParams", "SearchResult", "search"]
