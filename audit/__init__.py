"""The HIPAA audit trail: every access, allowed or denied, as a tamper-evident AuditEvent.

events.py       BALP-shaped AuditEvent resources (what an access looks like on paper)
patients.py     which patients a resource concerns (the BALP patient entity)
tables.py       the append-only chain, its partition heads, checkpoints and archives
chain.py        hashing and appending: per-partition hash chains, one commit with the access
hook.py         the door's audit hook: collects each interaction, appends before commit
trail.py        records events that happen outside the door (edge refusals, sign-in, tokens)
checkpoints.py  signed, numbered checkpoints of every partition head
verify.py       walks the chain and names the first record that does not fit
marks.py        verify: no checkpoint missing (the sequence, the unanchored records)
copies.py       verify: the searchable copy matches the chain
export.py       NDJSON export of a date range with its verification data; archiving
disclosures.py  accounting of disclosures for one patient (45 CFR 164.528)
"""
