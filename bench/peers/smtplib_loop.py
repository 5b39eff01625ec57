"""The naive baseline: one smtplib connection, one message after another (no ledger, no pool)."""

import smtplib
import sys
from pathlib import Path

host, port, eml, count = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]).read_bytes(), int(sys.argv[4])
head, _, rest = eml.partition(b"\r\n")  # the first line is "To: ..."
with smtplib.SMTP(host, port) as smtp:
    for i in range(count):
        rcpt = f"user{i}@example.org"
        smtp.sendmail("learning-machines@ri.se", [rcpt], f"To: <{rcpt}>\r\n".encode() + rest)
