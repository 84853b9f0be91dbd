"""Reporting: turn the files a run or a sweep leaves behind into tables, plots and static HTML
reports (``report.html``), without recomputing any analysis."""
