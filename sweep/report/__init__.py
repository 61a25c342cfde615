"""The report side: plain records read from studies, Plotly figures, HTML and tables.

Nothing here imports torch or trains (``tests/test_imports.py`` enforces it):
reports read the store, and every number they show comes from ``sweep.selection`` (one ``Selection``, every rule of its registry).
"""

from sweep.report.html import build_figures, load_records, save_dashboard_figure, summary_rows, write_png, write_report

__all__ = ["build_figures", "load_records", "save_dashboard_figure", "summary_rows", "write_png", "write_report"]
