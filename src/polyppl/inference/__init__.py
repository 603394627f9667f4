"""Inference methods and what is made of their draws: method settings (``methods``), the
shape every engine returns (``draws``), the DataTree every backend's draws become (``idata``), convergence diagnostics
(``diagnostics``; ``convergence``: bulk and tail ESS and R-hat of many quantities at once,
compiled), conditional draws and decisions (``posterior``), and the spec evaluated with
NumPy (``numpy_model``)."""
