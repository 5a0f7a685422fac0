"""Search: parse a FHIR query, run it against the current table and the index tables.

Search parameters are data (definitions.py, generated from the official R4 definitions);
indexer.py writes typed index rows at write time; params.py parses a query; criteria.py turns
each criterion into SQL; engine.py adds sorting, keyset paging, totals and includes.
"""

from app.fhir.search.engine import SearchResult, search
from app.fhir.search.params import SearchParams

__all__ = ["SearchParams", "SearchResult", "search"]
