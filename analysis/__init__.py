"""Reading a run: the DuckDB views over its outputs, output diffs (`verify`), the HTML report, one
instance's timeline, and the plots shared with the notebooks."""
