"""Standard HL7 v2 segment IDs (v2.1 to v2.8.2), used to recognise segments glued together.

Generated once from the segment definitions that hl7apy 1.3.5 ships for every version
(``hl7apy.v2_x.segments.SEGMENTS``), so the hot path never imports hl7apy. Z-segments are
local by definition and are deliberately absent: a glued ``| ZXX|`` cannot be told from text.
"""

from __future__ import annotations

STANDARD_SEGMENT_IDS: frozenset[str] = frozenset(
    """
    ABS ACC ADD ADJ AFF AIG AIL AIP AIS AL1 APR ARQ ARV AUT BHS BLC BLG BPO BPX BTS BTX BUI
    CDM CDO CER CM0 CM1 CM2 CNS CON CSP CSR CSS CTD CTI DB1 DG1 DMI DON DPS DRG DSC DSP ECD
    ECR EDU EQL EQP EQU ERQ ERR EVN FAC FHS FT1 FTS GOL GP1 GP2 GT1 IAM IAR IIM ILT IN1 IN2
    IN3 INV IPC IPR ISD ITM IVC IVT LAN LCC LCH LDP LOC LRL MCP MFA MFE MFI MRG MSA MSH NCK
    NDS NK1 NPU NSC NST NTE OBR OBX ODS ODT OM1 OM2 OM3 OM4 OM5 OM6 OM7 OMC ORC ORG ORO OVR
    PAC PCE PCR PD1 PDA PDC PEO PES PID PKG PM1 PMT PR1 PRA PRB PRC PRD PRT PSG PSH PSL PSS
    PTH PV1 PV2 PYE QAK QID QPD QRD QRF QRI RCP RDF RDT REL RF1 RFI RGS RMI ROL RQ1 RQD RX1
    RXA RXC RXD RXE RXG RXO RXR RXV SAC SCD SCH SCP SDD SFT SGH SGT SHP SID SLT SPM SPR STF
    STZ TCC TCD TQ1 TQ2 TXA UAC UB1 UB2 URD URS VAR VND VTQ
    """.split()
)
