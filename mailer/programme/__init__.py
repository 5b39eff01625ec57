"""The organiser's project: the YAML read into positioned nodes, validated into a schedule (its JSON
Schema from the same tables), what a subscriber is told of a seminar (revisions), the project folder and init."""
