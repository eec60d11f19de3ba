"""vigil: run plans of work unattended, safely.

Durable (a crash resumes from the journal), isolated (every attempt in a copy-on-write
view of the workspace), authorized (signed, expiring grants) and on the record (a
tamper-evident audit log and a report a person reads in two minutes).
"""

__version__ = "0.1.0"
