"""Share links: a URL that opens one study, series, slide or patient's images,
for a patient, another hospital or a consultant, with no account (issue #6).

``vna.shares.api`` makes, lists and revokes them; ``vna.shares.visit`` opens them;
``vna.shares.gate`` (called by the route guard) limits every request of a
share session to what was shared; ``vna.shares.deid_views`` serves de-identified
shares.  Kept import-light: vna.auth.access imports the gate.
"""
