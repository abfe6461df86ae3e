"""The audit trail: who did what to which patient's data, from where, when, with
what outcome.  ``AuditTrail`` batches events into the index (vna.index.security);
``audit_request`` (called by the route guard) records every protected request; ``GET /api/audit`` reads."""

from vna.audit.trail import AUDIT, AuditTrail, record_event

__all__ = ["AUDIT", "AuditTrail", "record_event"]
