"""Presenting results: tables built once and written as text or HTML (``tables``, ``text``),
and the self-contained HTML report (``report``)."""
