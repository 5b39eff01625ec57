"""seminar-mailer benchmarks: one module per stage, run by bench/run.py (``make bench``)."""
