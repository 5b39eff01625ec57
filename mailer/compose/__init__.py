"""The messages: templates rendered to text and MJML/HTML, the MIME message built once per announcement,
the calendar invitation, and what check adds by rendering every coming week."""
