"""Data quality in real time (article 22): completeness, validity, timeliness and consistency
per resource and providing unit, from the outcome topics (:mod:`streams.quality.agent`), with
the figures themselves free of I/O (:mod:`streams.quality.figures`)."""
