"""seminar-mailer: announce this week's seminar by email, exactly once per subscriber."""

__version__ = "0.1.0"
