"""The programme on the web: the published pages, calendar and feed, and the live preview."""
