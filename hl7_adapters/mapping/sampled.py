"""OBX-2 NA (numeric array) -> Observation.valueSampledData (IG NA[SampledData], OBX map).

The IG maps NA.1..NA.n to ``SampledData.data`` and ``dimensions`` to the number of values in
each repetition of OBX-5 (its "Observations - NA to SampledData" guidance): one repetition is
a vector (every value its own point, ``dimensions`` 1); several repetitions are the rows of a
matrix, one row per point in time, each with ``dimensions`` values (the widest row decides),
written row after row. What v2 does not carry is filled as FHIR R4 asks:

* ``origin``: value 0 (NA values are the measurements themselves, not offsets from a base)
  with the OBX-6 units, as every numeric OBX value gets them (obx.units);
* ``period`` (required, milliseconds between samples): NA has no sampling interval, so it is
  left without a value and marked with the data-absent-reason extension ``unknown``, rather
  than inventing an interval a reader would take as measured;
* a position a shorter row does not fill is ``E`` (FHIR's "no valid value at this point"),
  with a warning, so that every row keeps its width and the points stay aligned.

A value that is not an HL7 NM is an error (102) at its component, as for OBX-2 NM.
"""

from __future__ import annotations

from typing import Any

from hl7_adapters.mapping.context import Where, val
from hl7_adapters.mapping.numbers import decimal
from hl7_adapters.values import Repetition

JSON = dict[str, Any]
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
ABSENT = "E"


def _row(rep: Repetition, where: Where) -> list[str] | None:
    """The values of one repetition as FHIR decimals ('' where a component is empty);
    None when one of them is not a number (reported)."""
    out: list[str] = []
    for n in range(1, len(rep.components()) + 1):
        text = val(rep, n)
        if not text:
            out.append("")
            continue
        number = decimal(text)
        if number is None:
            where.error(102, f"OBX-5: '{text}' is not a number (OBX-2 is NA)", n)
            return None
        out.append(str(number))
    while out and not out[-1]:
        out.pop()
    return out


def sampled_data(reps: list[tuple[int, Repetition]], where: Where, unit: JSON) -> JSON:
    """{"valueSampledData": ...} for the OBX-5 repetitions of an NA value ({} if none)."""
    rows = []
    for i, rep in reps:
        row = _row(rep, where.sub(5, i))
        if row is None:
            return {}
        if row:
            rows.append((i, row))
    if not rows:
        return {}
    if len(rows) == 1:  # a vector: each value is a point of its own
        dimensions, points = 1, [v or ABSENT for v in rows[0][1]]
    else:
        dimensions = max(len(row) for _, row in rows)
        points = []
        for i, row in rows:
            padded = row + [""] * (dimensions - len(row))
            if "" in padded:
                where.sub(5, i).warn(
                    102, f"OBX-5: NA row {i} has no value at some positions; sent as 'E'"
                )
            points.extend(v or ABSENT for v in padded)
    if len(rows) == 1 and ABSENT in points:
        where.sub(5, rows[0][0]).warn(102, "OBX-5: NA has empty positions; sent as 'E'")
    return {
        "valueSampledData": {
            "origin": {"value": 0, **unit},
            "_period": {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}]},
            "dimensions": dimensions,
            "data": " ".join(points),
        }
    }
