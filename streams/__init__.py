"""Xiangyun's stream library, in layers that import one way only:

``core`` <- ``wire`` <- ``catalog`` <- ``kafka`` <- ``ingest`` <- ``app``

(import-linter enforces it). The application (``xiangyun``) builds a
:class:`~streams.kafka.config.StreamsConfig` and hands it in; nothing here reads settings.
"""
