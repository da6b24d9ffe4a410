"""The verdict layer: statistics with intervals (``stats``, ``estimate``, ``trends``), seeds pooled (``pooling``), what
expected/ records (``expected``, ``catalogue``), a claim instance's record and verdict (``records``) and the report
(``report``). No pytest, no torch: a notebook imports it to evaluate a Measurement as the plugin does."""
