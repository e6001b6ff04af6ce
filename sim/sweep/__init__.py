"""``mcasim sweep``: many training runs from one spec, on Ray Tune or one after another.

``spec`` (TOML -> validated trials), ``trial`` (one `mcasim train` child process per trial,
retries resume from the checkpoint), ``engines`` (Ray Tune / sequential), ``results``
(results.csv, results.md, results.png), ``cli`` (the command). See docs/sweeps.md.
"""
