"""Running fits: a fit request as data (``request``), its typed record (``record``), one fit
in this process (``fit``), fits in child processes with timeouts and reuse (``runner``,
``worker``, ``child``)."""
