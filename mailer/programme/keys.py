"""Every key data/seminars.yaml may hold: what the validator reads each as, its limits and its one-line doc.

One table serves all who need it: ``schedule.py`` validates by it, ``schema.py`` builds the JSON Schema
editors read from it, and ``scripts/docs_reference.py`` writes the manual's reference page from it.
"""

from __future__ import annotations

from dataclasses import dataclass

SITE_FORMATS = ("html", "jekyll")  # what `publish` writes (series ``site:``)
APPROVALS = ("none", "required")  # series ``approval:``


@dataclass(frozen=True, slots=True)
class Key:
    """One key of seminars.yaml: what the validator reads it as; programme/schema.py builds the JSON Schema from it."""

    kind: str  # text, markdown, url, address, zone, clock, date, number, list, cancelled, boolean, site, approval,
    # addresses
    doc: str
    required: bool = False
    low: int = 0  # bounds of a number
    high: int = 0


MINUTES_IN_A_DAY = 24 * 60
SERIES_KEYS: dict[str, Key] = {
    "name": Key("text", "The series' name: \"Welcome to this week's <name> seminar.\"", required=True),
    "signature": Key("text", "Who signs the announcement, e.g. The Learning Machines Team.", required=True),
    "timezone": Key("zone", "IANA time zone; every date and time is local to it.", required=True),
    "time": Key("clock", 'Usual start time, 24-hour and quoted: "15:00".', required=True),
    "duration": Key("number", "Minutes, default 60.", low=1, high=MINUTES_IN_A_DAY),
    "location": Key("text", "Where the seminars take place.", required=True),
    "zoom": Key("url", "Video link, if any."),
    "info_url": Key("url", "The series' web page.", required=True),
    "sender": Key("address", "From address: Name <address@example.org>.", required=True),
    "list": Key("list", "The mailing list: recipients/<list>.txt or .csv.", required=True),
    "upcoming": Key("number", "How many later seminars the announcement lists, default 4.", low=0, high=50),
    "reply_to": Key("address", "Reply-To address, if not the sender."),
    "unsubscribe_url": Key("url", "Web page that unsubscribes (gets a signed token)."),
    "unsubscribe_email": Key("address", "Where 'unsubscribe' mails go, default the sender."),
    "reminder": Key("reminder", 'Remind subscribers: "09:00" on the day, or 2h / 90m before the start.'),
    "announce": Key("announce", 'Not before this time of the week: "Monday 08:00" (default: as the week begins).'),
    "service_url": Key("url", "The https address of `seminar-mailer serve` behind your proxy."),
    "calendar_url": Key("url", "Where seminars.ics from `seminar-mailer publish` is served; mails and pages link it."),
    "site": Key("site", "What `publish` writes: html (a complete website, the default) or jekyll (pages for Jekyll)."),
    "zoom_public": Key("boolean", "false keeps the Zoom link out of every published file; the mails keep it."),
    "noindex": Key("boolean", "true asks search engines not to index the published pages (default: indexed)."),
    "approval": Key(
        "approval",
        "required: nothing about a week's seminars is mailed until an organiser runs `seminar-mailer approve` "
        "for that week as the file is then (default: none).",
    ),
    "organisers": Key(
        "addresses",
        "Who to remind, 24 hours before a week's announcement, of what its seminars still lack (title, abstract, "
        "speaker, room: absent or TBA): an address or a list of them.",
    ),
    "followup": Key(
        "boolean",
        "true mails a seminar's slides, video and paper once, after the talk, to those told of it "
        "(when the first of them is added within 14 days of the talk).",
    ),
}
SEMINAR_KEYS: dict[str, Key] = {
    "id": Key("id", "Optional: names this seminar for good, so any edit (even of the date) is a change of it."),
    "date": Key("date", "The day, YYYY-MM-DD.", required=True),
    "speaker": Key("text", "The speaker's name.", required=True),
    "affiliation": Key("text", "The speaker's institution."),
    "title": Key("text", "The talk's title."),
    "abstract": Key("markdown", "The abstract, Markdown (use | for several lines)."),
    "bio": Key("markdown", "The speaker's biography, Markdown."),
    "time": Key("clock", 'Start time if not the series\' time, quoted: "10:15".'),
    "duration": Key("number", "Minutes, if not the series' duration.", low=1, high=MINUTES_IN_A_DAY),
    "location": Key("text", "Where, if not the series' location."),
    "zoom": Key("url", "Video link, if not the series' link."),
    "cancelled": Key("cancelled", "true, or the reason: sends a cancellation notice instead."),
    "notify": Key(
        "boolean",
        "Optional: true mails even a spelling fix of this seminar's speaker or title; false mails no edit of it "
        "(calendars and the next message still get them).",
    ),
    "slides": Key("url", "After the talk: the slides; the published pages and the feed link them."),
    "video": Key("url", "After the talk: the recording."),
    "paper": Key("url", "The paper the talk presents."),
    "draft": Key(
        "boolean",
        "true keeps this seminar out of every mail and page until removed (check lists it); a seminar "
        "already announced cannot become a draft: cancel it instead.",
    ),
}


TOP_KEYS: dict[str, Key] = {
    "series": Key("series", "What every seminar shares.", required=True),
    "seminars": Key("seminars", "One entry per seminar, each starting with '- date:'.", required=True),
}


# A programme file with a top-level ``digest:`` block instead of ``series:``: one weekly mail of several series.
DIGEST_KEYS: dict[str, Key] = {
    "name": Key(
        "text", 'The digest\'s name: the subject reads "<name>, the week of 2030-01-14: 2 seminars".', required=True
    ),
    "sender": Key("address", "From address of the digest: Name <address@example.org>.", required=True),
    "list": Key("list", "The digest's mailing list: recipients/<list>.txt or .csv.", required=True),
    "include": Key("lists", "The list names of the series it gathers, e.g. [colloquium, ml-seminar].", required=True),
    "send": Key(
        "announce",
        'When the week\'s digest goes out: "Monday 07:00" (default: with the earliest announcement of the week '
        "among the series it gathers).",
    ),
    "timezone": Key("zone", "IANA time zone of the send time (default: that of the first series it gathers)."),
    "signature": Key("text", "Who signs the digest (default: the digest's name)."),
    "info_url": Key("url", "A web page of all the series (default: that of the first series it gathers)."),
    "upcoming": Key("number", "How many later weeks the digest lists in brief, default 2.", low=0, high=12),
    "reply_to": Key("address", "Reply-To address, if not the sender."),
    "unsubscribe_url": Key("url", "Web page that unsubscribes (gets a signed token)."),
    "service_url": Key("url", "The https address of `seminar-mailer serve` behind your proxy."),
}
DIGEST_TOP_KEYS: dict[str, Key] = {
    "digest": Key("digest", "A weekly digest of several series of the project, instead of a series.", required=True),
}
