"""Reports: turning the files that runs leave behind into tables, figures and documents.

* :mod:`glassbox.reporting.tables`: one cell format, markdown, CSV/JSON tables;
* :mod:`glassbox.reporting.figures`: the plots (error vs depth, separability, probes,
  PCA, accuracy vs angle), drawn without pyplot;
* :mod:`glassbox.reporting.sweep`: a Hydra multirun as one table (``python -m glassbox.report``);
* :mod:`glassbox.reporting.compare`: separability tables of several runs side by side
  (``python -m glassbox.reporting.compare``);
* :mod:`glassbox.reporting.run_report` / :mod:`glassbox.reporting.sweep_report`: the static HTML
  reports (``report.html``) of a run and of a sweep, built from files without recomputing any
  analysis (:mod:`glassbox.reporting.html` holds their shared page pieces).

Submodules are imported on use, so ``import glassbox.reporting`` stays cheap.
"""
